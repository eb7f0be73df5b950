"""A timing proxy for the RTL core: each module's longest register-to-register path in the mapped netlist.

Yosys ``synth_xilinx -family xcup`` maps the core; ``ltp`` then finds, in each module, the longest
path of combinational cells between sequential ones (flip-flops, shift registers, DSP48E2 slices,
block and LUT RAM: ``rtl.synth.SEQUENTIAL``).  A path's cells are counted as LUT levels (LUTs and
wide muxes) and carry cells (CARRY4/8, which add a few tens of picoseconds each, not a LUT and its
net).  Paths are cut at module boundaries, so a path that leaves one module for another is counted
in pieces: this is a proxy, not a timing analysis.  What it does not give: net delays, placement,
and so whether 150 MHz closes; Vivado's ``report_timing`` does (docs/rtl.md).

Run: ``python benchmarks/rtl_depth.py [--deit]`` (the demo core in about 2 minutes; ``--deit`` adds
the DeiT-Small-size core, about 10 more); writes ``benchmarks/results/rtl_depth.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from common import RESULTS, argv_string, today, write_results
from rtl_units import DEIT, DEMO

from quasar_vit.rtl import synth
from quasar_vit.rtl.layout import GemmShape
from quasar_vit.rtl.modules import sources

OUT = RESULTS / "rtl_depth.json"


def depth(shape: GemmShape) -> dict[str, Any]:
    """Each module's longest combinational path in ``qv_gemm_core`` at ``shape``, deepest first."""
    t0 = time.time()
    r = synth.synthesise("qv_gemm_core", sources("qv_gemm_core"), shape.params(), depth=True)
    rows = sorted(r["depth"].items(), key=lambda kv: (-kv[1]["lut"], -kv[1]["cells"]))  # type: ignore[union-attr]
    return {"core": shape.params(), "seconds": round(time.time() - t0, 1), "modules": dict(rows)}


def markdown(results: dict[str, dict[str, Any]], argv: list[str] | None) -> str:
    lines = [
        "# RTL timing proxy: longest combinational path per module (Yosys `ltp`, xcup)",
        "",
        f"Command: `python benchmarks/rtl_depth.py {argv_string(argv)}`; {today()}. Paths are cut at module boundaries "
        "and at sequential cells (FF, SRL, DSP48E2, BRAM, LUT RAM); LUT levels count LUTs and wide muxes, "
        "carry cells count CARRY4 hops.",
        "",
    ]
    for name, res in results.items():
        lines += [f"## {name} core ({res['seconds']} s)", "", "| module | LUT levels | carry cells | cells |"]
        lines += ["|---|---|---|---|"]
        lines += [f"| {m} | {d['lut']} | {d['carry']} | {d['cells']} |" for m, d in res["modules"].items()]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deit", action="store_true", help="also the DeiT-Small-size core (about 10 minutes)")
    args = ap.parse_args(argv)
    results = {"demo": depth(DEMO)}
    if args.deit:
        results["DeiT-Small-size"] = depth(DEIT)
    md = markdown(results, argv)
    print(md)
    write_results(OUT, {"date": today(), "argv": argv_string(argv), **results}, md)


if __name__ == "__main__":
    main()
