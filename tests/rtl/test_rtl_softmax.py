"""The RTL integer softmax (``qv_softmax.v``) against :func:`quasar_vit.quantization.intops.softmax`, bit for bit.

Rows of score accumulators of realistic sizes and spreads, with constants from
:func:`quasar_vit.quantization.intconst.softmax_constants`, are streamed through the unit's three
passes; its codes must be the reference's exactly.  The integer form the RTL computes of the exp2
argument is checked against the reference's float form first, and the RTL's EXP2 ROM against
:func:`intops.exp2_table`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from quasar_vit.quantization import intconst, intops
from quasar_vit.rtl import sim, synth, tools
from quasar_vit.rtl.modules import sources, tb_sources

F = 6
U_MAX = (intops.EXP_BITS + 1) << F
QA_W = 26
DIV_WAIT = 11 + QA_W + 17  # the module header's figure
LATENCY = 11


def _constants(s_q: float, s_k: float, head_dim: int, s_attn: float) -> tuple[int, int, int]:
    m, s, qa = intconst.softmax_constants(s_q, s_k, head_dim**-0.5, s_attn, frac_bits=F)
    return int(m), int(s), int(qa)


def _u_int(a: np.ndarray, m: int, s: int) -> np.ndarray:
    """The RTL's exp2 argument: ``clamp(((max - a) * M + 2**(S-1)) >> S, 0, U_MAX)`` in exact integers."""
    mx = int(a.max())
    return np.array([min(max(((mx - int(x)) * m + (1 << (s - 1))) >> s, 0), U_MAX) for x in a], np.int64)


def _u_ref(a: np.ndarray, m: int, s: int) -> np.ndarray:
    """The same as :func:`intops.softmax` computes it (float64 holding integers)."""
    mm = m * intops.pow2(-s)
    af = a.astype(np.float64)
    return np.clip(np.floor(af * -mm + (af.max() * mm + 0.5)), 0, U_MAX).astype(np.int64)


def _rows(rng: np.random.Generator) -> list[tuple[np.ndarray, tuple[int, int, int], int, int]]:
    """(scores, (M, S, Qa), hi, gaps) per row."""
    lim = 2**20 - 1
    consts = [
        (_constants(0.02, 0.02, 16, 1 / 63), 63),
        (_constants(0.1, 0.05, 64, 1 / 63), 63),
        (_constants(0.2, 0.2, 16, 1 / 63), 63),
        (_constants(0.05, 0.15, 64, 1 / 255), 63),  # a finer step than the codes reach: saturates at hi
        (_constants(0.2, 0.1, 64, 1 / 255), 255),
    ]
    rows = []
    for n in (17, 197):
        for sigma in (10, 1000, 100000):
            for c, hi in consts[:3] if n == 197 else consts:
                a = np.clip(np.round(rng.normal(size=n) * sigma), -lim, lim).astype(np.int64)
                rows.append((a, c, hi, int(rng.random() < 0.5)))
    c0, hi0 = consts[1]
    rows.append((np.array([12345], np.int64), c0, hi0, 0))  # N = 1
    rows.append((np.array([-(2**20) + 1], np.int64), c0, hi0, 0))
    rows.append((np.array([5, -7], np.int64), c0, hi0, 0))  # N = 2
    rows.append((np.array([lim, -lim], np.int64), c0, hi0, 1))
    rows.append((np.full(17, -4321, np.int64), c0, hi0, 0))  # all equal
    dom = np.round(rng.normal(size=197) * 100).astype(np.int64)
    dom[rng.integers(197)] = 200000  # one dominant score
    rows.append((dom, c0, hi0, 0))
    for c, hi in consts:  # the largest spread the unit takes
        rows.append((rng.integers(-lim, lim + 1, 17), c, hi, 1))
    return rows


def test_exp_argument_integer_form_matches_intops() -> None:
    """``floor(a * -m + (max * m + 0.5))`` (intops) is ``((max - a) * M + 2**(S-1)) >> S`` for these constants."""
    rng = np.random.default_rng(1)
    for a, (m, s, _), _, _ in _rows(rng):
        np.testing.assert_array_equal(_u_int(a, m, s), _u_ref(a, m, s))


def test_exp2_rom_is_the_table() -> None:
    """The RTL's case-statement ROM holds :func:`intops.exp2_table` (F = 6)."""
    text = tools.hdl_file("qv_softmax.v").read_text()
    rom = {int(k): int(v) for k, v in re.findall(r"6'd(\d+): exp2_rom = 17'd(\d+);", text)}
    assert sorted(rom) == list(range(1 << F))
    np.testing.assert_array_equal([rom[i] for i in range(1 << F)], intops.exp2_table(F))


def test_softmax_matches_intops(tmp_path: Path) -> None:
    """The RTL softmax's codes are :func:`intops.softmax`'s, bit for bit, over rows of every size and spread."""
    rng = np.random.default_rng(2024)
    rows = _rows(rng)
    stim: list[int] = [len(rows)]
    want, sums = [], []
    for a, (m, s, qa), hi, gaps in rows:
        assert 0 < m < 2**17 and 1 <= s <= 62 and 0 < qa < 2**QA_W
        stim += [a.size, m, s, qa, hi, gaps, *a.tolist()]
        want.append(intops.softmax(a[None, :].astype(np.float64), m, s, qa, F, hi)[0].astype(np.int64))
        tot = int(intops.exp_table(F)[_u_int(a, m, s)].sum())  # s and inv in exact integers
        sums.append((tot, ((qa << intops.RECIP_BITS) + (tot >> 1)) // tot))
    exe = sim.build("tb_qv_softmax", tb_sources("qv_softmax"), dict(QA_W=QA_W))
    out = sim.run(exe, np.array(stim), tmp_path)
    assert out.size == sum(w.size + 5 for w in want)
    pos = 0
    nonzero = 0
    for i, w in enumerate(want):
        got = out[pos : pos + w.size]
        div_wait, latency, last_ok, row_sum, inv = out[pos + w.size : pos + w.size + 5]
        pos += w.size + 5
        np.testing.assert_array_equal(got, w, err_msg=f"row {i} (N = {w.size})")
        assert (row_sum, inv) == sums[i], f"row {i}: the row sum and the reciprocal"  # stricter than the codes
        assert (div_wait, latency, last_ok) == (DIV_WAIT, LATENCY, 1), f"row {i}"
        nonzero += int((got > 0).sum())
    assert nonzero > 2 * len(want)  # not trivially all zero


def test_softmax_synthesises_to_two_dsps() -> None:
    """Yosys maps the unit to two DSP48E2 (the exp2 argument's and the probability's products), no BRAM (~4 s)."""
    r = synth.synthesise("qv_softmax", sources("qv_softmax"), dict(QA_W=QA_W))
    assert r["dsp"] == 2
    assert r["bram36"] == 0
    assert r["lut"] < 1500
