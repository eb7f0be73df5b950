"""The search encoding: sampling, per-layer mutation and crossover over :class:`SubnetConfig`.

The encoding is the full Quasar-ViT choice vector: depth, embedding dim, and per layer the number
of heads, the MLP ratio and the share of 8-bit weight rows (paper section 3); with
``model.share_granularity: linear`` each of a layer's four linears has its own share gene.  Baselines are the
same operators on a *restricted* encoding (:func:`make_encoding`):

``flexible``  every layer picks its own 8-bit share (Quasar-ViT, the default);
``random``    the flexible space, but children are fresh random samples (random search);
``uniform8``  every row 8-bit (shares restricted to ``(1.0,)``);
``uniform4``  every row 4-bit (shares restricted to ``(0.0,)``);
``fixed``     one 8-bit share for *every* layer, as in FILM-QNN / Auto-ViT-Acc.  The share is one
              searched gene tied across layers (choices: the supernet's shares), so the baseline
              gets the best fixed ratio for each latency target rather than one we guessed.
              ``fixed:R`` pins it to ``R`` instead.

Everything here is torch-free and deterministic given a ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from quasar_vit.config import SHARE_MUTATIONS
from quasar_vit.errors import ConfigError
from quasar_vit.space import SearchSpace, SubnetConfig

MODES = ("flexible", "random", "uniform8", "uniform4", "fixed")


@dataclass(frozen=True)
class Encoding:
    """Operators over the subnets of ``space``; ``tie_shares``: one 8-bit share for all layers.

    ``tied_share_prob``: in the flexible space, the probability that a fresh sample gets one share
    for all its layers instead of one share per layer.  Drawing every layer's share independently
    puts the mean share (which decides the FPS) near the middle of the range almost always: of a
    depth-6 subnet's 5**6 share vectors only 1 is all-4-bit.  Tied samples spread the fresh
    candidates over the whole share range (they are what the fixed-ratio baseline starts from);
    mutation and crossover then make the shares per layer again.  ``search.tied_share_prob``.

    ``share_mutation``: how a mutated per-layer share changes.  ``uniform`` (AutoFormer's rule for
    every gene) redraws it from all the shares; ``step`` moves it one share up or down (a creep
    mutation: the shares are ordered, and the neighbours of a good vector are the likely good
    ones).  ``shift`` redraws like ``uniform`` and then, with the mutation probability, moves every
    layer's share one step in the same direction (clipped at the ends), so that the search can walk
    to and from uniform share vectors (an experiment kept as an option: docs/experiments/search.md).
    ``search.share_mutation``; a tied share (``fixed``) is always redrawn.
    """

    space: SearchSpace
    tie_shares: bool = False
    mode: str = "flexible"
    tied_share_prob: float = 0.0
    share_mutation: str = "uniform"

    # ---- sampling -----------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> SubnetConfig:
        sub = self.space.sample(rng)
        if self.tie_shares or (self.tied_share_prob > 0 and rng.random() < self.tied_share_prob):
            s = rng.choice(self.space.w8_shares)
            sub = replace(sub, w8_shares=(s,) * sub.depth)
        return sub

    def contains(self, subnet: SubnetConfig) -> bool:
        if not self.space.contains(subnet):
            return False
        return not self.tie_shares or len(set(subnet.w8_shares)) <= 1

    # ---- variation ----------------------------------------------------------------------------
    @property
    def share_genes(self) -> int:
        """Share genes per layer: 1 (tied, or per block) or one per linear (``model.share_granularity``)."""
        return 1 if self.tie_shares else self.space.shares_per_block

    def _layer_shares(self, sub: SubnetConfig, layer: int) -> list[float]:
        """The share genes of ``sub``'s block ``layer`` at this encoding's granularity.

        A per-block encoding reads a block's first linear: its parents are its own children, which
        hold one share per block.
        """
        shares = sub.block_shares(layer)
        return list(shares) if self.share_genes > 1 else [shares[0]]

    def share_vector(self, sub: SubnetConfig) -> list[float]:
        """``sub``'s share genes, layer by layer (:attr:`share_genes` per layer)."""
        return [s for i in range(sub.depth) for s in self._layer_shares(sub, i)]

    def with_share_vector(self, sub: SubnetConfig, shares: list[float]) -> SubnetConfig:
        """``sub`` with its share genes replaced by ``shares`` (as :meth:`share_vector` orders them)."""
        return self.space.make(sub.embed_dim, sub.depth, sub.num_heads, sub.mlp_ratios, shares)

    def mutate(self, parent: SubnetConfig, rng: random.Random, prob: float) -> SubnetConfig:
        """AutoFormer-style mutation: depth, embed dim and each per-layer gene change with ``prob``.

        A deeper child keeps the parent's layers and gets random choices for the new ones; a
        shallower child drops the last layers.  At per-linear granularity each of a layer's four
        shares is a gene of its own.
        """
        sp, k = self.space, self.share_genes
        depth = rng.choice(sp.depths) if rng.random() < prob else parent.depth
        heads = list(parent.num_heads[:depth])
        ratios = list(parent.mlp_ratios[:depth])
        shares = [self._layer_shares(parent, i) for i in range(len(heads))]
        tied = parent.w8_shares[0] if parent.w8_shares else sp.w8_shares[0]
        while len(heads) < depth:
            heads.append(rng.choice(sp.num_heads))
            ratios.append(rng.choice(sp.mlp_ratios))
            shares.append([tied] if self.tie_shares else [rng.choice(sp.w8_shares) for _ in range(k)])
        embed = rng.choice(sp.embed_dims) if rng.random() < prob else parent.embed_dim
        for i in range(depth):
            if rng.random() < prob:
                heads[i] = rng.choice(sp.num_heads)
            if rng.random() < prob:
                ratios[i] = rng.choice(sp.mlp_ratios)
            for j in range(k):
                if not self.tie_shares and rng.random() < prob:
                    shares[i][j] = self._mutated_share(shares[i][j], rng)
        if self.tie_shares:
            s = rng.choice(sp.w8_shares) if rng.random() < prob else tied
            shares = [[s]] * depth
        flat = [s for layer in shares for s in layer]
        if self.share_mutation == "shift" and not self.tie_shares and rng.random() < prob:
            d = rng.choice((-1, 1))
            order = sp.w8_shares
            flat = [order[min(len(order) - 1, max(0, order.index(s) + d))] for s in flat]
        return sp.make(embed, depth, heads, ratios, flat)

    def _mutated_share(self, share: float, rng: random.Random) -> float:
        choices = self.space.w8_shares
        if self.share_mutation != "step" or len(choices) < 2:
            return rng.choice(choices)
        order = sorted(choices)
        # a share outside the list (an Encoding built by hand) steps from its nearest neighbour
        i = min(range(len(order)), key=lambda k: (abs(order[k] - share), k))
        j = i + (1 if rng.random() < 0.5 else -1)
        if not 0 <= j < len(order):  # at an end of the range the only step is inwards
            j = i - (j - i)
        return order[j]

    def crossover(self, a: SubnetConfig, b: SubnetConfig, rng: random.Random) -> SubnetConfig:
        """Uniform crossover: every gene from one parent or the other, layer by layer.

        The depth comes from either parent; a layer that only the deeper parent has is copied from
        it.  With tied shares the whole share (one gene) comes from one parent; at per-linear
        granularity each linear's share comes from either.
        """
        depth = rng.choice((a.depth, b.depth))
        embed = rng.choice((a.embed_dim, b.embed_dim))
        heads, ratios, shares = [], [], []
        for i in range(depth):
            pa = a if i < a.depth else None
            pb = b if i < b.depth else None
            options = [p for p in (pa, pb) if p is not None]
            heads.append(rng.choice(options).num_heads[i])
            ratios.append(rng.choice(options).mlp_ratios[i])
            shares += [self._layer_shares(rng.choice(options), i)[j] for j in range(self.share_genes)]
        if self.tie_shares:
            s = rng.choice((a.w8_shares[0], b.w8_shares[0]))
            shares = [s] * depth
        return self.space.make(embed, depth, heads, ratios, shares)


def parse_mode(mode: str) -> tuple[str, float | None]:
    """``'fixed:0.25'`` -> ``('fixed', 0.25)``; other modes -> ``(mode, None)``."""
    name, _, arg = str(mode).partition(":")
    name = name.strip().lower().replace("-", "").replace("_", "")
    aliases = {
        "flexible": "flexible",
        "flex": "flexible",
        "mixed": "flexible",
        "random": "random",
        "uniform8": "uniform8",
        "u8": "uniform8",
        "int8": "uniform8",
        "uniform4": "uniform4",
        "u4": "uniform4",
        "int4": "uniform4",
        "fixed": "fixed",
        "fixedratio": "fixed",
    }
    if name not in aliases:
        raise ConfigError(f"unknown search mode '{mode}' (choose from {', '.join(MODES)}, or fixed:SHARE)")
    name = aliases[name]
    share = None
    if arg:
        if name != "fixed":
            raise ConfigError(f"search mode '{mode}': only 'fixed' takes a share (fixed:0.25)")
        try:
            share = float(arg)
        except ValueError:
            raise ConfigError(f"search mode '{mode}': '{arg}' is not a number") from None
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"search mode '{mode}': the 8-bit share must lie in [0, 1]")
    return name, share


def make_encoding(
    space: SearchSpace, mode: str = "flexible", tied_share_prob: float = 0.0, share_mutation: str = "uniform"
) -> Encoding:
    """The encoding of search ``mode`` (see the module docstring) over the supernet's ``space``.

    ``tied_share_prob`` and ``share_mutation`` apply to the modes over the flexible space
    (``flexible``, ``random``)."""
    name, share = parse_mode(mode)
    label = name if share is None else f"fixed:{share:g}"
    if not 0.0 <= tied_share_prob <= 1.0:
        raise ConfigError(f"search.tied_share_prob: must lie in [0, 1], got {tied_share_prob}")
    if share_mutation not in SHARE_MUTATIONS:
        raise ConfigError(f"search.share_mutation: '{share_mutation}' is not one of {', '.join(SHARE_MUTATIONS)}")
    if name in ("flexible", "random"):
        return Encoding(space, False, label, tied_share_prob, share_mutation)
    space = replace(space, share_granularity="block")  # one tied share: the baselines are the same at any granularity
    if name == "uniform8":
        shares: tuple[float, ...] = (1.0,)
    elif name == "uniform4":
        shares = (0.0,)
    elif share is not None:
        shares = (share,)
    else:
        return Encoding(space, True, label)
    missing = [s for s in shares if s not in space.w8_shares]
    if missing:
        raise ConfigError(
            f"search mode '{mode}' needs the 8-bit share {missing[0]:g}, which the supernet was "
            f"not trained for (its shares: {', '.join(f'{s:g}' for s in space.w8_shares)})"
        )
    return Encoding(replace(space, w8_shares=shares), True, label)


__all__ = ["Encoding", "MODES", "SHARE_MUTATIONS", "make_encoding", "parse_mode"]
