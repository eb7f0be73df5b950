"""The training forward of ``model.nonlinear: integer``: integer values, float-surrogate gradients.

Each quantisation point's value is computed by the integer arithmetic of
:mod:`quasar_vit.quantization.intops` from the exact GEMM accumulators (:mod:`.exact`), exactly as
the exported engine and the accelerator compute it.  The gradients are those of the float network
(LayerNorm, softmax, GELU, the residual adds) that the integer ops approximate: at every point the
float op's output is the surrogate that :meth:`ActQuantizer.forward` with ``codes`` (LSQ straight
through, so the steps keep learning) or :meth:`ResidualQuantizer.forward` (identity) trains, and
the next stage reads the exact value.  The surrogate never drifts from the integers: it restarts
from the exact value at every point.

The integer constants are derived from the current float parameters on every call, by the
``*_constants`` functions below (through :mod:`quasar_vit.quantization.intconst`); the exporter
calls the same functions on the extracted model (:func:`integer_constants`), so the exported
integers are the ones the model computed with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from quasar_vit.models.exact import exact_matmul
from quasar_vit.quantization import intconst, intops
from quasar_vit.quantization.lsq import ActQuantizer, ResidualQuantizer

if TYPE_CHECKING:  # pragma: no cover - typing only
    from quasar_vit.models.layers import Block, BlockDims
    from quasar_vit.models.vit import ViTBase

Affine = tuple[Tensor, Tensor, Tensor]  # (M, B, S) of a requantiser, float64 tensors holding integers
Norm = tuple[Tensor, Tensor, Tensor, Tensor]  # (G, Bt, SG, EPS) of an integer LayerNorm


# ---- the integer constants of each stage (float parameters -> integers) ----------------------------
def norm_constants(weight: Tensor, bias: Tensor, eps: float, out: ActQuantizer, res: ResidualQuantizer) -> Norm:
    """A LayerNorm of the residual stream to ``out``'s codes."""
    return intconst.layernorm_constants(weight, bias, out.step_value(), res.step_value(), eps)


def qkv_constants(blk: "Block", steps: Tensor, bias: Tensor) -> Affine:
    """qkv's accumulators to the q, k and v codes (rows in q, k, v sections)."""
    quants = (blk.aq_q, blk.aq_k, blk.aq_v)
    per = steps.shape[0] // 3
    s_out = torch.cat([aq.step_value().double().expand(per) for aq in quants])
    s_in = blk.qkv.aq.step_value().double()
    return intconst.affine(s_in * steps.double() / s_out, bias.double() / s_out)


def softmax_constants(blk: "Block") -> tuple[Tensor, Tensor, Tensor]:
    """``q k^T`` accumulators to the probability codes."""
    return intconst.softmax_constants(
        blk.aq_q.step_value(),
        blk.aq_k.step_value(),
        blk.head_dim**-0.5,
        blk.aq_attn.step_value(),
        blk.softmax_frac_bits,
    )


def pv_constants(blk: "Block") -> Affine:
    """``P v`` accumulators to the projection's input codes."""
    m = blk.aq_attn.step_value().double() * blk.aq_v.step_value().double() / blk.proj.aq.step_value().double()
    return intconst.affine(m, 0.0)


def branch_constants(
    res: ResidualQuantizer, s_in: Tensor, steps: Tensor, bias: Tensor, ls: Tensor | None, keep_scale: float = 1.0
) -> Affine:
    """A branch's accumulators (proj, fc2, the patch embedding), layer-scaled, to residual codes.

    ``keep_scale`` is stochastic depth's ``1 / (1 - p)`` for the kept samples in training.
    """
    scale = (ls.detach().double() if ls is not None else torch.ones_like(steps, dtype=torch.float64)) * keep_scale
    s_r = res.step_value().double()
    return intconst.affine(scale * s_in.double() * steps.double() / s_r, scale * bias.double() / s_r)


def gelu_constants(blk: "Block", steps: Tensor, bias: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """fc1's accumulators to GELU table indices, and the table of fc2's input codes: ``(M, B, S, table)``."""
    out = blk.fc2.aq
    table, s_g, zero = intconst.gelu_table(out.step_value(), blk.gelu_in_bits, out.qn, out.qp)
    s_in = blk.fc1.aq.step_value().double()
    mult, offset, shift = intconst.affine(s_in * steps.double() / s_g, bias.double() / s_g + zero)
    return mult, offset, shift, table


def stem_constants(vit: "ViTBase", steps: Tensor, bias: Tensor, e: int) -> tuple[Affine, Tensor]:
    """The patch embedding to residual codes, and the residual codes every token starts from
    ``[T, E]``: the class token plus its position embedding (row 0), the position embeddings."""
    res = vit.res_q
    s_r = res.step_value()
    cls, pos = vit.cls_token[0, :, :e], vit.pos_embed[0, :, :e]
    start = torch.cat(
        [
            intconst.residual_codes(cls + pos[:1], s_r, res.qn, res.qp),
            intconst.residual_codes(pos[1:], s_r, res.qn, res.qp),
        ]
    )
    return branch_constants(res, vit.patch_embed.aq.step_value(), steps, bias, None), start


# ---- the forward ------------------------------------------------------------------------------------
def _keep_mask(x: Tensor, p: float, training: bool) -> Tensor | None:
    """Stochastic depth's per-sample keep mask ``[B, 1, 1]`` (None: every sample keeps the branch)."""
    if p <= 0.0 or not training:
        return None
    return torch.rand(x.shape[0], 1, 1, device=x.device) >= p


def residual_update(
    res: ResidualQuantizer,
    x: Tensor,
    r: Tensor,
    y: Tensor,
    acc: Tensor,
    s_in: Tensor,
    steps: Tensor,
    bias: Tensor,
    ls: Tensor | None,
    p_drop: float,
    training: bool,
) -> tuple[Tensor, Tensor]:
    """``x + ls * y`` on the residual grid: ``(new value, new codes)``.

    Args:
        res: the residual quantizer (its step).
        x, r: the stream's value and its codes.
        y: the branch's float output (with bias), the surrogate.
        acc: its exact accumulator.
        s_in, steps, bias: the branch linear's input step, per-row weight steps and bias.
        ls: the layer scale (None: 1).
        p_drop: stochastic depth of the branch.
        training: whether stochastic depth applies.
    """
    keep = _keep_mask(x, p_drop, training)
    branch = ls * y if ls is not None else y
    keep_scale = 1.0
    if keep is not None:  # kept samples scale the branch by 1/(1-p); dropped ones skip it
        branch = branch * keep / (1.0 - p_drop)
        keep_scale = 1.0 / (1.0 - p_drop)
    mult, off, sh = branch_constants(res, s_in, steps, bias, ls, keep_scale)
    with torch.no_grad():
        r_new = intops.residual_add(r, acc, mult, off, sh, res.qn, res.qp)
        if keep is not None:
            r_new = torch.where(keep, r_new, r)
    return res(x + branch, r_new), r_new


def _norm_codes(norm: torch.nn.LayerNorm, x: Tensor, r: Tensor, res: ResidualQuantizer, out: ActQuantizer) -> Tensor:
    """LayerNorm of the stream to ``out``'s codes: the value ``codes * step``, trained as the float LayerNorm."""
    e = x.shape[-1]
    w, b = norm.weight[:e], norm.bias[:e]
    sur = F.layer_norm(x, (e,), w, b, norm.eps)
    consts = norm_constants(w, b, norm.eps, out, res)
    with torch.no_grad():
        codes = intops.layernorm(r, *consts, out.qn, out.qp)
    return out(sur, codes)


def block_forward(blk: "Block", x: Tensor, dims: "BlockDims | None", res: ResidualQuantizer) -> Tensor:
    """One transformer block on the integer path (same slicing as :meth:`Block.forward`)."""
    from quasar_vit.models.layers import BLOCK_LINEARS

    b, t, e = x.shape
    heads = blk.heads if dims is None else dims.heads
    cut: dict[str, tuple[int | None, int | None]] = {n: (None, None) for n in BLOCK_LINEARS}
    share: dict[str, float | None] = dict.fromkeys(BLOCK_LINEARS, None)
    if dims is not None:
        cut.update(blk.slices(dims))
        share.update(zip(BLOCK_LINEARS, dims.shares))
    hd, width = blk.head_dim, heads * blk.head_dim
    r = res.codes(x)

    # ---- attention: LayerNorm -> qkv -> q/k/v codes -> scores -> softmax codes -> P v -> proj input codes
    h = _norm_codes(blk.norm1, x, r, res, blk.qkv.aq)
    y, acc, steps, bias = blk.qkv.forward_exact(h, *cut["qkv"], share["qkv"])
    consts = qkv_constants(blk, steps, bias)
    with torch.no_grad():
        codes = intops.requant(acc, *consts, blk.aq_q.qn, blk.aq_q.qp)
    y = y.view(b, t, 3, heads, hd).permute(2, 0, 3, 1, 4)
    codes = codes.view(b, t, 3, heads, hd).permute(2, 0, 3, 1, 4)
    quants = (blk.aq_q, blk.aq_k, blk.aq_v)
    q, k, v = (aq(y[i], codes[i]) for i, aq in enumerate(quants))
    sq, sk, sv = (aq.step_value() for aq in quants)
    amax = max(-blk.aq_q.qn, blk.aq_q.qp)
    scores, s_acc = exact_matmul(q, k.transpose(-2, -1), sq, sk, amax, amax)
    sur = (scores * blk.head_dim**-0.5).softmax(dim=-1)
    with torch.no_grad():
        p_codes = intops.softmax(s_acc, *softmax_constants(blk), blk.softmax_frac_bits, blk.aq_attn.qp)
    p = blk.aq_attn(sur, p_codes)
    o, o_acc = exact_matmul(p, v, blk.aq_attn.step_value(), sv, blk.aq_attn.qp, amax)
    o = o.transpose(1, 2).reshape(b, t, width)
    o_acc = o_acc.transpose(1, 2).reshape(b, t, width)
    with torch.no_grad():
        o_codes = intops.requant(o_acc, *pv_constants(blk), blk.proj.aq.qn, blk.proj.aq.qp)
    o = blk.proj.aq(o, o_codes)
    y, acc, steps, bias = blk.proj.forward_exact(o, *cut["proj"], share["proj"])
    ls1 = blk.ls1[:e] if blk.layer_scale else None
    x, r = residual_update(res, x, r, y, acc, blk.proj.aq.step_value(), steps, bias, ls1, blk.drop_path, blk.training)

    # ---- MLP: LayerNorm -> fc1 -> GELU table -> fc2 -> residual
    h = _norm_codes(blk.norm2, x, r, res, blk.fc1.aq)
    y, acc, steps, bias = blk.fc1.forward_exact(h, *cut["fc1"], share["fc1"])
    consts4 = gelu_constants(blk, steps, bias)
    with torch.no_grad():
        g_codes = intops.gelu(acc, *consts4, blk.gelu_in_bits)
    g = blk.fc2.aq(F.gelu(y), g_codes)
    y, acc, steps, bias = blk.fc2.forward_exact(g, *cut["fc2"], share["fc2"])
    ls2 = blk.ls2[:e] if blk.layer_scale else None
    x, _ = residual_update(res, x, r, y, acc, blk.fc2.aq.step_value(), steps, bias, ls2, blk.drop_path, blk.training)
    return x


def stem_forward(vit: "ViTBase", images: Tensor, embed: int | None) -> Tensor:
    """Patch embedding, class token and position embedding to the residual stream (integer path)."""
    from quasar_vit.models.layers import patchify

    res = vit.res_q
    p = vit.patch_embed.aq(patchify(images, vit.geometry.patch_size))
    y, acc, steps, bias = vit.patch_embed.forward_exact(p, rows=embed)
    e = y.shape[-1]
    x = torch.cat([vit.cls_token[..., :e].expand(images.shape[0], -1, -1), y], dim=1) + vit.pos_embed[..., :e]
    (mult, off, sh), start = stem_constants(vit, steps, bias, e)
    with torch.no_grad():
        tok = intops.residual_add(start[1:], acc, mult, off, sh, res.qn, res.qp)
        r = torch.cat([start[:1].expand(images.shape[0], 1, e), tok], dim=1)
    return res(x, r)


def head_forward(vit: "ViTBase", x: Tensor, embed: int | None) -> Tensor:
    """The final LayerNorm of the class token (integer) and the head's logits ``float32(acc) * s + bias``."""
    xc = x[:, 0]
    h = _norm_codes(vit.norm, xc, vit.res_q.codes(xc), vit.res_q, vit.head.aq)
    y, _, _, _ = vit.head.forward_exact(h, cols=embed)
    return y


# ---- the constants of an extracted model, for the exporter -------------------------------------------
@torch.no_grad()
def integer_constants(vit: "ViTBase") -> dict[str, Tensor]:
    """Every integer constant of an extracted (full-size) model on the integer path, by name.

    The names are the storage keys of ``weights.npz`` (:mod:`quasar_vit.export.intweights`); the
    values come from the functions the forward uses, on the same parameters.
    """
    from quasar_vit.models.layers import Block, QuantLinear
    from quasar_vit.quantization.lsq import row_steps

    def rows(lin: QuantLinear) -> tuple[Tensor, Tensor]:
        return row_steps(lin.step_lo, lin.step_hi, lin.n8_rows, lin.sections), lin.bias.detach()

    res = vit.res_q
    out: dict[str, Tensor] = {}

    def put(prefix: str, names: tuple[str, ...], values: tuple[Tensor, ...]) -> None:
        for n, v in zip(names, values):
            out[f"{prefix}.{n}"] = v

    e = vit.cls_token.shape[-1]
    affine = ("mult", "offset", "shift")
    norm = ("gain", "offset", "shift", "eps")
    stem, start = stem_constants(vit, *rows(vit.patch_embed), e)
    put("patch_embed.rq", affine, stem)
    out["residual.start"] = start
    for i, module in enumerate(vit.blocks):
        blk = cast(Block, module)
        p = f"blocks.{i}"
        ls1 = blk.ls1 if blk.layer_scale else None
        ls2 = blk.ls2 if blk.layer_scale else None
        put(f"{p}.norm1.int", norm, norm_constants(blk.norm1.weight, blk.norm1.bias, blk.norm1.eps, blk.qkv.aq, res))
        put(f"{p}.qkv.rq", affine, qkv_constants(blk, *rows(blk.qkv)))
        put(f"{p}.softmax", ("mult", "shift", "recip"), softmax_constants(blk))
        put(f"{p}.pv", affine, pv_constants(blk))
        put(f"{p}.proj.rq", affine, branch_constants(res, blk.proj.aq.step_value(), *rows(blk.proj), ls1))
        put(f"{p}.norm2.int", norm, norm_constants(blk.norm2.weight, blk.norm2.bias, blk.norm2.eps, blk.fc1.aq, res))
        put(f"{p}.fc1.rq", affine + ("table",), gelu_constants(blk, *rows(blk.fc1)))
        put(f"{p}.fc2.rq", affine, branch_constants(res, blk.fc2.aq.step_value(), *rows(blk.fc2), ls2))
    put("norm.int", norm, norm_constants(vit.norm.weight, vit.norm.bias, vit.norm.eps, vit.head.aq, res))
    return out


__all__ = ["block_forward", "stem_forward", "head_forward", "residual_update", "integer_constants"]
