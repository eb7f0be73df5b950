"""Row-wise mixed-precision quantization (paper section 1): LSQ fake quantization and its integer semantics."""

from quasar_vit.quantization.lsq import (
    ActQuantizer,
    calibrate,
    calibration,
    effective_step,
    init_weight_steps,
    integer_weight_rows,
    qrange,
    quantize_weight_rows,
    round_ste,
    row_bit_mask,
)

__all__ = [
    "ActQuantizer",
    "calibrate",
    "calibration",
    "effective_step",
    "init_weight_steps",
    "integer_weight_rows",
    "qrange",
    "quantize_weight_rows",
    "round_ste",
    "row_bit_mask",
]
