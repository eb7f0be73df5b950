"""The result of costing a subnet on a design: totals, per-layer costs, resources, roofline.

Built on every evaluation in the search loop, so it stores only totals; the per-layer list and
the JSON form are computed on demand.
"""

from __future__ import annotations

from typing import Any

from quasar_vit.hardware.arrays import max_units
from quasar_vit.hardware.design import AcceleratorDesign
from quasar_vit.hardware.latency import CostContext, LayerCost
from quasar_vit.hardware.platforms import Platform
from quasar_vit.hardware.resources import Resources
from quasar_vit.space import SubnetConfig


class Throughput:
    """What every accelerator's report derives alike: latency and FPS from its ``cycles`` at its
    design's clock, and whether its ``resources`` fit the board."""

    __slots__ = ()
    cycles: float
    design: Any
    resources: Resources

    @property
    def latency_ms(self) -> float:
        return self.cycles / (self.design.clock_mhz * 1e3)

    @property
    def fps(self) -> float:
        return 1e3 / self.latency_ms

    @property
    def fits(self) -> bool:
        return self.resources.fits


class HardwareReport(Throughput):
    """Predicted latency, throughput and resources of ``subnet`` on ``design`` (batch 1)."""

    __slots__ = (
        "subnet",
        "platform",
        "design",
        "resources",
        "cycles",
        "compute_cycles",
        "ddr_bytes",
        "macs",
        "unit_passes",
        "host_cycles",
        "_ctx",
        "_layers",
        "notes",
    )

    def __init__(
        self,
        subnet: SubnetConfig,
        ctx: CostContext,
        resources: Resources,
        totals: tuple[float, float, float, int, int, float],
        notes: tuple[str, ...] = (),
    ) -> None:
        self.subnet = subnet
        self.platform: Platform = ctx.platform
        self.design: AcceleratorDesign = ctx.design
        self.resources = resources
        (self.cycles, self.compute_cycles, self.ddr_bytes, self.macs, self.unit_passes, self.host_cycles) = totals
        self._ctx = ctx
        self._layers: list[LayerCost] | None = None
        self.notes: tuple[str, ...] = tuple(notes)

    def with_notes(self, *notes: str) -> "HardwareReport":
        """The same costing with ``notes`` added: a new report, so a report handed out is never
        changed afterwards."""
        totals = (self.cycles, self.compute_cycles, self.ddr_bytes, self.macs, self.unit_passes, self.host_cycles)
        return HardwareReport(self.subnet, self._ctx, self.resources, totals, self.notes + notes)

    # ---- totals -------------------------------------------------------------------------------
    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    @property
    def gops_achieved(self) -> float:
        """Achieved GOP/s (2 ops per MAC) over the whole inference, host time included."""
        return 2 * self.macs / (self.latency_ms * 1e6)

    @property
    def peak_gops(self) -> float:
        """The design's peak: every W4A6 unit busy every cycle (4-bit GOP/s)."""
        return 2 * self.design.units * self.design.clock_mhz / 1e3

    @property
    def board_peak_gops(self) -> float:
        """Peak of the largest W4A6 array the board fits under its caps (roofline ceiling)."""
        return 2 * max_units(self.platform) * self.design.clock_mhz / 1e3

    @property
    def ddr_gbps(self) -> float:
        return self.platform.ddr_gbps * self.platform.ddr_efficiency

    @property
    def host_ms(self) -> float:
        return self.host_cycles / (self.design.clock_mhz * 1e3)

    def fps_with_host(self, factor: float) -> float:
        """FPS with every host-op cost scaled by ``factor`` (the host costs are derived estimates)."""
        cycles = self.cycles + (factor - 1.0) * self.host_cycles
        return self.design.clock_mhz * 1e6 / cycles

    @property
    def layers(self) -> list[LayerCost]:
        if self._layers is None:
            self._layers = self._ctx.layers(self.subnet)
        return self._layers

    # ---- output -------------------------------------------------------------------------------
    def _layer_dict(self, c: LayerCost) -> dict[str, Any]:
        ms = c.cycles / (self.design.clock_mhz * 1e3)
        d: dict[str, Any] = {
            "name": c.name,
            "op": c.op,
            "unit": c.unit,
            "macs": c.macs,
            "cycles": round(c.cycles, 1),
            "ms": round(ms, 5),
            "ddr_bytes": round(c.ddr_bytes),
            "bound": c.bound,
        }
        if c.op in ("linear", "matmul"):
            achieved = 2 * c.macs / (ms * 1e6) if ms else 0.0
            intensity = 2 * c.macs / c.ddr_bytes if c.ddr_bytes else float("inf")
            # compute roof of this layer: nibble passes (8-bit rows, 6-bit operands) cost cycles
            roof = self.peak_gops * c.macs / c.unit_passes if c.unit_passes else self.peak_gops
            attainable = min(roof, self.ddr_gbps * intensity)
            d.update(
                compute_cycles=round(c.compute_cycles, 1),
                gops=round(achieved, 2),
                intensity_ops_per_byte=round(intensity, 2),
                attainable_gops=round(attainable, 2),
                array_utilisation=round(c.unit_passes / (c.cycles * self.design.units), 4) if c.cycles else 0.0,
            )
        return d

    def to_dict(self, layers: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "platform": self.platform.name,
            "subnet": self.subnet.to_dict(),
            "design": self.design.to_dict(),
            "total": {
                "cycles": round(self.cycles, 1),
                "latency_ms": round(self.latency_ms, 4),
                "fps": round(self.fps, 2),
                "gmacs": round(self.gmacs, 4),
                "gops_achieved": round(self.gops_achieved, 2),
                "peak_gops": round(self.peak_gops, 2),
                "board_peak_gops": round(self.board_peak_gops, 2),
                "ddr_gbps_usable": round(self.ddr_gbps, 2),
                "ddr_mbytes": round(self.ddr_bytes / 1e6, 3),
                "host_ms": round(self.host_ms, 4),
                "fabric_ms": round(self.latency_ms - self.host_ms, 4),
                "fps_host_2x": round(self.fps_with_host(2.0), 2),
                "fps_host_half": round(self.fps_with_host(0.5), 2),
                "share_8bit": round(self.subnet.share_8bit(), 4),
                "array_utilisation": round(self.unit_passes / (self.cycles * self.design.units), 4),
            },
            "resources": self.resources.to_dict(),
            "fits": self.fits,
            "notes": list(self.notes),
        }
        if layers:
            out["layers"] = [self._layer_dict(c) for c in self.layers]
        return out

    def format_table(self, layers: bool = True) -> str:
        """A readable report: design, resources, per-layer costs (optional) and totals."""
        d = self.design
        lines = [
            f"quasar-vit hardware model: {self.platform.name} ({self.platform.description})",
            f"subnet: {self.subnet.describe()}",
            f"        {self.gmacs:.3f} GMACs, {100 * self.subnet.share_8bit():.1f} % 8-bit rows, "
            f"{self.subnet.geometry.num_tokens} tokens",
            f"design: {d.describe()}",
            f"        input buffer in {d.input_buffer_mem.upper()}, usable DDR {self.ddr_gbps:.1f} GB/s",
            "",
        ]
        if layers:
            hdr = f"{'layer':<20} {'op':<9} {'unit':<6} {'MMACs':>8} {'cycles':>10} {'ms':>8} {'GOP/s':>8} {'roof':>8} {'bound':>7}"
            lines += [hdr, "-" * len(hdr)]
            for c in self.layers:
                x = self._layer_dict(c)
                g = f"{x['gops']:8.1f}" if "gops" in x else f"{'':>8}"
                roof = f"{x['attainable_gops']:8.1f}" if "attainable_gops" in x else f"{'':>8}"
                lines.append(
                    f"{c.name:<20} {c.op:<9} {c.unit:<6} {c.macs / 1e6:8.2f} {c.cycles:10.0f} "
                    f"{x['ms']:8.4f} {g} {roof} {x['bound']:>7}"
                )
            lines.append("")
        lines += self.resources.table_lines()
        lines += [
            "",
            f"total: {self.cycles:,.0f} cycles = {self.latency_ms:.3f} ms -> {self.fps:.1f} FPS "
            f"(fabric {self.latency_ms - self.host_ms:.3f} ms, host {self.host_ms:.3f} ms)",
            f"       host costs at 2x / 0.5x: {self.fps_with_host(2.0):.1f} / {self.fps_with_host(0.5):.1f} FPS",
            f"       {self.gops_achieved:.1f} GOP/s achieved; design peak {self.peak_gops:.1f}, "
            f"board peak {self.board_peak_gops:.1f} GOP/s (W4A6); "
            f"array utilisation {100 * self.unit_passes / (self.cycles * d.units):.1f} %",
        ]
        if not self.fits:
            lines.append("WARNING: the design does not fit: " + "; ".join(self.resources.violations()))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"HardwareReport({self.platform.name}, {self.fps:.1f} FPS, {self.latency_ms:.3f} ms, "
            f"{self.design.units} units, fits={self.fits})"
        )


__all__ = ["HardwareReport", "Throughput"]
