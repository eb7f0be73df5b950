"""The ROM contents of the nonlinear units, as the ``$readmemh`` files the HDL loads.

The tables are :mod:`quasar_vit.quantization.intops`'s own (computed there in exact integer
arithmetic), so the RTL and every other back end read the same values.  A simulation or a
synthesis writes them into its working directory under the names the modules default to.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from quasar_vit.quantization import intops


def readmemh(values: np.ndarray, digits: int) -> str:
    """``values`` (non-negative integers) as ``$readmemh`` text: one ``digits``-digit hex word a line."""
    return "".join(f"{int(v):0{digits}x}\n" for v in np.asarray(values).ravel())


@lru_cache(maxsize=None)
def table_files() -> dict[str, str]:
    """File name -> contents of every ``$readmemh`` ROM: ``rsqrt.hex`` (LayerNorm).  (The softmax's
    64-entry exp2 table is a case statement in ``qv_sm_path.v``; its test compares it with
    :func:`intops.exp2_table`.)"""
    return {"rsqrt.hex": readmemh(intops.rsqrt_table(), 5)}


def write_tables(directory: Path) -> None:
    """Writes :func:`table_files` into ``directory``."""
    for name, text in table_files().items():
        (directory / name).write_text(text)
