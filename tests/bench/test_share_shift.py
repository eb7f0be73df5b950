"""``search.share_mutation: shift`` is the whole-vector share shift that
``benchmarks/share_shift_experiment.py`` used to patch into ``Encoding.mutate``: the same children
from the same random draws, so the results in docs/experiments/search.md stay reproducible."""

from __future__ import annotations

import random
from dataclasses import replace

from quasar_vit.config import load_config
from quasar_vit.search.encoding import Encoding, make_encoding
from quasar_vit.space import SubnetConfig


def _experiment_mutate(enc: Encoding, parent: SubnetConfig, rng: random.Random, prob: float) -> SubnetConfig:
    """The operator of the removed experiment script, verbatim: a uniform mutation, then the shift."""
    child = enc.mutate(parent, rng, prob)
    if not enc.tie_shares and rng.random() < prob:
        shares = enc.space.w8_shares
        d = rng.choice((-1, 1))
        child = replace(
            child, w8_shares=tuple(shares[min(len(shares) - 1, max(0, shares.index(s) + d))] for s in child.w8_shares)
        )
    return child


def test_shift_mutation_matches_the_experiment_draw_for_draw():
    space = load_config("fmnist-tiny").model.space()
    shift, uniform = make_encoding(space, "flexible", share_mutation="shift"), make_encoding(space, "flexible")
    shifted = 0
    for seed in range(200):
        parent = space.sample(random.Random(1000 + seed))
        a, b = random.Random(seed), random.Random(seed)
        got, want = shift.mutate(parent, a, 0.5), _experiment_mutate(uniform, parent, b, 0.5)
        assert got == want and a.getstate() == b.getstate()
        shifted += got != uniform.mutate(parent, random.Random(seed), 0.5)
    assert shifted > 20  # the shift does happen


def test_shift_leaves_tied_encodings_alone():
    space = load_config("fmnist-tiny").model.space()
    fixed = make_encoding(space, "fixed", share_mutation="shift")
    assert fixed.share_mutation == "uniform"
