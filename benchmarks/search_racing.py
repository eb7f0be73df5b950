"""Racing benchmark: the same search with and without racing (``search.screen_size``), seed by seed.

For each seed it runs the flexible search twice on one supernet, with the same targets and budget:
once scoring every candidate on the whole validation split (``screen_size=0``, the search before
racing) and once with racing (raced first: when other jobs end during the benchmark, the later plain
run gets the quieter machine, so the measured speed-up errs low).  It reports per seed the search
time of each, how many candidates racing scored in full, and the winners' validation and test top-1
per target, and whether racing picked the same winners.  The two runs of a seed follow each other, so they share the machine's load.

Run::

    python benchmarks/search_racing.py --checkpoint runs/demo/train --seeds 0,1,2   # default budget (SearchConfig)
    python benchmarks/search_racing.py --checkpoint runs/demo/train --seeds 0 --generations 6  # quick look
    python benchmarks/search_racing.py --seeds 0,1,2 --race-z 1        # another race margin, same plain runs
    python benchmarks/search_racing.py --seeds 0,1,2 --select-on screen   # parents by screen score

Each search's summary is kept in its folder and reused by a later call with the same settings (the
plain searches, the slow ones, serve every variant); an interrupted search resumes.

Writes ``benchmarks/results/search_racing.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, user_error, write_results

from quasar_vit.errors import QuasarError
from quasar_vit.utils.io import atomic_write_json

OUT = RESULTS / "search_racing.json"


def one_search(checkpoint: str, out: Path, overrides: list[str], screen_size: int, race_error: str) -> dict[str, Any]:
    """Run one flexible search; its wall time, scoring counts and winners per target.

    The summary is kept in ``out/benchmark.json`` with the arguments it was run with, and reused
    when they match (a plain search, the slow one, serves several raced variants)."""
    import json

    key = {"checkpoint": checkpoint, "overrides": overrides, "screen_size": screen_size}
    if screen_size:  # a plain search (screen_size 0) does not race
        key["race_error"] = race_error
    kept = out / "benchmark.json"
    if kept.exists():
        doc = json.loads(kept.read_text())
        if doc.get("key") == key:
            return doc["summary"]
    summary = _run_one(checkpoint, out, overrides, screen_size, race_error)
    atomic_write_json(kept, {"key": key, "summary": summary})
    return summary


def _run_one(checkpoint: str, out: Path, overrides: list[str], screen_size: int, race_error: str) -> dict[str, Any]:
    from quasar_vit.search.runner import SearchRequest, run_search

    resumed = (out / "search_state.json").exists()  # then wall_seconds covers only what was left
    t0 = time.perf_counter()
    request = SearchRequest(
        checkpoint,
        out,
        overrides=[*overrides, f"search.screen_size={screen_size}", f"search.race_error={race_error}"],
        progress=False,
        restart=False,  # a finished or interrupted search of the same settings is resumed
        plot=False,
        log=lambda s: None,
    )
    res = run_search(request)
    wall = time.perf_counter() - t0
    ev = res.main.evolution
    winners = {
        e["name"]: (
            {"val_top1": e["val_top1"], "test_top1": e["test_top1"], "fps": e["fps"], "subnet": e["description"]}
            if e["status"] == "met"
            else None
        )
        for e in res.main.target_entries(res.targets)
    }
    return {
        "screen_size": screen_size,
        "race_error": race_error,
        "search_seconds": ev.elapsed_s,
        "wall_seconds": wall,
        "resumed": resumed,
        "candidates": ev.evaluations,
        "scored_in_full": ev.evaluations - ev.stats.screened_out,
        "val_images": res.val_images,
        "winners": winners,
    }


def compare(plain: dict[str, Any], raced: dict[str, Any]) -> dict[str, Any]:
    same = {
        n: (w or {}).get("subnet") == (raced["winners"][n] or {}).get("subnet") for n, w in plain["winners"].items()
    }
    test_gain = {
        n: (raced["winners"][n]["test_top1"] - w["test_top1"]) if w and raced["winners"][n] else None
        for n, w in plain["winners"].items()
    }
    return {
        "speed-up": plain["search_seconds"] / max(raced["search_seconds"], 1e-9),
        "same_winner": same,
        "test_top1_raced_minus_plain": test_gain,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="runs/demo/train")
    p.add_argument("--seeds", default="0")
    p.add_argument("--screen-size", type=int, default=1000)
    p.add_argument("--race-error", default="paired", help="search.race_error of the raced run: paired or binomial")
    p.add_argument("--race-z", type=float, default=None, help="search.race_z of the raced run (default: the config's)")
    p.add_argument("--select-on", default="full", help="search.select_on of the raced run: full or screen")
    p.add_argument("--generations", type=int, default=None, help="search.generations (default: the config's)")
    p.add_argument("--workdir", default="runs/search-racing")
    p.add_argument("--results", default=str(OUT))
    args = p.parse_args(argv)
    from quasar_vit.config import SearchConfig

    d = SearchConfig()  # the default budget, whatever the checkpoint's config holds (the demo's is smaller)
    base = [
        f"search.{k}={getattr(d, k)}"
        for k in (
            "population",
            "generations",
            "parents",
            "mutations",
            "crossovers",
            "mutation_prob",
            "val_images",
            "eval_batch_size",
        )
    ]
    if args.generations:
        base.append(f"search.generations={args.generations}")
    settings = {
        "checkpoint": args.checkpoint,
        "screen_size": args.screen_size,
        "race_error": args.race_error,
        "race_z": args.race_z,
        "select_on": args.select_on,
        "argv": sys.argv[1:] if argv is None else argv,
    }
    rows: list[dict[str, Any]] = []
    try:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            ov = [*base, f"search.seed={seed}"]
            tag = f"seed{seed}-raced-{args.race_error}" + (f"-z{args.race_z:g}" if args.race_z is not None else "")
            race_ov = (
                ov + ([f"search.race_z={args.race_z}"] if args.race_z is not None else []) + ["search.select_on=full"]
            )
            if args.select_on != "full":
                tag, race_ov = f"seed{seed}-select-on-{args.select_on}", [*ov, f"search.select_on={args.select_on}"]
            raced = one_search(args.checkpoint, Path(args.workdir) / tag, race_ov, args.screen_size, args.race_error)
            plain = one_search(args.checkpoint, Path(args.workdir) / f"seed{seed}-plain", ov, 0, args.race_error)
            rows.append({"seed": seed, "plain": plain, "raced": raced, **compare(plain, raced)})
            print_row(rows[-1])
            write_results(args.results, {**settings, "seeds": rows})  # after every seed: a kill loses none
    except QuasarError as exc:
        return user_error("search_racing.py", exc)
    print(f"wrote {args.results}")
    return 0


def print_row(r: dict[str, Any]) -> None:
    pl, rc = r["plain"], r["raced"]
    print(
        f"seed {r['seed']}: plain {pl['search_seconds']:.0f} s ({pl['candidates']} scored on {pl['val_images']}), "
        f"raced {rc['search_seconds']:.0f} s ({rc['scored_in_full']} of {rc['candidates']} in full): "
        f"{r['speed-up']:.2f}x"
    )
    for n, w in pl["winners"].items():
        v = rc["winners"][n]
        if w and v:
            print(
                f"  {n:<10} plain val {w['val_top1']:.2f} test {w['test_top1']:.2f} | raced val {v['val_top1']:.2f} "
                f"test {v['test_top1']:.2f} | same winner: {r['same_winner'][n]}"
            )


if __name__ == "__main__":
    sys.exit(main())
