"""The RTL LayerNorm (the core's LayerNorm step, ``qv_ln_path``), simulated in Verilator against
:func:`intops.layernorm` bit for bit.

Rows of realistic residual codes (small, medium and large spreads, a mean far from 0, outliers,
constant rows with and without epsilon, no normalising shift, 1024 channels) with the per-channel
constants of :func:`quasar_vit.quantization.intconst.layernorm_constants` go through the core's
LayerNorm step; its codes must equal the project's integer LayerNorm exactly, in the cycles the
schedule model gives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from quasar_vit.quantization import intconst, intops
from quasar_vit.rtl.gemm import Layer, run_layers
from quasar_vit.rtl.layout import Ddr, GemmShape
from quasar_vit.rtl.schedule import layernorm_cycles

LO, HI = -32, 31
R_MAX = 2**19 - 1
SHAPE = GemmShape(R=16, T=2, KP=8, WB=64, tiles_max=2, ch_max=128, wch_max=8, rch_max=128)  # E up to 1024


def _constants(rng: np.random.Generator, e: int, s_res: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``(G, Bt, SG, EPS)`` as the model makes them for a LayerNorm of ``e`` channels."""
    gamma = torch.tensor(1.0 + 0.1 * rng.standard_normal(e))
    beta = torch.tensor(0.1 * rng.standard_normal(e))
    s_out = float(rng.choice([0.04, 0.05, 0.07]))
    g, b, sg, eps = intconst.layernorm_constants(gamma, beta, s_out, s_res, 1e-6)
    return g.numpy().astype(np.int64), b.numpy().astype(np.int64), int(sg), int(eps)


def _rows(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int, int]]:
    """``(r, G, Bt, SG, EPS)`` per row."""
    rows = []
    for e in (16, 96, 384):
        for sigma in (3.0, 300.0, 30000.0):
            r = np.clip(np.round(rng.standard_normal(e) * sigma), -R_MAX, R_MAX).astype(np.int64)
            s_res = float(rng.choice([1e-4, 1e-3, 1e-2]))
            rows.append((r, *_constants(rng, e, s_res)))
    # a mean far from 0
    r = np.clip(np.round(400000 + rng.standard_normal(96) * 2000), -R_MAX, R_MAX).astype(np.int64)
    rows.append((r, *_constants(rng, 96, 1e-4)))
    # outliers at both ends of the range, the rest small
    r = np.round(rng.standard_normal(384) * 20).astype(np.int64)
    r[[5, 77]] = [R_MAX, -R_MAX]
    rows.append((r, *_constants(rng, 384, 1e-3)))
    # constant rows: EPS = 0 (V = 0, the table's index 0) and EPS > 0
    g, b, sg, _ = _constants(rng, 96, 1e-3)
    rows.append((np.full(96, -1234, np.int64), g, b, sg, 0))
    rows.append((np.full(96, 777, np.int64), g, b, sg, 5000))
    # V < 2**10: no normalising shift (k = 0)
    r = rng.integers(-1, 2, 16)
    rows.append((r, *_constants(rng, 16, 1e-2)))
    # E = 1024 with a large spread
    r = np.clip(np.round(rng.standard_normal(1024) * 60000), -R_MAX, R_MAX).astype(np.int64)
    rows.append((r, *_constants(rng, 1024, 1e-4)))
    return rows


def _expected(r: np.ndarray, g: np.ndarray, b: np.ndarray, sg: int, eps: int) -> np.ndarray:
    f = np.float64
    out = intops.layernorm(r[None, :].astype(f), g.astype(f), b.astype(f), f(sg), np.int64(eps), LO, HI)
    return out[0].astype(np.int64)


def _z_by_formula(r: np.ndarray, eps: int) -> np.ndarray:
    """``Z = ((E*r - s1) * RS + 2**(3+k)) >> (4+k)`` in Python integers: the RTL's formula."""
    e, s1, s2 = len(r), int(r.sum()), int((r * r).sum())
    v = e * s2 - s1 * s1 + eps
    k = 0
    while v >> (2 * k) >= 2**intops.RSQRT_INDEX_BITS:
        k += 1
    rs = int(intops.rsqrt_table()[v >> (2 * k)])
    return np.array([((e * int(x) - s1) * rs + (1 << (3 + k))) >> (4 + k) for x in r], np.int64)


def test_rtl_formula_is_intops() -> None:
    """The RTL's integer formula for Z, then the affine requantiser, is :func:`intops.layernorm`."""
    rng = np.random.default_rng(11)
    for r, g, b, sg, eps in _rows(rng):
        z = _z_by_formula(r, eps)
        assert np.abs(z).max() < 2**18  # fits the 27-bit operand of the affine step with room
        want = np.clip((z * g + b) >> sg, LO, HI)
        np.testing.assert_array_equal(want, _expected(r, g, b, sg, eps))


def test_layernorm_matches_intops(tmp_path: Path) -> None:
    """The core's LayerNorm step gives :func:`intops.layernorm`'s codes exactly, row by row, in the
    predicted cycles."""
    rng = np.random.default_rng(11)
    spread = []
    for n, (r, g, b, sg, eps) in enumerate(_rows(rng)):
        ln = Layer.layernorm(g, b, sg, eps, (LO, HI))
        none = np.zeros((1, 0), np.int64)
        chain = run_layers(SHAPE, [ln], none, True, tmp_path / str(n), Ddr(8), residual=r[None, :])
        got = chain.layers[0].codes[0]
        np.testing.assert_array_equal(got, _expected(r, g, b, sg, eps), err_msg=f"row {n} (E={len(r)})")
        assert chain.layers[0].cycles == layernorm_cycles(SHAPE, 1, len(r), Ddr(8))
        if len(r) >= 96 and np.ptp(r) > 0:
            spread.append(got)
    codes = np.concatenate(spread)
    assert len(set(codes.tolist())) > 30  # spread over the code range, not all clamped
    assert np.mean((codes == LO) | (codes == HI)) < 0.2  # s_out = 0.05: |x| > 1.6 sigma saturates, ~11%


def test_layernorm_table_is_block_ram() -> None:
    """Yosys puts the LayerNorm path's 1024-entry rsqrt table in block RAM (RAMB18E2), not in LUTs."""
    from quasar_vit.rtl import synth
    from quasar_vit.rtl.modules import sources

    r = synth.synthesise("qv_ln_path", sources("qv_ln_path"), {"R": 2, "KP": 2, "W": 1})
    assert r["cells"].get("RAMB18E2", 0) + 2 * r["cells"].get("RAMB36E2", 0) >= 1  # type: ignore[union-attr]
