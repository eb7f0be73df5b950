"""Resource model: LUT, FF, DSP, BRAM36 and URAM of a design, and whether it fits a board.

Multiply-unit costs come from the paper; the rest (adder trees, output stage, infrastructure,
buffers) is a small analytic model whose constants live in :class:`ModelParams`.  Buffers are
mapped to memory blocks by both capacity and port width: a buffer that must deliver ``b`` bits
per cycle needs ``ceil(b / 64)`` banks however small it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from quasar_vit.hardware.design import AcceleratorDesign
from quasar_vit.hardware.params import ModelParams
from quasar_vit.hardware.platforms import RESOURCES, Platform


def memory_blocks(words: int, word_bits: int, read_bits: int, data_bits: int, depth: int) -> int:
    """Blocks (BRAM36 or URAM) for one copy of a buffer of ``words`` x ``word_bits``."""
    banks = max(1, math.ceil(read_bits / data_bits))
    bits_per_bank = math.ceil(words * word_bits / banks)
    return banks * max(1, math.ceil(bits_per_bank / (data_bits * depth)))


@dataclass(frozen=True)
class Resources:
    """Counts used by a design and the board's totals and caps."""

    lut: int
    ff: int
    dsp: int
    bram: int
    uram: int
    totals: tuple[tuple[str, int], ...]
    caps: tuple[tuple[str, float], ...]
    breakdown: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()

    def count(self, r: str) -> int:
        return int(getattr(self, r))

    def percent(self, r: str) -> float:
        total = dict(self.totals)[r]
        return 100.0 * self.count(r) / total if total else (0.0 if self.count(r) == 0 else math.inf)

    def violations(self) -> list[str]:
        """Resources over the board's utilisation cap, as readable strings (empty if it fits)."""
        out = []
        totals, caps = dict(self.totals), dict(self.caps)
        for r in RESOURCES:
            limit = totals[r] * caps[r]
            if self.count(r) > limit + 1e-9:
                out.append(f"{r.upper()} {self.count(r)} > {limit:.0f} ({caps[r] * 100:.0f} % of {totals[r]})")
        return out

    @property
    def fits(self) -> bool:
        return not self.violations()

    def table_lines(self) -> list[str]:
        """A readable table: each resource's count, the board's total, utilisation and cap."""
        lines = [f"{'resource':<9} {'used':>9} {'total':>9} {'util':>7} {'cap':>6}"]
        for k, r in self.to_dict().items():
            if k in RESOURCES:
                lines.append(
                    f"{k.upper():<9} {r['used']:>9} {r['total']:>9} {r['percent']:>6.1f}% {r['cap_percent']:>5.0f}%"
                )
        return lines

    def to_dict(self) -> dict[str, Any]:
        totals, caps = dict(self.totals), dict(self.caps)
        return {
            r: {
                "used": self.count(r),
                "total": totals[r],
                "percent": round(self.percent(r), 2),
                "cap_percent": round(100 * caps[r], 1),
            }
            for r in RESOURCES
        } | {"fits": self.fits, "breakdown": {k: dict(v) for k, v in self.breakdown}}


def estimate_resources(design: AcceleratorDesign, platform: Platform, params: ModelParams | None = None) -> Resources:
    """Resource counts of ``design`` (independent of the subnet: buffers are sized by the design)."""
    p = params or platform.params
    if design.packing == "lut":
        unit_lut = 0.0
    else:
        unit_lut = p.lut_per_unit_p3 if design.packing == 3 else p.lut_per_unit_p4
    array_lut = design.dsp_units * unit_lut + design.lut_units * p.lut_per_unit_lutonly
    adder_lut = design.units * p.adder_lut_per_unit
    out_lut = design.pe_rows * p.out_lut_per_row
    lut = array_lut + adder_lut + out_lut + p.infra_lut
    ff = design.units * p.ff_per_unit + design.pe_rows * p.out_ff_per_row + p.infra_ff
    dsp = design.dsp_slices + math.ceil(design.pe_rows * p.out_dsp_per_row)

    bufs = design.buffers(p.act_bits_stored, p.acc_bits, p.weight_reg_load_cycles)
    bram = p.infra_bram
    uram = 0
    mem: dict[str, float] = {}
    for name, b in bufs.items():
        if name == "input" and design.input_buffer_mem == "uram":
            n = memory_blocks(b["words"], b["word_bits"], b["read_bits_per_cycle"], p.uram_data_bits, p.uram_depth)
            uram += n * b["copies"]
            mem[f"{name}_uram"] = n * b["copies"]
        else:
            n = memory_blocks(b["words"], b["word_bits"], b["read_bits_per_cycle"], p.bram_data_bits, p.bram_depth)
            bram += n * b["copies"]
            mem[f"{name}_bram"] = n * b["copies"]
    breakdown = (
        (
            "lut",
            (
                ("array", array_lut),
                ("adders", adder_lut),
                ("output_stage", out_lut),
                ("infra", p.infra_lut),
            ),
        ),
        (
            "dsp",
            (
                ("array", float(design.dsp_slices)),
                ("output_stage", float(math.ceil(design.pe_rows * p.out_dsp_per_row))),
            ),
        ),
        (
            "memory",
            tuple(mem.items()) + (("infra_bram", float(p.infra_bram)),),
        ),
    )
    return Resources(
        lut=math.ceil(lut),
        ff=math.ceil(ff),
        dsp=int(dsp),
        bram=int(bram),
        uram=int(uram),
        totals=tuple((r, platform.total(r)) for r in RESOURCES),
        caps=platform.util_cap,
        breakdown=breakdown,
    )


__all__ = ["Resources", "estimate_resources", "memory_blocks"]
