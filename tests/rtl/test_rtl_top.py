"""The accelerator's top level (``qv_top``): a descriptor table, a step sequencer and a loader.

The program of a chain of steps (``rtl.program.make_program``) runs on ``qv_top`` in Verilator with
the image's inputs loaded from the modelled DDR by load steps, not through a testbench's back door.
Every step's codes must be what the core gives when ``tb_qv_gemm_core`` drives it step by step
(the harness the other tests check against the integer arithmetic), the result port must carry the
last step's values and nothing else, and every step and the whole run must take the schedule
model's cycles, over DDR latencies, rates and beat widths (a residual word in several beats).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from quasar_vit.errors import RtlError
from quasar_vit.quantization import intops
from quasar_vit.rtl.gemm import MODE_GELU, MODE_RESIDUAL, Layer, core_fields, run_layers
from quasar_vit.rtl.layout import TOP_FIELDS, Ddr, GemmShape, descriptor_fields, descriptor_words, pack_descriptor
from quasar_vit.rtl.program import load_beats, load_codes, load_residual, make_program, run_program
from quasar_vit.rtl.schedule import program_cycles

sys.path.insert(0, str(Path(__file__).parent))
from test_rtl_gemm import DEMO, _requant_consts  # noqa: E402
from test_rtl_layernorm import _constants  # noqa: E402

NARROW = GemmShape(
    R=16, T=4, KP=8, WB=32, tiles_max=4, ch_max=16, wch_max=8, rch_max=4, steps_max=8
)  # 2-beat code words


def _chain(seed: int, n: int = 9, e: int = 32, hid: int = 64):
    """fc1 (GELU) -> fc2 (residual add) -> LayerNorm: the LayerNorm reads the residual the load
    brought in plus fc2's updates, so both loads show in its codes.  (layers, codes, residual)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-32, 32, (n, e))
    res = rng.integers(-(2**14), 2**14, (n, e))
    w1, w2 = rng.integers(-8, 8, (hid, e)), rng.integers(-8, 8, (e, hid))
    is8_1, is8_2 = np.arange(hid) < 16, np.arange(e) < 8
    w1[is8_1], w2[is8_2] = rng.integers(-128, 128, (16, e)), rng.integers(-128, 128, (8, hid))
    table = rng.integers(-32, 32, 1024)
    c1 = _requant_consts(rng, x @ w1.T, 10)
    idx = intops.requant((x @ w1.T).astype(np.float64), *[v.astype(np.float64) for v in c1], 0, 1023)
    c2 = _requant_consts(rng, table[idx.astype(np.int64)] @ w2.T, 12)
    g, b, sg, eps = _constants(rng, e, 1e-3)
    layers = [
        Layer(w1, is8_1, *c1, (0, 1023), MODE_GELU, table, out_signed_codes=True),
        Layer(w2, is8_2, *c2, (-(2**19), 2**19 - 1), MODE_RESIDUAL),
        Layer.layernorm(g, b, sg, eps, (-32, 31)),
    ]
    return layers, x, res


def test_descriptor_format_is_the_hdl_declaration() -> None:
    """The fields ``qv_top.v`` declares tile the descriptor from bit 0 with no gap: the core's
    configuration (in the order ``tb_qv_gemm_core`` reads it) and the top's own; a packed descriptor
    gives each field back at its offset, in two's complement when negative."""
    fields = descriptor_fields()
    assert [f.offset for f in fields] == [0, *np.cumsum([f.bits for f in fields])[:-1]]
    assert [f.name for f in fields] == [*core_fields(), *TOP_FIELDS]
    assert descriptor_words() == -(-sum(f.bits for f in fields) // 32)
    rng = np.random.default_rng(0)
    values = {f.name: int(rng.integers(-(1 << (f.bits - 1)), 1 << (f.bits - 1))) for f in fields}
    values["eps"], values["beats"] = (1 << 63) + 5, (1 << 32) - 1  # the top of the unsigned range
    word = sum(w << (32 * i) for i, w in enumerate(pack_descriptor(values)))
    for f in fields:
        assert (word >> f.offset) & ((1 << f.bits) - 1) == values[f.name] & ((1 << f.bits) - 1), f.name


def test_a_gap_in_the_hdl_declaration_is_refused(monkeypatch, tmp_path: Path) -> None:
    """The HDL's offsets are read, not assumed: a field declared anywhere but right after the one
    before it is refused in one line."""
    from quasar_vit.rtl import layout
    from quasar_vit.rtl.tools import hdl_file

    text = hdl_file("qv_top.v").read_text().replace("O_N_TT = O_N_TOK + B_N_TOK,", "O_N_TT = O_N_TOK + B_N_TOK + 1,")
    moved = tmp_path / "qv_top.v"
    moved.write_text(text)
    monkeypatch.setattr(layout, "hdl_file", lambda name: moved)
    with pytest.raises(RtlError, match="field N_TT is at O_N_TOK \\+ B_N_TOK \\+ 1, not O_N_TOK \\+ B_N_TOK"):
        layout.descriptor_fields.__wrapped__()


def test_bad_descriptors_are_one_error_line() -> None:
    full = {f.name: 0 for f in descriptor_fields()}
    with pytest.raises(RtlError, match="missing fields \\['mode'\\]"):
        pack_descriptor({k: v for k, v in full.items() if k != "mode"})
    with pytest.raises(RtlError, match="unknown fields \\['speed'\\]"):
        pack_descriptor({**full, "speed": 1})
    with pytest.raises(RtlError, match="mode = 8 does not fit 3 bits"):
        pack_descriptor({**full, "mode": 8})


@pytest.mark.parametrize("shape", [DEMO, NARROW], ids=["demo", "narrow"])
def test_load_beats_are_the_loads_streams(shape: GemmShape) -> None:
    """The model's beat counts of an image's loads (``load_beats``) are the streams the program puts in DDR."""
    rng = np.random.default_rng(1)
    codes, res = rng.integers(-32, 32, (9, 24)), rng.integers(-100, 100, (9, 32))
    got = [len(load_codes(codes, True, shape).beats(shape.WB)), len(load_residual(res, shape).beats(shape.WB))]
    assert got == load_beats(shape, 9, 24, 32)


CASES = [  # shape, DDR
    (DEMO, Ddr(16, 1, 1)),
    (DEMO, Ddr(5, 1, 3, fifo=2)),  # a third of a beat a cycle, little run-ahead
    (NARROW, Ddr(0, 1, 1)),  # a code word in two beats, a residual word in five
    (NARROW, Ddr(30, 2, 3, fifo=4)),
]


@pytest.mark.parametrize("shape,ddr", CASES, ids=["demo", "demo-slow", "narrow", "narrow-slow"])
def test_top_runs_the_program_as_the_core_runs_the_steps(tmp_path: Path, shape: GemmShape, ddr: Ddr) -> None:
    layers, codes, res = _chain(7)
    chain = run_layers(shape, layers, codes, True, tmp_path / "core", ddr, residual=res)
    prog = make_program(shape, layers, codes, True, res)
    top = run_program(shape, prog, tmp_path / "top", ddr)
    for i, (want, got) in enumerate(zip(chain.layers, top.layers)):
        np.testing.assert_array_equal(got.codes, want.codes, err_msg=f"step {i}")
        assert not got.overrun
    assert np.unique(top.layers[-1].codes).size > 8  # the LayerNorm's codes vary: a wrong load would show
    np.testing.assert_array_equal(top.results, chain.layers[-1].codes)  # the result port: the last step's lanes
    model = program_cycles(shape, load_beats(shape, *codes.shape, res.shape[1]), layers, codes.shape[0], ddr)
    assert top.loads == model.loads
    assert [r.cycles for r in top.layers] == model.chain.steps
    assert top.cycles == model.total
    # the top counts a step from its launch to the next one's, the harness from its start to the edge
    # it sees busy low, inclusive: the same number (the top launches the next step on that edge)
    assert [r.cycles for r in top.layers] == [r.cycles for r in chain.layers]


def test_a_program_longer_than_the_table_is_one_error_line(tmp_path: Path) -> None:
    layers, codes, res = _chain(3)
    small = dataclasses.replace(NARROW, steps_max=4)
    with pytest.raises(RtlError, match="5 steps do not fit the descriptor table \\(4\\)"):
        run_program(small, make_program(small, layers, codes, True, res), tmp_path)
