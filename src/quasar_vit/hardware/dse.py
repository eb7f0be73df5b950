"""Model-adaptive accelerator design: evaluate a fixed design, or explore designs for a subnet.

A model with integer nonlinear ops (the default) runs on the RTL core, whose rows and token tile
:func:`quasar_vit.rtl.model.explore` chooses; :func:`explore` hands it on.  A model with float ops
runs on the HLS engine (LayerNorm/softmax/GELU on the host), explored here.  For the HLS engine,
exploration is a small structured enumeration rather than a blind search, because the model is
nearly separable: the array (packing, columns, rows, LUT-only columns) is bounded by LUT/FF/DSP
and is subnet-independent, so the largest array of each shape is found in closed form once per
board; the buffers (token tile, reduction tile, BRAM or URAM) only trade BRAM for DDR traffic,
so for each array the largest tiles that fit are taken.  A few dozen candidates are then costed
exactly and the fastest wins (ties, within 0.5 %, go to the one using fewer resources).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quasar_vit.errors import HardwareError
from quasar_vit.hardware.arrays import ArrayShape, array_shapes, max_units
from quasar_vit.hardware.design import AcceleratorDesign
from quasar_vit.hardware.latency import context
from quasar_vit.hardware.platforms import Platform, load_platform
from quasar_vit.hardware.report import HardwareReport
from quasar_vit.hardware.resources import Resources, estimate_resources
from quasar_vit.space import SubnetConfig

if TYPE_CHECKING:
    from quasar_vit.rtl.report import CoreDesign, CoreReport

TIE = 0.005


def _platform(p: "str | Path | Platform") -> Platform:
    return p if isinstance(p, Platform) else load_platform(p)


@lru_cache(maxsize=512)
def _design_resources(design: AcceleratorDesign, plat: Platform) -> Resources:
    """A design's resources (subnet-independent, so memoised per design like its cost context)."""
    return estimate_resources(design, plat)


def evaluate(
    subnet: SubnetConfig,
    platform: "str | Path | Platform",
    design: "AcceleratorDesign | CoreDesign",
    notes: tuple[str, ...] = (),
) -> "HardwareReport | CoreReport":
    """Latency and resources of ``subnet`` on a fixed ``design`` (the fast path of the search loop):
    the RTL core (:class:`~quasar_vit.rtl.report.CoreDesign`) or the HLS engine (:class:`AcceleratorDesign`).

    Args:
        subnet: the subnet to cost.
        platform: a board preset name, a platform YAML path or a :class:`Platform`.
        design: the accelerator design; it must have been made for this platform.
        notes: remarks carried by the report (e.g. where the design came from).

    Returns:
        The report. It does not raise if the design is over the board's caps: check ``report.fits``.

    Raises:
        HardwareError: the design was made for another platform.
    """
    plat = _platform(platform)
    if not isinstance(design, AcceleratorDesign):
        from quasar_vit.rtl import model

        return model.evaluate(subnet, design, plat, notes)
    return _engine(subnet, plat, design, notes)


def _engine(
    subnet: SubnetConfig, plat: Platform, design: AcceleratorDesign, notes: tuple[str, ...] = ()
) -> HardwareReport:
    """:func:`evaluate` on the HLS engine."""
    if design.platform != plat.name:
        raise HardwareError(f"the design was made for platform '{design.platform}', not '{plat.name}'")
    ctx = context(plat, design)
    return HardwareReport(subnet, ctx, _design_resources(design, plat), ctx.totals(subnet), notes)


def design_from_dict(d: Any) -> "AcceleratorDesign | CoreDesign":
    """A design as ``report.design.to_dict()`` wrote it: the RTL core's or the HLS engine's."""
    from quasar_vit.rtl.report import KIND, CoreDesign

    if isinstance(d, dict) and d.get("accelerator") == KIND:
        return CoreDesign.from_dict(d)
    return AcceleratorDesign.from_dict(d)


def _buffer_options(t: int, kmax: int, cols: int, plat: Platform) -> list[tuple[int, int, str]]:
    """(tile_tokens, tile_k, memory) options, most generous first, for ``t`` tokens and a
    largest reduction depth ``kmax``."""
    ks = []
    for div in (1, 2, 4, 8):
        k = max(cols, math.ceil(kmax / div / cols) * cols)
        if k not in ks:
            ks.append(k)
    tns = []
    for tn in (t, math.ceil(t / 2), math.ceil(t / 4), 32, 16, 8):
        tn = min(tn, t)
        if tn not in tns:
            tns.append(tn)
    mems = ["bram"] + (["uram"] if plat.uram > 0 else [])
    return [(tn, k, m) for tn in tns for k in ks for m in mems]


def _candidates(plat: Platform) -> list[tuple[int, "int | str", int, int]]:
    """(rows, packing, cols, lut_cols) of the arrays worth costing: within 60 % of the largest,
    at their full row count and rounded down to multiples of 16 and 32."""
    arrays: tuple[ArrayShape, ...] = array_shapes(plat)
    if not arrays:
        raise HardwareError(f"no accelerator fits {plat.name}: even a 1-row array exceeds the LUT/FF/DSP caps")
    top_units = arrays[0][0]
    candidates: list[tuple[int, "int | str", int, int]] = []
    for units, packing, cols, rows, lut_cols in arrays:
        if units < 0.6 * top_units:
            continue
        for r in {rows, rows - rows % 16, rows - rows % 32}:
            if r > 0:
                # keep the LUT-only columns no larger than needed at this row count
                candidates.append((r, packing, cols, lut_cols))
    return candidates


def _fastest(subnet: SubnetConfig, plat: Platform) -> tuple[HardwareReport | None, int]:
    """The fastest fitting design among the candidates (ties go to fewer resources), and how
    many fitting designs were costed."""
    best: HardwareReport | None = None
    tried = 0
    t = subnet.geometry.num_tokens
    kmax = max(max(l.in_features for l in subnet.linear_layers()), t, subnet.geometry.head_dim)
    for rows, packing, cols, lut_cols in _candidates(plat):
        rep = None
        for tn, k, mem in _buffer_options(t, kmax, cols, plat):
            d = AcceleratorDesign(plat.name, plat.clock_mhz, rows, cols, packing, lut_cols, tn, k, mem)
            res = estimate_resources(d, plat)
            if res.fits:
                rep = _engine(subnet, plat, d)
                tried += 1
                break
        if rep is None:
            continue
        if (
            best is None
            or rep.cycles < best.cycles * (1 - TIE)
            or (rep.cycles <= best.cycles * (1 + TIE) and _cost(rep) < _cost(best))
        ):
            best = rep
    return best, tried


def explore(
    subnet: SubnetConfig,
    platform: "str | Path | Platform",
    fps_target: float | None = None,
    nonlinear: str = "integer",
) -> "HardwareReport | CoreReport":
    """The fastest accelerator for ``subnet`` that fits ``platform`` under its utilisation caps.

    A model with integer nonlinear ops runs on the RTL core (``quasar_vit.rtl``): the core's rows and
    token tile are chosen by :func:`quasar_vit.rtl.model.explore`, priced by the RTL's schedule model
    (equal to Verilator's cycles) and resource model (checked against Yosys).  A model with float ops
    runs on the HLS engine with LayerNorm/softmax/GELU on the host, chosen here among its array shapes.

    Args:
        subnet: the subnet to design the accelerator for.
        platform: a board preset name, a platform YAML path or a :class:`Platform`.
        fps_target: if given, the FPS the fastest design must reach.
        nonlinear: the model's ``model.nonlinear``: ``integer`` or ``float``.

    Returns:
        The report of the chosen design, with a note saying how it was chosen.

    Raises:
        HardwareError: no design fits, or ``fps_target`` is given and even the fastest design
            misses it (the message names the best FPS reachable).
    """
    plat = _platform(platform)
    if nonlinear not in ("integer", "float"):
        raise HardwareError(f"nonlinear must be 'integer' or 'float', got {nonlinear!r}")
    if fps_target is not None and fps_target <= 0:
        raise HardwareError(f"fps target must be > 0, got {fps_target}")
    best: "HardwareReport | CoreReport"
    if nonlinear == "integer":
        from quasar_vit.rtl import model

        best = model.explore(subnet, plat)
    else:
        engine, tried = _fastest(subnet, plat)
        if engine is None:
            raise HardwareError(
                f"no accelerator design fits {plat.name}: the on-chip buffers exceed the "
                f"BRAM/URAM caps for every array shape (BRAM cap {plat.limit('bram'):.0f} blocks)"
            )
        best = engine.with_notes(f"chosen by design-space exploration among {tried} fitting designs")
    if fps_target is not None and best.fps < fps_target:
        raise HardwareError(
            f"FPS target {fps_target:g} is not reachable on {plat.name}: the fastest fitting design "
            f"reaches {best.fps:.1f} FPS ({best.latency_ms:.2f} ms) for this subnet"
        )
    return best


def _cost(rep: HardwareReport) -> float:
    """Resource footprint used to break latency ties (mean utilisation)."""
    r = rep.resources
    return sum(r.percent(k) for k in ("lut", "ff", "dsp", "bram")) + (
        r.percent("uram") if r.totals and dict(r.totals)["uram"] else 0
    )


__all__ = ["evaluate", "explore", "design_from_dict", "max_units"]
