"""Search benchmark: flexible mixed-precision search vs its baselines at the same evaluation budget.

On a trained Fashion-MNIST supernet (``quasar-vit train --config fmnist-tiny --out runs/fmnist-tiny``),
runs the Quasar-ViT search (``flexible``: per-layer 8-bit share) and, with the same budget, seed and
latency targets, the baselines ``random`` (random search), ``uniform8``, ``uniform4`` and ``fixed``
(one 8-bit share for every layer, searched).  Reports per mode the validation and test top-1 of the
winner at each FPS target, the hypervolume of the accuracy/FPS front, and the search wall time.

Run::

    python benchmarks/search.py --checkpoint runs/fmnist-tiny            # default budget (slow on CPU)
    python benchmarks/search.py --checkpoint runs/fmnist-tiny --population 10 --generations 4 \\
        --mutations 5 --crossovers 5 --val-size 1000                      # quick look

Writes ``benchmarks/results/search.json`` (and the search outputs in ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from common import RESULTS, user_error, write_results

from quasar_vit.errors import QuasarError

OUT = RESULTS / "search.json"
BASELINES = ["random", "uniform8", "uniform4", "fixed"]
#: search.* config values settable from the command line, with their types
SEARCH_KEYS = {
    "population": int,
    "generations": int,
    "parents": int,
    "mutations": int,
    "crossovers": int,
    "val-size": int,
    "seed": int,
    "tied-share-prob": float,
    "tied-generations": int,
    "share-mutation": str,
    "screen-size": int,
    "race-z": float,
    "race-error": str,
    "select-on": str,
    "fill-slack": str,  # true | false
}
#: model.* values a search may change (quasar_vit.search.runner.SEARCH_MODEL_OVERRIDES)
MODEL_KEYS = {"share-granularity": str}
DEFAULT_BUDGET = 50 + 19 * 50  # AutoFormer's schedule: population 50, 20 generations, 25 + 25 children


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        res, wall = run(args)
    except QuasarError as exc:
        status = user_error("search.py", exc)
        if "checkpoint not found" in str(exc) or "no checkpoint" in str(exc):
            print("train one first: quasar-vit train --config fmnist-tiny --out runs/fmnist-tiny", file=sys.stderr)
        return status
    rows = [mode_row(mode, r, res.targets) for mode, r in {res.main.mode: res.main, **res.baselines}.items()]
    print_table(res, rows)
    summary = make_summary(args, res, rows, wall)
    spe = rows[0]["seconds_per_evaluation"] or 0.0
    print(
        f"\nflexible search: {rows[0]['evaluations']} evaluations in {rows[0]['search_seconds']:.1f} s "
        f"({spe:.2f} s each, {res.val_images} val images); default budget ({DEFAULT_BUDGET} evaluations): "
        f"{'measured' if res.settings.get('budget') == DEFAULT_BUDGET else 'estimated'} "
        f"{spe * DEFAULT_BUDGET / 60:.1f} min; whole benchmark wall time {wall:.1f} s"
    )
    write_results(args.results, summary)
    print(f"wrote {args.results}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/fmnist-tiny", help="trained Fashion-MNIST supernet (file or run dir)")
    p.add_argument("--out", default="runs/search-benchmark", help="search output directory")
    p.add_argument("--platform", default="zcu102")
    p.add_argument("--fps", default=None, help="FPS targets (default: 25/50/75 %% of the space's FPS range)")
    for section, keys in (("search", SEARCH_KEYS), ("model", MODEL_KEYS)):
        for k, typ in keys.items():
            p.add_argument(f"--{k}", type=typ, default=None, help=f"{section}.{k.replace('-', '_')}")
    p.add_argument("--baselines", default=",".join(BASELINES))
    p.add_argument("--restart", action="store_true", help="ignore saved search states in --out")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--results", default=str(OUT), help="where to write the JSON summary")
    return p


def run(args: argparse.Namespace) -> tuple[Any, float]:
    """The search with ``args``' settings and baselines; its result and wall seconds."""
    from quasar_vit.search.runner import SearchRequest, run_search
    from quasar_vit.search.targets import parse_targets

    overrides = [
        f"{section}.{k.replace('-', '_')}={getattr(args, k.replace('-', '_'))}"
        for section, keys in (("search", SEARCH_KEYS), ("model", MODEL_KEYS))
        for k in keys
        if getattr(args, k.replace("-", "_")) is not None
    ]
    baselines = [b for b in args.baselines.split(",") if b]
    targets = parse_targets(args.fps) if args.fps else None
    t0 = time.perf_counter()
    request = SearchRequest(
        args.checkpoint,
        args.out,
        platform=args.platform,
        targets=targets,
        baselines=baselines,
        overrides=overrides,
        device=args.device,
        progress=args.progress,
        restart=args.restart,
    )
    res = run_search(request)
    return res, time.perf_counter() - t0


def mode_row(mode: str, r: Any, targets: list[Any]) -> dict[str, Any]:
    """One mode's budget, time, hypervolume and winner (or why none) at each target."""
    ev = r.evolution
    entries = {e["name"]: e for e in r.target_entries(targets)}
    return {
        "mode": mode,
        "evaluations": ev.evaluations,
        "budget": ev.budget,
        "search_seconds": ev.elapsed_s,
        "screened_out": ev.stats.screened_out,  # racing: scored on search.screen_size images only
        "seconds_per_evaluation": ev.elapsed_s / ev.evaluations if ev.evaluations else None,
        "hypervolume": r.hypervolume,
        "hypervolume_normalized": r.hypervolume_normalized,
        "front_size": len(r.front),
        "targets": {
            n: (
                {
                    "val_top1": e["val_top1"],
                    "test_top1": e["test_top1"],
                    "fps": e["fps"],
                    "share_8bit": e["share_8bit"],
                    "weight_mb": e["weight_mb"],
                    "subnet": e["description"],
                }
                if e["status"] == "met"
                else {"status": e["status"], "fastest_fps": e["fastest_fps"]}
            )
            for n, e in entries.items()
        },
    }


def print_table(res: Any, rows: list[dict[str, Any]]) -> None:
    """Per mode: candidates, val/test top-1 of the winner at each target, hypervolume, time."""
    names = [t.name for t in res.targets]
    head = (
        f"{'mode':<10} {'evals':>5} "
        + " ".join(f"{n + ' val/test':>20}" for n in names)
        + f" {'HV(norm)':>9} {'time s':>8}"
    )
    print()
    print(
        f"search benchmark on {res.platform}; targets: "
        + ", ".join(f"{t.name} (>= {t.fps:.1f} FPS)" for t in res.targets)
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        cells = []
        for n in names:
            t = row["targets"][n]
            if "val_top1" in t:
                test = f"{t['test_top1']:.2f}" if t["test_top1"] is not None else "-"
                cells.append(f"{t['val_top1']:>9.2f}/{test:<10}")
            else:
                cells.append(f"{'not met':>20}")
        print(
            f"{row['mode']:<10} {row['evaluations']:>5} "
            + " ".join(cells)
            + f" {row['hypervolume_normalized']:>9.4f} {row['search_seconds']:>8.1f}"
        )


def make_summary(args: argparse.Namespace, res: Any, rows: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """The JSON summary: settings, targets, per-mode rows, dominance and the default-budget time."""
    main_row = rows[0]
    spe = main_row["seconds_per_evaluation"] or 0.0
    return {
        "platform": res.platform,
        "checkpoint": str(args.checkpoint),
        "out": str(args.out),
        "targets": [t.to_dict() for t in res.targets],
        "settings": res.settings,
        "val_images": res.val_images,
        "test_images": res.test_images,
        "hypervolume_reference": {"val_top1": res.hv_ref[0], "fps": res.hv_ref[1], "max_fps": res.max_fps},
        "modes": rows,
        "dominance": res.dominance(),
        "wall_seconds_total": wall,
        "default_budget": DEFAULT_BUDGET,
        "flexible_search_seconds": main_row["search_seconds"],
        "flexible_default_budget_seconds_estimate": spe * DEFAULT_BUDGET,
        "note": (
            "search_seconds are measured for the budget in 'settings' (cumulative over resumes); "
            "the default-budget figure is measured when settings.budget equals default_budget, else "
            "extrapolated as seconds per evaluation x default budget"
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
