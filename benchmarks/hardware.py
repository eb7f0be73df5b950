"""Hardware-model benchmark: predicted FPS/resources of the presets on every board, the paper's
calibration points, and the speed of the model (evaluations/s, explore time).

Run: ``python benchmarks/hardware.py`` (a few seconds); writes ``benchmarks/results/hardware.json``.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

from quasar_vit.hardware import evaluate, explore, list_platforms, load_platform
from quasar_vit.hardware.calibration import OPERATING_POINTS, PAPER_UTILISATION
from quasar_vit.space import SearchSpace, preset_subnet
from quasar_vit.utils.io import atomic_write_json

OUT = Path(__file__).with_name("results") / "hardware.json"


def main() -> None:
    results: dict = {"calibration": [], "presets": [], "speed": {}}
    zcu = load_platform("zcu102")
    print("calibration on zcu102 (paper vs predicted)")
    for op in OPERATING_POINTS:
        r = explore(op.subnet, zcu)
        util = {k: round(r.resources.percent(k), 1) for k in ("lut", "ff", "dsp", "bram")}
        err = 100 * (r.fps / op.paper_fps - 1)
        print(
            f"  {op.name:<10} {op.subnet.macs() / 1e9:5.2f} GMACs  paper {op.paper_fps:6.1f} FPS  "
            f"model {r.fps:6.1f} FPS ({err:+.1f} %)  util {util}  paper util {PAPER_UTILISATION}"
        )
        results["calibration"].append(
            {
                "name": op.name,
                "gmacs": r.gmacs,
                "share_8bit": op.subnet.share_8bit(),
                "paper_fps": op.paper_fps,
                "model_fps": r.fps,
                "error_percent": err,
                "utilisation_percent": util,
                "design": r.design.to_dict(),
            }
        )

    print("\npresets (share 8-bit 0.3, 224 px) on every board")
    print(
        f"  {'board':<8} {'subnet':<11} {'FPS':>8} {'ms':>8} {'GOP/s':>8} {'LUT%':>6} {'FF%':>6} {'DSP%':>6} {'BRAM%':>6} {'URAM%':>6}  design"
    )
    for board in list_platforms():
        plat = load_platform(board)
        for name in ("deit-tiny", "deit-small", "deit-base"):
            r = explore(preset_subnet(name, 224, 0.3), plat)
            pct = {k: r.resources.percent(k) for k in ("lut", "ff", "dsp", "bram", "uram")}
            print(
                f"  {board:<8} {name:<11} {r.fps:8.1f} {r.latency_ms:8.3f} {r.gops_achieved:8.1f} "
                + " ".join(f"{pct[k]:6.1f}" for k in pct)
                + f"  {r.design.describe()}"
            )
            results["presets"].append(
                {
                    "platform": board,
                    "subnet": name,
                    "fps": r.fps,
                    "latency_ms": r.latency_ms,
                    "gops": r.gops_achieved,
                    "resources_percent": pct,
                    "design": r.design.to_dict(),
                }
            )

    space = SearchSpace((320, 384, 448), (12, 13, 14), (5, 6, 7), (3.0, 3.5, 4.0), (0.0, 0.25, 0.5, 0.75, 1.0))
    rng = random.Random(0)
    subs = [space.sample(rng) for _ in range(5000)]
    design = explore(subs[0], zcu).design
    t0 = time.perf_counter()
    for s in subs:
        evaluate(s, zcu, design).fps
    rate = len(subs) / (time.perf_counter() - t0)
    times = []
    for s in subs[1:51]:
        t0 = time.perf_counter()
        explore(s, zcu)
        times.append(time.perf_counter() - t0)
    results["speed"] = {
        "evaluations_per_s": rate,
        "explore_ms_median": 1e3 * statistics.median(times),
        "explore_ms_max": 1e3 * max(times),
        "explore_samples": len(times),
        "evaluate_samples": len(subs),
    }
    print(
        f"\nspeed: {rate:,.0f} evaluations/s (fixed design, {len(subs)} random subnets of the Small space); "
        f"explore median {results['speed']['explore_ms_median']:.1f} ms, max {results['speed']['explore_ms_max']:.1f} ms"
    )
    atomic_write_json(OUT, results)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
