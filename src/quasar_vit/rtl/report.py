"""The RTL core chosen for a subnet (:class:`CoreDesign`) and its costing (:class:`CoreReport`).

These are what the search, the export (``accelerator.json``, ``report.md``) and ``quasar-vit hw``
hand on for a model with integer nonlinear ops: the same interface as the HLS engine's
:class:`~quasar_vit.hardware.report.HardwareReport` (``fps``, ``fits``, ``resources``, ``design``,
``to_dict``, ``format_table``), with the cycles of the schedule model (checked against Verilator) and
the resources of the resource model (checked against Yosys).  Pure Python: no torch, no simulator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from quasar_vit.errors import HardwareError, RtlError
from quasar_vit.hardware.platforms import RESOURCES, Platform
from quasar_vit.hardware.report import Throughput
from quasar_vit.hardware.resources import Resources
from quasar_vit.rtl.layout import GemmShape
from quasar_vit.rtl.schedule import RUN_LEAD
from quasar_vit.space import SubnetConfig

KIND = "rtl-core"  # accelerator.json's "accelerator" of this design (the HLS engine's has none)
_SHAPE_FIELDS = tuple(f.name for f in dataclasses.fields(GemmShape))


@dataclass(frozen=True)
class CoreDesign:
    """``qv_gemm_core`` as built for one subnet on one board: its shape (array and memories) and clock."""

    platform: str
    clock_mhz: float
    shape: GemmShape

    @property
    def units(self) -> int:
        return self.shape.units

    @property
    def nonlinear(self) -> str:
        """Where LayerNorm/softmax/GELU run: always on the fabric (the core's own units)."""
        return "fabric"

    def to_dict(self) -> dict[str, Any]:
        return {
            "accelerator": KIND,
            "platform": self.platform,
            "clock_mhz": self.clock_mhz,
            "units": self.units,
            **dataclasses.asdict(self.shape),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CoreDesign":
        """The design of ``to_dict``; one :class:`HardwareError` line for a malformed one."""
        if not isinstance(d, Mapping) or d.get("accelerator") != KIND:
            raise HardwareError(f"not an RTL core design (accelerator: {KIND!r} expected)")
        missing = [k for k in ("platform", "clock_mhz", *_SHAPE_FIELDS[:8]) if k not in d]
        if missing:
            raise HardwareError(f"RTL core design lacks {', '.join(missing)}")
        try:
            shape = GemmShape(**{k: int(d[k]) for k in _SHAPE_FIELDS if k in d})
            return cls(str(d["platform"]), float(d["clock_mhz"]), shape)
        except (TypeError, ValueError, RtlError) as exc:
            raise HardwareError(f"RTL core design: {exc}") from None

    def describe(self) -> str:
        s = self.shape
        return (
            f"RTL core {s.R} x {s.T} x {s.KP} W4A6 units ({s.units}) at {self.clock_mhz:g} MHz: {s.R} row slots, "
            f"{s.T} tokens a tile, {s.WB}-bit weight stream; memories for {s.T * s.tiles_max} tokens, "
            f"{s.KP * s.ch_max} activation channels, K <= {s.KP * s.wch_max}; LayerNorm/softmax/GELU on the fabric"
        )


@dataclass(frozen=True)
class StepCost:
    """One step of an image on the accelerator: its cycles (from its launch to the next step's), the
    subnet's multiply-accumulates it computes, and its W4A6 unit passes as the core runs it (an
    8-bit row or a 6-bit key/value takes two; the patch embedding runs on every token, K padded)."""

    name: str
    kind: str  # "load", "linear", "LayerNorm", "Q K^T", "softmax", "P V"
    cycles: int
    macs: int
    passes: int


def steps_total(steps: tuple[StepCost, ...]) -> tuple[int, dict[str, int]]:
    """An image's cycles from ``run`` to ``done`` (the sequencer's lead, then the steps) and their sum by step kind."""
    by_kind: dict[str, int] = {}
    for s in steps:
        by_kind[s.kind] = by_kind.get(s.kind, 0) + s.cycles
    return RUN_LEAD + sum(by_kind.values()), by_kind


def core_resources(counts: Mapping[str, Any], platform: Platform) -> Resources:
    """The resource model's counts (:func:`~quasar_vit.rtl.resources.estimate`) against the board."""
    modules = counts.get("modules", {})
    return Resources(
        lut=int(counts["lut"]),
        ff=int(counts["ff"]),
        dsp=int(counts["dsp"]),
        bram=int(counts["bram36"]),
        uram=0,
        totals=tuple((r, platform.total(r)) for r in RESOURCES),
        caps=platform.util_cap,
        breakdown=tuple(
            (k, tuple((name, float(m[k])) for name, m in sorted(modules.items()) if m.get(k)))
            for k in ("lut", "ff", "dsp", "bram36")
        ),
    )


class CoreReport(Throughput):
    """Predicted cycles, FPS and resources of ``subnet`` on the RTL core ``design`` (batch 1)."""

    def __init__(
        self,
        subnet: SubnetConfig,
        platform: Platform,
        design: CoreDesign,
        steps: tuple[StepCost, ...],
        resources: Resources,
        notes: tuple[str, ...] = (),
    ) -> None:
        self.subnet, self.platform, self.design = subnet, platform, design
        self.steps, self.resources, self.notes = steps, resources, tuple(notes)
        self.cycles, self.by_kind = steps_total(steps)

    def with_notes(self, *notes: str) -> "CoreReport":
        return CoreReport(self.subnet, self.platform, self.design, self.steps, self.resources, self.notes + notes)

    @property
    def shape(self) -> GemmShape:
        return self.design.shape

    @property
    def array_utilisation(self) -> float:
        """Unit passes over units x cycles, over the whole image."""
        return sum(s.passes for s in self.steps) / (self.cycles * self.design.units)

    def _step_dict(self, s: StepCost) -> dict[str, Any]:
        return {
            "name": s.name,
            "op": s.kind,
            "unit": "fabric",
            "macs": s.macs,
            "cycles": s.cycles,
            "ms": round(s.cycles / (self.design.clock_mhz * 1e3), 5),
            "bound": "schedule",
            "array_utilisation": round(s.passes / (s.cycles * self.design.units), 4) if s.passes else None,
        }

    def to_dict(self, layers: bool = True) -> dict[str, Any]:
        macs = sum(s.macs for s in self.steps)
        out: dict[str, Any] = {
            "platform": self.platform.name,
            "subnet": self.subnet.to_dict(),
            "design": self.design.to_dict(),
            "total": {
                "cycles": self.cycles,
                "latency_ms": round(self.latency_ms, 4),
                "fps": round(self.fps, 2),
                "gmacs": round(macs / 1e9, 4),
                "gops_achieved": round(2 * macs / (self.latency_ms * 1e6), 2),
                "peak_gops": round(2 * self.design.units * self.design.clock_mhz / 1e3, 2),
                "host_ms": 0.0,
                "fabric_ms": round(self.latency_ms, 4),
                "share_8bit": round(self.subnet.share_8bit(), 4),
                "array_utilisation": round(self.array_utilisation, 4),
                "cycles_by_kind": self.by_kind,
            },
            "resources": self.resources.to_dict(),
            "fits": self.fits,
            "notes": list(self.notes),
        }
        if layers:
            out["layers"] = [self._step_dict(s) for s in self.steps]
        return out

    def format_table(self, layers: bool = True) -> str:
        """A readable report: the core, per-step cycles (optional), resources and totals."""
        lines = [
            f"quasar-vit hardware model: {self.platform.name} ({self.platform.description})",
            f"subnet: {self.subnet.describe()}",
            f"design: {self.design.describe()}",
            "cycles: the RTL's schedule model (checked against Verilator); resources: the model fitted to Yosys",
            "",
        ]
        if layers:
            hdr = f"{'step':<24} {'kind':<10} {'MMACs':>8} {'cycles':>9} {'ms':>8} {'array use':>9}"
            lines += [hdr, "-" * len(hdr)]
            for s in self.steps:
                d = self._step_dict(s)
                use = "" if d["array_utilisation"] is None else f"{100 * d['array_utilisation']:.1f} %"
                lines.append(f"{s.name:<24} {s.kind:<10} {s.macs / 1e6:8.2f} {s.cycles:9d} {d['ms']:8.4f} {use:>9}")
            lines.append("")
        lines += self.resources.table_lines()
        shares = ", ".join(
            f"{k} {100 * v / self.cycles:.1f} %" for k, v in sorted(self.by_kind.items(), key=lambda kv: -kv[1])
        )
        lines += [
            "",
            f"total: {self.cycles:,} cycles = {self.latency_ms:.3f} ms -> {self.fps:.1f} FPS; {shares}",
            f"       array utilisation {100 * self.array_utilisation:.1f} % of {self.design.units} units",
        ]
        if not self.fits:
            lines.append("WARNING: the design does not fit: " + "; ".join(self.resources.violations()))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"CoreReport({self.platform.name}, {self.fps:.1f} FPS, {self.design.units} units, fits={self.fits})"


__all__ = ["KIND", "CoreDesign", "StepCost", "CoreReport", "core_resources", "steps_total"]
