"""Experiment (not a package feature): flexible search with an extra whole-vector share move.

Each flexible mutation also shifts every layer's 8-bit share one step up or down (clipped to the
supernet's shares) with the mutation probability, so the search can walk to and from uniform share
vectors.  The operator is patched into :class:`quasar_vit.search.encoding.Encoding` for this process
only, then ``search.py`` runs the flexible mode alone.  Tried on the 2-bit proxy supernet
(docs/search.md, "Sampling the 8-bit shares"); it did not close the gap to the fixed-ratio search,
so the package does not have it.

Usage::

    python benchmarks/share_shift_experiment.py --checkpoint runs/w2/supernet --seed 0 \\
        --population 30 --generations 10 --parents 10 --mutations 15 --crossovers 15 --val-size 5000

Other options are passed to ``search.py``; ``--out`` defaults to runs/share-shift/seedN and
``--results`` to runs/share-shift/seedN.json.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import search as search_bench  # noqa: E402  (sibling benchmark script)

from quasar_vit.search import encoding  # noqa: E402

_mutate = encoding.Encoding.mutate


def mutate_with_shift(self, parent, rng, prob):  # noqa: ANN001, ANN201 - same signature as Encoding.mutate
    child = _mutate(self, parent, rng, prob)
    if not self.tie_shares and rng.random() < prob:
        shares = self.space.w8_shares
        d = rng.choice((-1, 1))
        child = replace(
            child, w8_shares=tuple(shares[min(len(shares) - 1, max(0, shares.index(s) + d))] for s in child.w8_shares)
        )
    return child


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    args, rest = p.parse_known_args(argv)
    out = f"runs/share-shift/seed{args.seed}"
    defaults = [] if "--out" in rest else ["--out", out]
    defaults += [] if "--results" in rest else ["--results", out + ".json"]
    encoding.Encoding.mutate = mutate_with_shift
    return search_bench.main(["--seed", str(args.seed), "--baselines", "", *defaults, *rest])


if __name__ == "__main__":
    sys.exit(main())
