"""Search benchmark over several seeds: is the flexible search's lead over a baseline real or noise?

One seed of ``benchmarks/search.py`` compares winners whose test top-1 differ by tenths of a point,
inside the binomial noise of a 10,000-image test set (about 0.35 points).  This script runs
``search.py`` once per seed (same supernet, budget and targets; only the search seed changes),
then reports per mode and target the mean test top-1 over seeds, and per baseline the paired
difference ``flexible - baseline`` (mean and standard error over seeds) and how often a baseline's
front dominated the flexible front.

Run::

    python benchmarks/search_seeds.py --checkpoint runs/fmnist-tiny --seeds 0,1,2 --tag fmnist \\
        --population 30 --generations 10 --parents 10 --mutations 15 --crossovers 15 --val-size 5000

Options other than ``--seeds/--tag/--workdir/--rerun`` are passed to ``search.py`` unchanged.
A seed whose summary exists from a run with exactly the same ``search.py`` arguments is reused, so
an interrupted run continues.  Writes ``benchmarks/results/search-seeds-TAG.json`` and ``.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import search as search_bench  # the sibling benchmark script, run once per seed
from common import RESULTS, write_results

from quasar_vit.utils.io import atomic_write_json


def _mean_se(xs: list[float]) -> tuple[float, float | None]:
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None)


def aggregate(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per-mode means and paired flexible-minus-baseline differences from per-seed summaries."""
    seeds = sorted(runs)
    first = runs[seeds[0]]
    targets = [t["name"] for t in first["targets"]]
    modes = [m["mode"] for m in first["modes"]]
    main = modes[0]

    def score(seed: int, mode: str, target: str, split: str = "test") -> float | None:
        row = next(m for m in runs[seed]["modes"] if m["mode"] == mode)
        return row["targets"][target].get(f"{split}_top1")

    def test(seed: int, mode: str, target: str) -> float | None:
        return score(seed, mode, target)

    def hv(seed: int, mode: str) -> float:
        return next(m for m in runs[seed]["modes"] if m["mode"] == mode)["hypervolume_normalized"]

    per_mode = {}
    for mode in modes:
        cells = {}
        for t in targets:
            vals = [test(s, mode, t) for s in seeds]
            ok = [v for v in vals if v is not None]
            cells[t] = {"per_seed": vals, "mean": statistics.fmean(ok) if ok else None, "met_in": len(ok)}
        hvs = [hv(s, mode) for s in seeds]
        per_mode[mode] = {
            "test_top1": cells,
            "hypervolume_normalized": {"per_seed": hvs, "mean": statistics.fmean(hvs)},
        }

    paired = {}
    for mode in modes[1:]:
        diffs = {}
        for t in targets:
            d = [
                test(s, main, t) - test(s, mode, t)
                for s in seeds
                if test(s, main, t) is not None and test(s, mode, t) is not None
            ]
            if d:
                m, se = _mean_se(d)
                diffs[t] = {"per_seed": d, "mean": m, "se": se}
        # the search maximises validation top-1: a search over a superset should not end behind its
        # subset there (issue: flexible >= fixed and uniform8 at every target in every seed)
        val_cells = [
            {"seed": s, "target": t, "diff": round(a - b, 4)}
            for s in seeds
            for t in targets
            if (a := score(s, main, t, "val")) is not None and (b := score(s, mode, t, "val")) is not None
        ]
        hm, hse = _mean_se([hv(s, main) - hv(s, mode) for s in seeds])
        dom = [runs[s].get("dominance", {}).get(mode, {}) for s in seeds]
        paired[mode] = {
            "test_top1_diff": diffs,
            "val_top1_diff": val_cells,
            "val_behind": [c for c in val_cells if c["diff"] < 0],
            "hypervolume_diff": {"mean": hm, "se": hse},
            "seeds_dominating_main": sum(bool(d.get("dominates_main")) for d in dom),
            "seeds_dominated_by_main": sum(bool(d.get("dominated_by_main")) for d in dom),
            "dominance_known": all("dominates_main" in d for d in dom),
        }
    return {
        "seeds": seeds,
        "main": main,
        "targets": targets,
        "target_fps": {t["name"]: t["fps"] for t in first["targets"]},
        "modes": per_mode,
        "paired": paired,
    }


def to_markdown(agg: dict[str, Any], title: str) -> str:
    targets, seeds = agg["targets"], agg["seeds"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        f"### {title}",
        "",
        f"Test top-1 (%) of each mode's winner per FPS target; mean over seeds {seeds} (per seed in brackets).",
        "",
        "| mode | " + " | ".join(targets) + " | normalised HV |",
        "|---" * (len(targets) + 2) + "|",
    ]
    for mode, r in agg["modes"].items():
        cells = [f"{fmt(c['mean'])} ({', '.join(fmt(v) for v in c['per_seed'])})" for c in r["test_top1"].values()]
        h = r["hypervolume_normalized"]
        lines.append(
            f"| {mode} | "
            + " | ".join(cells)
            + f" | {h['mean']:.4f} ({', '.join(f'{v:.4f}' for v in h['per_seed'])}) |"
        )
    lines += [
        "",
        f"Paired difference {agg['main']} - baseline, mean +- standard error over seeds "
        "(points of test top-1; HV x 100); fronts: seeds in which the baseline's front dominated "
        f"the {agg['main']} front / was dominated by it.",
        "",
        "| baseline | " + " | ".join(targets) + " | HV | dominated main | dominated by main |",
        "|---" * (len(targets) + 4) + "|",
    ]
    pm = lambda d, k=1.0: f"{k * d['mean']:+.2f}" + (f" +- {k * d['se']:.2f}" if d.get("se") is not None else "")  # noqa: E731
    for mode, p in agg["paired"].items():
        cells = [pm(p["test_top1_diff"][t]) if t in p["test_top1_diff"] else "-" for t in targets]
        dom = (
            (f"{p['seeds_dominating_main']}/{len(seeds)}", f"{p['seeds_dominated_by_main']}/{len(seeds)}")
            if p["dominance_known"]
            else ("?", "?")
        )
        lines.append(
            f"| {mode} | " + " | ".join(cells) + f" | {pm(p['hypervolume_diff'], 100)} | {dom[0]} | {dom[1]} |"
        )
    lines += ["", f"Validation top-1 (what the search maximises), {agg['main']} - baseline per seed and target:", ""]
    for mode, p in agg["paired"].items():
        cells = p.get("val_top1_diff", [])
        behind = p.get("val_behind", [])
        worst = ", ".join(f"seed {c['seed']} {c['target']} {c['diff']:+.2f}" for c in behind)
        lines.append(
            f"- {mode}: {agg['main']} >= {mode} in {len(cells) - len(behind)} of {len(cells)}"
            + (f"; behind at {worst}" if behind else "")
        )
    return "\n".join(lines) + "\n"


def reusable(out: Path, call: list[str]) -> bool:
    """Whether seed folder ``out`` holds a finished run of ``search.py`` with exactly ``call``.

    Any other argument (budget, validation size, baselines, a search knob) may change the result,
    so a summary is reused only on an exact match of the recorded arguments."""
    res_file, args_file = out / "summary.json", out / "summary.args.json"
    if not (res_file.is_file() and args_file.is_file()):
        return False
    try:
        return json.loads(args_file.read_text()) == call
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tag", default="fmnist", help="names the output files and the run folders")
    p.add_argument("--workdir", default="runs/search-seeds")
    p.add_argument("--rerun", action="store_true", help="run every seed again even if its summary exists")
    p.add_argument("--checkpoint", default="runs/fmnist-tiny")
    args, rest = p.parse_known_args(argv)
    if any(a.startswith(("--seed=", "--out", "--results")) or a == "--seed" for a in rest):
        p.error("--seed, --out and --results are set per seed by this script")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be integers separated by commas, got {args.seeds!r}")
    if not seeds:
        p.error("--seeds is empty")

    runs: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        summary = run_seed(Path(args.workdir) / args.tag / f"seed{seed}", seed, args, rest)
        if isinstance(summary, int):
            return summary
        runs[seed] = summary
    write_summary(runs, args, argv)
    return 0


def run_seed(out: Path, seed: int, args: argparse.Namespace, rest: list[str]) -> dict[str, Any] | int:
    """One seed's ``search.py`` summary, reused from ``out`` when its arguments match, else run.

    Args:
        out: the seed's search folder (``summary.json`` and ``summary.args.json`` beside it).
        seed: the search seed.
        args: this script's options (``checkpoint``, ``rerun``).
        rest: the options passed on to ``search.py``.

    Returns:
        The summary, or ``search.py``'s exit status when it failed.
    """
    res_file, args_file = out / "summary.json", out / "summary.args.json"
    call = [
        "--checkpoint",
        str(args.checkpoint),
        "--out",
        str(out),
        "--seed",
        str(seed),
        "--results",
        str(res_file),
        *rest,
    ]
    if not args.rerun and reusable(out, call):
        print(f"[seeds] seed {seed}: reusing {res_file}")
        return json.loads(res_file.read_text())
    print(f"[seeds] seed {seed}: running search.py -> {out}")
    args_file.unlink(missing_ok=True)  # a run that dies midway must not leave its summary reusable
    rc = search_bench.main(call)
    if rc != 0:
        return rc
    atomic_write_json(args_file, call)
    return json.loads(res_file.read_text())


def write_summary(runs: dict[int, dict[str, Any]], args: argparse.Namespace, argv: list[str] | None) -> None:
    """Aggregate the seeds, print the Markdown and write ``search-seeds-TAG.json`` and ``.md``."""
    seeds = list(runs)  # in the order given
    agg = aggregate(runs)
    budgets = {r["settings"].get("budget") for r in runs.values()}
    agg.update(
        {
            "tag": args.tag,
            "checkpoint": str(args.checkpoint),
            "budget_per_mode": sorted(budgets),
            "platform": runs[seeds[0]]["platform"],
            "val_images": runs[seeds[0]]["val_images"],
            "test_images": runs[seeds[0]]["test_images"],
            "argv": sys.argv[1:] if argv is None else argv,
        }
    )
    md = to_markdown(
        agg,
        f"Search over {len(seeds)} seeds: {args.tag} ({args.checkpoint}, "
        f"{'/'.join(str(b) for b in sorted(budgets))} candidates per mode)",
    )
    print()
    print(md)
    write_results(RESULTS / f"search-seeds-{args.tag}.json", agg, md)
    print(f"wrote {RESULTS / f'search-seeds-{args.tag}.json'} and .md")


if __name__ == "__main__":
    sys.exit(main())
