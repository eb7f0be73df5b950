"""The benchmark scripts import each other as top-level modules (``import common``), as they do when run
as ``python benchmarks/NAME.py``; the tests here see them the same way."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.append(BENCHMARKS)
