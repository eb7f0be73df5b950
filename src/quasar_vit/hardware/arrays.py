"""The largest compute array of each shape a board fits (subnet-independent, closed form).

The array (packing, columns, rows, LUT-only columns) is bounded only by LUT/FF/DSP, so it is
sized once per board here; both the design-space exploration (``dse``) and a report's roofline
ceiling (``HardwareReport.board_peak_gops``) read it, which is why it lives in its own module
rather than in ``dse`` (that made ``dse`` and ``report`` import each other).
"""

from __future__ import annotations

import math
from functools import lru_cache

from quasar_vit.hardware.design import AcceleratorDesign
from quasar_vit.hardware.platforms import Platform
from quasar_vit.hardware.resources import estimate_resources

COLUMN_CHOICES = (16, 32, 48, 64, 96, 128)

# (units, packing, cols, rows, lut_cols) of one array shape
ArrayShape = tuple[int, "int | str", int, int, int]


def _logic_fits(design: AcceleratorDesign, plat: Platform) -> bool:
    """Whether the design's LUT, FF and DSP fit the board's caps (its buffers are sized later)."""
    r = estimate_resources(design, plat)
    return r.lut <= plat.limit("lut") and r.ff <= plat.limit("ff") and r.dsp <= plat.limit("dsp")


def _max_rows(plat: Platform, packing: "int | str", cols: int, lut_cols: int) -> int:
    """Largest ``pe_rows`` whose LUT/FF/DSP fit the caps for this column layout (0 if none)."""
    p = plat.params
    dcols = cols - lut_cols
    unit_lut = {3: p.lut_per_unit_p3, 4: p.lut_per_unit_p4, "lut": 0.0}[packing]
    dsp_row = p.out_dsp_per_row + (dcols / packing if isinstance(packing, int) else 0)  # "lut": no DSPs
    lut_row = dcols * unit_lut + lut_cols * p.lut_per_unit_lutonly + cols * p.adder_lut_per_unit + p.out_lut_per_row
    ff_row = cols * p.ff_per_unit + p.out_ff_per_row
    bounds = [
        (plat.limit("lut") - p.infra_lut) / lut_row,
        (plat.limit("ff") - p.infra_ff) / ff_row,
    ]
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
def array_shapes(plat: Platform) -> tuple[ArrayShape, ...]:
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
    arr = array_shapes(platform)
    return arr[0][0] if arr else 0


__all__ = ["COLUMN_CHOICES", "ArrayShape", "array_shapes", "max_units"]
