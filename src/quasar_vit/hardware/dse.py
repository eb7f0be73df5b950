"""Model-adaptive accelerator design: evaluate a fixed design, or explore designs for a subnet.

Exploration is a small structured enumeration rather than a blind search, because the model is
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

from quasar_vit.errors import HardwareError
from quasar_vit.hardware.design import AcceleratorDesign
from quasar_vit.hardware.latency import context
from quasar_vit.hardware.platforms import Platform, load_platform
from quasar_vit.hardware.report import HardwareReport
from quasar_vit.hardware.resources import estimate_resources
from quasar_vit.space import SubnetConfig

COLUMN_CHOICES = (16, 32, 48, 64, 96, 128)
TIE = 0.005


def _platform(p: "str | Path | Platform") -> Platform:
    return p if isinstance(p, Platform) else load_platform(p)


def evaluate(subnet: SubnetConfig, platform: "str | Path | Platform", design: AcceleratorDesign) -> HardwareReport:
    """Latency and resources of ``subnet`` on a fixed ``design`` (fast path; does not raise if the
    design is over the board's caps: check ``report.fits``)."""
    plat = _platform(platform)
    if design.platform != plat.name:
        raise HardwareError(f"the design was made for platform '{design.platform}', not '{plat.name}'")
    ctx = context(plat, design)
    res = ctx.resources
    if res is None:
        res = ctx.resources = estimate_resources(design, plat)
    return HardwareReport(subnet, ctx, res, ctx.totals(subnet))


def _logic_fits(design: AcceleratorDesign, plat: Platform) -> bool:
    r = estimate_resources(design, plat)
    return r.lut <= plat.limit("lut") and r.ff <= plat.limit("ff") and r.dsp <= plat.limit("dsp")


def _max_rows(plat: Platform, packing: "int | str", cols: int, lut_cols: int) -> int:
    """Largest ``pe_rows`` whose LUT/FF/DSP fit the caps for this column layout (0 if none)."""
    p = plat.params
    dcols = cols - lut_cols
    unit_lut = {3: p.lut_per_unit_p3, 4: p.lut_per_unit_p4, "lut": 0.0}[packing]
    dsp_row = p.out_dsp_per_row + (0 if packing == "lut" else dcols / packing)
    lut_row = dcols * unit_lut + lut_cols * p.lut_per_unit_lutonly + cols * p.adder_lut_per_unit + p.out_lut_per_row
    ff_row = cols * p.ff_per_unit + p.out_ff_per_row
    bounds = [(plat.limit("lut") - p.infra_lut) / lut_row, (plat.limit("ff") - p.infra_ff) / ff_row]
    if dsp_row > 0:
        bounds.append(plat.limit("dsp") / dsp_row)
    r = int(math.floor(min(bounds)))
    while r > 1:  # an 8-bit row's (hi, lo) pair needs two rows in a tile
        d = AcceleratorDesign(plat.name, plat.clock_mhz, r, cols, packing, lut_cols, 1, cols)
        if _logic_fits(d, plat):
            return r
        r -= 1
    return 0


@lru_cache(maxsize=64)
def _arrays(plat: Platform) -> tuple[tuple[int, "int | str", int, int, int], ...]:
    """(units, packing, cols, rows, lut_cols) of the largest array of each shape, best first."""
    out = []
    packings: tuple = ("lut",) if plat.dsp == 0 else (4, 3, "lut")
    for packing in packings:
        for cols in COLUMN_CHOICES:
            best = None
            for lut_cols in [cols] if packing == "lut" else range(0, cols + 1, 2 if packing == 4 else 1):
                r = _max_rows(plat, packing, cols, lut_cols)
                if r and (best is None or r * cols > best[0]):
                    best = (r * cols, packing, cols, r, lut_cols)
            if best:
                out.append(best)
    out.sort(key=lambda a: -a[0])
    return tuple(out)


@lru_cache(maxsize=64)
def max_units(platform: Platform) -> int:
    """Most W4A6 units any array shape fits on the board under its caps."""
    arr = _arrays(platform)
    return arr[0][0] if arr else 0


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


def explore(subnet: SubnetConfig, platform: "str | Path | Platform", fps_target: float | None = None) -> HardwareReport:
    """The fastest design for ``subnet`` that fits ``platform`` under its utilisation caps.

    Raises :class:`HardwareError` if no design fits, or if ``fps_target`` is given and even the
    fastest design misses it (the message names the best FPS reachable).
    """
    plat = _platform(platform)
    arrays = _arrays(plat)
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
    best: HardwareReport | None = None
    tried = 0
    t = subnet.num_tokens
    kmax = max(max(l.in_features for l in subnet.linear_layers()), t, subnet.head_dim)
    for rows, packing, cols, lut_cols in candidates:
        rep = None
        for tn, k, mem in _buffer_options(t, kmax, cols, plat):
            d = AcceleratorDesign(plat.name, plat.clock_mhz, rows, cols, packing, lut_cols, tn, k, mem)
            res = estimate_resources(d, plat)
            if res.fits:
                rep = evaluate(subnet, plat, d)
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
    if best is None:
        raise HardwareError(
            f"no accelerator design fits {plat.name}: the on-chip buffers exceed the "
            f"BRAM/URAM caps for every array shape (BRAM cap {plat.limit('bram'):.0f} blocks)"
        )
    best.notes.append(f"chosen by design-space exploration among {tried} fitting designs")
    if fps_target is not None:
        if fps_target <= 0:
            raise HardwareError(f"fps target must be > 0, got {fps_target}")
        if best.fps < fps_target:
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


__all__ = ["evaluate", "explore", "max_units"]
