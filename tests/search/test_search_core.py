"""Torch-free tests of the search core: encoding, Pareto front, targets, evolution (stub models)."""

from __future__ import annotations

import json
import zlib
import math
import random
from dataclasses import replace

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from quasar_vit.config import SearchConfig
from quasar_vit.errors import ConfigError, HardwareError
from quasar_vit.search.encoding import make_encoding, parse_mode
from quasar_vit.search.evolution import Evaluator, Evolution, SearchStateError, pack_hits, run_evolution
from quasar_vit.search.pareto import (
    best_meeting,
    dominates,
    front_dominated,
    hypervolume,
    normalized_hypervolume,
    pareto_front,
)
from quasar_vit.search.targets import Target, default_targets, parse_targets
from quasar_vit.space import SearchSpace, ViTGeometry

SPACE = SearchSpace(
    embed_dims=(48, 64, 96),
    depths=(4, 5, 6),
    num_heads=(2, 3, 4),
    mlp_ratios=(2.0, 3.0, 4.0),
    geometry=ViTGeometry(img_size=28, patch_size=4, in_chans=1, num_classes=10, head_dim=16),
)


class Rep:
    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.latency_ms = 1e3 / fps
        self.resources = {"lut": 1}
        self.design = {"rows": 1}


def stub_cost(s) -> float:
    return s.macs() * (1.0 + 0.8 * s.share_8bit()) / 1e6


def stub_latency(s):
    if s.embed_dim == 96 and s.depth == 6 and min(s.mlp_ratios) == 4.0:
        raise HardwareError("does not fit")
    return Rep(1e4 / stub_cost(s))


def stub_accuracy(s) -> float:
    # bigger and more 8-bit is better, with a deterministic wiggle
    h = (zlib.crc32(json.dumps(s.to_dict(), sort_keys=True).encode()) % 1000) / 1000.0  # not hash(): seeded per process
    return round(60 + 8 * math.log(stub_cost(s)) + 6 * s.share_8bit() + h, 4)


FPS_RANGE = (stub_latency(SPACE.make(96, 6, [4] * 6, [3.0] * 6, [1.0] * 6)).fps, stub_latency(SPACE.smallest()).fps)
TARGETS = default_targets(*FPS_RANGE)
SMALL = SearchConfig(
    population=8, generations=4, parents=3, mutations=4, crossovers=4, mutation_prob=0.3, max_retries=30, seed=3
)


# ---- encoding ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["flexible", "uniform8", "uniform4", "fixed", "fixed:0.25"])
def test_operators_stay_in_space(mode):
    enc = make_encoding(SPACE, mode)
    rng = random.Random(0)
    pop = [enc.sample(rng) for _ in range(20)]
    for _ in range(200):
        a, b = rng.sample(pop, 2)
        for c in (enc.mutate(a, rng, 0.5), enc.crossover(a, b, rng)):
            assert enc.contains(c) and SPACE.contains(c)
            assert len(c.num_heads) == len(c.mlp_ratios) == len(c.w8_shares) == c.depth
            if mode != "flexible":
                assert len(set(c.w8_shares)) == 1
            if mode == "uniform8":
                assert set(c.w8_shares) == {1.0}
            if mode == "uniform4":
                assert set(c.w8_shares) == {0.0}
            if mode == "fixed:0.25":
                assert set(c.w8_shares) == {0.25}


def test_flexible_mixes_shares_and_mutation_zero_is_identity():
    enc = make_encoding(SPACE, "flexible")
    rng = random.Random(1)
    subs = [enc.sample(rng) for _ in range(30)]
    assert any(len(set(s.w8_shares)) > 1 for s in subs)
    assert all(enc.mutate(s, rng, 0.0) == s for s in subs)
    assert enc.crossover(subs[0], subs[0], rng) == subs[0]


def test_step_share_mutation_moves_one_share_and_keeps_the_rest():
    enc = make_encoding(SPACE, "flexible", share_mutation="step")
    shares = (1.0, 0.0, 0.5, 0.75, 0.25)
    parent = SPACE.make(96, 5, [4] * 5, [4.0] * 5, list(shares))
    rng = random.Random(0)
    seen = [set() for _ in shares]
    for _ in range(300):
        child = enc.mutate(parent, rng, 1.0)
        for i in range(min(5, child.depth)):
            seen[i].add(child.w8_shares[i])
    # every mutated share is a neighbour of the parent's; at the ends the only step is inwards
    assert seen == [{0.75}, {0.25}, {0.25, 0.75}, {0.5, 1.0}, {0.0, 0.5}]
    uniform = make_encoding(SPACE, "flexible")
    assert {uniform.mutate(parent, rng, 1.0).w8_shares[0] for _ in range(300)} == set(SPACE.w8_shares)
    # the fixed ratio's single tied gene is redrawn as before
    fixed = make_encoding(SPACE, "fixed", share_mutation="step")
    assert fixed.share_mutation == "uniform"
    with pytest.raises(ConfigError, match="share_mutation"):
        make_encoding(SPACE, "flexible", share_mutation="creep")


PER_LINEAR = replace(SPACE, share_granularity="linear")


def test_per_linear_operators_give_each_linear_its_own_share():
    enc = make_encoding(PER_LINEAR, "flexible")
    assert enc.share_genes == 4 and make_encoding(SPACE, "flexible").share_genes == 1
    rng = random.Random(0)
    pop = [enc.sample(rng) for _ in range(20)]
    assert all(s.share_granularity == "linear" for s in pop)
    children = []
    for _ in range(200):
        a, b = rng.sample(pop, 2)
        children += [(a, b, enc.mutate(a, rng, 0.5)), (a, b, enc.crossover(a, b, rng))]
    for _, _, c in children:
        assert enc.contains(c) and len(c.linear_shares()) == 4 * c.depth
    assert all(enc.mutate(s, rng, 0.0) == s and enc.crossover(s, s, rng) == s for s in pop)
    # crossover takes each linear's share from either parent, not a whole block's four from one
    mixed_blocks = [
        c
        for a, b, c in children[1::2]
        if any(
            c.block_shares(i) not in (a.block_shares(i), b.block_shares(i))
            for i in range(min(a.depth, b.depth, c.depth))
        )
    ]
    assert mixed_blocks


@pytest.mark.parametrize("mode", ["uniform8", "fixed", "fixed:0.25"])
def test_baselines_are_the_same_search_at_either_share_granularity(mode):
    """A tied share has one gene whatever ``model.share_granularity`` says: same draws, same children."""
    runs = []
    for space in (SPACE, PER_LINEAR):
        enc, rng = make_encoding(space, mode), random.Random(2)
        pop = [enc.sample(rng) for _ in range(10)]
        runs.append(pop + [enc.mutate(p, rng, 0.5) for p in pop] + [enc.crossover(pop[0], p, rng) for p in pop])
    assert runs[0] == runs[1]


def test_per_linear_evolution_runs_and_reproduces():
    enc = make_encoding(PER_LINEAR, "flexible")
    a, b = (run_evolution(enc, TARGETS, stub_accuracy, stub_latency, SMALL) for _ in range(2))
    assert [c.to_dict() for c in a.records] == [c.to_dict() for c in b.records]
    assert sum(c.subnet.share_granularity == "linear" for c in a.records) > 0.9 * len(a.records)


def test_a_search_may_change_the_share_granularity_but_no_other_model_setting():
    from quasar_vit.config import load_config
    from quasar_vit.search.runner import _apply_search_overrides

    cfg = load_config("fmnist-tiny")
    linear = _apply_search_overrides(cfg, ["model.share_granularity=linear", "population=12"])
    assert linear.model.space().shares_per_block == 4 and linear.search.population == 12
    with pytest.raises(ConfigError, match=r"only search\.\* settings and model\.share_granularity"):
        _apply_search_overrides(cfg, ["model.embed_dims=[32]"])


def test_a_search_notes_settings_left_at_an_earlier_default():
    from quasar_vit.search.runner import settings_notes

    assert settings_notes(SearchConfig(), [], ["flexible"]) == []
    old = SearchConfig(select_on="full")  # a checkpoint trained before select_on: screen
    (note,) = settings_notes(old, [], ["flexible"])
    assert "search.select_on=full" in note and "--set search.select_on=screen" in note
    assert settings_notes(old, ["search.select_on=full"], ["flexible"]) == []  # asked for
    assert settings_notes(old, ["select_on=full"], ["flexible"]) == []
    staged = settings_notes(SearchConfig(tied_generations=20, generations=20), [], ["flexible", "fixed"])
    assert len(staged) == 1 and "one 8-bit share for all layers throughout" in staged[0]
    assert settings_notes(SearchConfig(tied_generations=20, generations=20), [], ["fixed"]) == []


def test_tied_share_sampling_reaches_the_ends_of_the_share_range():
    rng = random.Random(0)
    deep = [s for s in (make_encoding(SPACE, "flexible").sample(rng) for _ in range(400)) if s.depth >= 3]
    tied_enc = make_encoding(SPACE, "flexible", tied_share_prob=0.5)
    mixed = [s for s in (tied_enc.sample(rng) for _ in range(400)) if s.depth >= 3]
    all4 = lambda subs: sum(set(s.w8_shares) == {0.0} for s in subs)  # noqa: E731
    tied = sum(len(set(s.w8_shares)) == 1 for s in mixed)
    assert 0.35 * len(mixed) < tied < 0.7 * len(mixed)  # about half the samples tied
    assert all4(mixed) > 3 * max(1, all4(deep))  # the all-4-bit end is reached
    assert any(len(set(s.w8_shares)) > 1 for s in mixed)
    assert all(
        len(set(s.w8_shares)) == 1 for s in (make_encoding(SPACE, "flexible", 1.0).sample(rng) for _ in range(50))
    )
    with pytest.raises(ConfigError, match="tied_share_prob"):
        make_encoding(SPACE, "flexible", 1.5)


def test_parse_mode_errors():
    assert parse_mode("fixed:0.5") == ("fixed", 0.5)
    assert parse_mode("uniform-8") == ("uniform8", None)
    for bad in ("nope", "uniform8:0.5", "fixed:x", "fixed:2"):
        with pytest.raises(ConfigError):
            parse_mode(bad)
    with pytest.raises(ConfigError, match="not trained"):
        make_encoding(SPACE, "fixed:0.3")


# ---- Pareto ---------------------------------------------------------------------------------------
pts = st.lists(st.tuples(st.integers(0, 20).map(float), st.integers(0, 20).map(float)), max_size=25)


@hsettings(max_examples=60, deadline=None)
@given(pts)
def test_front_is_the_non_dominated_set(points):
    front = pareto_front(points)
    for p in points:
        if any(dominates(q, p) for q in points):
            assert p not in front
    assert len(set(front)) == len(front)
    for p in set(points):
        if not any(dominates(q, p) for q in points):
            assert p in front


@hsettings(max_examples=40, deadline=None)
@given(pts)
def test_hypervolume_matches_grid_count(points):
    ref = (2.0, 3.0)
    hv = hypervolume(points, ref)
    # count unit cells [a, a+1] x [f, f+1] dominated by some point
    cells = sum(1 for a in range(2, 20) for f in range(3, 20) if any(p[0] >= a + 1 and p[1] >= f + 1 for p in points))
    assert hv == pytest.approx(cells)


def test_front_dominance_is_not_a_hypervolume_comparison():
    a = [(80.0, 100.0), (70.0, 300.0)]
    assert front_dominated(a, [(80.0, 100.0), (71.0, 300.0)])  # one point beaten, one matched
    assert not front_dominated(a, a)  # a front does not dominate itself
    crossing = [(79.0, 100.0), (75.0, 400.0)]  # higher hypervolume, but a's top
    assert hypervolume(crossing, (10.0, 50.0)) > hypervolume(a, (10.0, 50.0))  # point is not beaten
    assert not front_dominated(a, crossing) and not front_dominated(crossing, a)
    assert front_dominated([], a) and not front_dominated(a, [])


@hsettings(max_examples=40, deadline=None)
@given(pts, pts)
def test_front_dominance_matches_hypervolume_inclusion(a, b):
    """A front dominated by another never has the larger hypervolume, for any reference point."""
    fa, fb = pareto_front(a), pareto_front(b)
    if front_dominated(fa, fb):
        assert hypervolume(fa, (0.0, 0.0)) <= hypervolume(fb, (0.0, 0.0))
        assert not front_dominated(fb, fa)


def test_hypervolume_reference_and_normalisation():
    assert hypervolume([(80.0, 200.0), (70.0, 300.0)], (10.0, 100.0)) == pytest.approx(70 * 100 + 60 * 100)
    assert hypervolume([(5.0, 500.0)], (10.0, 100.0)) == 0.0
    assert normalized_hypervolume([(100.0, 1e9)], (10.0, 100.0), 400.0) == pytest.approx(1.0)
    assert best_meeting([(80.0, 200.0), (70.0, 300.0)], 250.0, key=lambda p: p) == (70.0, 300.0)
    assert best_meeting([(80.0, 200.0)], 250.0, key=lambda p: p) is None


# ---- targets --------------------------------------------------------------------------------------
def test_parse_targets():
    ts = parse_targets("250, 100,150", "10,6.6")
    assert [round(t.fps, 3) for t in ts] == [100.0, 150.0, round(1000 / 6.6, 3), 250.0]  # 10 ms == 100 FPS deduped
    assert ts[0].name == "100fps" and any(t.name == "6.6ms" for t in ts)
    for bad in ("fast", "100,-5", "", "0"):
        with pytest.raises(ConfigError):
            parse_targets(bad)
    with pytest.raises(ConfigError, match="--latency-ms"):
        parse_targets(None, "10,abc")


def test_default_targets_spread():
    ts = default_targets(100.0, 500.0)
    assert [t.fps for t in ts] == [200, 300, 400]


# ---- evolution ------------------------------------------------------------------------------------
def _run(mode="flexible", settings=SMALL, targets=TARGETS, **kw):
    enc = make_encoding(SPACE, mode)
    return run_evolution(enc, targets, stub_accuracy, stub_latency, settings, **kw)


def test_evolution_is_reproducible_and_never_duplicates():
    a, b = _run(), _run()
    assert [c.to_dict() for c in a.records] == [c.to_dict() for c in b.records]
    assert len({c.subnet for c in a.records}) == len(a.records)
    assert 0 < a.evaluations <= SMALL.budget
    assert a.complete and a.generations_done == SMALL.generations
    c = _run(settings=replace(SMALL, seed=4))
    assert [x.subnet for x in c.records] != [x.subnet for x in a.records]
    origins = {c.origin for c in a.records}
    assert origins <= {"init", "mutation", "crossover"} and "mutation" in origins


def test_infeasible_candidates_are_rejected_before_accuracy():
    seen = []

    def acc(s):
        rep = stub_latency(s)  # would raise for a candidate that does not fit
        assert rep.fps >= TARGETS[0].fps
        seen.append(s)
        return stub_accuracy(s)

    res = run_evolution(make_encoding(SPACE), TARGETS, acc, stub_latency, SMALL)
    assert len(seen) == res.evaluations
    assert res.stats.rejected_too_slow > 0
    for name, c in res.best.items():
        t = next(t for t in TARGETS if t.name == name)
        assert c is None or c.fps >= t.fps
    # the winner per target is the best measured subnet meeting it, and on the front
    for t in TARGETS:
        w = res.best[t.name]
        if w is not None:
            assert w.val_top1 == max(c.val_top1 for c in res.records if c.fps >= t.fps)
            assert w in res.front


def test_parent_selection_is_union_of_per_target_elites():
    evo = Evolution(make_encoding(SPACE), TARGETS, stub_accuracy, stub_latency, SMALL)
    evo.run(max_generations=1)
    parents = evo.parents()
    for t in evo.targets:
        meeting = sorted((c for c in evo.records if c.fps >= t.fps), key=lambda c: -c.val_top1)
        for c in meeting[: SMALL.parents]:
            assert c in parents
    assert len(parents) <= SMALL.parents * len(evo.targets)


def test_resume_gives_the_uninterrupted_result(tmp_path):
    full = _run(state_path=tmp_path / "a" / "s.json", history_path=tmp_path / "a" / "h.jsonl")

    class Stop(Exception):
        pass

    def interrupt(gen, evo):
        if gen == 1:
            raise Stop

    state, hist = tmp_path / "b" / "s.json", tmp_path / "b" / "h.jsonl"
    with pytest.raises(Stop):
        _run(state_path=state, history_path=hist, callback=interrupt)
    saved = json.loads(state.read_text())
    assert saved["generation"] == 2 and not saved["complete"]
    calls = []

    def acc(s):
        calls.append(s)
        return stub_accuracy(s)

    resumed = run_evolution(
        make_encoding(SPACE), TARGETS, acc, stub_latency, SMALL, state_path=state, history_path=hist
    )
    assert [c.to_dict() for c in resumed.records] == [c.to_dict() for c in full.records]
    assert len(calls) == len([c for c in full.records if c.generation >= 2])  # nothing measured twice
    lines = [json.loads(l) for l in hist.read_text().splitlines()]
    assert [l["generation"] for l in lines if l["event"] == "generation"] == list(range(SMALL.generations))
    ref = [json.loads(l) for l in (tmp_path / "a" / "h.jsonl").read_text().splitlines()]
    strip = lambda recs: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in recs]  # noqa: E731
    assert strip(lines) == strip(ref)
    # a state made with other settings is refused with a clear message
    with pytest.raises(SearchStateError, match="different settings"):
        _run(settings=replace(SMALL, seed=9), state_path=state)


def test_max_generations_then_continue(tmp_path):
    full = _run()
    part = _run(state_path=tmp_path / "s.json", max_generations=2)
    assert not part.complete and part.generations_done == 2
    rest = _run(state_path=tmp_path / "s.json")
    assert [c.subnet for c in rest.records] == [c.subnet for c in full.records]


def test_baselines_share_the_code_path_and_budget():
    res = {m: _run(mode=m) for m in ("random", "uniform8", "uniform4", "fixed")}
    assert {c.origin for c in res["random"].records} <= {"init", "random"}
    assert all(set(c.subnet.w8_shares) == {1.0} for c in res["uniform8"].records)
    assert all(set(c.subnet.w8_shares) == {0.0} for c in res["uniform4"].records)
    assert all(len(set(c.subnet.w8_shares)) == 1 for c in res["fixed"].records)
    for r in res.values():
        assert r.budget == SMALL.budget and r.evaluations <= SMALL.budget


def test_coarse_to_fine_starts_as_the_fixed_ratio_search(tmp_path):
    tied = replace(SMALL, tied_generations=2)
    staged = _run(settings=tied)
    fixed = _run(mode="fixed", settings=SMALL)
    # generations 0-1 are exactly the fixed-ratio search (same seed, same operators) ...
    early = [c for c in staged.records if c.generation < 2]
    assert [c.subnet for c in early] == [c.subnet for c in fixed.records if c.generation < 2]
    assert all(len(set(c.subnet.w8_shares)) == 1 for c in early)
    # ... and the later ones search a share per layer, from those parents
    late = [c for c in staged.records if c.generation >= 2]
    assert late and any(len(set(c.subnet.w8_shares)) > 1 for c in late)
    assert staged.budget == SMALL.budget and len({c.subnet for c in staged.records}) == staged.evaluations
    evo = Evolution(make_encoding(SPACE), TARGETS, stub_accuracy, stub_latency, tied)
    assert evo.encoding_at(1).tie_shares and not evo.encoding_at(2).tie_shares  # T=2: generations 0 and 1
    assert [c.subnet for c in late if c.generation == 2] != [c.subnet for c in fixed.records if c.generation == 2]
    assert _run(settings=tied).records == staged.records
    # it changes the flexible run's identity (no silent resume across it), not a baseline's
    _run(settings=tied, state_path=tmp_path / "f.json")
    with pytest.raises(SearchStateError, match="tied_generations"):
        _run(settings=SMALL, state_path=tmp_path / "f.json")
    _run(mode="fixed", settings=SMALL, state_path=tmp_path / "x.json")
    again = _run(mode="fixed", settings=tied, state_path=tmp_path / "x.json")
    assert [c.subnet for c in again.records] == [c.subnet for c in fixed.records]
    # a non-neutral share mutation or tied-sample rate is part of the run's identity too
    step = make_encoding(SPACE, "flexible", share_mutation="step")
    run_evolution(step, TARGETS, stub_accuracy, stub_latency, SMALL, state_path=tmp_path / "s.json")
    with pytest.raises(SearchStateError, match="share_mutation"):
        _run(settings=SMALL, state_path=tmp_path / "s.json")
    tied_samples = make_encoding(SPACE, "flexible", tied_share_prob=0.5)
    run_evolution(tied_samples, TARGETS, stub_accuracy, stub_latency, SMALL, state_path=tmp_path / "t.json")
    with pytest.raises(SearchStateError, match="tied_share_prob"):
        _run(settings=SMALL, state_path=tmp_path / "t.json")
    # a state saved before these options existed resumes when they are left neutral
    saved = json.loads((tmp_path / "x.json").read_text())
    for key in ("tied_share_prob", "tied_generations", "share_mutation", "fill_slack"):
        del saved["fingerprint"][key]
    (tmp_path / "x.json").write_text(json.dumps(saved))
    assert _run(mode="fixed", settings=SMALL, state_path=tmp_path / "x.json").records == fixed.records
    # random search draws fresh samples of the whole space: no coarse stage
    assert [c.subnet for c in _run(mode="random", settings=tied).records] == [
        c.subnet for c in _run(mode="random", settings=SMALL).records
    ]
    with pytest.raises(Exception, match="tied_generations"):
        replace(SMALL, tied_generations=-1).validate()


@pytest.mark.parametrize("granularity", ["block", "linear"])
def test_slack_filling_spends_each_childs_latency_slack_on_8bit_rows(tmp_path, granularity):
    space = replace(SPACE, share_granularity=granularity)
    enc = make_encoding(space, "flexible")
    fill = replace(SMALL, fill_slack=True)
    res = run_evolution(enc, TARGETS, stub_accuracy, stub_latency, fill, state_path=tmp_path / "s.json")
    assert res.evaluations > 0 and len({c.subnet for c in res.records}) == res.evaluations
    order = sorted(space.w8_shares)
    for c in res.records:
        floor = max(t.fps for t in TARGETS if t.fps <= c.fps)
        shares = enc.share_vector(c.subnet)
        # no share gene can go one step up without losing the tightest target the child meets
        for i, s in enumerate(shares):
            if s < order[-1]:
                up = list(shares)
                up[i] = order[order.index(s) + 1]
                assert stub_latency(enc.with_share_vector(c.subnet, up)).fps < floor, (c.index, i)
    plain = run_evolution(enc, TARGETS, stub_accuracy, stub_latency, SMALL)
    share = lambda r: sum(c.subnet.share_8bit() for c in r.records) / r.evaluations  # noqa: E731
    assert share(res) > share(plain)
    again = run_evolution(enc, TARGETS, stub_accuracy, stub_latency, fill)
    assert [c.to_dict() for c in again.records] == [c.to_dict() for c in res.records]
    # a run's identity: no resume across it
    with pytest.raises(SearchStateError, match="fill_slack"):
        run_evolution(enc, TARGETS, stub_accuracy, stub_latency, SMALL, state_path=tmp_path / "s.json")
    # the baselines and random search are untouched
    for mode in ("uniform8", "fixed", "random"):
        assert _run(mode=mode, settings=fill).records == _run(mode=mode, settings=SMALL).records


def test_search_val_size_is_read_as_val_images():
    """search.val_size (a name that read like data.val_size) was renamed search.val_images: configs,
    checkpoints and --set overrides with the old name still load; both names at once are refused."""
    from quasar_vit.config import config_from_dict, load_config

    assert load_config("fmnist-tiny", ["search.val_size=123"]).search.val_images == 123
    data = load_config("fmnist-tiny").to_dict()
    data["search"]["val_size"] = data["search"].pop("val_images") - 1
    assert config_from_dict(data).search.val_images == 4999
    data["search"]["val_images"] = 10
    with pytest.raises(ConfigError, match="old name of search.val_images"):
        config_from_dict(data)


def test_a_progress_observer_follows_the_run():
    seen = []

    class Obs:
        def start(self, evo):
            seen.append(("start", evo.generation))

        def generation(self, evo, gen):
            seen.append(("gen", gen))

        def measured(self, evo, new):
            seen.append(("new", len(new) > 0))

        def done(self):
            seen.append(("done",))

    res = _run(progress=Obs())
    assert seen[0] == ("start", 0) and seen[-1] == ("done",)
    assert [g for k, *g in seen if k == "gen"] == [[g] for g in range(SMALL.generations)]
    assert res.records == _run().records  # observing changes nothing


def test_unreachable_targets_are_reported_not_raised():
    big = Target.from_fps(FPS_RANGE[1] * 10)
    res = _run(targets=[TARGETS[0], big])
    assert big.name in res.unreachable and res.unreachable[big.name] == pytest.approx(FPS_RANGE[1])
    assert res.best[big.name] is None and res.best[TARGETS[0].name] is not None
    # uniform-8 cannot reach what uniform-4 can
    fast = Target.from_fps(stub_latency(make_encoding(SPACE, "uniform8").space.smallest()).fps * 1.05)
    r8 = _run(mode="uniform8", targets=[fast])
    assert r8.evaluations == 0 and fast.name in r8.unreachable


def test_evaluator_caches_and_splits_work_over_ranks():
    calls = []
    subs = [SPACE.sample(random.Random(i)) for i in range(5)]

    def acc(s):
        calls.append(s)
        return stub_accuracy(s)

    # rank 0 of 2: measures todo[0::2]; the gather hands back what rank 1 measured (todo[1::2])
    rank1 = [(i, stub_accuracy(subs[i])) for i in range(1, 5, 2)]
    ev = Evaluator(acc, rank=0, world_size=2, gather=lambda mine: [mine, rank1])
    out = ev(subs + subs[:2])
    assert out == [stub_accuracy(s) for s in subs + subs[:2]]
    assert calls == [subs[0], subs[2], subs[4]]
    assert ev(subs) == out[:5] and len(calls) == 3  # cached: nothing measured twice
    with pytest.raises(ValueError):
        Evaluator(acc, rank=0, world_size=2)


# ---- racing ------------------------------------------------------------------------------------------
# racing is on when the evaluator can screen (``_racing_evaluator``); search.screen_size only sizes
# the runner's screen.  select_on "full": these tests are about promotion by race_z/race_error;
def test_the_plain_search_log_is_one_line_per_generation(capsys):
    """Outside a terminal the bar becomes one readable line per generation: no carriage returns,
    the candidates measured and screened out, and the best validation top-1 per target."""
    from quasar_vit.search.progress import ProgressBar

    enc = make_encoding(SPACE, "flexible")
    evo = Evolution(enc, TARGETS, _racing_evaluator(0.5), stub_latency, RACE, progress=ProgressBar(plain=True))
    res = evo.run()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert len(lines) == RACE.generations
    screened = [sum(1 for c in res.records if c.generation == g and not c.scored) for g in range(RACE.generations)]
    for g, line in enumerate(lines):
        new = sum(1 for c in res.records if c.generation == g)
        assert line.startswith(
            f"search flexible gen {g + 1}/{RACE.generations}  {new} new ({screened[g]} screened out)"
        )
    assert sum(screened) > 0  # the racing evaluator screens some out, so the count is exercised
    best = res.best[TARGETS[0].name]
    assert f"{TARGETS[0].name}={best.val_top1:.1f}%" in lines[-1]


def test_plain_progress_prints_complete_lines(capsys):
    from quasar_vit.utils.progress import PlainProgress, progress

    bar = PlainProgress(10, "verify", "img", every_s=0.0)
    for _ in range(3):
        bar.update(2)
    bar.set_postfix_str("ok")
    bar.close()
    bar.close()  # closing twice prints once
    lines = capsys.readouterr().err.splitlines()
    assert [ln.split("  ")[0] for ln in lines] == [
        "verify 2/10 img (20 %)",
        "verify 4/10 img (40 %)",
        "verify 6/10 img (60 %)",
        "verify 6/10 img (60 %)",
    ]
    assert lines[-1].endswith("ok")
    assert isinstance(progress(5, "x"), PlainProgress)  # pytest's captured stderr is not a terminal


# SCREEN_SELECT below is the default course
RACE = replace(SMALL, population=16, generations=6, mutations=8, crossovers=8, select_on="full")


def _racing_evaluator(noise: float, seed: int = 0) -> Evaluator:
    """A screen that is the full score plus a fixed per-subnet error of up to ``noise`` points."""

    def screen(s):
        r = random.Random(json.dumps(s.to_dict(), sort_keys=True) + str(seed))
        return stub_accuracy(s) + r.uniform(-noise, noise)

    return Evaluator(stub_accuracy, screen_fn=screen, screen_images=2000, full_images=10000)


def test_racing_with_an_exact_screen_picks_the_same_winners_and_parents_as_full_scoring():
    """Screened-out candidates are below every target's k-th best, so they can be neither a winner nor a
    parent: the whole search runs the same course, with fewer full evaluations."""
    enc = make_encoding(SPACE, "flexible")
    full = Evolution(enc, TARGETS, stub_accuracy, stub_latency, RACE)
    raced = Evolution(enc, TARGETS, _racing_evaluator(0.0), stub_latency, RACE)
    a, b = full.run(), raced.run()
    assert [c.subnet for c in a.records] == [c.subnet for c in b.records]  # same children every generation
    assert {k: v.subnet for k, v in a.best.items() if v} == {k: v.subnet for k, v in b.best.items() if v}
    assert {c.subnet for c in full.parents()} == {c.subnet for c in raced.parents()}
    assert 0 < b.stats.screened_out < len(b.records)  # it saved work, and not all
    assert raced.evaluator.calls == len(b.records) - b.stats.screened_out


def test_racing_scores_every_winner_parent_and_front_member_on_the_full_split():
    evo = Evolution(make_encoding(SPACE, "flexible"), TARGETS, _racing_evaluator(3.0), stub_latency, RACE)
    res = evo.run()
    picked = [c for c in res.best.values() if c] + evo.parents() + res.front
    assert picked and all(c.val_top1 == stub_accuracy(c.subnet) for c in picked)
    out = [c for c in res.records if not c.scored]
    assert out and all(c.screen_top1 is not None for c in out)
    with pytest.raises(ValueError, match="screened out"):
        out[0].objectives


def test_a_wider_race_margin_scores_more_candidates_in_full():
    calls = []
    for z in (0.0, 4.0):
        evo = Evolution(
            make_encoding(SPACE, "flexible"),
            TARGETS,
            _racing_evaluator(3.0),
            stub_latency,
            replace(RACE, race_z=z),
        )
        evo.run()
        calls.append(evo.evaluator.calls)
    assert calls[0] < calls[1]


SCREEN_N = 2000
_U = random.Random(7).random  # one draw per screen image, shared by every subnet: a paired screen
_UNIFORMS = [_U() for _ in range(SCREEN_N)]


def _paired_evaluator() -> Evaluator:
    """A screen that reports which images a subnet got right: image i is right when its shared
    uniform draw lies below the subnet's full top-1, as if the images had a common difficulty."""

    def screen(s):
        p = stub_accuracy(s) / 100.0
        hits = [u < p for u in _UNIFORMS]
        return 100.0 * sum(hits) / SCREEN_N, pack_hits(hits)

    return Evaluator(stub_accuracy, screen_fn=screen, screen_images=SCREEN_N, full_images=10000)


def test_pack_hits_is_numpy_packbits():
    import numpy as np

    hits = [random.Random(1).random() < 0.5 for _ in range(13)] + [True, False, True]
    assert pack_hits(hits) == np.packbits(np.array(hits)).tobytes()


def test_the_paired_error_counts_only_the_images_where_two_subnets_disagree():
    a, b = SPACE.smallest(), SPACE.largest()
    ev = Evaluator(stub_accuracy, screen_fn=lambda s: 0.0, screen_images=1000, full_images=5000)
    assert ev.paired_error(a, b) is None  # no bits: the caller falls back to the binomial error
    # both right on 800 of 1000 images, disagreeing on 30 (15 each way)
    ev.screen_bits[a] = pack_hits([True] * 800 + [False] * 200)
    ev.screen_bits[b] = pack_hits([True] * 785 + [False] * 15 + [True] * 15 + [False] * 185)
    assert ev.paired_error(a, b) == pytest.approx(100 * math.sqrt(30 / 1000**2 * 0.8))
    # under half the binomial error of one score at that top-1
    assert ev.paired_error(a, b) < 0.5 * ev.screen_error(80.0)
    ev.screen_bits[b] = ev.screen_bits[a]
    assert ev.paired_error(a, b) == pytest.approx(100 * math.sqrt(1 / 1000**2 * 0.8))  # one image at least


def test_paired_racing_screens_out_more_than_binomial_and_scores_every_pick_in_full():
    enc = make_encoding(SPACE, "flexible")
    runs = {}
    for err in ("binomial", "paired"):
        evo = Evolution(enc, TARGETS, _paired_evaluator(), stub_latency, replace(RACE, race_error=err))
        runs[err] = (evo, evo.run())
    assert runs["paired"][1].stats.screened_out > runs["binomial"][1].stats.screened_out
    evo, res = runs["paired"]
    picked = [c for c in res.best.values() if c] + evo.parents() + res.front
    assert picked and all(c.val_top1 == stub_accuracy(c.subnet) for c in picked)
    assert all(c.screen_bits for c in res.records)  # every record keeps its bits (for resuming)


def test_a_paired_raced_search_resumes_exactly_with_its_screen_bits(tmp_path):
    enc = make_encoding(SPACE, "flexible")
    ref = Evolution(enc, TARGETS, _paired_evaluator(), stub_latency, RACE).run()
    kw = dict(state_path=tmp_path / "s.json", history_path=tmp_path / "h.jsonl")
    Evolution(enc, TARGETS, _paired_evaluator(), stub_latency, RACE, **kw).run(max_generations=3)
    again = Evolution(enc, TARGETS, _paired_evaluator(), stub_latency, RACE, **kw)
    res = again.run()
    assert [c.to_dict() for c in res.records] == [c.to_dict() for c in ref.records]
    assert again.evaluator.screen_calls < len(res.records)
    with pytest.raises(SearchStateError, match="race_error"):
        binomial = replace(RACE, race_error="binomial")
        Evolution(enc, TARGETS, _paired_evaluator(), stub_latency, binomial, **kw).run()


SCREEN_SELECT = replace(RACE, select_on="screen")


def test_selecting_on_an_exact_screen_runs_the_full_scoring_course_with_fewer_full_scores():
    """With a screen equal to the full score, parents by screen score are the parents by full score,
    and each target's best enters its screen elite when it is drawn: the same children, the same
    winners, and only the screen elites scored in full."""
    enc = make_encoding(SPACE, "flexible")
    full = Evolution(enc, TARGETS, stub_accuracy, stub_latency, RACE)
    by_screen = Evolution(enc, TARGETS, _racing_evaluator(0.0), stub_latency, SCREEN_SELECT)
    a, b = full.run(), by_screen.run()
    assert [c.subnet for c in a.records] == [c.subnet for c in b.records]
    assert {k: v.subnet for k, v in a.best.items() if v} == {k: v.subnet for k, v in b.best.items() if v}
    assert by_screen.evaluator.calls < len(b.records) // 2
    assert b.stats.screened_out == len(b.records) - by_screen.evaluator.calls


def test_selecting_on_a_noisy_screen_still_picks_winners_and_front_on_full_scores(tmp_path):
    enc = make_encoding(SPACE, "flexible")
    kw = dict(state_path=tmp_path / "s.json", history_path=tmp_path / "h.jsonl")
    evo = Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, SCREEN_SELECT, **kw)
    res = evo.run()
    picked = [c for c in res.best.values() if c] + res.front
    assert picked and all(c.val_top1 == stub_accuracy(c.subnet) for c in picked)
    assert all(c.scored for c in evo.parents())  # every screen elite was scored in full
    # the history says when each was promoted; a resumed run ends with the same records
    lines = [json.loads(x) for x in (tmp_path / "h.jsonl").read_text().splitlines()]
    promoted = {x["index"] for x in lines if x["event"] == "promoted"}
    assert promoted == {c.index for c in res.records if c.scored}
    again = Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, SCREEN_SELECT, **kw)
    assert [c.to_dict() for c in again.run().records] == [c.to_dict() for c in res.records]
    assert again.evaluator.calls == 0  # nothing re-measured: the full scores were restored


def test_a_screen_selected_search_resumes_exactly(tmp_path):
    enc = make_encoding(SPACE, "flexible")
    ref = Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, SCREEN_SELECT).run()
    kw = dict(state_path=tmp_path / "s.json", history_path=tmp_path / "h.jsonl")
    Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, SCREEN_SELECT, **kw).run(max_generations=3)
    res = Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, SCREEN_SELECT, **kw).run()
    assert [c.to_dict() for c in res.records] == [c.to_dict() for c in ref.records]
    with pytest.raises(SearchStateError, match="select_on"):
        Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, RACE, **kw).run()


def test_a_raced_search_resumes_exactly(tmp_path):
    enc = make_encoding(SPACE, "flexible")
    ref = Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, RACE).run()
    kw = dict(state_path=tmp_path / "s.json", history_path=tmp_path / "h.jsonl")
    Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, RACE, **kw).run(max_generations=3)
    again = Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, RACE, **kw)
    res = again.run()
    assert [c.to_dict() for c in res.records] == [c.to_dict() for c in ref.records]
    assert again.evaluator.screen_calls < len(res.records)  # the saved screen scores were not re-measured
    with pytest.raises(SearchStateError, match="race_z"):
        Evolution(enc, TARGETS, _racing_evaluator(3.0), stub_latency, replace(RACE, race_z=1.0), **kw).run()
