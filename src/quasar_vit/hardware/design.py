"""The HLS engine's parameters: everything its generator needs to build it.

The HLS engine runs models with float nonlinear ops (``model.nonlinear: float``): LayerNorm, softmax
and GELU on the host.  Models with integer ops run on the RTL core (:mod:`quasar_vit.rtl`), which
has its own design (:class:`quasar_vit.rtl.report.CoreDesign`).

The engine is a weight-stationary array of ``pe_rows x pe_cols`` W4A6 multiply units.  Each cycle
one token's ``pe_cols`` activations are broadcast along the rows; row ``r`` multiplies them with
its ``pe_cols`` stationary 4-bit weights and reduces them in an adder tree into an accumulator.
An 8-bit weight row is two 4-bit rows (signed high nibble, unsigned low nibble) whose results
are shifted and added in the per-row output stage, so one array serves every precision mix
(paper, section 1).  ``lut_cols`` of the columns are built from LUT-only units, the others from
DSP48E2 slices with packing 3 (three weights x one activation) or 4 (two x two).

Tiling: tokens in tiles of ``tile_tokens`` (Tn), output rows in tiles of ``pe_rows`` (Tm),
reduction in tiles of ``tile_k`` (Tk).  Input, weight and output tiles are double-buffered so
the next tile loads while the current one computes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from quasar_vit.errors import HardwareError

PACKINGS = (3, 4, "lut")


@dataclass(frozen=True)
class AcceleratorDesign:
    """One accelerator instance for one board (see module docstring for the dataflow)."""

    platform: str
    clock_mhz: float
    pe_rows: int  # Tm: output rows computed in parallel
    pe_cols: int  # Tk_pe: reduction lanes (activations per cycle)
    packing: int | str  # 3, 4 or "lut"
    lut_cols: int  # columns made of LUT-only units (== pe_cols when packing == "lut")
    tile_tokens: int  # Tn: tokens per tile (input/output buffer depth in tokens)
    tile_k: int  # Tk: reduction depth held in the input/weight buffers
    input_buffer_mem: str = "bram"  # "bram" or "uram"

    def __post_init__(self) -> None:
        if self.packing not in PACKINGS:
            raise HardwareError(f"packing must be 3, 4 or 'lut', got {self.packing!r}")
        for k in ("pe_rows", "pe_cols", "tile_tokens", "tile_k"):
            if int(getattr(self, k)) <= 0:
                raise HardwareError(f"design '{k}' must be a positive integer, got {getattr(self, k)!r}")
        if not 0 <= self.lut_cols <= self.pe_cols:
            raise HardwareError(f"design lut_cols={self.lut_cols} must be in [0, pe_cols={self.pe_cols}]")
        if self.packing == "lut" and self.lut_cols != self.pe_cols:
            raise HardwareError("a LUT-only design ('packing: lut') must have lut_cols == pe_cols")
        if self.packing == 4 and (self.pe_cols % 2 or self.lut_cols % 2):
            raise HardwareError(
                f"packing 4 pairs columns: pe_cols={self.pe_cols} and lut_cols={self.lut_cols} must be even"
            )
        if self.tile_k % self.pe_cols:
            raise HardwareError(f"design tile_k={self.tile_k} must be a multiple of pe_cols={self.pe_cols}")
        if self.input_buffer_mem not in ("bram", "uram"):
            raise HardwareError(f"input_buffer_mem must be 'bram' or 'uram', got {self.input_buffer_mem!r}")
        if self.clock_mhz <= 0:
            raise HardwareError(f"design clock_mhz must be > 0, got {self.clock_mhz}")

    # ---- derived ----------------------------------------------------------------------------
    @property
    def nonlinear(self) -> str:
        """Where LayerNorm/softmax/GELU run: on the host (the ARM cores), always."""
        return "host"

    @property
    def units(self) -> int:
        """Number of W4A6 multiply units."""
        return self.pe_rows * self.pe_cols

    @property
    def dsp_cols(self) -> int:
        return self.pe_cols - self.lut_cols

    @property
    def dsp_units(self) -> int:
        return self.pe_rows * self.dsp_cols

    @property
    def lut_units(self) -> int:
        return self.pe_rows * self.lut_cols

    @property
    def dsp_slices(self) -> int:
        """DSP48E2 slices of the array: packing 3 groups 3 rows x 1 column, packing 4 2 x 2."""
        if self.packing == "lut" or self.dsp_cols == 0:
            return 0
        if self.packing == 3:
            return math.ceil(self.pe_rows / 3) * self.dsp_cols
        return math.ceil(self.pe_rows / 2) * math.ceil(self.dsp_cols / 2)

    def buffers(self, act_bits: int = 8, acc_bits: int = 32, weight_load_cycles: int = 16) -> dict[str, dict[str, int]]:
        """Sizes of the double-buffered on-chip tiles, per copy, in words and bits."""
        return {
            "input": {
                "words": self.tile_tokens * self.tile_k,
                "word_bits": act_bits,
                "read_bits_per_cycle": self.pe_cols * act_bits,
                "copies": 2,
            },
            "weight": {
                "words": self.pe_rows * self.tile_k,
                "word_bits": 4,
                "read_bits_per_cycle": math.ceil(self.units * 4 / max(1, weight_load_cycles)),
                "copies": 2,
            },
            "output": {
                "words": self.tile_tokens * self.pe_rows,
                "word_bits": acc_bits,
                "read_bits_per_cycle": self.pe_rows * acc_bits,
                "copies": 2,
            },
        }

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["units"] = self.units
        d["dsp_units"] = self.dsp_units
        d["lut_units"] = self.lut_units
        d["dsp_slices"] = self.dsp_slices
        d["pe_array"] = [self.pe_rows, self.pe_cols]
        d["tiles"] = {"Tn_tokens": self.tile_tokens, "Tm_rows": self.pe_rows, "Tk_reduction": self.tile_k}
        d["buffers"] = self.buffers()
        return d

    _DERIVED = ("units", "dsp_units", "lut_units", "dsp_slices", "pe_array", "tiles", "buffers", "buffer_bram36")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AcceleratorDesign":
        if not isinstance(d, Mapping):
            raise HardwareError("a design must be a JSON object")
        if "design" in d and isinstance(d["design"], Mapping):  # accept a whole report
            d = d["design"]
        if d.get("nonlinear", "host") != "host":
            raise HardwareError(
                "an HLS design with fabric LayerNorm/softmax/GELU units: integer models now run on the RTL core; "
                "re-explore (export --re-explore, or search again)"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - set(cls._DERIVED) - {"nonlinear"})
        if unknown:
            raise HardwareError(f"unknown design key(s): {', '.join(unknown)}")
        missing = sorted(k for k in known - {"input_buffer_mem"} if k not in d)
        if missing:
            raise HardwareError(f"design is missing key(s): {', '.join(missing)}")
        packing = d["packing"]
        if isinstance(packing, str) and packing.isdigit():
            packing = int(packing)
        try:
            return cls(
                platform=str(d["platform"]),
                clock_mhz=float(d["clock_mhz"]),
                pe_rows=int(d["pe_rows"]),
                pe_cols=int(d["pe_cols"]),
                packing=packing,
                lut_cols=int(d["lut_cols"]),
                tile_tokens=int(d["tile_tokens"]),
                tile_k=int(d["tile_k"]),
                input_buffer_mem=str(d.get("input_buffer_mem", "bram")),
            )
        except (TypeError, ValueError) as exc:
            raise HardwareError(f"malformed design: {exc}") from None

    def describe(self) -> str:
        pk = "LUT-only" if self.packing == "lut" else f"DSP packing {self.packing}"
        extra = f" + {self.lut_cols} LUT cols" if self.packing != "lut" and self.lut_cols else ""
        return (
            f"HLS engine: {self.pe_rows}x{self.pe_cols} W4A6 array ({self.units} units, {pk}{extra}), "
            f"tiles Tn={self.tile_tokens} Tm={self.pe_rows} Tk={self.tile_k}, nonlinear ops on the host, "
            f"{self.clock_mhz:g} MHz"
        )


__all__ = ["AcceleratorDesign", "PACKINGS"]
