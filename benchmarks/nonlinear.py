"""Integer against float nonlinear ops (``model.nonlinear``): accuracy over seeds, and the training step's cost.

1. accuracy: ``fmnist-tiny`` trained with ``integer`` and with ``float`` LayerNorm/softmax/GELU for
   the same steps, ``--seeds`` seeds each; test top-1 of the largest and smallest subnet (mean and
   standard error over seeds, and the paired integer - float difference); with ``--search``, the
   demo's search (its budget, targets and platform) on every supernet, and the winners' test top-1
   per target;
2. cost (``--time``): one supernet sandwich step of each mode, interleaved repetitions, median
   seconds and their ratio, measured in one run on this machine.

Usage:  python benchmarks/nonlinear.py [--steps 1200] [--seeds 0,1,2] [--search [--search-seeds 0]] [--time] [--jobs 2]
Training runs are kept in --workdir and reused or resumed; ``--jobs 2`` trains two runs at a time,
one thread each.  Writes benchmarks/results/nonlinear.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, argv_string, machine_info, today, write_results

MODES = ("integer", "float")


def run_dir(workdir: Path, mode: str, seed: int) -> Path:
    return workdir / f"{mode}-s{seed}"


def train_all(workdir: Path, steps: int, seeds: list[int], jobs: int) -> None:
    """Train (or resume) every (mode, seed) run, ``jobs`` processes at a time, one thread each."""
    todo = [(m, s) for s in seeds for m in MODES if not (run_dir(workdir, m, s) / "final.json").is_file()]
    running: list[tuple[subprocess.Popen, Path]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    while todo or running:
        while todo and len(running) < jobs:
            mode, seed = todo.pop(0)
            out = run_dir(workdir, mode, seed)
            cmd = [sys.executable, "-m", "quasar_vit", "train", "--config", "fmnist-tiny", "--out", str(out)]
            cmd += ["--set", f"model.nonlinear={mode}", "--set", f"train.steps={steps}", "--set", f"train.seed={seed}"]
            if (out / "last.pt").is_file():
                cmd.append("--resume")
            out.parent.mkdir(parents=True, exist_ok=True)
            log = open(workdir / f"{mode}-s{seed}.log", "a")
            print(f"training {mode} seed {seed}: {' '.join(cmd[3:])}", flush=True)
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), out))
        time.sleep(5)
        for p, out in list(running):
            if p.poll() is not None:
                running.remove((p, out))
                if p.returncode != 0:
                    raise SystemExit(f"training {out} failed (exit {p.returncode}); see {out}.log")


def search_all(workdir: Path, seeds: list[int]) -> dict[str, dict[str, Any]]:
    """The demo's search on every supernet: the winners' test top-1 per target."""
    from quasar_vit.demo import DemoSettings
    from quasar_vit.search import SearchRequest, run_search

    settings = DemoSettings()
    out: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        for seed in seeds:
            run = run_dir(workdir, mode, seed)
            sdir = workdir / f"search-{mode}-s{seed}"
            pareto = sdir / "pareto.json"
            if not (pareto.is_file() and json.loads(pareto.read_text()).get("complete")):
                req = SearchRequest(
                    run / "supernet.pt",
                    sdir,
                    platform=settings.search.platform,
                    overrides=settings.search_overrides(),
                    progress=True,
                )
                run_search(req)
            res = json.loads(pareto.read_text())
            out[f"{mode}-s{seed}"] = {
                t["name"]: {"test_top1": t.get("test_top1"), "fps": t.get("fps"), "status": t["status"]}
                for t in res["targets"]
            }
    return out


def mean_se(xs: list[float]) -> tuple[float, float]:
    m = statistics.fmean(xs)
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else 0.0
    return m, se


def accuracy(workdir: Path, seeds: list[int]) -> dict[str, Any]:
    """Per mode: test top-1 of the largest and smallest subnet per seed; the paired differences."""
    runs = {m: [json.loads((run_dir(workdir, m, s) / "final.json").read_text()) for s in seeds] for m in MODES}
    out: dict[str, Any] = {"per_seed": {}, "summary": {}}
    for m in MODES:
        out["per_seed"][m] = [
            {
                "seed": s,
                "largest": r["test_top1_largest"],
                "smallest": r["test_top1_smallest"],
                "train_s": r.get("train_seconds"),
            }
            for s, r in zip(seeds, runs[m])
        ]
    for which in ("largest", "smallest"):
        per = {m: [r[which] for r in out["per_seed"][m]] for m in MODES}
        diff = [a - b for a, b in zip(per["integer"], per["float"])]
        out["summary"][which] = {
            **{m: dict(zip(("mean", "se"), mean_se(per[m]))) for m in MODES},
            "integer_minus_float": dict(zip(("mean", "se"), mean_se(diff))),
        }
    return out


def step_cost(
    reps: int, config: str = "fmnist-tiny", batch: int | None = None, largest_only: bool = False
) -> dict[str, float]:
    """Median seconds of one supernet training step per mode, interleaved: the sandwich step of
    ``config`` (its batch), or (``largest_only``) one forward+backward of its largest subnet."""
    import torch
    import torch.nn.functional as F
    from common import random_batch

    from quasar_vit.config import load_config
    from quasar_vit.supernet import build_supernet
    from quasar_vit.training.trainer import calibrate_supernet, sandwich_subnets

    nets = {}
    for mode in MODES:
        cfg = load_config(config, [f"model.nonlinear={mode}", "model.drop_path=0.0"])
        torch.manual_seed(0)
        space = cfg.model.space()
        model = build_supernet(cfg.model, cfg.quant).train()
        x, y = random_batch(cfg, batch or cfg.train.batch_size)
        calibrate_supernet(model, x, space)
        nets[mode] = (model, x, y, space, cfg.train.sandwich_random)

    def step(mode: str, r: int) -> None:
        model, x, y, space, k = nets[mode]
        subs = [space.largest()] if largest_only else sandwich_subnets(space, 0, r, k)
        for sub in subs:
            F.cross_entropy(model(x, sub), y).backward()
        model.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {m: [] for m in MODES}
    for m in MODES:
        step(m, 0)
    for r in range(reps):
        for m in MODES:
            t = time.perf_counter()
            step(m, r + 1)
            times[m].append(time.perf_counter() - t)
    med = {m: statistics.median(v) for m, v in times.items()}
    return {**{f"{m}_s": v for m, v in med.items()}, "ratio_integer_over_float": med["integer"] / med["float"]}


def markdown(res: dict[str, Any]) -> str:
    lines = []
    acc = res.get("accuracy")
    if acc:
        lines += [
            f"fmnist-tiny, {res['steps']} steps, seeds {res['seeds']}: test top-1 % (mean ± SE)",
            "",
            "| subnet | integer | float | integer - float |",
            "|---|---|---|---|",
        ]
        for which in ("largest", "smallest"):
            s = acc["summary"][which]
            cell = lambda d: f"{d['mean']:.2f} ± {d['se']:.2f}"  # noqa: E731
            lines.append(f"| {which} | {cell(s['integer'])} | {cell(s['float'])} | {cell(s['integer_minus_float'])} |")
    if res.get("search"):
        lines += [
            "",
            "Searched winners (demo budget), test top-1 %:",
            "",
            "| run | " + " | ".join(_targets(res)) + " |",
        ]
        lines.append("|---|" + "---|" * len(_targets(res)))
        for run, t in res["search"].items():
            lines.append(f"| {run} | " + " | ".join(_cell(t.get(n)) for n in _targets(res)) + " |")
    for key, what in (
        ("cost", "fmnist-tiny sandwich step, batch 128"),
        ("cost_224", "imagenet-small largest subnet at 224, batch 8"),
    ):
        if res.get(key):
            c = res[key]
            lines += [
                "",
                f"Supernet step ({what}): integer {c['integer_s']:.3f} s, float {c['float_s']:.3f} s, "
                f"ratio {c['ratio_integer_over_float']:.2f}x",
            ]
    return "\n".join(lines)


def _targets(res: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for t in res["search"].values():
        names += [n for n in t if n not in names]
    return names


def _cell(t: dict[str, Any] | None) -> str:
    if not t or t.get("test_top1") is None:
        return "-" if not t else t.get("status", "-")
    return f"{t['test_top1']:.2f} ({t['fps']:.0f} FPS)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1200, help="training steps of every run (default: the demo's)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2, help="training runs at a time (one thread each)")
    ap.add_argument("--search", action="store_true", help="run the demo's search on the supernets of --search-seeds")
    ap.add_argument("--search-seeds", default=None, help="seeds whose supernets are searched (default: --seeds)")
    ap.add_argument("--time", action="store_true", help="time one supernet step of each mode")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-train", action="store_true", help="only the step timing")
    ap.add_argument("--workdir", default="runs/bench-nonlinear")
    ap.add_argument("--out", default=str(RESULTS / "nonlinear.json"))
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = Path(args.workdir)
    res: dict[str, Any] = {
        "benchmark": "nonlinear",
        "date": today(),
        "command": argv_string(argv),
        "machine": machine_info(),
        "steps": args.steps,
        "seeds": seeds,
    }
    if not args.no_train:
        train_all(workdir, args.steps, seeds, args.jobs)
        res["accuracy"] = accuracy(workdir, seeds)
        if args.search:
            s_seeds = [int(s) for s in args.search_seeds.split(",")] if args.search_seeds else seeds
            res["search"] = search_all(workdir, s_seeds)
    if args.time:
        res["cost"] = step_cost(args.reps)
        # imagenet-small at 224: its largest subnet's forward+backward at batch 8 (a GPU step's shape)
        res["cost_224"] = step_cost(max(3, args.reps // 3), "imagenet-small", batch=8, largest_only=True)
    md = markdown(res)
    write_results(args.out, res, md)
    print(md)
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
