"""Replay a paired-raced search at other race margins: how much would each ``race_z`` screen out?

A search run with ``search.race_error: paired`` keeps every candidate's screen bits (which screen
images it got right) in ``history.jsonl``.  For generations 1 onwards this script re-decides, for
each candidate and each ``race_z``, whether paired racing would have scored it in full: against each
target's ``parents``-th best fully scored candidate before its generation, as the search does.  It
counts the candidates screened out, and among them those known (fully scored in the real run) to
have reached that ``parents``-th best, or to have beaten a target's best at the time: lower bounds,
since what the real run screened out has no full score.  No model is run.

Run::

    python benchmarks/race_replay.py runs/search-racing/seed0-raced-paired

Prints a table and writes ``benchmarks/results/race_replay.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import RESULTS, user_error, write_results

from quasar_vit.search.evolution import Evaluator, decode_bits
from quasar_vit.space import SubnetConfig

OUT = RESULTS / "race_replay.json"


def replay(records: list[dict[str, Any]], fingerprint: dict[str, Any], z: float) -> dict[str, int]:
    """Counts for one ``race_z`` over the candidates of generations 1 onwards."""
    targets = [float(t["fps"]) for t in fingerprint["targets"]]
    k = int(fingerprint["settings"]["parents"])
    n, big_n = int(fingerprint["screen_size"]), int(fingerprint["val_images"])
    ev = Evaluator(lambda s: 0.0, screen_fn=lambda s: 0.0, screen_images=n, full_images=big_n)
    subnet = {r["index"]: SubnetConfig.from_dict(r["subnet"]) for r in records}
    ev.screen_bits = {subnet[r["index"]]: decode_bits(r["screen_bits"]) for r in records}
    out = {"candidates": 0, "screened_out": 0, "known_to_reach_kth": 0, "known_to_beat_best": 0}
    for g in sorted({r["generation"] for r in records})[1:]:
        before = [r for r in records if r["generation"] < g and r["val_top1"] is not None]
        elite = []
        for t in targets:
            top = sorted((r for r in before if r["fps"] >= t), key=lambda r: (-r["val_top1"], -r["fps"], r["index"]))
            elite.append((t, top[k - 1] if len(top) >= k else None, top[0] if top else None))
        for r in (r for r in records if r["generation"] == g):
            out["candidates"] += 1
            if any(r["fps"] >= t and _could_reach(ev, subnet, r, ref, z) for t, ref, _ in elite):
                continue
            out["screened_out"] += 1
            if r["val_top1"] is None:
                continue
            met = [(ref, best) for t, ref, best in elite if r["fps"] >= t]
            out["known_to_reach_kth"] += any(r["val_top1"] >= ref["val_top1"] for ref, _ in met)
            out["known_to_beat_best"] += any(r["val_top1"] > best["val_top1"] for _, best in met)
    return out


def _could_reach(
    ev: Evaluator, subnet: dict[int, SubnetConfig], r: dict[str, Any], ref: dict[str, Any] | None, z: float
) -> bool:
    """The search's paired test (``Evolution._could_reach``) on the recorded screen bits."""
    if ref is None:
        return True
    se = ev.paired_error(subnet[r["index"]], subnet[ref["index"]])
    assert se is not None  # every record has its bits (checked in main)
    return r["screen_top1"] - ref["screen_top1"] + z * se >= 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("search_dir", help="the output folder of a search run with search.race_error: paired")
    ap.add_argument("--z", default="2,1.5,1,0.5,0", help="race_z values to replay")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    d = Path(args.search_dir)
    try:
        fp = json.loads((d / "search_state.json").read_text())["fingerprint"]
        lines = [json.loads(x) for x in (d / "history.jsonl").read_text().splitlines()]
    except (OSError, ValueError, KeyError) as exc:
        return user_error("race_replay.py", exc)
    records = [x for x in lines if x.get("event") == "candidate"]
    if not records or any("screen_bits" not in r for r in records):
        return user_error("race_replay.py", ValueError(f"{d}: not a search raced with search.race_error: paired"))
    rows = {z: replay(records, fp, float(z)) for z in args.z.split(",") if z}
    print("| race_z | screened out | known to reach the k-th best | known to beat a target's best |")
    print("|---|---|---|---|")
    for z, r in rows.items():
        share = 100 * r["screened_out"] / max(r["candidates"], 1)
        print(
            f"| {z} | {r['screened_out']} of {r['candidates']} ({share:.0f} %) | "
            f">= {r['known_to_reach_kth']} | >= {r['known_to_beat_best']} |"
        )
    write_results(args.out, {"search_dir": str(d), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
