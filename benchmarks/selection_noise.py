"""How finely can the search's validation split rank subnets?  The top candidates per target, on val and test.

The search ranks candidates by top-1 on a held-out validation split (5,000 images by default) and
the benchmarks compare the winners on the test split.  When the best candidates differ by tenths
of a point, the ranking may be noise.  This script pools every candidate measured in a search
folder (the main search and its baselines, from their ``history.jsonl``), takes per FPS target the
``--top`` most accurate on validation that meet it, and scores each of them image by image on the
validation and the test split.  It reports per target:

* the validation gap of each candidate to the validation-best, with the *paired* standard error of
  that gap (the two subnets are scored on the same images, so the error comes from the images on
  which exactly one of them is right);
* the test top-1 of each candidate, the Spearman rank correlation between validation and test over
  the top candidates, and the test rank of the validation-best.

Usage::

    python benchmarks/selection_noise.py --search-dir runs/search-seeds/fmnist-w2/seed0 --top 10

Writes ``benchmarks/results/selection_noise.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import RESULTS, user_error, write_results

from quasar_vit.errors import QuasarError


def pooled_candidates(search_dir: Path) -> dict[str, dict[str, Any]]:
    """Subnet JSON (canonical string) -> ``{subnet, val_top1, fps, modes}`` over every history file.

    A candidate counts once it has a full validation score: in its ``candidate`` line, or in a later
    ``promoted`` line (``select_on: screen`` scores a target's screen elite after the generation).
    Candidates only screened have none and are left out."""
    out: dict[str, dict[str, Any]] = {}
    files = [search_dir / "history.jsonl"] + sorted((search_dir / "baselines").glob("*/history.jsonl"))
    for f in files:
        if not f.is_file():
            continue
        mode = "main" if f.parent == search_dir else f.parent.name
        for rec in _scored_candidates(f):
            key = json.dumps(rec["subnet"], sort_keys=True)
            entry = out.setdefault(
                key, {"subnet": rec["subnet"], "val_top1": rec["val_top1"], "fps": rec["fps"], "modes": []}
            )
            entry["modes"].append(mode)
    if not out:
        raise QuasarError(f"no measured candidates in {search_dir} (expected history.jsonl from a search)")
    return out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""

    def ranks(xs: list[float]) -> list[float]:
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        r = [0.0] * len(xs)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else float("nan")


def top1(c) -> float:
    """Top-1 (percent) of a 0/1 correctness vector, computed as the search does (exact counts)."""
    return 100.0 * int(c.sum()) / max(int(c.numel()), 1)


def paired_se(a, b) -> float:
    """Standard error (points) of ``mean(a) - mean(b)`` for 0/1 correctness vectors on the same images."""
    d = a.float() - b.float()
    return 100.0 * float(d.std(unbiased=True)) / math.sqrt(d.numel())


def _scored_candidates(history: Path) -> list[dict[str, Any]]:
    """The ``candidate`` records of one ``history.jsonl`` with their full score, promotions applied."""
    by_index: dict[int, dict[str, Any]] = {}
    for n, line in enumerate(history.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuasarError(f"{history}:{n}: not a JSON line ({exc})") from None
        if rec.get("event") == "candidate":
            by_index[int(rec["index"])] = dict(rec)
        elif rec.get("event") == "promoted" and int(rec["index"]) in by_index:
            by_index[int(rec["index"])]["val_top1"] = rec["val_top1"]
    return [r for r in by_index.values() if r.get("val_top1") is not None]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--search-dir", required=True, help="a search --out folder (with history.jsonl)")
    p.add_argument("--checkpoint", default=None, help="the supernet (default: the one in pareto.json)")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default=str(RESULTS / "selection_noise.json"))
    args = p.parse_args(argv)
    try:
        return run(args)
    except QuasarError as exc:
        return user_error("selection_noise.py", exc)


def read_pareto(root: Path) -> dict[str, Any]:
    """The ``pareto.json`` of search folder ``root``; a missing or broken file is a user error."""
    pareto_file = root / "pareto.json"
    if not pareto_file.is_file():
        raise QuasarError(f"{pareto_file} not found: pass the --out folder of a finished search")
    try:
        return json.loads(pareto_file.read_text())
    except json.JSONDecodeError as exc:
        raise QuasarError(f"{pareto_file} is not valid JSON ({exc})") from None


#: ``correct(subnet_dict, split) -> 0/1 tensor``: which images of the split the subnet gets right
Scorer = Callable[[dict[str, Any], Any], Any]


def scorer(checkpoint: str, pareto: dict[str, Any], device: str) -> tuple[Scorer, Any]:
    """Image-by-image scoring of subnets of ``checkpoint`` on the search's own splits and batch size.

    Returns:
        The scorer and the splits (``val`` as the search used it, ``test``).
    """
    import torch

    from quasar_vit.data import BatchTransform
    from quasar_vit.search.runner import search_splits
    from quasar_vit.space import SubnetConfig
    from quasar_vit.training.checkpoint import load_supernet
    from quasar_vit.training.evaluate import iter_eval_batches

    net, cfg, _ = load_supernet(checkpoint, device)
    splits, _ = search_splits(cfg, int(pareto.get("val_images") or cfg.search.val_images))
    tf = BatchTransform.from_config(cfg.data, train=False)
    net.eval()
    batch = int(pareto.get("settings", {}).get("eval_batch_size") or cfg.search.eval_batch_size)  # as the search

    @torch.no_grad()
    def correct(subnet: dict[str, Any], data: Any) -> torch.Tensor:
        sub = SubnetConfig.from_dict(subnet)
        parts = []
        for x, y in iter_eval_batches(data, batch):
            parts.append(net(tf(x.to(device)), sub).argmax(-1).cpu() == y)
        return torch.cat(parts)

    return correct, splits


def run(args: argparse.Namespace) -> int:
    root = Path(args.search_dir)
    pareto = read_pareto(root)
    checkpoint = args.checkpoint or pareto["checkpoint"]
    correct, splits = scorer(checkpoint, pareto, args.device)
    pool = pooled_candidates(root)
    rows = []
    for t in pareto["targets"]:
        row = target_row(t, pool, correct, splits, args.top)
        if row is not None:
            rows.append(row)

    out = {
        "search_dir": str(root),
        "checkpoint": str(checkpoint),
        "top": args.top,
        "val_images": len(splits.val),
        "test_images": len(splits.test),
        "targets": rows,
    }
    lines = [
        f"Top {args.top} candidates per target by validation top-1 ({len(splits.val)} images), pooled over "
        f"every mode of {root}; test on {len(splits.test)} images.",
        "",
        "| target | val range | test range | median paired SE of a val gap | Spearman val/test | "
        "test rank of the val-best |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['val_range']:.2f} | {r['test_range']:.2f} | {r['median_gap_se']:.2f} | "
            f"{r['spearman_val_test']:+.2f} | {r['test_rank_of_val_best']} of {len(r['candidates'])} |"
        )
    print("\n".join(lines))
    write_results(args.results, out)
    print(f"\nwrote {args.results}")
    return 0


def target_row(
    t: dict[str, Any], pool: dict[str, dict[str, Any]], correct: Scorer, splits: Any, top: int
) -> dict[str, Any] | None:
    """The ``top`` candidates meeting target ``t``, scored on val and test; None below two candidates.

    Args:
        t: one target of ``pareto.json`` (``name``, ``target_fps``).
        pool: :func:`pooled_candidates` of the search folder.
        correct: the :func:`scorer`.
        splits: its splits.
        top: how many candidates to score.

    Returns:
        The per-candidate gaps and the target's spread, rank correlation and test rank of the val-best.
    """
    # ordered as the search picks its winner: validation top-1, ties to the faster subnet
    meeting = sorted(
        (c for c in pool.values() if c["fps"] >= t["target_fps"]), key=lambda c: (-c["val_top1"], -c["fps"])
    )
    chosen = meeting[:top]
    if len(chosen) < 2:
        return None
    scored = [(c, correct(c["subnet"], splits.val), correct(c["subnet"], splits.test)) for c in chosen]
    for c, v, _ in scored:  # the split is the one the search used: same figures
        if abs(top1(v) - c["val_top1"]) > 1e-9:
            raise QuasarError(
                f"validation top-1 {top1(v):.2f} differs from the search's "
                f"{c['val_top1']:.2f}: is --checkpoint the supernet this search used?"
            )
    best_v, best_t = scored[0][1], scored[0][2]
    cands = [
        {
            "subnet": c["subnet"],
            "modes": sorted(set(c["modes"])),
            "fps": c["fps"],
            "share_8bit": sum(c["subnet"]["w8_shares"]) / len(c["subnet"]["w8_shares"]),
            "val_top1": top1(v),
            "test_top1": top1(te),
            "val_gap_to_best": top1(best_v) - top1(v),
            "val_gap_se": paired_se(best_v, v) if v is not best_v else 0.0,
            "test_gap_to_val_best": top1(best_t) - top1(te),
        }
        for c, v, te in scored
    ]
    vals, tests = [c["val_top1"] for c in cands], [c["test_top1"] for c in cands]
    return {
        "target": t["name"],
        "target_fps": t["target_fps"],
        "candidates": cands,
        "spearman_val_test": spearman(vals, tests),
        "test_rank_of_val_best": 1 + sum(x > tests[0] for x in tests),
        "val_range": max(vals) - min(vals),
        "test_range": max(tests) - min(tests),
        "median_gap_se": sorted(c["val_gap_se"] for c in cands[1:])[len(cands[1:]) // 2],
    }


if __name__ == "__main__":
    sys.exit(main())
