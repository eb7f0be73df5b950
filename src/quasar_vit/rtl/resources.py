"""The accelerator's resources from its shape: a model built from Yosys syntheses of two other cores.

The accelerator is ``qv_top``: ``qv_gemm_core`` with its descriptor table, sequencer and loader.
Each module grows with one quantity of the shape, its *driver*: the array's
trees and the drain with the R x T dot products, the output lanes and the softmax and LayerNorm
paths with the R lanes, the compaction network with R log2 R, each memory's logic with its ports'
words.  The model takes each module's own logic (``synth.parse_modules``: LUT, FF, DSP48E2, BRAM36
over all its instances) as ``a + b * driver``, with ``a`` and ``b`` from the per-module breakdowns of two
*fit* cores (:data:`FIT_SHAPES`, synthesised by ``python benchmarks/rtl_units.py --fit`` into
``rtl/fit_syntheses.json``), and sums the modules.  The memories' block RAM is not fitted but
counted: each bank's cheapest mix of RAMB36E2/RAMB18E2 configurations, LUT RAM when shallow
(:func:`bank_bram36`), which is how Yosys maps them on these cores.  It is checked against the Yosys counts of the
cores the tests and benchmarks simulate, which are not among the fit cores (``benchmarks/rtl_units.py``
prints model against Yosys; docs/rtl.md quotes it).

Pure Python: the hardware model may import it (no torch, no Yosys).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping

from quasar_vit.errors import RtlError
from quasar_vit.rtl.layout import GemmShape, descriptor_words, pow2_at_least

KINDS = ("lut", "ff", "dsp", "bram36")
FIT_FILE = Path(__file__).with_name("fit_syntheses.json")
#: the cores whose syntheses the model is fitted to: R at both ends of the range the others use,
#: few token slots a tile, and memories deep enough that Yosys maps them to block RAM as it does for
#: the cores in use (shallow ones go to LUT RAM, a different cost line)
FIT_SHAPES = {
    "small": GemmShape(R=16, T=2, KP=8, WB=64, tiles_max=64, ch_max=256, wch_max=128, rch_max=32),
    "wide": GemmShape(R=64, T=4, KP=8, WB=256, tiles_max=32, ch_max=256, wch_max=64, rch_max=32),
}


def _tokens(s: GemmShape) -> int:
    return s.T * s.tiles_max


# UltraScale+ block RAM in simple dual port: RAMB36E2 and RAMB18E2 (half a BRAM36) configurations
# (width, depth); a memory no deeper than LUT_RAM_DEPTH goes to LUT RAM (as Yosys maps them)
_RAMB36 = ((72, 512), (36, 1024), (18, 2048), (9, 4096), (4, 8192), (2, 16384), (1, 32768))
_RAMB18 = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))
_CONFIGS = tuple((w, d, 1.0) for w, d in _RAMB36) + tuple((w, d, 0.5) for w, d in _RAMB18)
LUT_RAM_DEPTH = 64


@lru_cache(maxsize=4096)
def bank_bram36(width: int, depth: int) -> float:
    """BRAM36 of one memory bank of ``width`` x ``depth``: the cheapest mix of configurations side by
    side across its width, each cascaded to its depth (0 in LUT RAM)."""
    if depth <= LUT_RAM_DEPTH:
        return 0.0

    @lru_cache(maxsize=None)
    def cover(w: int) -> float:
        return 0.0 if w <= 0 else min(c * -(-depth // d) + cover(w - cw) for cw, d, c in _CONFIGS)

    return cover(width)


def _memory_banks(s: GemmShape) -> dict[str, list[tuple[int, int, int]]]:
    """Each memory module's banks as ``qv_gemm_core.v`` and ``qv_top.v`` size them: (count, width, depth)."""
    w, h, n = s.R // s.KP, s.R // 2, _tokens(s)
    stok, kt = max(2, (n + 1) // 2), max(2, -(-n // h))
    nch = max(2, pow2_at_least(-(-n // s.KP)))
    code, score = s.KP * 6, s.KP * s.res_w
    return {
        "qv_act_mem": [(s.T * w, code, s.tiles_max * s.ch_max // w), (h * w, code, kt * s.rch_max // w)],  # acts, K
        "qv_res_mem": [  # the residual, the score memory's two parity banks, the e ring
            (w, score, n * s.rch_max // w),
            (2 * w, score, 2 * stok * s.sch_max // w),
            (w, s.KP * 17, 64 * s.sch_max // w),
        ],
        "qv_vt_mem": [(s.R, s.KP * 8, s.KP * s.rch_max // s.R * nch)],
        "qv_weight_buf": [(1, s.R * s.KP * 4, 2 * s.wch_max)],
        "qv_top": [(descriptor_words(), 32, s.steps_max)],  # the descriptor table: a memory per 32-bit word
    }


def memory_bram36(s: GemmShape) -> dict[str, int]:
    """Each memory module's BRAM36 (its RAMB18 halves rounded up, as the counts are)."""
    return {m: math.ceil(sum(k * bank_bram36(wd, d) for k, wd, d in banks)) for m, banks in _memory_banks(s).items()}


#: each module's driver: the quantity of the shape its own logic grows with
DRIVERS: dict[str, Callable[[GemmShape], float]] = {
    "qv_mul_pack4": lambda s: s.units,
    "qv_adder_tree": lambda s: s.R * s.T + s.R + s.T,  # a tree per dot product, weight sum and code sum
    "qv_tree_acc": lambda s: s.R * s.T + s.R + s.T,
    "qv_dot_array": lambda s: s.R * s.T + s.R + s.T,
    "qv_drain": lambda s: s.R * s.T * 22 + s.R * 16 + s.T * 18,  # its shadow bits: sums, weight sums, code sums
    "qv_requant": lambda s: s.R,
    "qv_outstage": lambda s: s.R,
    "qv_sm_path": lambda s: s.R,
    "qv_ln_path": lambda s: s.R,
    "qv_kv_loader": lambda s: s.R * s.KP,
    "qv_gemm_core": lambda s: s.R * math.log2(s.R),  # the compaction network dominates its own logic
    # the memories' logic (address arithmetic, word rotation) grows with their ports' words
    "qv_act_mem": lambda s: (s.T + s.R // 2) * (s.R // s.KP),  # the activation and K memories' banks
    "qv_res_mem": lambda s: s.R // s.KP,  # a run of R/KP words, rotated
    "qv_weight_buf": lambda s: s.R * s.KP,
    "qv_vt_mem": lambda s: s.R,
    "qv_run_max": lambda s: s.R,  # a comparison tree over a run of R scores (the softmax's, Q K^T's two)
    "qv_top": lambda s: s.WB,  # the loader's word register and the stream's multiplexer (the descriptor is fixed)
}
#: the memories whose block RAM is counted from their banks (:func:`memory_bram36`), not fitted
BRAM_COUNTED = ("qv_act_mem", "qv_res_mem", "qv_weight_buf", "qv_vt_mem", "qv_top")


@dataclass(frozen=True)
class ModuleFit:
    """``cost = base + slope * driver`` of one module, per resource kind."""

    base: Mapping[str, float]
    slope: Mapping[str, float]

    def cost(self, driver: float) -> dict[str, float]:
        return {k: self.base[k] + self.slope[k] * driver for k in KINDS}


def fit(syntheses: Mapping[str, Mapping[str, Mapping[str, int]]]) -> dict[str, ModuleFit]:
    """Each module's line through its own logic in the two fit cores' breakdowns (``syntheses``:
    fit core name -> ``synth.parse_modules`` of it)."""
    if set(syntheses) != set(FIT_SHAPES):
        raise RtlError(f"the resource model needs the syntheses of the fit cores {sorted(FIT_SHAPES)}")
    (na, sa), (nb, sb) = sorted(FIT_SHAPES.items())
    fits = {}
    for name, driver in DRIVERS.items():
        xa, xb = driver(sa), driver(sb)
        ya, yb = syntheses[na].get(name, {}), syntheses[nb].get(name, {})
        slope = {k: (yb.get(k, 0) - ya.get(k, 0)) / (xb - xa) for k in KINDS}
        base = {k: ya.get(k, 0) - slope[k] * xa for k in KINDS}
        if name in BRAM_COUNTED:  # counted from the banks instead
            base["bram36"] = slope["bram36"] = 0.0
        fits[name] = ModuleFit(base, slope)
    return fits


@lru_cache(maxsize=4)
def load_fit(path: Path = FIT_FILE) -> dict[str, ModuleFit]:
    """The model fitted to the stored syntheses of the fit cores (JSON data, no code)."""
    if not path.is_file():
        raise RtlError(f"{path} is missing: run python benchmarks/rtl_units.py --fit")
    data = json.loads(path.read_text())
    for name, shape in FIT_SHAPES.items():
        if name not in data or data[name].get("params") != shape.top_params():
            raise RtlError(
                f"{path} does not hold the fit core {name!r} as FIT_SHAPES has it: run python benchmarks/rtl_units.py --fit"
            )
    return fit({name: data[name]["modules"] for name in FIT_SHAPES})


def estimate(shape: GemmShape, fits: Mapping[str, ModuleFit] | None = None) -> dict[str, object]:
    """The accelerator's LUT, FF, DSP48E2 and BRAM36 by the model, with each module's share."""
    fits = fits or load_fit()
    modules = {name: fits[name].cost(DRIVERS[name](shape)) for name in DRIVERS}
    for name, count in memory_bram36(shape).items():
        modules[name]["bram36"] = count
    totals = {k: round(sum(m[k] for m in modules.values())) for k in KINDS}
    return {**totals, "modules": {n: {k: round(v) for k, v in m.items()} for n, m in modules.items()}}


__all__ = [
    "FIT_SHAPES",
    "DRIVERS",
    "BRAM_COUNTED",
    "ModuleFit",
    "bank_bram36",
    "memory_bram36",
    "fit",
    "load_fit",
    "estimate",
]
