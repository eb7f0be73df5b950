"""The core's softmax step (``qv_sm_path.v``, ``qv_gemm_core`` mode 6) against
:func:`quasar_vit.quantization.intops.softmax`, bit for bit.

Score matrices of realistic sizes and spreads, with constants from
:func:`quasar_vit.quantization.intconst.softmax_constants`, are loaded into the score memory and
run through the step's three phases; its P codes in the activation memory must be the reference's
exactly, and each row's reciprocal (its one division) the exact integer one.  The integer form the
RTL computes of the exp2 argument is checked against the reference's float form first, and the
RTL's EXP2 ROM against :func:`intops.exp2_table`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from quasar_vit.quantization import intconst, intops
from quasar_vit.rtl import synth, tools
from quasar_vit.rtl.gemm import Layer, run_layers
from quasar_vit.rtl.layout import GemmShape
from quasar_vit.rtl.modules import sources
from quasar_vit.rtl.schedule import SM_LAUNCH, softmax_cycles

F = 6
U_MAX = (intops.EXP_BITS + 1) << F
LIM = 2**19 - 1  # the score memory's 20-bit words
SHAPE = GemmShape(R=16, T=4, KP=8, WB=64, tiles_max=50, ch_max=32, wch_max=8)  # 200 tokens


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


CONSTS = [
    ((0.02, 0.02, 16, 1 / 63), 63),
    ((0.1, 0.05, 64, 1 / 63), 63),
    ((0.2, 0.2, 16, 1 / 63), 63),
    ((0.05, 0.15, 64, 1 / 255), 63),  # a finer step than the codes reach: saturates at hi
    ((0.1, 0.1, 64, 1 / 31), 31),
]


def _matrix(rng: np.random.Generator, n: int) -> np.ndarray:
    """``[n, n]`` scores: rows of spreads 10, 1000 and 100000 in turn, then (as far as ``n`` reaches)
    a row of equal scores, one with a dominant score, one over the whole range, one at both limits."""
    sig = np.array([10, 1000, 100000])[np.arange(n) % 3]
    a = np.clip(np.round(rng.normal(size=(n, n)) * sig[:, None]), -LIM, LIM).astype(np.int64)
    special = [np.full(n, -4321), rng.integers(-LIM, LIM + 1, n), np.resize([LIM, -LIM], n)]
    dom = np.round(rng.normal(size=n) * 100).astype(np.int64)
    dom[rng.integers(n)] = 200000
    for i, row in enumerate([*special, dom][: max(0, n - 1)]):
        a[1 + i] = row
    return a


def _cases(rng: np.random.Generator) -> list[tuple[np.ndarray, tuple[int, int, int], int]]:
    """(scores, (M, S, Qa), hi): every constant set at 17 tokens, three at 197, and 1 and 2 tokens."""
    out = [(_matrix(rng, 17), _constants(*c), hi) for c, hi in CONSTS]
    out += [(_matrix(rng, 197), _constants(*c), hi) for c, hi in CONSTS[:3]]
    c, hi = CONSTS[1]
    out += [(np.array([[12345]]), _constants(*c), hi), (np.array([[5, -7], [LIM, -LIM]]), _constants(*c), hi)]
    return out


def test_exp_argument_integer_form_matches_intops() -> None:
    """``floor(a * -m + (max * m + 0.5))`` (intops) is ``((max - a) * M + 2**(S-1)) >> S`` for these constants."""
    rng = np.random.default_rng(1)
    for scores, (m, s, _), _ in _cases(rng):
        for a in scores:
            np.testing.assert_array_equal(_u_int(a, m, s), _u_ref(a, m, s))


def test_exp2_rom_is_the_table() -> None:
    """The RTL's case-statement ROM holds :func:`intops.exp2_table` (F = 6)."""
    text = tools.hdl_file("qv_sm_path.v").read_text()
    rom = {int(k): int(v) for k, v in re.findall(r"6'd(\d+): exp2_rom = 17'd(\d+);", text)}
    assert sorted(rom) == list(range(1 << F))
    np.testing.assert_array_equal([rom[i] for i in range(1 << F)], intops.exp2_table(F))


@pytest.mark.parametrize("case", range(len(CONSTS) + 5))
def test_softmax_step_matches_intops(case: int, tmp_path: Path) -> None:
    """The core's softmax step gives :func:`intops.softmax`'s codes bit for bit, every row's
    reciprocal exactly, in the cycles the schedule model predicts."""
    scores, (m, s, qa), hi = _cases(np.random.default_rng(2024))[case]
    n = len(scores)
    assert 0 < m < 2**17 and 1 <= s <= 62 and 0 < qa < 2**26
    want = intops.softmax(scores.astype(np.float64), m, s, qa, F, hi).astype(np.int64)
    sums = np.array([int(intops.exp_table(F)[_u_int(a, m, s)].sum()) for a in scores])  # exact integers
    inv = ((qa << intops.RECIP_BITS) + (sums >> 1)) // sums
    none = np.zeros((n, 0), np.int64)
    step = Layer.softmax(n, 0, 1, (m, s, qa), hi, after_scores=False)  # (it finds the maxima itself)
    chain = run_layers(SHAPE, [step], none, True, tmp_path, scores=scores)
    np.testing.assert_array_equal(chain.act, want)
    np.testing.assert_array_equal(chain.inv, inv)  # stricter than the codes: the one division
    assert chain.softmax_cycles == [softmax_cycles(SHAPE, n, maxima=False)]  # its run in the background
    assert chain.layers[0].cycles == SM_LAUNCH  # the step itself ends once the run has started
    assert n < 3 or (len(np.unique(want)) > 3 and want.max() == hi)  # not trivially flat


def test_softmax_with_a_wide_qa(tmp_path: Path) -> None:
    """A fine probability step (s_attn = 1/1600, as a peaked or flat trained head learns) makes
    Qa = 2**16 / s_attn above 2**26: a core with a wider divider (qa_w = 28, two more stages) gives
    the same bit-exact codes and reciprocals, in the model's cycles; the default core refuses it."""
    import dataclasses

    from quasar_vit.errors import RtlError

    rng = np.random.default_rng(11)
    n = 40
    scores = rng.integers(-3000, 3000, (n, n))
    m, s, qa = _constants(0.05, 0.05, 64, 1 / 1600)
    assert 1 << 26 < qa < 1 << 28
    want = intops.softmax(scores.astype(np.float64), m, s, qa, F, 63).astype(np.int64)
    step = Layer.softmax(n, 0, 1, (m, s, qa), 63, after_scores=False)
    none = np.zeros((n, 0), np.int64)
    with pytest.raises(RtlError, match=r"must be in \(0, 2\*\*26\)"):
        run_layers(SHAPE, [step], none, True, tmp_path, scores=scores)
    wide = dataclasses.replace(SHAPE, qa_w=28)
    chain = run_layers(wide, [step], none, True, tmp_path, scores=scores)
    np.testing.assert_array_equal(chain.act, want)
    sums = np.array([int(intops.exp_table(F)[_u_int(a, m, s)].sum()) for a in scores])
    np.testing.assert_array_equal(chain.inv, ((qa << intops.RECIP_BITS) + (sums >> 1)) // sums)
    assert chain.softmax_cycles == [softmax_cycles(wide, n, maxima=False)] != [softmax_cycles(SHAPE, n, maxima=False)]
    assert want.max() > 0 and len(np.unique(want)) > 3


def test_softmax_refuses_another_table() -> None:
    with pytest.raises(Exception, match="64-entry exp2 table"):
        Layer.softmax(4, 0, 1, (1, 1, 1), 63, frac_bits=5)


def test_softmax_step_synthesises_to_two_dsps_a_lane() -> None:
    """Yosys maps each of the R lanes' two products (the exp2 argument's and the probability's) to a
    DSP48E2, the e ring to a block RAM per word bank, and the row tables to LUT RAM (about 40 s)."""
    params = dict(R=8, KP=4, W=2, TOK_MAX=32, SCH_MAX=8, CH_MAX=16)
    r = synth.synthesise("qv_sm_path", sources("qv_sm_path"), params)
    assert r["dsp"] == 2 * params["R"]
    assert r["bram36"] == params["W"]
