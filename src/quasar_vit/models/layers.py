"""Quantized ViT building blocks, usable at full size or as an elastic slice.

Each module holds ordinary parameters.  Called without dimensions it is a plain fixed-size layer
(the extracted subnet); called with dimensions it uses the leading slice of its parameters
(AutoFormer-style weight entanglement), which is how the supernet runs any subnet.  The same code
path serves both, so an extracted subnet computes exactly what the supernet computed for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quasar_vit.config import QuantConfig
from quasar_vit.errors import SubnetError
from quasar_vit.quantization.lsq import (
    ActQuantizer,
    ResidualQuantizer,
    init_weight_steps,
    integer_weight_rows,
    quantize_weight_rows,
)
from quasar_vit.space import BLOCK_LINEARS, num_8bit_rows


class QuantLinear(nn.Module):
    """Linear layer with row-wise 4/8-bit weights and a quantized (6-bit) input.

    ``sections`` > 1 splits the rows into equal blocks that are sliced independently (q, k and v of
    the fused QKV projection).  ``share`` is the 8-bit share of the rows when called at full size
    (and, for the fixed-precision patch embedding and head, at any size); the 8-bit row count
    itself always comes from :func:`~quasar_vit.space.num_8bit_rows`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        quant: QuantConfig,
        sections: int = 1,
        share: float = 1.0,
        act_signed: bool = True,
    ) -> None:
        """Build a randomly initialised layer (LSQ steps initialised from the weights).

        Args:
            in_features: input features.
            out_features: output rows, all sections together.
            quant: the quantization scheme (held as it is, not copied).
            sections: number of equal row blocks sliced independently (3 for the fused QKV).
            share: 8-bit share of the rows at full size, in [0, 1].
            act_signed: whether the input quantizer is signed.
        """
        super().__init__()
        assert out_features % sections == 0
        self.in_features, self.out_features, self.sections = in_features, out_features, sections
        self.quant = quant
        self.share = share
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.trunc_normal_(self.weight, std=in_features**-0.5)
        self.step_lo = nn.Parameter(init_weight_steps(self.weight, quant.w_bits_low))
        self.step_hi = nn.Parameter(init_weight_steps(self.weight, quant.w_bits_high))
        self.aq = ActQuantizer(quant.act_bits, act_signed, quant.enabled, quant.lsq_grad_scale)

    @property
    def n8_rows(self) -> int:
        """8-bit rows of the full-size layer (the leading ``n8_rows / sections`` of each section)."""
        return num_8bit_rows(self.out_features, self.share, self.sections)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, sections={self.sections}, n8_rows={self.n8_rows}"

    def reset_steps(self) -> None:
        """Re-run the LSQ step initialisation (after loading or re-initialising weights)."""
        with torch.no_grad():
            self.step_lo.copy_(init_weight_steps(self.weight, self.quant.w_bits_low))
            self.step_hi.copy_(init_weight_steps(self.weight, self.quant.w_bits_high))

    def sliced(self, rows: int | None = None, cols: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(weight, bias, step_lo, step_hi)`` of the leading ``rows`` (per section) x ``cols`` slice."""
        w: Tensor  # the parameter itself, or a view of its slice
        w, b, slo, shi = self.weight, self.bias, self.step_lo, self.step_hi
        if rows is None and cols is None:
            return w, b, slo, shi
        s = self.sections
        per = self.out_features // s
        rows = per if rows is None else rows
        cols = self.in_features if cols is None else cols
        if s == 1:
            return w[:rows, :cols], b[:rows], slo[:rows], shi[:rows]
        w = w.view(s, per, self.in_features)[:, :rows, :cols].reshape(s * rows, cols)
        return (
            w,
            b.view(s, per)[:, :rows].reshape(-1),
            slo.view(s, per)[:, :rows].reshape(-1),
            shi.view(s, per)[:, :rows].reshape(-1),
        )

    @torch.no_grad()
    def load_slice(self, src: "QuantLinear", rows: int | None = None, cols: int | None = None) -> None:
        """Copy ``src``'s leading ``rows`` (per section) x ``cols`` slice and input quantizer into this layer.

        Args:
            src: the (larger) layer to copy from, e.g. a supernet's.
            rows: output rows per section of the slice (``None``: all of ``src``'s).
            cols: input features of the slice (``None``: all of ``src``'s).
        """
        w, b, slo, shi = src.sliced(rows, cols)
        for p, v in ((self.weight, w), (self.bias, b), (self.step_lo, slo), (self.step_hi, shi)):
            if p.shape != v.shape:
                raise SubnetError(f"shape mismatch while extracting: {tuple(p.shape)} vs {tuple(v.shape)}")
            p.copy_(v)
        self.aq.load_state_dict(src.aq.state_dict())

    @torch.no_grad()
    def extract(self, rows: int | None = None, cols: int | None = None, share: float | None = None) -> "QuantLinear":
        """A standalone full-size layer holding this layer's leading ``rows`` x ``cols`` slice.

        Its ``forward(x)`` equals ``self.forward(x, rows, cols, share)``.  It is built by the
        constructor (which draws its random initial weights, as building the layer directly does),
        then overwritten with the slice.

        Args:
            rows: output rows per section of the slice (``None``: all).
            cols: input features of the slice (``None``: all).
            share: 8-bit share of the extracted rows (``None``: this layer's ``share``).

        Returns:
            The new layer, on this layer's device and in its train/eval mode.
        """
        rows = self.out_features // self.sections if rows is None else rows
        cols = self.in_features if cols is None else cols
        share = self.share if share is None else share
        out = QuantLinear(cols, self.sections * rows, self.quant, self.sections, share, self.aq.signed)
        out.to(self.weight.device).load_slice(self, rows, cols)
        return out.train(self.training)

    def forward(
        self, x: Tensor, rows: int | None = None, cols: int | None = None, share: float | None = None
    ) -> Tensor:
        """Run the leading ``rows`` (per section) x ``cols`` slice (default: full size).

        Args:
            x: input ``[..., cols]``.
            rows: active output rows per section (``None``: all).
            cols: active input features (``None``: all).
            share: 8-bit share of the active rows (``None``: the layer's own ``share``).

        Returns:
            ``[..., sections * rows]`` outputs.
        """
        w, b, slo, shi = self.sliced(rows, cols)
        n8 = num_8bit_rows(w.shape[0], self.share if share is None else share, self.sections)
        if self.quant.enabled:
            x = self.aq(x)
            w = quantize_weight_rows(
                w, slo, shi, n8, self.sections, self.quant.w_bits_low, self.quant.w_bits_high, self.quant.lsq_grad_scale
            )
        return F.linear(x, w, b)

    def forward_exact(
        self, x: Tensor, rows: int | None = None, cols: int | None = None, share: float | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The slice's exact integer GEMM on input ``x`` that is already on this layer's input grid.

        ``x`` is ``codes * s_x`` (the producer applied this layer's input quantizer, e.g. through
        :meth:`ActQuantizer.forward` with codes), so the layer does not quantize it again.

        Args:
            x: input fake-quant values ``[..., cols]``.
            rows, cols, share: the slice, as for :meth:`forward`.

        Returns:
            ``(y, acc, row_steps, bias)``: the float output ``float32(acc) * (s_x * s_row) + bias``
            (differentiable, trained as the plain fake-quant linear), the int64 accumulator, and the
            slice's per-row weight steps and biases (for the integer output stage's constants).
        """
        from quasar_vit.models.exact import exact_matmul
        from quasar_vit.quantization.lsq import qrange, row_steps

        w, b, slo, shi = self.sliced(rows, cols)
        n8 = num_8bit_rows(w.shape[0], self.share if share is None else share, self.sections)
        q = self.quant
        w_fq = quantize_weight_rows(w, slo, shi, n8, self.sections, q.w_bits_low, q.w_bits_high, q.lsq_grad_scale)
        steps = row_steps(slo, shi, n8, self.sections)
        w_max = -qrange(q.w_bits_high if n8 else q.w_bits_low, True)[0]
        a_max = max(-self.aq.qn, self.aq.qp)
        y, acc = exact_matmul(x, w_fq.t(), self.aq.step_value(), steps, a_max, w_max)
        return y + b, acc, steps, b.detach()

    def integer_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(w_int, step per row, is_8bit per row)`` of the full-size layer (for export)."""
        return integer_weight_rows(
            self.weight.detach(),
            self.step_lo.detach(),
            self.step_hi.detach(),
            self.n8_rows,
            self.sections,
            self.quant.w_bits_low,
            self.quant.w_bits_high,
        )


def elastic_layer_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm over the active embedding width ``x.shape[-1]`` using the leading parameters."""
    e = x.shape[-1]
    return F.layer_norm(x, (e,), norm.weight[:e], norm.bias[:e], norm.eps)


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual branch per sample."""
    if p <= 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], 1, 1, device=x.device, dtype=x.dtype) >= p
    return x * keep / (1.0 - p)


@dataclass(frozen=True)
class BlockDims:
    """Active dimensions of one block inside the supernet; ``shares``: one per linear (``BLOCK_LINEARS``)."""

    embed: int
    heads: int
    hidden: int
    shares: tuple[float, ...]


class Block(nn.Module):
    """Pre-norm transformer block with quantized linears, 6-bit attention matmuls and layer scaling.

    Attention operands q, k, v are 6-bit signed; softmax probabilities are 6-bit unsigned.  With
    ``integer`` nonlinear ops (``model.nonlinear: integer``) LayerNorm, softmax, GELU, the layer
    scaling and the residual adds are the integer arithmetic of
    :mod:`quasar_vit.quantization.intops` (:func:`quasar_vit.models.intpath.block_forward`), as the
    accelerator computes them; with ``float`` they are the float ops, and the layer scale a float
    multiply.
    """

    def __init__(
        self,
        embed: int,
        heads: int,
        head_dim: int,
        hidden: int,
        quant: QuantConfig,
        layer_scale: bool = True,
        layer_scale_init: float = 0.1,
        drop_path: float = 0.0,
        shares: Sequence[float] = (1.0,) * len(BLOCK_LINEARS),
        linears: Sequence[QuantLinear] | None = None,
        integer: bool = False,
    ) -> None:
        """Build a block of the given (full) size.

        Args:
            embed: embedding width.
            heads: attention heads.
            head_dim: width of one head.
            hidden: MLP hidden width.
            quant: the quantization scheme.
            layer_scale: whether the two residual branches are scaled by learned per-channel factors.
            layer_scale_init: initial value of those factors.
            drop_path: stochastic-depth probability of each residual branch.
            shares: 8-bit share of each linear's rows at full size, in ``BLOCK_LINEARS`` order.
            linears: ready ``(qkv, proj, fc1, fc2)`` layers (from :meth:`extract`) instead of new ones.
            integer: integer nonlinear ops (run when the caller passes a calibrated residual quantizer).
        """
        super().__init__()
        self.integer = integer
        self.gelu_in_bits, self.softmax_frac_bits = quant.gelu_in_bits, quant.softmax_frac_bits
        self.embed, self.heads, self.head_dim, self.hidden = embed, heads, head_dim, hidden
        self.drop_path = drop_path
        q = heads * head_dim
        s_qkv, s_proj, s_fc1, s_fc2 = shares
        qkv, proj, fc1, fc2 = linears or (
            QuantLinear(embed, 3 * q, quant, sections=3, share=s_qkv),
            QuantLinear(q, embed, quant, share=s_proj),
            QuantLinear(embed, hidden, quant, share=s_fc1),
            QuantLinear(hidden, embed, quant, share=s_fc2),
        )
        self.norm1 = nn.LayerNorm(embed)
        self.qkv, self.proj = qkv, proj
        self.aq_q = ActQuantizer(quant.act_bits, True, quant.enabled, quant.lsq_grad_scale)
        self.aq_k = ActQuantizer(quant.act_bits, True, quant.enabled, quant.lsq_grad_scale)
        self.aq_v = ActQuantizer(quant.act_bits, True, quant.enabled, quant.lsq_grad_scale)
        self.aq_attn = ActQuantizer(quant.act_bits, False, quant.enabled, quant.lsq_grad_scale)
        self.norm2 = nn.LayerNorm(embed)
        self.fc1, self.fc2 = fc1, fc2
        self.layer_scale = layer_scale
        if layer_scale:
            self.ls1 = nn.Parameter(torch.full((embed,), layer_scale_init))
            self.ls2 = nn.Parameter(torch.full((embed,), layer_scale_init))

    def slices(self, dims: BlockDims) -> dict[str, tuple[int, int]]:
        """Where each linear is cut for ``dims``.

        Args:
            dims: the active dimensions.

        Returns:
            ``(rows per section, cols)`` of the ``qkv``, ``proj``, ``fc1`` and ``fc2`` slices.
        """
        e, q, h = dims.embed, dims.heads * self.head_dim, dims.hidden
        return {"qkv": (q, e), "proj": (e, q), "fc1": (h, e), "fc2": (e, h)}

    def forward(self, x: Tensor, dims: BlockDims | None = None, res: ResidualQuantizer | None = None) -> Tensor:
        """Run the block at full size (``dims=None``) or on the leading slices for ``dims``.

        Args:
            x: tokens ``[batch, tokens, embed]`` (``dims.embed`` wide when sliced).
            dims: the active dimensions, or ``None`` for the full block.
            res: the network's residual quantizer: an integer block runs its integer path when it
                is given and active (calibrated, not calibrating), else the float path.

        Returns:
            The output tokens, shaped like ``x``.
        """
        if res is not None and self.integer and res.active:
            from quasar_vit.models.intpath import block_forward

            return block_forward(self, x, dims, res)
        if res is not None:
            res.observe(x)
        b, t, e = x.shape
        heads = self.heads if dims is None else dims.heads
        cut = dict.fromkeys(BLOCK_LINEARS, (None, None)) if dims is None else self.slices(dims)
        share = dict.fromkeys(BLOCK_LINEARS, None) if dims is None else dict(zip(BLOCK_LINEARS, dims.shares))

        # attention
        h = elastic_layer_norm(self.norm1, x)
        qkv = self.qkv(h, *cut["qkv"], share["qkv"])
        qkv = qkv.view(b, t, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q_, k_, v_ = self.aq_q(qkv[0]), self.aq_k(qkv[1]), self.aq_v(qkv[2])
        attn = (q_ @ k_.transpose(-2, -1)) * (self.head_dim**-0.5)
        attn = self.aq_attn(attn.softmax(dim=-1))
        a = (attn @ v_).transpose(1, 2).reshape(b, t, heads * self.head_dim)
        a = self.proj(a, *cut["proj"], share["proj"])
        if self.layer_scale:
            a = self.ls1[:e] * a
        x = x + drop_path(a, self.drop_path, self.training)

        # MLP
        h = elastic_layer_norm(self.norm2, x)
        h = F.gelu(self.fc1(h, *cut["fc1"], share["fc1"]))
        h = self.fc2(h, *cut["fc2"], share["fc2"])
        if self.layer_scale:
            h = self.ls2[:e] * h
        out = x + drop_path(h, self.drop_path, self.training)
        if res is not None:
            res.observe(x)  # the stream after the attention branch
            res.observe(out)
        return out

    @torch.no_grad()
    def extract(self, dims: BlockDims) -> "Block":
        """A standalone block holding this block's slices for ``dims`` (no stochastic depth).

        Its ``forward(x)`` equals ``self.forward(x, dims)``.  The linears are built (and randomly
        initialised) in the order the constructor builds them, then overwritten with the slices.

        Args:
            dims: the active dimensions of the subnet's layer.

        Returns:
            The new block, on this block's device and in its train/eval mode.
        """
        e, cut = dims.embed, self.slices(dims)
        linears = [getattr(self, n).extract(*cut[n], s) for n, s in zip(BLOCK_LINEARS, dims.shares)]
        quant = self.qkv.quant
        # layer_scale_init 0.0: the scales are overwritten with the slices below
        out = Block(
            e,
            dims.heads,
            self.head_dim,
            dims.hidden,
            quant,
            self.layer_scale,
            0.0,
            0.0,
            dims.shares,
            linears,
            self.integer,
        )
        out.to(self.qkv.weight.device)
        for n in ("norm1", "norm2"):
            getattr(out, n).weight.copy_(getattr(self, n).weight[:e])
            getattr(out, n).bias.copy_(getattr(self, n).bias[:e])
        for n in ("aq_q", "aq_k", "aq_v", "aq_attn"):
            getattr(out, n).load_state_dict(getattr(self, n).state_dict())
        if self.layer_scale:
            out.ls1.copy_(self.ls1[:e])
            out.ls2.copy_(self.ls2[:e])
        return out.train(self.training)


def patchify(x: Tensor, patch: int) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, N, C*patch*patch]`` in (c, dy, dx) order, i.e. a conv's weight layout."""
    b, c, hgt, wid = x.shape
    x = x.reshape(b, c, hgt // patch, patch, wid // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (hgt // patch) * (wid // patch), c * patch * patch)
