"""The multi-seed search benchmark's aggregation: paired differences and dominance counts."""

from __future__ import annotations

import json
import math

import search_seeds  # benchmarks/ is on the path (pyproject: pytest pythonpath)


def _summary(seed: int, flex: list[float | None], fixed: list[float], hv: tuple[float, float], dominated: bool) -> dict:
    targets = [{"name": "a", "fps": 10.0}, {"name": "b", "fps": 20.0}]

    def row(mode, accs, h):
        return {
            "mode": mode,
            "hypervolume_normalized": h,
            "targets": {
                t["name"]: ({"test_top1": a, "val_top1": a} if a is not None else {"status": "not met"})
                for t, a in zip(targets, accs)
            },
        }

    return {
        "targets": targets,
        "settings": {"seed": seed},
        "modes": [row("flexible", flex, hv[0]), row("fixed", fixed, hv[1])],
        "dominance": {"fixed": {"dominates_main": dominated, "dominated_by_main": False}},
    }


def test_aggregate_pairs_seeds_and_counts_dominance():
    runs = {
        0: _summary(0, [80.0, 70.0], [79.0, 71.0], (0.5, 0.4), False),
        1: _summary(1, [81.0, None], [80.0, 70.0], (0.6, 0.7), True),
        2: _summary(2, [82.0, 72.0], [80.0, 71.0], (0.7, 0.6), False),
    }
    agg = search_seeds.aggregate(runs)
    flex = agg["modes"]["flexible"]["test_top1"]
    assert flex["a"]["mean"] == 81.0 and flex["b"]["met_in"] == 2 and flex["b"]["mean"] == 71.0
    d = agg["paired"]["fixed"]["test_top1_diff"]
    assert d["a"]["per_seed"] == [1.0, 1.0, 2.0]
    assert math.isclose(d["a"]["mean"], 4 / 3) and math.isclose(d["a"]["se"], (1 / 3) ** 0.5 / 3**0.5)
    assert d["b"]["per_seed"] == [-1.0, 1.0]  # seed 1 missed target b: not paired
    p = agg["paired"]["fixed"]
    assert p["seeds_dominating_main"] == 1 and p["seeds_dominated_by_main"] == 0 and p["dominance_known"]
    assert math.isclose(p["hypervolume_diff"]["mean"], 0.1 / 3)
    md = search_seeds.to_markdown(agg, "t")
    assert "| fixed | +1.33 +- 0.33 | +0.00 +- 1.00 |" in md and "| 1/3 | 0/3 |" in md
    # validation (here equal to test): behind only at seed 0, target b; seed 1 missed b
    assert p["val_behind"] == [{"seed": 0, "target": "b", "diff": -1.0}] and len(p["val_top1_diff"]) == 5
    assert "- fixed: flexible >= fixed in 4 of 5; behind at seed 0 b -1.00" in md


def test_a_seed_is_reused_only_with_the_same_arguments(tmp_path):
    call = ["--checkpoint", "c", "--seed", "0", "--population", "30"]
    assert not search_seeds.reusable(tmp_path, call)  # nothing there
    (tmp_path / "summary.json").write_text("{}")
    assert not search_seeds.reusable(tmp_path, call)  # a summary without its arguments
    (tmp_path / "summary.args.json").write_text(json.dumps(call))
    assert search_seeds.reusable(tmp_path, call)
    assert not search_seeds.reusable(tmp_path, call + ["--tied-generations", "5"])
    assert not search_seeds.reusable(tmp_path, call[:-1] + ["50"])
    (tmp_path / "summary.args.json").write_text("{not json")
    assert not search_seeds.reusable(tmp_path, call)


def test_selection_noise_helpers(tmp_path):
    import selection_noise
    import torch

    assert selection_noise.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert selection_noise.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert math.isclose(selection_noise.spearman([1, 1, 2], [1, 2, 3]), math.sqrt(3) / 2)
    # paired SE: two subnets that disagree on 2 of 4 images, one right once each way
    a, b = torch.tensor([1, 1, 0, 1]), torch.tensor([1, 0, 1, 1])
    assert math.isclose(selection_noise.paired_se(a, b), 100 * math.sqrt(2 / 3) / 2, rel_tol=1e-6)
    # candidates pooled over the main search and its baselines, once per subnet
    sub = {"embed_dim": 48, "depth": 4}

    def cand(i: int, s: dict, v: float | None) -> str:
        return json.dumps({"event": "candidate", "index": i, "subnet": s, "val_top1": v, "fps": 10.0})

    (tmp_path / "history.jsonl").write_text(cand(0, sub, 80.0) + "\n" + json.dumps({"event": "generation"}) + "\n")
    (tmp_path / "baselines" / "fixed").mkdir(parents=True)
    (tmp_path / "baselines" / "fixed" / "history.jsonl").write_text(
        cand(0, sub, 80.0) + "\n" + cand(1, {**sub, "depth": 5}, 81.0) + "\n"
    )
    pool = selection_noise.pooled_candidates(tmp_path)
    assert len(pool) == 2
    assert sorted(e["modes"] for e in pool.values()) == [["fixed"], ["main", "fixed"]]
    # select_on: screen -- a screened-only candidate counts once a promoted line gives its full score
    promoted = json.dumps({"event": "promoted", "generation": 0, "index": 1, "val_top1": 79.5})
    lines = [cand(0, sub, 80.0), cand(1, {**sub, "depth": 6}, None), cand(2, {**sub, "depth": 7}, None), promoted]
    (tmp_path / "history.jsonl").write_text("\n".join(lines) + "\n")
    pool = selection_noise.pooled_candidates(tmp_path)
    depth6 = [e for e in pool.values() if e["subnet"]["depth"] == 6]
    assert len(depth6) == 1 and depth6[0]["val_top1"] == 79.5 and depth6[0]["modes"] == ["main"]
    assert not [e for e in pool.values() if e["subnet"]["depth"] == 7]
