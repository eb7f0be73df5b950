"""Quantized ViT building blocks, usable at full size or as an elastic slice.

Each module holds ordinary parameters.  Called without dimensions it is a plain fixed-size layer
(the extracted subnet); called with dimensions it uses the leading slice of its parameters
(AutoFormer-style weight entanglement), which is how the supernet runs any subnet.  The same code
path serves both, so an extracted subnet computes exactly what the supernet computed for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quasar_vit.quantization.lsq import ActQuantizer, init_weight_steps, integer_weight_rows, quantize_weight_rows
from quasar_vit.space import num_8bit_rows


@dataclass(frozen=True)
class QuantSpec:
    """What the layers need to know of the quantization config."""

    enabled: bool = True
    w_bits_low: int = 4
    w_bits_high: int = 8
    act_bits: int = 6
    lsq_grad_scale: bool = True

    @classmethod
    def from_config(cls, q: object) -> "QuantSpec":
        return cls(q.enabled, q.w_bits_low, q.w_bits_high, q.act_bits, q.lsq_grad_scale)  # type: ignore[attr-defined]


class QuantLinear(nn.Module):
    """Linear layer with row-wise 4/8-bit weights and a quantized (6-bit) input.

    ``sections`` > 1 splits the rows into equal blocks that are sliced independently (q, k and v of
    the fused QKV projection).  ``n8_rows`` is the number of 8-bit rows when called at full size.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        quant: QuantSpec,
        sections: int = 1,
        n8_rows: int | None = None,
        act_signed: bool = True,
    ) -> None:
        super().__init__()
        assert out_features % sections == 0
        self.in_features, self.out_features, self.sections = in_features, out_features, sections
        self.quant = quant
        self.n8_rows = out_features if n8_rows is None else n8_rows
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.trunc_normal_(self.weight, std=in_features**-0.5)
        self.step_lo = nn.Parameter(init_weight_steps(self.weight, quant.w_bits_low))
        self.step_hi = nn.Parameter(init_weight_steps(self.weight, quant.w_bits_high))
        self.aq = ActQuantizer(quant.act_bits, act_signed, quant.enabled, quant.lsq_grad_scale)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, sections={self.sections}, n8_rows={self.n8_rows}"

    def reset_steps(self) -> None:
        """Re-run the LSQ step initialisation (after loading or re-initialising weights)."""
        with torch.no_grad():
            self.step_lo.copy_(init_weight_steps(self.weight, self.quant.w_bits_low))
            self.step_hi.copy_(init_weight_steps(self.weight, self.quant.w_bits_high))

    def sliced(self, rows: int | None = None, cols: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(weight, bias, step_lo, step_hi)`` of the leading ``rows`` (per section) x ``cols`` slice."""
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

    def forward(self, x: Tensor, rows: int | None = None, cols: int | None = None, n8: int | None = None) -> Tensor:
        w, b, slo, shi = self.sliced(rows, cols)
        n8 = self.n8_rows if n8 is None else n8
        if self.quant.enabled:
            x = self.aq(x)
            w = quantize_weight_rows(
                w, slo, shi, n8, self.sections, self.quant.w_bits_low, self.quant.w_bits_high, self.quant.lsq_grad_scale
            )
        return F.linear(x, w, b)

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
    """Active dimensions of one block inside the supernet."""

    embed: int
    heads: int
    hidden: int
    share: float


class Block(nn.Module):
    """Pre-norm transformer block with quantized linears, 6-bit attention matmuls and layer scaling.

    Attention operands q, k, v are 6-bit signed; softmax probabilities are 6-bit unsigned.
    LayerNorm, softmax and GELU stay in float (on the FPGA they run on the ARM cores); the
    layer-scale multiply runs on the fabric and is applied in float here and there.
    """

    def __init__(
        self,
        embed: int,
        heads: int,
        head_dim: int,
        hidden: int,
        quant: QuantSpec,
        layer_scale: bool = True,
        layer_scale_init: float = 0.1,
        drop_path: float = 0.0,
        n8: tuple[int, int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.embed, self.heads, self.head_dim, self.hidden = embed, heads, head_dim, hidden
        self.drop_path = drop_path
        n8 = n8 or (3 * heads * head_dim, embed, hidden, embed)
        q = heads * head_dim
        self.norm1 = nn.LayerNorm(embed)
        self.qkv = QuantLinear(embed, 3 * q, quant, sections=3, n8_rows=n8[0])
        self.proj = QuantLinear(q, embed, quant, n8_rows=n8[1])
        self.aq_q = ActQuantizer(quant.act_bits, True, quant.enabled, quant.lsq_grad_scale)
        self.aq_k = ActQuantizer(quant.act_bits, True, quant.enabled, quant.lsq_grad_scale)
        self.aq_v = ActQuantizer(quant.act_bits, True, quant.enabled, quant.lsq_grad_scale)
        self.aq_attn = ActQuantizer(quant.act_bits, False, quant.enabled, quant.lsq_grad_scale)
        self.norm2 = nn.LayerNorm(embed)
        self.fc1 = QuantLinear(embed, hidden, quant, n8_rows=n8[2])
        self.fc2 = QuantLinear(hidden, embed, quant, n8_rows=n8[3])
        self.layer_scale = layer_scale
        if layer_scale:
            self.ls1 = nn.Parameter(torch.full((embed,), layer_scale_init))
            self.ls2 = nn.Parameter(torch.full((embed,), layer_scale_init))

    def forward(self, x: Tensor, dims: BlockDims | None = None) -> Tensor:
        b, t, e = x.shape
        if dims is None:
            heads, hidden, slicing = self.heads, self.hidden, {}
            n8 = (None, None, None, None)
        else:
            heads, hidden = dims.heads, dims.hidden
            q = heads * self.head_dim
            n8 = (
                3 * num_8bit_rows(q, dims.share),
                num_8bit_rows(e, dims.share),
                num_8bit_rows(hidden, dims.share),
                num_8bit_rows(e, dims.share),
            )
            slicing = {"qkv": (q, e), "proj": (e, q), "fc1": (hidden, e), "fc2": (e, hidden)}

        # attention
        h = elastic_layer_norm(self.norm1, x)
        qkv = self.qkv(h, *slicing.get("qkv", (None, None)), n8=n8[0])
        qkv = qkv.view(b, t, 3, heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q_, k_, v_ = self.aq_q(qkv[0]), self.aq_k(qkv[1]), self.aq_v(qkv[2])
        attn = (q_ @ k_.transpose(-2, -1)) * (self.head_dim**-0.5)
        attn = self.aq_attn(attn.softmax(dim=-1))
        a = (attn @ v_).transpose(1, 2).reshape(b, t, heads * self.head_dim)
        a = self.proj(a, *slicing.get("proj", (None, None)), n8=n8[1])
        if self.layer_scale:
            a = self.ls1[:e] * a
        x = x + drop_path(a, self.drop_path, self.training)

        # MLP
        h = elastic_layer_norm(self.norm2, x)
        h = F.gelu(self.fc1(h, *slicing.get("fc1", (None, None)), n8=n8[2]))
        h = self.fc2(h, *slicing.get("fc2", (None, None)), n8=n8[3])
        if self.layer_scale:
            h = self.ls2[:e] * h
        return x + drop_path(h, self.drop_path, self.training)


def patchify(x: Tensor, patch: int) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, N, C*patch*patch]`` in (c, dy, dx) order, i.e. a conv's weight layout."""
    b, c, hgt, wid = x.shape
    x = x.reshape(b, c, hgt // patch, patch, wid // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (hgt // patch) * (wid // patch), c * patch * patch)
