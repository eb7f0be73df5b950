"""Cost parameters of the accelerator model, as data.

Every number the latency and resource model uses that is not a device count lives here, with a
default and its source, so that a platform YAML can override it (``params:`` section) without a
code change.  Sources: ``paper`` (Quasar-ViT, ICS 2024, table of multiply-unit costs),
``datasheet`` (AMD UltraScale+ memory primitives and AXI ports), ``calibrated`` (resource glue,
fitted once to the paper's LUT/FF percentages; see ``docs/hardware-model.md``) and ``assumed``
(engineering estimate, not fitted).  The fabric latency has no fitted constant: it is the trip
count of the generated loops (:mod:`quasar_vit.hardware.engine`) with the pipeline depths below.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from quasar_vit.errors import HardwareError


@dataclass(frozen=True)
class ModelParams:
    """Tunable costs of the accelerator model (see module docstring for the source tags)."""

    # --- multiply units (paper, table "cost of one multiply unit") ----------------------------
    lut_per_unit_lutonly: float = 33.3  # paper: W4A6 in LUTs only
    lut_per_unit_p3: float = 10.9  # paper: W4A6, DSP packing 3 (plus 1/3 DSP)
    lut_per_unit_p4: float = 12.9  # paper: W4A6, DSP packing 4 (plus 1/4 DSP)
    # --- array glue (calibrated against the paper's 65-66 % LUT / 30-31 % FF) -----------------
    adder_lut_per_unit: float = 6.0  # calibrated: adder-tree LUTs per multiply input
    ff_per_unit: float = 17.0  # calibrated: weight shadow regs + pipeline FFs per unit
    out_lut_per_row: float = 120.0  # assumed: per-row output stage (nibble shift-add,
    out_ff_per_row: float = 160.0  #   dequant, layer scaling, residual add, requant)
    out_dsp_per_row: float = 2.0  # assumed: layer-scale multiply + requant multiply
    infra_lut: float = 30000.0  # calibrated: AXI/DMA/control/host interface LUTs
    infra_ff: float = 40000.0  # calibrated: same, FFs
    infra_bram: int = 16  # assumed: DMA FIFOs and descriptors (BRAM36)
    # --- memories (datasheet: BRAM36 = 512 x 72 bit, URAM = 4096 x 72 bit; 64 data bits used) -
    bram_data_bits: int = 64
    bram_depth: int = 512
    uram_data_bits: int = 64
    uram_depth: int = 4096
    act_bits_stored: int = 8  # assumed: 6-bit activations stored one per byte
    acc_bits: int = 32  # assumed: accumulator width
    weight_reg_load_cycles: int = 16  # assumed: cycles to refill the PE weight registers
    # --- DDR traffic -----------------------------------------------------------------------
    act_bytes: float = 1.0  # bytes per activation in DDR
    out_bytes: float = 1.0  # bytes per output activation written back
    # --- the generated engine's ports and pipelines (hardware/engine.py) -------------------
    axi_bits: int = 128  # datasheet: Zynq UltraScale+ PS-PL HP port data width
    axi_read_latency_cycles: int = 64  # assumed: request to first beat of an HP-port read burst
    array_pipeline_base: int = 4  # assumed: unpack + multiply + accumulate stages of the
    #   array loop (plus log2(pe_cols) adder-tree levels)
    param_pipeline_depth: int = 2  # assumed: output-stage parameter read loop
    output_pipeline_depth: int = 8  # assumed: float multiply-add of the output stage at 150 MHz
    store_pipeline_depth: int = 4  # assumed: store loop
    gemm_launch_us: float = 2.0  # assumed: A53 writes the AXI-Lite registers, starts the
    #   kernel and sees ap_done, per qvit_gemm call
    # --- nonlinear ops on the host / ARM cores ---------------------------------------------
    # derived (docs/hardware-model.md, "Host costs"): NEON operations per element of a float32
    # implementation (LayerNorm 10, Softmax 21, GELU 22, attention operand preparation 9) over the
    # A53 cluster's throughput: 2 float32 lanes (64-bit NEON datapath, Cortex-A53 TRM) x 1.2 GHz x
    # 4 cores x 0.5 issue efficiency (assumed).  benchmarks/accelerator.py shows FPS at 0.5x and 2x.
    host_layernorm_ns_per_elem: float = 2.1
    host_softmax_ns_per_elem: float = 4.4
    host_gelu_ns_per_elem: float = 4.6
    host_attn_prep_ns_per_elem: float = 1.9  # quantise q/k/v, transpose v, split k/v into nibble rows
    host_call_overhead_us: float = 10.0  # assumed (formerly fitted): PL->PS hand-off per host op
    host_bw_gbps: float = 8.0  # assumed: DDR throughput seen by the A53 cluster
    final_norm_cls_only: bool = True  # assumed: final LayerNorm on the class token only

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None, where: str = "params") -> "ModelParams":
        """Defaults with ``overrides`` applied; unknown keys raise :class:`HardwareError`."""
        if not overrides:
            return cls()
        if not isinstance(overrides, Mapping):
            raise HardwareError(f"{where}: 'params' must be a mapping of parameter -> value")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise HardwareError(
                f"{where}: unknown model parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        clean: dict[str, Any] = {}
        for k, v in overrides.items():
            default = getattr(cls, k)
            try:
                if isinstance(default, bool):
                    if not isinstance(v, bool):
                        raise TypeError
                    clean[k] = v
                elif isinstance(default, int):
                    clean[k] = int(v)
                else:
                    clean[k] = float(v)
            except (TypeError, ValueError):
                raise HardwareError(f"{where}: parameter '{k}' must be a {type(default).__name__}, got {v!r}") from None
            if not isinstance(default, bool) and clean[k] < 0:
                raise HardwareError(f"{where}: parameter '{k}' must be >= 0, got {v!r}")
        return replace(cls(), **clean)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


__all__ = ["ModelParams"]
