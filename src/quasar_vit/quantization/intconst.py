"""Float parameters -> the integer constants of :mod:`quasar_vit.quantization.intops` (torch).

The training forward (every step, from the current parameters) and the exporter (once, to write
``weights.npz``) derive the constants with these functions, so the exported integers are the ones
the model trained with.  Everything is computed in float64 from the float32 parameters with
``frexp``, products, quotients, powers of two and ``round`` (half to even) only: exactly specified
IEEE operations, so CPU and GPU derive the same integers (held in float64 tensors); GELU's table is the one exception that evaluates ``erf`` (float64, a table of
``2**gelu_in_bits`` entries, exported as integers, so the back ends never evaluate it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from quasar_vit.quantization.intops import GELU_RANGE, GELU_TOP_MARGIN, LN_FRAC, MULT_BITS, RECIP_BITS

_MAX_SHIFT = 62


def _f64(x: Tensor | float) -> Tensor:
    return x.detach().to(torch.float64) if isinstance(x, Tensor) else torch.tensor(float(x), dtype=torch.float64)


def _pow2(e: Tensor) -> Tensor:
    """``2.0 ** e`` (exact) for an integer-valued tensor ``e``."""
    return torch.pow(2.0, e.to(torch.float64))


def fixed_point(m: Tensor | float) -> tuple[Tensor, Tensor]:
    """``(M, S)`` with ``M / 2**S`` the closest ``MULT_BITS``-bit fixed-point value of ``m`` (float64 tensors).

    ``S = clamp(MULT_BITS - e, 1, 62)`` for ``m = f * 2**e``, ``0.5 <= |f| < 1``; ``M = round(m * 2**S)``
    (half to even), limited to ``|M| < 2**MULT_BITS``: ``|M|`` lies in ``[2**(MULT_BITS-1), 2**MULT_BITS)``
    for every ``m`` in range, a smaller one rounds towards 0, a larger one saturates.

    Args:
        m: real multipliers (any shape, any sign; float32 or float64).
    """
    m = _f64(m)
    s = (MULT_BITS - torch.frexp(m)[1].to(torch.float64)).clamp(1, _MAX_SHIFT)
    lim = 2.0**MULT_BITS - 1
    return torch.round(m * _pow2(s)).clamp(-lim, lim), s


def affine(m: Tensor | float, b: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
    """``(M, B, S)`` of the requantiser ``(acc * M + B) >> S ~= round(acc * m + b)``, per row.

    Returned as float64 tensors holding the integers (the form :mod:`intops` computes with);
    ``B = round(b * 2**S) + 2**(S - 1)`` folds in the rounding half.

    Args:
        m: per-row multipliers (the ratio of the accumulator's step to the output's).
        b: per-row offsets in output steps (the bias over the output step), broadcastable to ``m``.
    """
    mult, s = fixed_point(m)
    scale = _pow2(s)
    return mult, torch.round(_f64(b) * scale) + 0.5 * scale, s


def layernorm_constants(
    gamma: Tensor, beta: Tensor, s_out: Tensor | float, s_res: Tensor | float, eps: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(G [E], Bt [E], SG, EPS)`` of :func:`intops.layernorm` for the active ``E = len(gamma)`` channels.

    ``G = round(gamma / s_out * 2**(SG - LN_FRAC))`` with ``SG`` the shift that puts ``max |G|`` just
    below ``2**MULT_BITS``; ``Bt = round(beta / s_out * 2**SG) + 2**(SG - 1)``;
    ``EPS = round(eps * E**2 / s_res**2)``.
    """
    e = gamma.shape[-1]
    g, b = _f64(gamma) / _f64(s_out), _f64(beta) / _f64(s_out)
    top = g.abs().max().clamp_min(2.0**-40)
    sg = (LN_FRAC + MULT_BITS - torch.frexp(top)[1].to(torch.float64)).clamp(LN_FRAC + 1, _MAX_SHIFT)
    lim = 2.0**MULT_BITS - 1
    gain = torch.round(g * _pow2(sg - LN_FRAC)).clamp(-lim, lim)
    scale = _pow2(sg)
    offset = torch.round(b * scale) + 0.5 * scale
    eps_int = torch.round(torch.tensor(float(eps) * e * e, dtype=torch.float64) / _f64(s_res) ** 2)
    return gain, offset, sg, eps_int


def softmax_constants(
    s_q: Tensor | float, s_k: Tensor | float, attn_scale: float, s_attn: Tensor | float, frac_bits: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``(M, S, Qa)`` of :func:`intops.softmax`: the exp2 argument's multiplier and the probability
    step's reciprocal ``Qa = round(2**RECIP_BITS / s_attn)``."""
    c = _f64(s_q) * _f64(s_k) * float(attn_scale) * (math.log2(math.e) * 2.0**frac_bits)
    mult, s = fixed_point(c)
    return mult, s, torch.round(2.0**RECIP_BITS / _f64(s_attn))


def gelu_table(s_out: Tensor | float, in_bits: int, lo: int, hi: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(table, s_g, zero)`` of GELU fused with requantisation.

    The table's ``2**in_bits`` entries cover ``[-GELU_RANGE, (hi + 1) * s_out + GELU_TOP_MARGIN]``:
    index ``i`` stands for ``x = (i - zero) * s_g`` with ``s_g`` the range over ``2**in_bits`` and
    ``zero = round(GELU_RANGE / s_g)``, and holds ``clamp(round(gelu(x) / s_out), lo, hi)``.  Below
    the range GELU is within 1.3e-4 of 0; above it the code saturates at ``hi`` (``gelu(x) >= x -
    0.17`` for ``x >= 0``, so the top of the range is past ``(hi + 0.5) * s_out``): the clamped
    index loses nothing, and inside the range the index step is ``s_g``, a few times finer than
    ``s_out``.

    Returns:
        The table (int64), the index step (float64, for fc1's requantiser) and the index of 0 (int64).
    """
    so = _f64(s_out)
    sg = (GELU_RANGE + (hi + 1) * so + GELU_TOP_MARGIN) / 2**in_bits
    zero = torch.round(GELU_RANGE / sg)
    x = (torch.arange(2**in_bits, dtype=torch.float64, device=so.device) - zero) * sg
    y = 0.5 * x * (1.0 + torch.special.erf(x / math.sqrt(2.0)))
    return torch.round(y / so).clamp(lo, hi), sg, zero


def residual_codes(x: Tensor, s_res: Tensor | float, lo: int, hi: int) -> Tensor:
    """``clamp(round(x / s_res))`` in float32 (round half to even), as float64: a float tensor on the
    residual grid (the class token plus its position embedding, the position embeddings)."""
    s = s_res.detach().float() if isinstance(s_res, Tensor) else torch.tensor(float(s_res))
    return torch.clamp(torch.round(x.detach().float() / s), lo, hi).double()


__all__ = [
    "fixed_point",
    "affine",
    "layernorm_constants",
    "softmax_constants",
    "gelu_table",
    "residual_codes",
]
