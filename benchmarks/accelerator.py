"""Accelerator benchmark: the generated engine's counted cycles against the latency model, and the
model's FPS at the paper's operating points with a band for the host costs.

1. ``--export DIR`` (default ``runs/demo/export`` when it exists): generate the HLS C++ of that
   export, run its C simulation on ``--images`` test images and print, per layer, the fabric cycles
   counted by the loop counters of the generated dataflow processes beside the latency model's
   (``hardware/engine.py``), with bit-exactness and label agreement.
2. The paper's ZCU102 points (``hardware/calibration.py``): the model's FPS on its explored design,
   with the host costs (LayerNorm/Softmax/GELU on the A53s, call overheads) at 0.5x and 2x, and the
   error against the paper's measured FPS as it falls (nothing is fitted to it).

Run: ``python benchmarks/accelerator.py [--export DIR] [--images 20]``; writes
``benchmarks/results/accelerator.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from quasar_vit.hardware import explore, load_platform
from quasar_vit.hardware.calibration import OPERATING_POINTS
from quasar_vit.utils.io import atomic_write_json

RESULTS = Path(__file__).with_name("results")
HOST_KEYS = ("host_layernorm_ns_per_elem", "host_softmax_ns_per_elem", "host_gelu_ns_per_elem",
             "host_call_overhead_us", "gemm_launch_us")


def host_scaled(platform, factor: float):
    """The platform with every host-side cost multiplied by ``factor``."""
    p = platform.params
    return dataclasses.replace(platform, params=dataclasses.replace(
        p, **{k: getattr(p, k) * factor for k in HOST_KEYS}))


def paper_points() -> list[dict]:
    zcu = load_platform("zcu102")
    rows = []
    for op in OPERATING_POINTS:
        rep = explore(op.subnet, zcu)
        band = [explore(op.subnet, host_scaled(zcu, f)).fps for f in (2.0, 0.5)]
        fabric_ms = rep.latency_ms - rep.host_ms
        rows.append({"point": op.name, "gmacs": round(op.subnet.macs() / 1e9, 2), "paper_fps": op.paper_fps,
                     "model_fps": round(rep.fps, 1), "fps_host_2x": round(band[0], 1),
                     "fps_host_half": round(band[1], 1), "error_percent": round(100 * (rep.fps / op.paper_fps - 1), 1),
                     "fabric_ms": round(fabric_ms, 3), "host_ms": round(rep.host_ms, 3),
                     "design": rep.design.describe()})
    return rows


def csim_cycles(export: Path, images: int) -> dict:
    from quasar_vit.hls import run_csim
    from quasar_vit.hls.csim import per_layer_cycles

    res = run_csim(export, limit=images)
    cyc = res["cycles"]
    return {"export": str(export), "images": res["images"], "bit_exact_gemm": res["bit_exact_gemm"],
            "codes_bit_exact": res["codes_bit_exact"], "label_agreement": res["label_agreement"],
            "counted_total": cyc["counted_total"], "model_total": cyc["model_total"],
            "max_rel_err": cyc["max_rel_err"], "engine_calls": len(cyc["per_gemm"]),
            "per_layer": [{"layer": k, "counted": c, "model": m} for k, c, m in per_layer_cycles(cyc)],
            "csim_seconds": res["seconds"]}


def markdown(points: list[dict], sim: dict | None) -> str:
    L = ["# Accelerator benchmark", "", "Command: `python benchmarks/accelerator.py`", ""]
    if sim:
        L += [f"## Counted vs model cycles: `{sim['export']}` ({sim['images']} images)", "",
              f"Integer GEMMs bit-exact: {sim['bit_exact_gemm']}; codes bit-exact: {sim['codes_bit_exact']}; "
              f"label agreement {100 * sim['label_agreement']:.1f} %; {sim['engine_calls']} engine calls, "
              f"worst relative error {100 * sim['max_rel_err']:.2f} %.", "",
              "| layer | counted cycles | model cycles |", "|---|---|---|"]
        L += [f"| {r['layer']} | {r['counted']} | {r['model']} |" for r in sim["per_layer"]]
        L += [f"| **total** | **{sim['counted_total']}** | **{sim['model_total']}** |", ""]
    L += ["## The paper's ZCU102 points (model, not fitted)", "",
          "| point | GMACs | paper FPS | model FPS | error | FPS, host 2x / 0.5x | fabric ms | host ms | design |",
          "|---|---|---|---|---|---|---|---|---|"]
    L += [f"| {p['point']} | {p['gmacs']} | {p['paper_fps']} | {p['model_fps']} | {p['error_percent']:+.1f} % | "
          f"{p['fps_host_2x']} / {p['fps_host_half']} | {p['fabric_ms']} | {p['host_ms']} | {p['design']} |"
          for p in points]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, default=None, help="export folder (default: runs/demo/export if present)")
    ap.add_argument("--images", type=int, default=20)
    args = ap.parse_args(argv)
    export = args.export or (Path("runs/demo/export") if Path("runs/demo/export/accelerator.json").is_file() else None)
    sim = None
    if export is not None:
        sim = csim_cycles(export, args.images)
        print(f"{export}: counted {sim['counted_total']} vs model {sim['model_total']} fabric cycles, worst "
              f"engine call {100 * sim['max_rel_err']:.2f} %, GEMMs bit-exact {sim['bit_exact_gemm']}, labels "
              f"{100 * sim['label_agreement']:.1f} %")
        for r in sim["per_layer"]:
            print(f"  {r['layer']:<22} counted {r['counted']:>9}  model {r['model']:>9}")
    points = paper_points()
    for p in points:
        print(f"{p['point']:<10} paper {p['paper_fps']:6.1f} FPS  model {p['model_fps']:6.1f} FPS "
              f"({p['error_percent']:+.1f} %), host 2x/0.5x: {p['fps_host_2x']} / {p['fps_host_half']}  "
              f"fabric {p['fabric_ms']} ms + host {p['host_ms']} ms")
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "accelerator.json", {"csim": sim, "paper_points": points})
    (RESULTS / "accelerator.md").write_text(markdown(points, sim))
    return 0


if __name__ == "__main__":
    sys.exit(main())
