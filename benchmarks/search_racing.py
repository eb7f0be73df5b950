"""Racing benchmark: the same search with and without racing (``search.screen_size``), seed by seed.

For each seed it runs the flexible search twice on one supernet, with the same targets and budget:
once scoring every candidate on the whole validation split (``screen_size=0``, the search before
racing) and once with racing (raced first: when other jobs end during the benchmark, the later plain
run gets the quieter machine, so the measured speed-up errs low).  It reports per seed the search wall time of each, how many candidates
racing scored in full, and the winners' validation and test top-1 per target, and whether racing
picked the same winners.  The two runs of a seed follow each other, so they share the machine's load.

Run::

    python benchmarks/search_racing.py --checkpoint runs/demo/train --seeds 0,1,2   # default budget (SearchConfig)
    python benchmarks/search_racing.py --checkpoint runs/demo/train --seeds 0 --generations 6  # quick look

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

OUT = RESULTS / "search_racing.json"


def one_search(checkpoint: str, out: Path, overrides: list[str], screen_size: int) -> dict[str, Any]:
    """Run one flexible search; its wall time, scoring counts and winners per target."""
    from quasar_vit.search.runner import SearchRequest, run_search

    t0 = time.perf_counter()
    request = SearchRequest(
        checkpoint,
        out,
        overrides=[*overrides, f"search.screen_size={screen_size}"],
        progress=False,
        restart=True,
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
        "search_seconds": ev.elapsed_s,
        "wall_seconds": wall,
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
    rows = []
    try:
        for seed in (int(s) for s in args.seeds.split(",") if s):
            ov = [*base, f"search.seed={seed}"]
            raced = one_search(args.checkpoint, Path(args.workdir) / f"seed{seed}-raced", ov, args.screen_size)
            plain = one_search(args.checkpoint, Path(args.workdir) / f"seed{seed}-plain", ov, 0)
            rows.append({"seed": seed, "plain": plain, "raced": raced, **compare(plain, raced)})
            print_row(rows[-1])
    except QuasarError as exc:
        return user_error("search_racing.py", exc)
    write_results(
        args.results,
        {
            "checkpoint": args.checkpoint,
            "screen_size": args.screen_size,
            "argv": sys.argv[1:] if argv is None else argv,
            "seeds": rows,
        },
    )
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
