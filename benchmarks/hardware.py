"""Hardware-model benchmark: predicted FPS/resources of the presets on every board, the paper's
operating points, and the speed of the model (evaluations/s, explore time).  Integer-ops models are
priced on the RTL core (``rtl/model.py``), float-ops models on the HLS engine (``hardware/``).

Run: ``python benchmarks/hardware.py`` (a few seconds); writes ``benchmarks/results/hardware.json``.
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from common import RESULTS, hardware_model_speed, write_results

from quasar_vit.errors import HardwareError
from quasar_vit.hardware import explore, list_platforms, load_platform
from quasar_vit.hardware.calibration import OPERATING_POINTS, PAPER_UTILISATION
from quasar_vit.hardware.platforms import Platform
from quasar_vit.space import SearchSpace, preset_subnet

OUT = RESULTS / "hardware.json"


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)  # --help, and no stray options
    zcu = load_platform("zcu102")
    results: dict[str, Any] = {"calibration": calibration(zcu), "presets": presets(), "speed": speed(zcu)}
    write_results(OUT, results)
    print(f"wrote {OUT}")


def calibration(zcu: Platform) -> list[dict[str, Any]]:
    """The paper's operating points on the ZCU102: predicted vs measured FPS, utilisation, design."""
    rows = []
    print("calibration on zcu102 (paper vs predicted)")
    for op in OPERATING_POINTS:
        r = explore(op.subnet, zcu)
        util = {k: round(r.resources.percent(k), 1) for k in ("lut", "ff", "dsp", "bram")}
        err = 100 * (r.fps / op.paper_fps - 1)
        print(
            f"  {op.name:<10} {op.subnet.macs() / 1e9:5.2f} GMACs  paper {op.paper_fps:6.1f} FPS  "
            f"RTL core {r.fps:6.1f} FPS ({err:+.1f} %)  util {util}  paper util {PAPER_UTILISATION}"
        )
        rows.append(
            {
                "name": op.name,
                "gmacs": op.subnet.macs() / 1e9,
                "share_8bit": op.subnet.share_8bit(),
                "paper_fps": op.paper_fps,
                "model_fps": r.fps,
                "error_percent": err,
                "utilisation_percent": util,
                "design": r.design.to_dict(),
            }
        )
    return rows


def presets() -> list[dict[str, Any]]:
    """DeiT-Tiny/Small/Base at 224 px (30 % 8-bit rows) on every board, integer ops (the RTL core) and
    float ops (the HLS engine): FPS, resources, design, or why nothing fits."""
    rows: list[dict[str, Any]] = []
    for nonlinear in ("integer", "float"):
        print(f"\npresets (share 8-bit 0.3, 224 px, {nonlinear} ops) on every board")
        print(
            f"  {'board':<8} {'subnet':<11} {'FPS':>8} {'ms':>8} {'GOP/s':>8} {'LUT%':>6} {'FF%':>6} {'DSP%':>6} {'BRAM%':>6} {'URAM%':>6}  design"
        )
        for board in list_platforms():
            plat = load_platform(board)
            for name in ("deit-tiny", "deit-small", "deit-base"):
                row: dict[str, Any] = {"platform": board, "subnet": name, "nonlinear": nonlinear}
                try:
                    r = explore(preset_subnet(name, 224, 0.3), plat, nonlinear=nonlinear)
                except HardwareError as exc:
                    print(f"  {board:<8} {name:<11} {str(exc)}")
                    rows.append({**row, "error": str(exc)})
                    continue
                total = r.to_dict(layers=False)["total"]
                pct = {k: r.resources.percent(k) for k in ("lut", "ff", "dsp", "bram", "uram")}
                print(
                    f"  {board:<8} {name:<11} {r.fps:8.1f} {r.latency_ms:8.3f} {total['gops_achieved']:8.1f} "
                    + " ".join(f"{pct[k]:6.1f}" for k in pct)
                    + f"  {r.design.describe()}"
                )
                rows.append(
                    {
                        **row,
                        "fps": r.fps,
                        "latency_ms": r.latency_ms,
                        "gops": total["gops_achieved"],
                        "resources_percent": pct,
                        "design": r.design.to_dict(),
                    }
                )
    return rows


def speed(zcu: Platform) -> dict[str, float]:
    """Evaluations per second on a fixed design and explore time, over random subnets of the Small space."""
    space = SearchSpace((320, 384, 448), (12, 13, 14), (5, 6, 7), (3.0, 3.5, 4.0), (0.0, 0.25, 0.5, 0.75, 1.0))
    rng = random.Random(0)
    subs = [space.sample(rng) for _ in range(5000)]
    design = explore(subs[0], zcu).design
    sp = hardware_model_speed(zcu, subs, subs[1:51], design)
    out = {
        "evaluations_per_s": sp["evaluations_per_second"],
        "explore_ms_median": sp["explore_ms_median"],
        "explore_ms_max": sp["explore_ms_max"],
        "explore_samples": len(subs[1:51]),
        "evaluate_samples": len(subs),
    }
    print(
        f"\nspeed: {out['evaluations_per_s']:,.0f} evaluations/s (fixed design, {len(subs)} random subnets of the "
        f"Small space); explore median {out['explore_ms_median']:.1f} ms, max {out['explore_ms_max']:.1f} ms"
    )
    return out


if __name__ == "__main__":
    main()
