"""Accelerator benchmark: the generated engine's counted cycles against the latency model, and the
model's FPS at the paper's operating points with a band for the host costs.

1. ``--export DIR`` (a float-ops export: the HLS engine runs those): generate the HLS C++ of that
   export, run its C simulation on ``--images`` test images and print, per layer, the fabric cycles
   counted by the loop counters of the generated dataflow processes beside the latency model's
   (``hardware/engine.py``), with bit-exactness and label agreement.
2. The paper's ZCU102 points (``hardware/calibration.py``): the FPS of the RTL core the explorer
   picks (integer ops; where its cycles go), and of the HLS engine (float ops, with the host costs at
   0.5x and 2x), against the paper's measured FPS as it falls (nothing is fitted to it).

3. ``--deit``: the same comparison for a DeiT-Small-size subnet at 224 (embed 384, depth 12, 6 heads,
   MLP 4, a quarter of the rows 8-bit) on one image: a synthetic ImageFolder of 224-px JPEGs, the
   ``imagenet-large`` supernet trained for 2 steps (only to set the quantizer steps; accuracy is
   not the point), exported on the ZCU102 design that the explorer picks, C-simulated.

4. ``--rtl``: that DeiT-Small-size export's first test image through the whole subnet on the RTL
   accelerator (``qv_top`` around ``qv_gemm_core`` at R = 32, T = 22, KP = 8: the core
   ``benchmarks/rtl_block.py`` measures, with its memories and descriptor table sized for the
   subnet) in Verilator, from its descriptor table with the image's inputs loaded from DDR: the
   logits must be the engine's bit for bit, and every load, every step and the image (``run`` to
   ``done``) the schedule model's cycles (``rtl.schedule.program_cycles``).  These are measured
   cycles of a whole 224-px image; the FPS is at 150 MHz, which is not a timing-closed figure.

Run: ``python benchmarks/accelerator.py [--export DIR] [--images 20] [--deit] [--rtl]``; writes
``benchmarks/results/accelerator.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import RESULTS, write_results

from quasar_vit.hardware import explore, load_platform
from quasar_vit.hardware.calibration import OPERATING_POINTS


def paper_points() -> list[dict]:
    """The paper's ZCU102 points on the accelerator each kind of model gets: the RTL core (integer
    ops, the default; the schedule model, equal to Verilator's cycles) and the HLS engine (float
    ops on the host, with the host costs at 2x and 0.5x)."""
    zcu = load_platform("zcu102")
    rows = []
    for op in OPERATING_POINTS:
        core, engine = explore(op.subnet, zcu, nonlinear="integer"), explore(op.subnet, zcu, nonlinear="float")
        kinds = core.by_kind
        rows.append(
            {
                "point": op.name,
                "gmacs": round(op.subnet.macs() / 1e9, 2),
                "paper_fps": op.paper_fps,
                "rtl_fps": round(core.fps, 1),
                "rtl_vs_paper": round(core.fps / op.paper_fps, 3),
                "rtl_core": f"{core.shape.R} x {core.shape.T} x {core.shape.KP}",
                "rtl_shares": {k: round(100 * c / core.cycles, 1) for k, c in kinds.items()},
                "rtl_percent": {k: core.resources.to_dict()[k]["percent"] for k in ("lut", "dsp", "bram")},
                "physical": physical_checks(core, zcu),
                "hls_fps": round(engine.fps, 1),
                "hls_fps_host_2x": round(engine.fps_with_host(2.0), 1),
                "hls_fps_host_half": round(engine.fps_with_host(0.5), 1),
                "hls_host_ms": round(engine.host_ms, 3),
                "hls_design": engine.design.describe(),
            }
        )
    return rows


def physical_checks(core: Any, plat: Any) -> dict[str, Any]:
    """The checks a priced core must pass on its board: no step above 100 % array use, the weight
    stream within the board's usable DDR bandwidth, and every resource (BRAM included) within its cap."""
    from quasar_vit.rtl.model import platform_ddr

    ddr = platform_ddr(plat, core.shape.WB)
    stream = core.shape.WB / 8 * ddr.num / ddr.den  # bytes a cycle at most
    worst = max(s.passes / (s.cycles * core.design.units) for s in core.steps if s.passes)
    return {
        "max_step_array_use": round(worst, 4),
        "stream_bytes_per_cycle": stream,
        "usable_ddr_bytes_per_cycle": round(plat.bytes_per_cycle, 1),
        "resources_within_caps": core.fits,
        "passed": bool(worst <= 1 and stream <= plat.bytes_per_cycle and core.fits),
    }


def csim_cycles(export: Path, images: int) -> dict:
    from quasar_vit.hls import run_csim
    from quasar_vit.hls.csim import per_layer_cycles

    res = run_csim(export, limit=images)
    cyc = res["cycles"]
    return {
        "export": str(export),
        "images": res["images"],
        "bit_exact_gemm": res["bit_exact_gemm"],
        "codes_bit_exact": res["codes_bit_exact"],
        "label_agreement": res["label_agreement"],
        "counted_total": cyc["counted_total"],
        "model_total": cyc["model_total"],
        "max_rel_err": cyc["max_rel_err"],
        "engine_calls": len(cyc["per_gemm"]),
        "per_layer": [{"layer": k, "counted": c, "model": m} for k, c, m in per_layer_cycles(cyc)],
        "csim_seconds": res["seconds"],
    }


DEIT_SUBNET = {
    "embed_dim": 384,
    "depth": 12,
    "num_heads": [6] * 12,
    "mlp_ratios": [4.0] * 12,
    "w8_shares": [0.25] * 12,
    "geometry": {"img_size": 224, "patch_size": 16, "in_chans": 3, "num_classes": 10, "head_dim": 64},
}


def deit_export(work: Path) -> Path:
    """Export of a DeiT-Small-size subnet of a 2-step imagenet-large supernet on synthetic JPEGs."""

    import numpy as np
    from PIL import Image

    from quasar_vit.config import load_config
    from quasar_vit.export import export_subnet
    from quasar_vit.training.trainer import train_supernet

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in range(10):
            d = work / "images" / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if not (d / f"{i}.jpg").is_file():
                    img = rng.integers(0, 255, (240 + 8 * i, 260, 3), dtype=np.uint8)
                    Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
    cfg = load_config(
        "imagenet-large",
        [
            f"data.root={work / 'images'}",
            "model.geometry.num_classes=10",
            "train.steps=2",
            "train.batch_size=4",
            "train.warmup_steps=1",
            "train.checkpoint_every=2",
            "data.val_size=10",
            "data.num_workers=0",
            "train.distill=false",
            "train.sandwich_random=0",
            "train.log_every=1",
        ],
    )
    run = work / "run"
    if not (run / "supernet.pt").is_file():
        train_supernet(cfg, run, progress=False)
    (work / "subnet.json").write_text(json.dumps(DEIT_SUBNET))
    exp = work / "export"
    if not (exp / "accelerator.json").is_file():
        export_subnet(run / "supernet.pt", work / "subnet.json", "zcu102", exp, evaluate=False)
    return exp


RTL_CORE = {"r": 32, "t": 22, "kp": 8, "wb": 256}  # benchmarks/rtl_block.py's DeiT-Small-size core
CLOCK_MHZ = 150.0


def rtl_image(export: Path) -> dict:
    """One test image of ``export`` on the RTL core in Verilator against the engine's logits."""
    import time

    from quasar_vit.rtl.verify import run_rtl

    t0 = time.time()
    res = run_rtl(export, limit=1, core=RTL_CORE)
    res["seconds"] = round(time.time() - t0, 1)  # (the engine's reference run included)
    res["export"] = str(export)
    res["fps_at_150mhz"] = round(CLOCK_MHZ * 1e6 / res["cycles_per_image"], 1)
    return res


def _rtl_lines(res: dict) -> list[str]:
    kinds = res["model_cycles_by_kind"]
    total = sum(kinds.values())
    L = [
        f"## A whole 224-px image on the RTL accelerator (Verilator; export `{res['export']}`)",
        "",
        f"Core {res['core']}; {res['steps']} steps; logits bit for bit: {res['exact_logits']}/{res['images']} "
        f"(max |diff| {res['max_logit_diff']:g}); every load, step and the image in the model's cycles: "
        f"{res['images'] - res['images_off_model']}/{res['images']}; {res['seconds']} s of simulation.",
        "",
        f"Measured from `run` to `done`: **{res['cycles_per_image']} cycles an image, {res['fps_at_150mhz']} FPS "
        "at 150 MHz** (the sequencer's two-edge lead is in the image, not in the steps below).",
        "",
        "| step kind | cycles (measured = model) | share |",
        "|---|---|---|",
    ]
    L += [f"| {k} | {c} | {100 * c / total:.1f} % |" for k, c in kinds.items()]
    return L + [""]


def _cycles_table(res: dict, limit: int | None = None) -> list[str]:
    """Per-layer counted vs model cycles of a :func:`csim_cycles` result (the first ``limit`` layers)."""
    rows = res["per_layer"] if limit is None else res["per_layer"][:limit]
    L = ["| layer | counted cycles | model cycles |", "|---|---|---|"]
    L += [f"| {r['layer']} | {r['counted']} | {r['model']} |" for r in rows]
    if limit is not None:
        L.append(f"| ... ({len(res['per_layer'])} layers) | | |")
    return L + [f"| **total** | **{res['counted_total']}** | **{res['model_total']}** |", ""]


def markdown(points: list[dict], sim: dict | None, deit: dict | None = None, rtl: dict | None = None) -> str:
    L = ["# Accelerator benchmark", "", "Command: `python benchmarks/accelerator.py`", ""]
    if rtl:
        L += _rtl_lines(rtl)
    if sim:
        L += [
            f"## Counted vs model cycles: `{sim['export']}` ({sim['images']} images)",
            "",
            f"Integer GEMMs bit-exact: {sim['bit_exact_gemm']}; codes bit-exact: {sim['codes_bit_exact']}; "
            f"label agreement {100 * sim['label_agreement']:.1f} %; {sim['engine_calls']} engine calls, "
            f"worst relative error {100 * sim['max_rel_err']:.2f} %.",
            "",
        ] + _cycles_table(sim)
    if deit:
        L += [
            f"## DeiT-Small size at 224 (one image; export `{deit['export']}`)",
            "",
            f"Integer GEMMs bit-exact: {deit['bit_exact_gemm']}; codes bit-exact: {deit['codes_bit_exact']}; "
            f"{deit['engine_calls']} engine calls, worst relative error {100 * deit['max_rel_err']:.2f} %; "
            f"C simulation {deit['csim_seconds'].get('csim_run')} s per run.",
            "",
        ] + _cycles_table(deit, 10)
    L += [
        "## The paper's ZCU102 points (150 MHz; nothing fitted to the paper's FPS)",
        "",
        "Integer-ops models run on the RTL core (`rtl/model.py`: the schedule model, equal to Verilator's "
        "cycles on every simulated step; resources by the model fitted to Yosys). Float-ops models run on the "
        "HLS engine (`hardware/`), LayerNorm/softmax/GELU on the A53s; its FPS is shown with the host costs "
        "at 2x and 0.5x.",
        "",
        "| point | GMACs | paper FPS | RTL core FPS | / paper | core R x T x KP | LUT / DSP / BRAM % | where the core's cycles go "
        "| HLS engine FPS (float ops) | host 2x / 0.5x |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        shares = ", ".join(f"{k} {v} %" for k, v in sorted(p["rtl_shares"].items(), key=lambda kv: -kv[1]))
        pct = p["rtl_percent"]
        L.append(
            f"| {p['point']} | {p['gmacs']} | {p['paper_fps']} | {p['rtl_fps']} | {p['rtl_vs_paper']:.2f}x | "
            f"{p['rtl_core']} | {pct['lut']} / {pct['dsp']} / {pct['bram']} | {shares} | {p['hls_fps']} | "
            f"{p['hls_fps_host_2x']} / {p['hls_fps_host_half']} |"
        )
    checks = [p["physical"] for p in points]
    L += [
        "",
        "Physical checks of the priced cores: largest array use of any step "
        + ", ".join(f"{c['max_step_array_use']:.3f}" for c in checks)
        + f"; weight stream {checks[0]['stream_bytes_per_cycle']:g} B a cycle against "
        f"{checks[0]['usable_ddr_bytes_per_cycle']} usable; every resource within the board's cap: "
        + ", ".join(str(c["resources_within_caps"]) for c in checks)
        + ".",
        "",
    ]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, default=None, help="a float-ops export to C-simulate on the HLS engine")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--deit", action="store_true", help="also C-simulate a DeiT-Small-size subnet at 224 (slow)")
    ap.add_argument("--rtl", action="store_true", help="run the DeiT-Small-size subnet's image on the RTL core (slow)")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-accelerator"))
    args = ap.parse_args(argv)
    export = args.export
    sim = None
    if export is not None:
        sim = csim_cycles(export, args.images)
        print(
            f"{export}: counted {sim['counted_total']} vs model {sim['model_total']} fabric cycles, worst "
            f"engine call {100 * sim['max_rel_err']:.2f} %, GEMMs bit-exact {sim['bit_exact_gemm']}, labels "
            f"{100 * sim['label_agreement']:.1f} %"
        )
        for r in sim["per_layer"]:
            print(f"  {r['layer']:<22} counted {r['counted']:>9}  model {r['model']:>9}")
    deit = None
    if args.deit:
        deit = csim_cycles(deit_export(args.work / "deit-small"), 1)
        print(
            f"DeiT-Small size: counted {deit['counted_total']} vs model {deit['model_total']} cycles, worst "
            f"engine call {100 * deit['max_rel_err']:.2f} %, GEMMs bit-exact {deit['bit_exact_gemm']}"
        )
    rtl = None
    if args.rtl:
        rtl = rtl_image(deit_export(args.work / "deit-small"))
        print(
            f"RTL, DeiT-Small size at 224: {rtl['cycles_per_image']} cycles ({rtl['fps_at_150mhz']} FPS at 150 MHz), "
            f"logits exact {rtl['exact_logits']}/1, steps in the model's cycles {1 - rtl['images_off_model']}/1"
        )
    points = paper_points()
    for p in points:
        print(
            f"{p['point']:<10} paper {p['paper_fps']:6.1f} FPS  RTL core {p['rtl_fps']:6.1f} FPS "
            f"({p['rtl_vs_paper']:.2f}x, {p['rtl_core']})  HLS engine, float ops {p['hls_fps']} FPS "
            f"(host 2x/0.5x: {p['hls_fps_host_2x']} / {p['hls_fps_host_half']})"
        )
    # a section not run this time keeps its earlier result (each is a separate, slow measurement)
    out = RESULTS / "accelerator.json"
    earlier = json.loads(out.read_text()) if out.is_file() else {}
    sim = sim if sim is not None else earlier.get("csim")
    deit = deit if deit is not None else earlier.get("deit_small_224")
    rtl = rtl if rtl is not None else earlier.get("rtl_deit_small_224")
    write_results(
        out,
        {"csim": sim, "deit_small_224": deit, "rtl_deit_small_224": rtl, "paper_points": points},
        markdown(points, sim, deit, rtl),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
