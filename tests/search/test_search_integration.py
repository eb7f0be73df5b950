"""End-to-end search on a micro supernet: outputs, resume, infeasible targets, CLI errors, 2-rank gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from quasar_vit.cli.main import main  # noqa: E402
from quasar_vit.errors import HardwareError  # noqa: E402
from quasar_vit.search.runner import SearchRequest, SearchResult, run_search  # noqa: E402
from quasar_vit.search.targets import Target  # noqa: E402
from quasar_vit.space import SubnetConfig  # noqa: E402


def search(*args, **kwargs) -> SearchResult:
    """``run_search`` of the :class:`SearchRequest` of these arguments."""
    return run_search(SearchRequest(*args, **kwargs))


DATA = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(not (DATA / "train-images-idx3-ubyte.gz").exists(), reason="Fashion-MNIST not found")

# a micro supernet (1-2 layers, 16 tokens) trained for 2 steps: enough to exercise every path quickly
MICRO = [
    "train.steps=2",
    "train.batch_size=16",
    "train.sandwich_random=0",
    "train.warmup_steps=1",
    "data.train_limit=200",
    "data.test_limit=100",
    "data.val_size=300",
    "model.geometry.patch_size=7",
    "model.embed_dims=[16,32]",
    "model.depths=[1,2]",
    "model.num_heads=[1,2]",
    "model.mlp_ratios=[1.0,2.0]",
    "model.geometry.head_dim=8",
    "search.population=6",
    "search.generations=2",
    "search.parents=3",
    "search.mutations=3",
    "search.crossovers=3",
    "search.val_images=100",
    "search.eval_batch_size=100",
]


@pytest.fixture(scope="session")
def micro_ckpt(tmp_path_factory) -> Path:
    from quasar_vit.config import load_config
    from quasar_vit.training.trainer import train_supernet

    out = tmp_path_factory.mktemp("search_micro") / "run"
    train_supernet(load_config("fmnist-tiny", MICRO), out, device="cpu", progress=False)
    return out / "supernet.pt"


@pytest.fixture(scope="session")
def reference(micro_ckpt, tmp_path_factory):
    """One uninterrupted single-process run, compared against by the resume and distributed tests."""
    out = tmp_path_factory.mktemp("search_ref")
    res = search(
        micro_ckpt, out, platform="zcu102", baselines=["uniform4"], device="cpu", progress=False, log=lambda s: None
    )
    return out, res


def test_outputs(reference):
    out, res = reference
    d = json.loads((out / "pareto.json").read_text())
    assert (out / "pareto.png").stat().st_size > 1000
    assert (out / "history.jsonl").is_file() and (out / "search_state.json").is_file()
    assert d["val_images"] == 100 and d["test_images"] == 100
    assert 0 < d["evaluations"] <= d["budget"] == 6 + 1 * 6
    assert len(d["targets"]) == 3  # default: 25/50/75 % of the space's FPS range
    for f in d["front"]:
        assert f["test_top1"] is not None and f["resources"] and f["design"]
        assert f["fps"] >= d["targets"][0]["target_fps"]
    for t in d["targets"]:
        if t["status"] == "met":
            assert t["fps"] >= t["target_fps"]
            sub = SubnetConfig.load(out / f"subnet_{t['name']}.json")
            assert sub == SubnetConfig.from_dict(t["subnet"])
            assert any(f["subnet"] == t["subnet"] for f in d["front"])
    assert "uniform4" in d["baselines"]
    b = d["baselines"]["uniform4"]
    assert all(set(f["subnet"]["w8_shares"]) == {0.0} for f in b["front"])
    assert (out / "baselines" / "uniform4" / "search_state.json").is_file()
    from quasar_vit.search.pareto import front_dominated

    mine = [(f["val_top1"], f["fps"]) for f in d["front"]]
    theirs = [(f["val_top1"], f["fps"]) for f in b["front"]]
    assert d["dominance"]["uniform4"] == {
        "dominates_main": front_dominated(mine, theirs),
        "dominated_by_main": front_dominated(theirs, mine),
    }
    assert res.main.evolution.complete


def test_resume_equals_uninterrupted(micro_ckpt, reference, tmp_path):
    ref_out, ref = reference
    part = search(
        micro_ckpt,
        tmp_path,
        platform="zcu102",
        device="cpu",
        progress=False,
        max_generations=1,
        test=False,
        plot=False,
        log=lambda s: None,
    )
    assert not part.main.evolution.complete
    res = search(micro_ckpt, tmp_path, platform="zcu102", device="cpu", progress=False, plot=False, log=lambda s: None)
    assert [c.to_dict() for c in res.main.evolution.records] == [c.to_dict() for c in ref.main.evolution.records]


def test_infeasible_targets(micro_ckpt, tmp_path, capsys):
    huge = Target.from_fps(1e9)
    res = search(
        micro_ckpt,
        tmp_path / "a",
        platform="zcu102",
        targets=[Target.from_fps(1.0), huge],
        device="cpu",
        progress=False,
        test=False,
        plot=False,
        overrides=["generations=1"],
    )
    assert huge.name in res.infeasible and 0 < res.infeasible[huge.name] < 1e9
    d = json.loads((tmp_path / "a" / "pareto.json").read_text())
    bad = next(t for t in d["targets"] if t["name"] == huge.name)
    assert bad["status"] == "infeasible" and bad["fastest_fps"] > 0
    assert "infeasible" in capsys.readouterr().out
    with pytest.raises(HardwareError, match="no target can be met"):
        search(micro_ckpt, tmp_path / "b", platform="zcu102", targets=[huge], device="cpu", progress=False)


def test_share_options_reach_the_evolution(micro_ckpt, tmp_path):
    res = search(
        micro_ckpt,
        tmp_path,
        platform="zcu102",
        targets=[Target.from_fps(1.0)],
        device="cpu",
        progress=False,
        test=False,
        plot=False,
        overrides=["generations=3", "tied_generations=2", "share_mutation=step"],
    )
    assert res.settings["tied_generations"] == 2
    gens = [json.loads(l) for l in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [g["shares"] for g in gens if g["event"] == "generation"] == ["tied", "tied", "per-layer"]
    early = [c for c in res.main.evolution.records if c.generation < 2]
    assert early and all(len(set(c.subnet.w8_shares)) == 1 for c in early)
    state = json.loads((tmp_path / "search_state.json").read_text())
    assert state["fingerprint"]["share_mutation"] == "step" and state["fingerprint"]["tied_generations"] == 2


@pytest.mark.parametrize(
    "args,match",
    [
        (["--checkpoint", "/nonexistent/x.pt"], "not found"),
        (["--fps", "100,fast"], "not a number"),
        (["--platform", "nosuchboard"], "unknown platform"),
        (["--fps", "1e9"], "no target can be met"),
        (["--mode", "uniform9"], "unknown search mode"),
        (["--set", "search.share_mutation=creep"], "search.share_mutation"),
        (["--set", "search.tied_generations=-2"], "search.tied_generations"),
    ],
)
def test_cli_errors(micro_ckpt, tmp_path, capsys, args, match):
    argv = [
        "search",
        "--checkpoint",
        str(micro_ckpt),
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
        "--device",
        "cpu",
    ] + args
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err and err.count("\n") == 1


def test_two_gloo_ranks_match_single_process(micro_ckpt, reference, tmp_path):
    ref_out, ref = reference
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "quasar_vit",
        "search",
        "--checkpoint",
        str(micro_ckpt),
        "--out",
        str(tmp_path),
        "--platform",
        "zcu102",
        "--baselines",
        "uniform4",
        "--device",
        "cpu",
        "--no-progress",
        "--no-plot",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = json.loads((tmp_path / "pareto.json").read_text())
    r = json.loads((ref_out / "pareto.json").read_text())
    assert d["measured"] == r["measured"]
    assert [f["subnet"] for f in d["front"]] == [f["subnet"] for f in r["front"]]
    assert [f["test_top1"] for f in d["front"]] == [f["test_top1"] for f in r["front"]]
    assert d["baselines"]["uniform4"]["measured"] == r["baselines"]["uniform4"]["measured"]


def test_search_keeps_files_it_did_not_write(micro_ckpt, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "subnet_mine.json").write_text("{}")
    search(micro_ckpt, out, platform="zcu102", device="cpu", progress=False, plot=False, test=False, log=lambda s: None)
    assert (out / "subnet_mine.json").read_text() == "{}"
    assert len(list(out.glob("subnet_*fps.json"))) >= 1


def test_racing_full_score_is_the_one_pass_count(micro_ckpt):
    """A promoted candidate's full score = screen count + count over the other images: the same figure
    as one pass over the split, so racing changes which candidates are scored, never their score."""
    from quasar_vit.data import BatchTransform
    from quasar_vit.search.runner import search_splits, validation_evaluator
    from quasar_vit.training.checkpoint import load_supernet
    from quasar_vit.training.evaluate import evaluate_subnet

    model, cfg, _ = load_supernet(micro_ckpt)
    splits, n = search_splits(cfg, 300)
    tf = BatchTransform.from_config(cfg.data, train=False)
    ev = validation_evaluator(model, splits.val, n, 120, tf, "cpu", 50)
    space = cfg.model.space()
    assert ev.can_screen and ev.screen_images == 120 and ev.full_images == n
    for s in (space.largest(), space.smallest()):
        one_pass = evaluate_subnet(model, s, splits.val, tf, "cpu", 50)
        assert ev.accuracy_fn(s) == one_pass  # without a screen first
        (screen_top1,) = ev.screen([s])
        assert ev([s]) == [one_pass]  # with the screen's count reused
        # the screen's bits say which of its 120 images were right: as many as its top-1 counts
        bits = ev.screen_bits[s]
        assert len(bits) == 15 and sum(bin(b).count("1") for b in bits) == round(screen_top1 * 120 / 100)
        # the count is read back from the evaluator's screen cache (shared by every rank)
        ev.cache.clear()
        ev.screen_cache[s] = screen_top1 - 100.0 / 120
        assert ev([s])[0] == pytest.approx(one_pass - 100.0 / n)
    assert not validation_evaluator(model, splits.val, n, 0, tf, "cpu", 50).can_screen  # 0: racing off
    assert not validation_evaluator(model, splits.val, n, 300, tf, "cpu", 50).can_screen  # screen = split: off


def _raced_search(ckpt, out, *options: str):
    """A 3-generation search racing on a 60-image screen of 300, with more search options; its
    result and ``pareto.json``."""
    res = search(
        ckpt,
        out,
        platform="zcu102",
        device="cpu",
        progress=False,
        plot=False,
        overrides=["search.val_images=300", "search.screen_size=60", "search.generations=3", *options],
        log=lambda s: None,
        test=False,
    )
    return res, json.loads((out / "pareto.json").read_text())


def test_a_search_selecting_on_the_screen_scores_its_winners_in_full(micro_ckpt, tmp_path):
    # one parent per target: at most one candidate per target is promoted to a full score in a
    # generation, so a generation of more children than targets screens some out (not luck)
    res, doc = _raced_search(micro_ckpt, tmp_path / "s", "search.select_on=screen", "search.parents=1")
    assert doc["screened_out"] and len(doc["measured"]) + len(doc["screened_out"]) == res.main.evolution.evaluations
    met = [t for t in doc["targets"] if t["status"] == "met"]
    assert met and all(t["val_top1"] is not None for t in met)


def test_a_raced_search_records_what_it_screened_out(micro_ckpt, tmp_path):
    # racing proper (select_on: full) with no margin and one parent per target
    res, doc = _raced_search(micro_ckpt, tmp_path / "s", "search.race_z=0", "search.select_on=full", "search.parents=1")
    out = doc["screened_out"]
    assert out
    assert len(doc["measured"]) + len(out) == res.main.evolution.evaluations
    assert doc["stats"]["screened_out"] == len(out) and all(v is not None for v, _ in out)
    assert all(t["val_top1"] is not None for t in doc["targets"] if t["status"] == "met")
