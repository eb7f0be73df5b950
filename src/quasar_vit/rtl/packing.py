"""The array's operand encoding: signed 4-bit weights and 6-bit codes as unsigned fields.

The W4A6 array (``hdl/qv_dot_array.v``) multiplies unsigned operands only: a signed nibble ``w``
enters as ``w' = w + 8`` and a signed 6-bit code ``a`` as ``a' = a + 32`` (the sign bit inverted:
no logic), unsigned nibbles (the low nibble of an 8-bit row) and unsigned codes (softmax
probabilities) as they are.  Unsigned fields let four products share one DSP48E2 with no borrow
between them (``hdl/qv_mul_pack4.v``).  The array returns, per dot product over ``K`` terms, the
sum ``S' = sum w'a'`` and the operand sums ``SW = sum w'`` (per row) and ``CA = sum a'`` (per
token); the signed dot product is then

    ``sum w a = S' - oa * SW - ow * CA + K * ow * oa``

with ``ow``, ``oa`` the offsets (8 or 0, 32 or 0).  An 8-bit row is two nibble rows, the signed
high nibble and the unsigned low one: ``sum w a = 16 * (high row's) + (low row's)``.
"""

from __future__ import annotations

import numpy as np

from quasar_vit.hardware.engine import nibble_split

W_OFFSET = 8  # a signed nibble w in [-8, 7] enters as w + 8
A_OFFSET = 32  # a signed 6-bit code a in [-32, 31] enters as a + 32


def weight_offset(signed: bool) -> int:
    return W_OFFSET if signed else 0


def code_offset(signed: bool) -> int:
    return A_OFFSET if signed else 0


def encode(values: np.ndarray, offset: int, bits: int) -> np.ndarray:
    """``values + offset``, checked to be an unsigned ``bits``-bit field."""
    out = np.asarray(values, np.int64) + offset
    if out.size and (out.min() < 0 or out.max() >= 1 << bits):
        raise ValueError(f"operands out of range for {bits}-bit fields with offset {offset}")
    return out


def nibble_rows(w: np.ndarray, is8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An ``[M, K]`` weight matrix as nibble rows for the array.

    Returns:
        ``(rows, signed, owner)``: the ``[N, K]`` nibble rows (4-bit rows as they are; an 8-bit row
        as its signed high nibble then its unsigned low nibble), whether each nibble row is signed,
        and the index of the weight row each came from.
    """
    hi, lo = (np.asarray(v, np.int64) for v in nibble_split(w))
    rows, signed, owner = [], [], []
    for m, (row, eight) in enumerate(zip(np.asarray(w, np.int64), np.asarray(is8, bool))):
        if eight:
            rows += [hi[m], lo[m]]
            signed += [True, False]
            owner += [m, m]
        else:
            rows.append(row)
            signed.append(True)
            owner.append(m)
    return np.array(rows, np.int64).reshape(len(rows), -1), np.array(signed), np.array(owner, np.int64)


def signed_dot(s: np.ndarray, sw: np.ndarray, ca: np.ndarray, k: int, ow: np.ndarray, oa: int) -> np.ndarray:
    """``sum w a`` from the array's sums: ``S' - oa SW - ow CA + K ow oa``.

    Args:
        s: ``[T, N]`` sums of ``w'a'`` (token-major, as the array emits them).
        sw: ``[N]`` sums of ``w'``; ``ca``: ``[T]`` sums of ``a'``.
        k: the number of terms; ``ow``: ``[N]`` per-row weight offsets; ``oa``: the code offset.
    """
    ow = np.asarray(ow, np.int64)
    return s - oa * sw[None, :] - ca[:, None] * ow[None, :] + k * ow[None, :] * oa


def combine_nibbles(dots: np.ndarray, signed: np.ndarray, owner: np.ndarray, rows: int) -> np.ndarray:
    """``[T, M]`` dot products of the weight rows from the ``[T, N]`` ones of their nibble rows
    (an 8-bit row's high nibble row counts 16 times, see :func:`nibble_rows`)."""
    out = np.zeros((dots.shape[0], rows), np.int64)
    high = np.zeros(len(owner), bool)
    high[:-1] = (owner[:-1] == owner[1:]) & signed[:-1]  # a signed row followed by its own low nibble
    np.add.at(out.T, owner, (dots * np.where(high, 16, 1)[None, :]).T)
    return out
