"""The mission benchmark: every comparison the method claims, in one process, on this machine.

1. accuracy of the flexible mixed-precision front vs uniform 8-bit, uniform 4-bit, fixed-ratio and
   random-search fronts at the same FPS targets (same supernet, same search budget);
2. a searched subnet taken from the supernet (no retraining) vs the same architecture trained
   alone with the same quantization for the same steps: what weight sharing costs;
3. framework speed: supernet training step vs an FP32 step of the largest model (ratio),
   hardware-model evaluations per second, design-space exploration time, search wall time;
4. the hardware model's predictions for the paper's three ZCU102 operating points next to the
   paper's figures.

Usage:  python benchmarks/mission.py [--quick] [--workdir runs/mission] [--supernet RUN --steps N]
``--quick`` is sized for CI (under 10 minutes on 2 cores); the full mode is for release numbers.
Writes benchmarks/results/mission.json and mission.md (or *-quick.*) and prints the Markdown.
Every stage is resumable: training and search runs are kept in --workdir.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    argv_string,
    hardware_model_speed,
    machine_info,
    time_steps,
    today,
    train_or_resume,
    user_error,
    write_results,
)

from quasar_vit.config import ExperimentConfig, load_config
from quasar_vit.errors import QuasarError
from quasar_vit.hardware import explore, load_platform
from quasar_vit.hardware.calibration import OPERATING_POINTS, PAPER_UTILISATION
from quasar_vit.space import SubnetConfig

#: The paper gives no GMACs or size for L1; this subnet of the large space sits between L2 and S
#: and is shown only to place the model's prediction next to the paper's FPS (not a calibration).
QUASAR_L1_LIKE = SubnetConfig(320, 12, (5,) * 12, (3.0,) * 12, (0.25,) * 12)

BUDGETS = {
    "quick": dict(steps=300, population=8, generations=3, mutations=4, crossovers=4, parents=4, val=1000, reps=3),
    "full": dict(steps=None, population=30, generations=10, mutations=15, crossovers=15, parents=10, val=5000, reps=10),
}


def hardware_speed(n: int = 3000) -> dict[str, float]:
    """Subnet evaluations per second on a fixed design, and explore() time per subnet."""
    cfg = load_config("imagenet-large")
    space = cfg.model.space()
    plat = load_platform("zcu102")
    design = explore(space.largest(), plat).design
    rng = random.Random(0)
    subs = [space.sample(rng) for _ in range(n)]
    return hardware_model_speed(plat, subs, subs[:60], design)


def hardware_points() -> list[dict[str, Any]]:
    plat = load_platform("zcu102")
    paper = {"quasar-L2": (80.4, 101.5, 4.8), "quasar-L1": (78.6, 159.6, None), "quasar-S": (74.9, 251.6, 1.4)}
    subs = {p.name: p.subnet for p in OPERATING_POINTS}
    subs["quasar-L1"] = QUASAR_L1_LIKE
    rows = []
    for name in ("quasar-L2", "quasar-L1", "quasar-S"):
        sub = subs[name]
        rep = explore(sub, plat)
        res = rep.to_dict()["resources"]
        top1, fps, gmacs = paper[name]
        rows.append(
            {
                "point": name,
                "paper_top1": top1,
                "paper_fps": fps,
                "paper_gmacs": gmacs,
                "subnet_gmacs": sub.macs() / 1e9,
                "subnet_share_8bit": sub.share_8bit(),
                "predicted_fps": rep.fps,
                "fps_error_percent": 100 * (rep.fps - fps) / fps,
                "calibrated": gmacs is not None,
                "lut_percent": _pct(res, "lut"),
                "dsp_percent": _pct(res, "dsp"),
                "bram_percent": _pct(res, "bram"),
                "ff_percent": _pct(res, "ff"),
            }
        )
    return rows


def _pct(res: dict, key: str) -> float | None:
    return (res.get(key) or {}).get("percent")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized budget (< 10 minutes)")
    ap.add_argument("--config", default="fmnist-tiny")
    ap.add_argument("--platform", default="zcu102")
    ap.add_argument("--workdir", default="runs/mission")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/mission[-quick].json)")
    ap.add_argument(
        "--supernet",
        default=None,
        help="reuse a finished training run of the same config and steps (e.g. the one "
        "benchmarks/supernet.py leaves in runs/bench-supernet/...) instead of training one",
    )
    ap.add_argument(
        "--steps",
        type=int,
        default=None,
        help="supernet training steps (default: the mode's budget; e.g. 1200 to reuse the demo's runs/demo/supernet)",
    )
    ap.add_argument(
        "--restart",
        action="store_true",
        help="discard saved search states in the work folder (e.g. from an older version)",
    )
    args = ap.parse_args(argv)
    try:
        return _mission(args, argv)
    except QuasarError as exc:
        return user_error("mission.py", exc)


def _mission(args: argparse.Namespace, argv: list[str] | None) -> int:
    mode = "quick" if args.quick else "full"
    b = BUDGETS[mode]
    t_start = time.time()
    steps = args.steps or b["steps"]
    overrides = [f"train.steps={steps}"] if steps else []
    cfg = load_config(args.config, overrides)
    work = Path(args.workdir) / f"{mode}-{cfg.name}-{cfg.train.steps}"
    out_json = Path(args.out) if args.out else RESULTS / f"mission{'-quick' if args.quick else ''}.json"
    result: dict[str, Any] = {
        "argv": argv_string(argv),
        "mode": mode,
        "config": cfg.name,
        "platform": args.platform,
        "budget": b,
        "date": today(),
        "machine": machine_info(),
    }

    print(f"[1/4] supernet ({cfg.train.steps} steps) and searches (flexible + 4 baselines)", flush=True)
    sup_dir = Path(args.supernet) if args.supernet else work / "supernet"
    if args.supernet:
        _check_supernet(sup_dir, cfg)
    sup = train_or_resume(cfg, sup_dir)
    t = time.time()
    pareto = _search(sup_dir, work, args, b).to_dict()
    search_wall = time.time() - t
    result["fronts"] = {**front_summary(pareto), "supernet": sup}

    print("[2/4] a searched subnet from the supernet vs the same architecture trained alone", flush=True)
    result["weight_sharing"] = weight_sharing(cfg, pareto, work / "alone")

    print("[3/4] framework speed", flush=True)
    speed = time_steps(cfg, b["reps"], cfg.train.batch_size)
    result["speed"] = {
        "seconds": speed,
        "ratio_supernet_step_vs_fp32_step": speed["supernet_step"] / speed["fp32_step"],
        "ratio_largest_pass_vs_fp32_step": speed["supernet_largest_pass"] / speed["fp32_step"],
        **hardware_speed(),
        "search_wall_seconds_all_modes": search_wall,
        "search_seconds_flexible": result["fronts"]["modes"]["flexible"]["search_seconds"],
        "supernet_train_seconds": sup.get("train_seconds"),
    }

    print("[4/4] hardware model vs the paper's ZCU102 figures", flush=True)
    result["hardware"] = {"points": hardware_points(), "paper_utilisation_percent": PAPER_UTILISATION}
    result["wall_seconds"] = time.time() - t_start

    md = render(result)
    write_results(out_json, result, md)
    print("\n" + md)
    print(f"written {out_json} and {out_json.with_suffix('.md')}")
    return 0


def _check_supernet(sup_dir: Path, cfg: ExperimentConfig) -> None:
    """Refuse a ``--supernet`` run trained with another model, training or quantization config."""
    from quasar_vit.training.checkpoint import checkpoint_config, read_checkpoint

    other = checkpoint_config(read_checkpoint(sup_dir / "supernet.pt"))
    if other.model != cfg.model or other.train != cfg.train or other.quant != cfg.quant:
        raise SystemExit(
            f"--supernet {sup_dir}: trained with another config/budget than {cfg.name} at {cfg.train.steps} steps"
        )


def _search(sup_dir: Path, work: Path, args: argparse.Namespace, b: dict[str, Any]) -> Any:
    """The flexible search and the four baselines at budget ``b`` (resumed from ``work/search``)."""
    from quasar_vit.search import SearchRequest, run_search

    request = SearchRequest(
        sup_dir / "supernet.pt",
        work / "search",
        platform=args.platform,
        baselines=["random", "uniform8", "uniform4", "fixed"],
        overrides=[
            f"population={b['population']}",
            f"generations={b['generations']}",
            f"mutations={b['mutations']}",
            f"crossovers={b['crossovers']}",
            f"parents={b['parents']}",
            f"val_images={b['val']}",
        ],
        progress=True,
        restart=args.restart,
    )
    return run_search(request)


def front_summary(pareto: dict[str, Any]) -> dict[str, Any]:
    """Per mode (flexible and baselines) the winners at each target, and how the fronts compare.

    Args:
        pareto: the search's ``pareto.json`` content.

    Returns:
        ``targets``, ``modes`` (hypervolume, candidates, time, winner per target or None) and the
        baselines with a higher hypervolume than, dominating, or dominated by the flexible front.
    """
    fronts = {"flexible": pareto}
    fronts.update(pareto["baselines"])
    targets = [t_["name"] for t_ in pareto["targets"]]
    table = {}
    for m, r in fronts.items():
        entries = {e["name"]: e for e in r["targets"]}
        table[m] = {
            "hypervolume_normalized": r["hypervolume_normalized"],
            "evaluations": r["evaluations"],
            "search_seconds": r["search_seconds"],
            "at_target": {
                n: (
                    {
                        "test_top1": entries[n].get("test_top1"),
                        "val_top1": entries[n].get("val_top1"),
                        "fps": entries[n].get("fps"),
                    }
                    if entries[n]["status"] == "met"
                    else None
                )
                for n in targets
            },
        }
    flex = table["flexible"]
    higher_hv = [
        m for m, r in table.items() if m != "flexible" and r["hypervolume_normalized"] > flex["hypervolume_normalized"]
    ]
    dominance = pareto.get("dominance", {})
    dominated_by = [m for m, d in dominance.items() if d["dominates_main"]]
    return {
        "targets": [{"name": t_["name"], "fps": t_["target_fps"]} for t_ in pareto["targets"]],
        "modes": table,
        "higher_hypervolume_than_flexible": higher_hv,
        "fronts_dominating_flexible": dominated_by,
        "fronts_dominated_by_flexible": [m for m, d in dominance.items() if d["dominated_by_main"]],
    }


def weight_sharing(cfg: ExperimentConfig, pareto: dict[str, Any], out: Path) -> dict[str, Any]:
    """The winner of the middle met target, from the supernet vs trained alone in ``out`` (same steps)."""
    met = [t_ for t_ in pareto["targets"] if t_["status"] == "met"]
    chosen = met[len(met) // 2] if met else None
    if chosen is None:
        return {"note": "no target met; nothing to compare"}
    sub = SubnetConfig.from_dict(chosen["subnet"])
    alone = train_or_resume(cfg, out, only_subnet=sub)
    return {
        "target": chosen["name"],
        "subnet": sub.describe(),
        "supernet_test_top1": chosen.get("test_top1"),
        "alone_test_top1": alone.get("test_top1_only"),
        "steps": cfg.train.steps,
    }


def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def render(r: dict[str, Any]) -> str:
    """The Markdown report (``mission.md``) of a mission result."""
    L = [
        f"## Mission benchmark ({r['mode']}, {r['config']}, {r['platform']}, {r['date']})",
        "",
        f"Machine: {r['machine']['platform']}, {r['machine']['cpu_threads']} threads, torch "
        f"{r['machine']['torch']}. Wall time {r['wall_seconds'] / 60:.1f} min. "
        f"Command: `python benchmarks/mission.py {r.get('argv', '')}`.",
        "",
    ]
    return "\n".join(L + _render_fronts(r) + _render_weight_sharing(r) + _render_speed(r) + _render_hardware(r))


def _render_fronts(r: dict[str, Any]) -> list[str]:
    L = ["### 1. Fronts at the same FPS targets (test top-1 %, same supernet, same search budget)", ""]
    fr = r["fronts"]
    names = [t["name"] for t in fr["targets"]]
    L.append(
        "| mode | "
        + " | ".join(f"{t['name']} (>= {t['fps']:.0f} FPS)" for t in fr["targets"])
        + " | normalised hypervolume | candidates |"
    )
    L.append("|---" * (len(names) + 3) + "|")
    for m, row in fr["modes"].items():
        cells = [(_f(row["at_target"][n]["test_top1"]) if row["at_target"][n] else "not met") for n in names]
        L.append(f"| {m} | " + " | ".join(cells) + f" | {row['hypervolume_normalized']:.4f} | {row['evaluations']} |")
    L += [
        "",
        f"Baseline fronts (validation) that dominate the flexible front: "
        f"{', '.join(fr.get('fronts_dominating_flexible', [])) or 'none'}; dominated by it: "
        f"{', '.join(fr.get('fronts_dominated_by_flexible', [])) or 'none'}; with a higher hypervolume: "
        f"{', '.join(fr['higher_hypervolume_than_flexible']) or 'none'}.",
        "",
    ]
    return L


def _render_weight_sharing(r: dict[str, Any]) -> list[str]:
    ws = r["weight_sharing"]
    L = ["### 2. What weight sharing costs", ""]
    if "alone_test_top1" not in ws:
        return L + [ws.get("note", ""), ""]
    return L + [
        f"Subnet of target {ws['target']} (`{ws['subnet']}`): {_f(ws['supernet_test_top1'])} % taken from "
        f"the supernet without retraining vs {_f(ws['alone_test_top1'])} % trained alone "
        f"(same quantization, {ws['steps']} steps).",
        "",
    ]


def _render_speed(r: dict[str, Any]) -> list[str]:
    s = r["speed"]
    return [
        "### 3. Framework speed (this machine)",
        "",
        "| measure | value |",
        "|---|---|",
        f"| supernet training step / FP32 step of the largest model | {s['ratio_supernet_step_vs_fp32_step']:.2f}x |",
        f"| largest-subnet pass inside the supernet / FP32 step | {s['ratio_largest_pass_vs_fp32_step']:.2f}x |",
        f"| hardware-model evaluations per second (fixed design, one core) | {s['evaluations_per_second']:,.0f} |",
        f"| design-space exploration per subnet (median / max) | {s['explore_ms_median']:.1f} / {s['explore_ms_max']:.1f} ms |",
        f"| search wall time, flexible mode | {s['search_seconds_flexible']:.0f} s |",
        f"| search wall time, all five modes incl. test scoring | {s['search_wall_seconds_all_modes']:.0f} s |",
        f"| supernet training time | {_f((s.get('supernet_train_seconds') or 0) / 60, '.1f')} min |",
        "",
    ]


def _render_hardware(r: dict[str, Any]) -> list[str]:
    L = [
        "### 4. Hardware model vs the paper (ZCU102, 150 MHz)",
        "",
        "| point | paper top-1 | paper FPS | predicted FPS | error | paper GMACs | subnet GMACs | 8-bit rows | LUT % | DSP % | BRAM % |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r["hardware"]["points"]:
        L.append(
            f"| {p['point']}{'' if p['calibrated'] else ' (not calibrated)'} | {p['paper_top1']} | {p['paper_fps']} | "
            f"{p['predicted_fps']:.1f} | {p['fps_error_percent']:+.1f} % | {_f(p['paper_gmacs'], '.1f')} | "
            f"{p['subnet_gmacs']:.2f} | {100 * p['subnet_share_8bit']:.0f} % | {_f(p['lut_percent'], '.1f')} | "
            f"{_f(p['dsp_percent'], '.1f')} | {_f(p['bram_percent'], '.1f')} |"
        )
    u = r["hardware"]["paper_utilisation_percent"]
    L += [
        "",
        f"Paper's design: LUT {u['lut']} %, DSP {u['dsp']} %, BRAM {u['bram']} %. The paper gives no GMACs "
        "for L1; its row uses an L1-like subnet of the large space only to place the prediction.",
        "",
    ]
    return L


if __name__ == "__main__":
    sys.exit(main())
