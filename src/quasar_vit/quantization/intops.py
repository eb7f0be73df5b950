"""The integer nonlinear arithmetic of ``model.nonlinear: integer``: one definition, every back end.

With ``integer`` nonlinear ops, everything between two weight GEMMs is integer arithmetic on the
GEMMs' exact accumulators: LayerNorm, Softmax, GELU, the residual adds, the layer scaling and every
requantisation to a 6-bit code.  The functions here *are* that arithmetic.  They take NumPy arrays
or torch tensors alike (int64, shapes ``[..., channels]``) and use only ``+ - *``, shifts, floor
division, comparisons, clamping, row maxima and sums and table look-ups, so the training forward
(torch, CPU or GPU), the NumPy reference engine and the ``torch.export`` deploy model run these very
lines and agree bit for bit; the ONNX graphs and the RTL implement the same steps and are checked
against them.  Only the float constants of a layer (steps, LayerNorm weights, layer scales) become
integers, once, by :mod:`quasar_vit.quantization.intconst`.

The formats (``docs/design.md``, "Integer nonlinear ops"):

* **requantiser** ``requant(acc, M, B, S)`` = ``clamp((acc * M + B) >> S)``: a per-row fixed-point
  multiplier ``|M| < 2**17`` (an 18-bit signed DSP48E2 port), a per-row shift ``S`` and an offset
  ``B`` that folds in the bias and the rounding half: ``round(acc * m + b)`` for ``m = M / 2**S``.
  It turns a GEMM accumulator into a 6-bit code (q, k, v), a GELU table index or a residual update
  (the layer scale folded into ``M`` and ``B``).
* **residual stream**: int16 codes with one step ``s_r`` for the whole network (calibrated, not
  learned).  One step means the residual adds are plain saturating integer adds; 16 bits leave
  ~2**13 levels below the calibrated maximum (calibrated with 4x headroom), far finer than the
  6-bit codes LayerNorm makes of it, and ``sum(R**2)`` fits 41 bits for 1024 channels.
* **LayerNorm** (I-LayerNorm-like, one ``rsqrt`` per row): ``C = E*R - sum(R)``,
  ``V = E*sum(R**2) - sum(R)**2 + EPS``; ``V`` is normalised by an even shift to a 10-bit index of
  the table :data:`RSQRT`, so ``C / sqrt(V)`` (= ``(x - mu) / sigma``) becomes a fixed-point number
  with :data:`LN_FRAC` fraction bits, then the per-channel affine ``(Z * G + Bt) >> SG`` makes the
  6-bit code of the next GEMM's input.
* **Softmax** (exp2 table + one reciprocal per row): ``u = round((max - A) * c * log2 e * 2**F)``,
  ``e = EXP2[u mod 2**F] >> (u >> F)`` with ``EXP2[f] = round(2**16 * 2**(-f / 2**F))``; the row sum
  ``s`` gives one rounded division ``inv = (Qa * 2**16 + s // 2) // s``, and each probability's
  6-bit code is ``(e * inv + 2**31) >> 32`` (``Qa = round(2**16 / s_attn)``).
* **GELU** (table fused with requantisation, as HG-PIPE): the fc1 accumulator is requantised to a
  ``gelu_in_bits`` index whose range covers ``[-4, (qp + 1) * s_out]`` (below, GELU is within 1.3e-4
  of 0; above, the output code saturates), and a table of ``2**gelu_in_bits`` entries gives the
  6-bit code of fc2's input.

Exactness: the element-wise steps run on float64 arrays that hold integers; every operand and
result stays below 2**53 (by the bit widths: codes of at most 20 bits, multipliers of 17 bits,
accumulators below 2**24), so each product, sum and power-of-two scaling is exact and ``floor``
is the shift.  The per-row values that can exceed 2**53 (LayerNorm's ``V``) and the softmax's
per-row division are int64.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

MULT_BITS = 17  # |M| < 2**17: requantisation multipliers fit an 18-bit signed DSP48E2 port
RSQRT_INDEX_BITS = 10  # LayerNorm: the rsqrt table has 2**10 entries (one BRAM18 of 18-bit words)
RSQRT_BITS = 16  # RSQRT[t] = round(2**16 / sqrt(t))
LN_FRAC = 12  # fraction bits of the normalised value (x - mu) / sigma
EXP_BITS = 16  # EXP2[f] = round(2**16 * 2**(-f / 2**F)): a probability's numerator, 17 bits
RECIP_BITS = 16  # softmax: Qa = round(2**16 / s_attn), inv = Qa * 2**16 // sum, code = e * inv >> 32
GELU_RANGE = 4.0  # the GELU table reaches down to -4 (GELU(-4) = -1.3e-4)
GELU_TOP_MARGIN = 0.25  # ... and up past the saturating input: gelu(x) >= x - 0.17 for x >= 0
_V_LIMIT_BITS = 62  # LayerNorm: the normalising shifts cover V < 2**62


# ---- tables: constants of the arithmetic, computed once ------------------------------------------
def _round_div_sqrt(num: int, t: int) -> int:
    """``round(num / sqrt(t))`` (half up) in exact integer arithmetic."""
    r = int(round(num / math.sqrt(t)))  # a float guess, then exact corrections
    while t * (2 * r - 1) ** 2 > 4 * num * num:  # r - 1/2 > num / sqrt(t)
        r -= 1
    while t * (2 * r + 1) ** 2 <= 4 * num * num:  # r + 1/2 <= num / sqrt(t)
        r += 1
    return r


def _round_pow2_frac(e_int: int, f: int, den: int) -> int:
    """``round(2**(e_int - f / den))`` (half up) in exact integer arithmetic (``e_int >= 1``)."""
    r = int(round(2.0 ** (e_int - f / den)))
    # r - 1/2 <= 2**(e - f/den) < r + 1/2  <=>  (2r - 1)**den <= 2**(den*(e+1) - f) < (2r + 1)**den
    target = 1 << (den * (e_int + 1) - f)
    while (2 * r - 1) ** den > target:
        r -= 1
    while (2 * r + 1) ** den <= target:
        r += 1
    return r


@lru_cache(maxsize=None)
def rsqrt_table() -> np.ndarray:
    """``RSQRT[t] = round(2**RSQRT_BITS / sqrt(t))`` for ``t`` in ``[1, 2**RSQRT_INDEX_BITS)``, ``RSQRT[0] = 2**RSQRT_BITS``.

    Computed in exact integer arithmetic, so it is the same on every machine.  Index 0 is reached
    only by a constant row with ``EPS = 0`` (its centred values are all 0).
    """
    one = 1 << RSQRT_BITS
    out = np.array([one] + [_round_div_sqrt(one, t) for t in range(1, 2**RSQRT_INDEX_BITS)], np.int64)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=None)
def exp2_table(frac_bits: int) -> np.ndarray:
    """``EXP2[f] = round(2**EXP_BITS * 2**(-f / 2**frac_bits))`` for ``f`` in ``[0, 2**frac_bits)`` (exact integers)."""
    den = 1 << frac_bits
    out = np.array([_round_pow2_frac(EXP_BITS, f, den) for f in range(den)], np.int64)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=None)
def exp_table(frac_bits: int) -> np.ndarray:
    """``EXPU[u] = EXP2[u mod 2**F] >> (u >> F)`` for ``u`` in ``[0, (EXP_BITS + 1) * 2**F]``: the exp2
    table and its shifter as one table (the software form of the same values; the fabric keeps the
    ``2**F``-entry table and a shifter)."""
    u = np.arange(((EXP_BITS + 1) << frac_bits) + 1, dtype=np.int64)
    out = exp2_table(frac_bits)[u & ((1 << frac_bits) - 1)] >> (u >> frac_bits)
    out.setflags(write=False)
    return out


# ---- the array library behind an argument (NumPy or torch) ---------------------------------------
def _is_torch(a: Any) -> bool:
    """Whether ``a`` is a torch tensor (anything that is not a NumPy array or a number)."""
    return not isinstance(a, (np.ndarray, np.generic, int, float))


_TORCH_TABLES: dict[tuple[int, str], tuple[Any, Any]] = {}  # (the table itself, its tensor)


def _table(table: Any, a: Any) -> Any:
    """``table`` as a float64 array of ``a``'s kind (and device); the module's tables are converted once."""
    if not _is_torch(a):
        return np.asarray(table, np.float64)
    import torch

    if _is_torch(table):
        return table.to(device=a.device, dtype=torch.float64)
    if type(a) is not torch.Tensor:  # traced (torch.export's fake tensors): a constant of the graph, not cached
        return torch.tensor(np.array(table, np.float64), device=a.device)
    key = (id(table), str(a.device))
    hit = _TORCH_TABLES.get(key)
    if hit is None or hit[0] is not table:
        hit = _TORCH_TABLES[key] = (table, torch.tensor(np.array(table, np.float64), device=a.device))
    return hit[1]


def _take(table: Any, idx: Any) -> Any:
    """``table[idx]`` for an index array holding integers (as floats)."""
    t = _table(table, idx)
    return t[idx.long()] if _is_torch(idx) else t[idx.astype(np.int64)]


def clamp(a: Any, lo: int, hi: int) -> Any:
    return a.clamp(lo, hi) if _is_torch(a) else np.clip(a, lo, hi)


def row_sum(a: Any) -> Any:
    """Sum over the last axis, kept as an axis of length 1."""
    return a.sum(-1, keepdim=True) if _is_torch(a) else a.sum(-1, keepdims=True)


def row_max(a: Any) -> Any:
    return a.amax(-1, keepdim=True) if _is_torch(a) else a.max(-1, keepdims=True)


def pow2(e: Any) -> Any:
    """``2.0 ** e`` (exact) for an integer exponent or an array of them (as floats)."""
    if isinstance(e, (int, float)):
        return 2.0 ** float(e)
    if _is_torch(e):
        import torch

        return torch.pow(2.0, e.double())
    return np.power(2.0, np.asarray(e, np.float64))


def to_int(a: Any) -> Any:
    """Per-row values as exact int64 (for the few steps whose operands may exceed 2**53)."""
    return a.long() if _is_torch(a) else np.asarray(a).astype(np.int64)


def to_float(a: Any) -> Any:
    """``a`` as float64 (an int64 per-row value, exact below 2**53)."""
    if isinstance(a, (int, float)):
        return float(a)
    return a.double() if _is_torch(a) else np.asarray(a, np.float64)


# Fused element-wise steps.  ``(v * M + B) >> S`` is evaluated as ``floor(v * (M / 2**S) + B / 2**S)``:
# scaling by a power of two is exact, so with every integer below 2**53 the two are the same number,
# and the per-row constants are scaled once instead of every element once more.  Each step makes one
# new float64 array and works in place on it (a CPU pays a page fault per fresh large array).
def _axpb(a: Any, m: Any, b: Any) -> Any:
    """A new float64 array ``a * m + b`` (``m``, ``b`` broadcast per row)."""
    if _is_torch(a):
        import torch

        a64 = a if a.dtype == torch.float64 else a.double()
        m = m if _is_torch(m) else torch.as_tensor(m, dtype=torch.float64, device=a.device)
        b = b if _is_torch(b) else torch.as_tensor(b, dtype=torch.float64, device=a.device)
        return torch.addcmul(b.double(), a64, m.double())
    return np.asarray(a, np.float64) * m + b


def _floor_clamp_(v: Any, lo: int | None, hi: int | None) -> Any:
    """``v = clamp(floor(v), lo, hi)`` in place."""
    if _is_torch(v):
        v.floor_()
        return v if lo is None else v.clamp_(lo, hi)
    np.floor(v, out=v)
    return v if lo is None else np.clip(v, lo, hi, out=v)


# ---- the ops ----------------------------------------------------------------------------------------
def requant(acc: Any, mult: Any, offset: Any, shift: Any, lo: int, hi: int) -> Any:
    """``clamp((acc * mult + offset) >> shift, lo, hi)``: an accumulator to a code, per row.

    Args:
        acc: accumulators ``[..., rows]`` (holding integers, ``|acc| < 2**35``).
        mult, offset, shift: per-row constants ``[rows]`` (or scalars), from
            :func:`quasar_vit.quantization.intconst.affine`: ``|mult| < 2**17``; ``offset`` holds the
            bias and the rounding half.
        lo, hi: the code range.
    """
    scale = pow2(-shift)
    return _floor_clamp_(_axpb(acc, mult * scale, offset * scale), lo, hi)


def layernorm(r: Any, gain: Any, offset: Any, shift: Any, eps: Any, lo: int, hi: int) -> Any:
    """Integer LayerNorm of residual codes ``r`` ``[..., E]`` to codes in ``[lo, hi]``.

    Per row: ``C = E*r - sum(r)``, ``V = E*sum(r**2) - sum(r)**2 + EPS`` (``= E**2 * (var + eps)``),
    ``k`` the even shift that brings ``V`` below ``2**RSQRT_INDEX_BITS``,
    ``Z = round(C * RSQRT[V >> 2k] / 2**(RSQRT_BITS - LN_FRAC + k))`` (``(x - mu) / sigma`` with
    ``LN_FRAC`` fraction bits); per channel: ``clamp((Z * G + Bt) >> SG)``.

    Args:
        r: residual codes (holding integers, ``|r| < 2**19``, ``E <= 1024``).
        gain, offset: per channel ``[E]``: ``G = round(gamma / s_out * 2**(SG - LN_FRAC))``,
            ``Bt = round(beta / s_out * 2**SG) + 2**(SG - 1)``.
        shift: ``SG``.
        eps: ``EPS = round(eps * E**2 / s_r**2)``: the float LayerNorm's epsilon in these units.
        lo, hi: the code range of the next GEMM's input.
    """
    e = r.shape[-1]
    s1 = row_sum(r)  # exact: |s1| < 2**29
    s1i = to_int(s1)
    v = e * to_int(row_sum(r * r)) - s1i * s1i + to_int(eps)  # E**2 * (var + eps), int64, < 2**62
    k = _even_normaliser(v)
    rs = _take(rsqrt_table(), to_float(v >> (2 * k)))  # 2**RSQRT_BITS / sqrt(top), top < 2**INDEX
    zs = rs * pow2(-to_float(RSQRT_BITS - LN_FRAC + k))  # per row
    # Z = round((E*r - s1) * zs): (E*r - s1) * zs = r * (E*zs) - s1*zs, both exact
    z = _floor_clamp_(_axpb(r, e * zs, 0.5 - s1 * zs), None, None)
    scale = pow2(-shift)
    return _floor_clamp_(_axpb(z, gain * scale, offset * scale), lo, hi)


def _even_normaliser(v: Any) -> Any:
    """Per row, the smallest ``k >= 0`` with ``v >> 2k < 2**RSQRT_INDEX_BITS`` (a leading-zero count, halved).

    ``v`` is int64.  The bit length comes from the float exponent of ``v`` (a float64 of ``v`` above
    2**53 may round up to the next power of two, never below ``v``'s bit length), then one integer
    check corrects it: the result is exact.
    """
    if _is_torch(v):
        bits = v.double().frexp()[1].long()  # bit length of v (or one more, see above)
    else:
        bits = np.frexp(v.astype(np.float64))[1].astype(np.int64)
    k = clamp((bits - RSQRT_INDEX_BITS + 1) >> 1, 0, 62)
    k = clamp(k - 1, 0, 62)  # the estimate may be one too large; step back, then up while needed
    return k + ((v >> (2 * k)) >= (1 << RSQRT_INDEX_BITS))


def softmax(a: Any, mult: Any, shift: Any, recip: Any, frac_bits: int, hi: int) -> Any:
    """Integer softmax over the last axis of score accumulators ``a`` to unsigned codes ``[0, hi]``.

    ``u = clamp(round((max - a) * M / 2**S), 0, (EXP_BITS + 1) * 2**F)``,
    ``e = EXP2[u mod 2**F] >> (u >> F)`` (:func:`exp_table`), ``s = sum(e)``,
    ``inv = (Qa * 2**RECIP_BITS + s // 2) // s`` (one division per row),
    ``code = clamp(round(e * inv / 2**(2 * RECIP_BITS)), 0, hi)``.

    Args:
        a: ``q k^T`` accumulators ``[..., keys]`` (holding integers, ``|a| < 2**20``).
        mult, shift: ``round(s_q * s_k * attn_scale * log2(e) * 2**frac_bits)`` as ``M / 2**S``.
        recip: ``Qa = round(2**RECIP_BITS / s_attn)``.
        frac_bits: ``F``, fraction bits of the exp2 argument (the table has ``2**F`` entries).
        hi: the largest code.
    """
    m = mult * pow2(-shift)
    u = _floor_clamp_(_axpb(a, -m, row_max(a) * m + 0.5), 0, (EXP_BITS + 1) << frac_bits)  # (max - a) * M / 2**S
    ex = _take(exp_table(frac_bits), u)  # EXP2[u mod 2**F] >> (u >> F)
    s = to_int(row_sum(ex))  # >= 2**EXP_BITS: the row's maximum contributes EXP2[0]; < 2**26
    inv = ((to_int(recip) << RECIP_BITS) + (s >> 1)) // s  # the one division of the row (int64)
    return _floor_clamp_(_axpb(ex, to_float(inv) * pow2(-2 * RECIP_BITS), 0.5), 0, hi)


def gelu(acc: Any, mult: Any, offset: Any, shift: Any, table: Any, in_bits: int) -> Any:
    """GELU fused with requantisation: fc1 accumulators -> an ``in_bits`` table index -> the table's code.

    ``offset`` includes the index of 0 (:func:`quasar_vit.quantization.intconst.gelu_table`).
    """
    return _take(table, requant(acc, mult, offset, shift, 0, (1 << in_bits) - 1))


def residual_add(r: Any, acc: Any, mult: Any, offset: Any, shift: Any, lo: int, hi: int) -> Any:
    """``clamp(r + requant(acc))``: a branch's (layer-scaled) output added to the residual codes."""
    d = requant(acc, mult, offset, shift, lo, hi)
    return clamp(d + r, lo, hi)


__all__ = [
    "MULT_BITS",
    "RSQRT_INDEX_BITS",
    "RSQRT_BITS",
    "LN_FRAC",
    "EXP_BITS",
    "RECIP_BITS",
    "GELU_RANGE",
    "GELU_TOP_MARGIN",
    "rsqrt_table",
    "exp2_table",
    "exp_table",
    "requant",
    "layernorm",
    "softmax",
    "gelu",
    "residual_add",
    "clamp",
    "row_sum",
    "row_max",
]
