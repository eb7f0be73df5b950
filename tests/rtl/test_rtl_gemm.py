"""A linear layer on the simulated RTL core (``qv_gemm_core``): bit-exact codes, and cycles the schedule predicts.

The core streams the layer's weights from a modelled DDR into its ping-pong weight buffer, runs the
packed array over token and row tiles, and requantises in its output lanes.  Its codes must equal
the integer arithmetic (:func:`intops.requant` of the exact GEMM), and its measured cycles (start to
done, in Verilator) must be what :func:`quasar_vit.rtl.schedule.linear_cycles` derives from the
schedule, for compute-bound and DDR-bound layers alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from quasar_vit.quantization import intops
from quasar_vit.rtl.gemm import MODE_GELU, MODE_RESIDUAL, Layer, run_layers, run_linear
from quasar_vit.rtl.layout import Ddr
from quasar_vit.rtl.layout import GemmShape
from quasar_vit.rtl.schedule import layernorm_cycles, linear_array_cycles, linear_cycles

SMALL = GemmShape(R=8, T=2, KP=4, WB=32, tiles_max=4, ch_max=16, wch_max=8)
DEMO = GemmShape(R=16, T=4, KP=8, WB=64, tiles_max=8, ch_max=128, wch_max=64)
FAST = GemmShape(R=8, T=2, KP=4, WB=128, tiles_max=8, ch_max=32, wch_max=16)  # a beat a chunk: loads outpace compute
WIDE = GemmShape(R=16, T=6, KP=4, WB=32, tiles_max=8, ch_max=64, wch_max=32)  # 4 words a run, T not a power of 2


def _layer(rng, n: int, k: int, m: int, f8: float, signed: bool, out_bits: int):
    """A random layer with requantisers sized as calibrated ones are, and its expected codes."""
    is8 = rng.random(m) < f8
    w = np.where(is8[:, None], rng.integers(-128, 128, (m, k)), rng.integers(-8, 8, (m, k)))
    a = rng.integers(-32, 32, (n, k)) if signed else rng.integers(0, 64, (n, k))
    acc = a @ w.T
    mult = rng.integers(2**16, 2**17, m) * rng.choice([-1, 1], m)
    size = np.array([int(np.abs(acc[:, i]).max() * abs(int(mult[i]))).bit_length() for i in range(m)])
    shift = np.clip(size - out_bits + rng.integers(-1, 2, m), 1, 47)
    offset = rng.integers(-3, 4, m) * 2**shift + 2 ** (shift - 1)
    lo, hi = -(2 ** (out_bits - 1)), 2 ** (out_bits - 1) - 1
    f = [x.astype(np.float64) for x in (mult, offset, shift)]
    want = intops.requant(acc.astype(np.float64), *f, lo, hi).astype(np.int64)
    return (w, is8, mult, offset, shift, a), (lo, hi), want


CASES = [  # shape, tokens, K, rows, 8-bit share, signed codes, DDR
    (SMALL, 7, 16, 5, 0.4, True, Ddr(8, 1, 1)),  # tokens not a multiple of T, compute-bound
    (SMALL, 3, 4, 6, 0.5, False, Ddr(0, 1, 1)),  # fewer chunks than T: idle cycles after each tile
    (SMALL, 8, 32, 9, 0.3, True, Ddr(20, 1, 3)),  # DDR-bound: a third of a beat a cycle
    (SMALL, 8, 32, 20, 0.3, True, Ddr(20, 2, 3, fifo=2)),  # DDR runs ahead by 2 beats at most
    (FAST, 4, 16, 30, 0.3, True, Ddr(40, 1, 2, fifo=1)),  # no burst after the latency: the credit is capped
    (FAST, 2, 4, 40, 0.0, True, Ddr(0, 1, 1)),  # row tiles shorter than a release: wait for the tile, not the half
    (DEMO, 17, 64, 40, 0.3, True, Ddr(30, 1, 1)),
    (DEMO, 17, 128, 24, 1.0, False, Ddr(30, 1, 2)),  # all rows 8-bit, unsigned codes
]


@pytest.mark.parametrize("shape,n,k,m,f8,signed,ddr", CASES)
def test_linear_layer_is_exact_and_on_schedule(tmp_path: Path, shape, n, k, m, f8, signed, ddr) -> None:
    rng = np.random.default_rng(n * 1000 + k + m)
    (w, is8, mult, offset, shift, a), out_range, want = _layer(rng, n, k, m, f8, signed, 6)
    run = run_linear(shape, w, is8, mult, offset, shift, a, signed, out_range, tmp_path, ddr)
    np.testing.assert_array_equal(run.codes, want)
    assert not run.overrun
    predicted = linear_cycles(shape, n, k, is8, ddr)
    assert run.cycles == predicted, (run.cycles, predicted)
    if ddr.fifo == 1:  # the case is there for the cap: without it the run would be faster
        assert predicted > linear_cycles(shape, n, k, is8, dataclasses.replace(ddr, fifo=10**6))
    assert run.cycles >= linear_array_cycles(shape, n, k, is8)  # never faster than its array


def test_layers_chain_through_the_activation_memory(tmp_path: Path) -> None:
    """Three layers back to back: each reads what the previous one's lanes wrote into the on-chip
    memory (signed and unsigned codes, 8-bit shares from none to all, 4-bit to 8-bit tile borders)."""
    rng = np.random.default_rng(11)
    n, dims = 13, [32, 48, 24, 40]
    codes = rng.integers(-32, 32, (n, dims[0]))
    x, signed = codes, True
    layers, wants = [], []
    for i, (k, m) in enumerate(zip(dims[:-1], dims[1:])):
        n8 = [m // 3, m, 0][i]  # the leading rows are 8-bit, as the model makes them
        is8 = np.arange(m) < n8
        w = np.where(is8[:, None], rng.integers(-128, 128, (m, k)), rng.integers(-8, 8, (m, k)))
        acc = x @ w.T
        mult = rng.integers(2**16, 2**17, m)
        size = np.array([int(np.abs(acc[:, r]).max() * int(mult[r])).bit_length() for r in range(m)])
        shift = np.clip(size - 6, 1, 47)
        offset = 2 ** (shift - 1)
        out_range = (0, 63) if i == 1 else (-32, 31)
        f = [v.astype(np.float64) for v in (mult, offset, shift)]
        x = intops.requant(acc.astype(np.float64), *f, *out_range).astype(np.int64)
        layers.append(Layer(w, is8, mult, offset, shift, out_range))
        wants.append(x)
    chain = run_layers(DEMO, layers, codes, signed, tmp_path, Ddr(16, 1, 1))
    runs, mem = chain.layers, chain.act
    for run, want, lay in zip(runs, wants, layers):
        np.testing.assert_array_equal(run.codes, want)
        assert not run.overrun
        predicted = linear_cycles(DEMO, n, lay.w_int.shape[1], lay.is8, Ddr(16, 1, 1))
        assert run.cycles == predicted, (run.cycles, predicted)
    np.testing.assert_array_equal(mem, wants[-1])


def _requant_consts(rng, acc: np.ndarray, out_bits: int):
    m = acc.shape[1]
    mult = rng.integers(2**16, 2**17, m)
    size = np.array([int(np.abs(acc[:, r]).max() * int(mult[r])).bit_length() for r in range(m)])
    shift = np.clip(size - out_bits, 1, 47)
    return mult, rng.integers(-2, 3, m) * 2**shift + 2 ** (shift - 1), shift


@pytest.mark.parametrize("shape", [DEMO, WIDE], ids=["demo", "wide"])
def test_gelu_then_residual_layers(tmp_path: Path, shape: GemmShape) -> None:
    """fc1-like (GELU table: index, then the table's code) into fc2-like (its update added to the
    residual memory with saturation): the codes, the residual at the end, and both layers' cycles."""
    rng = np.random.default_rng(5)
    n, e, hid = 9, 32, 64
    x = rng.integers(-32, 32, (n, e))
    res = rng.integers(-(2**19), 2**19, (n, e))
    res[0, :4] = [2**19 - 1, -(2**19), 2**19 - 3, -(2**19) + 2]  # saturation at both ends
    w1, w2 = rng.integers(-8, 8, (hid, e)), rng.integers(-8, 8, (e, hid))
    is8_1, is8_2 = np.arange(hid) < 16, np.arange(e) < 8
    w1[is8_1], w2[is8_2] = rng.integers(-128, 128, (16, e)), rng.integers(-128, 128, (8, hid))
    table = rng.integers(-32, 32, 1024)
    c1 = _requant_consts(rng, x @ w1.T, 10)
    idx = intops.requant((x @ w1.T).astype(np.float64), *[v.astype(np.float64) for v in c1], 0, 1023).astype(np.int64)
    h = table[idx]
    c2 = _requant_consts(rng, h @ w2.T, 16)
    rlo, rhi = -(2**19), 2**19 - 1
    f2 = [v.astype(np.float64) for v in c2]
    want_res = intops.residual_add(res.astype(np.float64), (h @ w2.T).astype(np.float64), *f2, rlo, rhi)
    layers = [
        Layer(w1, is8_1, *c1, (0, 1023), MODE_GELU, table, out_signed_codes=True),
        Layer(w2, is8_2, *c2, (rlo, rhi), MODE_RESIDUAL),
    ]
    ddr = Ddr(16, 1, 1)
    chain = run_layers(shape, layers, x, True, tmp_path, ddr, residual=res)
    np.testing.assert_array_equal(chain.layers[0].codes, idx)  # the lanes' GELU indices
    np.testing.assert_array_equal(chain.act, h)  # the table's codes, in the activation memory
    np.testing.assert_array_equal(chain.residual, want_res.astype(np.int64))
    assert (chain.residual == rhi).any() and (chain.residual == rlo).any()
    for run, (k, is8, gelu) in zip(chain.layers, [(e, is8_1, True), (hid, is8_2, False)]):
        predicted = linear_cycles(shape, n, k, is8, ddr, gelu=gelu)
        assert not run.overrun
        assert run.cycles == predicted, (run.cycles, predicted)


def _ln_rows(rng, e: int) -> np.ndarray:
    """Residual rows that exercise the LayerNorm's corners: spreads from 3 to 30000 codes, a mean far
    from 0, the extreme codes, a constant row (V = EPS), a tiny spread (k = 0)."""
    rows = [np.clip(np.round(rng.normal(0, s, e)), -(2**19) + 1, 2**19 - 1) for s in (3, 300, 30000)]
    rows += [np.round(rng.normal(400000, 50, e)), np.full(e, 7), rng.integers(-1, 2, e)]
    top = rng.integers(-200, 200, e)
    top[:2] = [2**19 - 1, -(2**19)]
    return np.array([*rows, top], np.int64)


@pytest.mark.parametrize("eps", [0, 5000])
def test_layernorm_step_corners(tmp_path: Path, eps: int) -> None:
    """The core's LayerNorm step is intops.layernorm on corner rows too (and takes the predicted cycles)."""
    rng = np.random.default_rng(eps)
    e = 32
    res = _ln_rows(rng, e)
    gain = rng.integers(-(2**16), 2**16, e)
    offset = rng.integers(-(2**26), 2**26, e) + 2**23
    lay = Layer.layernorm(gain, offset, 24, eps, (-32, 31))
    none = np.zeros((len(res), 0), np.int64)
    chain = run_layers(WIDE, [lay], none, True, tmp_path, Ddr(5, 1, 1), residual=res)
    f = [np.asarray(v, np.float64) for v in (gain, offset)]
    want = intops.layernorm(res.astype(np.float64), *f, 24.0, float(eps), -32, 31).astype(np.int64)
    np.testing.assert_array_equal(chain.layers[0].codes, want)
    np.testing.assert_array_equal(chain.act, want)
    assert chain.layers[0].cycles == layernorm_cycles(WIDE, len(res), e, Ddr(5, 1, 1))


def test_shape_passes_every_core_parameter() -> None:
    """GemmShape.params() sets every parameter of qv_gemm_core but the derived W: an HDL default
    that the Python side does not pass would silently give another core."""
    import re

    from quasar_vit.rtl.tools import hdl_file

    text = hdl_file("qv_gemm_core.v").read_text()
    header = text[text.index("module qv_gemm_core") : text.index(") (")]
    names = set(re.findall(r"parameter\s+(\w+)", header))
    assert names - {"W"} == set(DEMO.params())


def test_bad_steps_are_one_error_line(tmp_path: Path) -> None:
    """What the core would get wrong is refused before simulating, with one line."""
    from quasar_vit.errors import RtlError

    w, is8 = np.zeros((8, 16), np.int64), np.zeros(8, bool)
    ones = np.ones(8, np.int64)
    cases = [
        ([Layer(w, is8, ones, ones, ones, (-32, 31))], np.zeros((4, 8), np.int64), None, "takes K=16"),
        ([Layer(w, is8, ones, ones, ones, (-(2**19), 2**19 - 1), 1)], np.zeros((4, 16), np.int64), None, "residual"),
        ([Layer(w, is8, ones, ones, ones, (-100, 100))], np.zeros((4, 16), np.int64), None, "not 6-bit"),
        ([Layer(w, is8, ones, ones, ones, (0, 1023), 2)], np.zeros((4, 16), np.int64), None, "GELU"),
    ]
    for layers, codes, res, msg in cases:
        with pytest.raises(RtlError, match=msg) as exc:
            run_layers(DEMO, layers, codes, True, tmp_path, residual=res)
        assert "\n" not in str(exc.value)
    with pytest.raises(RtlError, match="power of two"):
        GemmShape(R=16, T=4, KP=8, WB=64, tiles_max=8, ch_max=100, wch_max=64)
