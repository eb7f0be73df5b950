"""The paper's two ZCU102 operating points as explicit subnets, for calibration and tests.

The paper reports model size, GMACs, share of 8-bit rows and measured FPS, not the exact
architectures, so each point is represented by a subnet of the matching scale built from
AutoFormer-style choices (``docs/hardware-model.md``):

* ``QUASAR_L2_LIKE``: DeiT-Small scale, 4.77 GMACs, 31 % 8-bit rows, 15.1 MB (paper: 4.8 GMACs,
  15.8 MB, 101.5 FPS).
* ``QUASAR_S_LIKE``: DeiT-Tiny scale, 1.41 GMACs, 39 % 8-bit rows, 4.4 MB (paper: 1.4 GMACs,
  4.1 MB, 251.6 FPS).

Tests and ``benchmarks/hardware.py`` check that the model predicts these within 15 % on the
ZCU102 and that the chosen designs stay within the paper's reported utilisation.
"""

from __future__ import annotations

from dataclasses import dataclass

from quasar_vit.space import SubnetConfig

QUASAR_L2_LIKE = SubnetConfig(
    embed_dim=384,
    depth=12,
    num_heads=(7, 6, 7, 6, 7, 7, 6, 7, 6, 7, 7, 6),
    mlp_ratios=(4.0,) * 12,
    w8_shares=(0.5, 0.25, 0.25, 0.5, 0.25, 0.25, 0.25, 0.5, 0.25, 0.25, 0.25, 0.25),
)

QUASAR_S_LIKE = SubnetConfig(
    embed_dim=192,
    depth=13,
    num_heads=(4, 3, 4, 3, 4, 3, 4, 3, 4, 3, 4, 3, 4),
    mlp_ratios=(4.0, 3.5, 4.0, 3.5, 4.0, 3.5, 4.0, 3.5, 4.0, 3.5, 4.0, 3.5, 4.0),
    w8_shares=(0.5, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5, 0.25, 0.5),
)


@dataclass(frozen=True)
class OperatingPoint:
    """A measured result of the paper and the subnet that stands for it."""

    name: str
    subnet: SubnetConfig
    paper_fps: float
    paper_gmacs: float


#: Utilisation of the paper's ZCU102 design, in percent (upper ends of the reported ranges).
PAPER_UTILISATION = {"lut": 66.0, "ff": 31.0, "dsp": 69.0, "bram": 44.0}
#: Relative tolerance of the calibration.
TOLERANCE = 0.15

OPERATING_POINTS = (
    OperatingPoint("quasar-L2", QUASAR_L2_LIKE, 101.5, 4.8),
    OperatingPoint("quasar-S", QUASAR_S_LIKE, 251.6, 1.4),
)

__all__ = ["QUASAR_L2_LIKE", "QUASAR_S_LIKE", "OperatingPoint", "OPERATING_POINTS", "PAPER_UTILISATION", "TOLERANCE"]
