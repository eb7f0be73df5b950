"""Per-block precision sensitivity of a trained supernet: does the flexible 8-bit share have a signal?

The flexible search can only beat a fixed ratio when blocks differ in how much their low-bit rows
cost in accuracy.  For the largest architecture of each supernet this scores (on the held-out
validation split, as the search does): every row 8-bit, every row low-bit, and for each block ``i``
every row 8-bit except block ``i``'s, which are all low-bit.  The per-block drops show where an
8-bit row buys accuracy; their spread is what a per-layer share can exploit and one ratio cannot.

Usage::

    python benchmarks/share_sensitivity.py --checkpoint runs/fmnist-tiny [--checkpoint runs/other ...]

Writes ``benchmarks/results/share_sensitivity.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from common import RESULTS, eval_splits, user_error, write_results

from quasar_vit.errors import QuasarError


def sensitivity(checkpoint: str, split: str = "val", device: str = "cpu") -> dict[str, Any]:
    """Top-1 of ``checkpoint``'s largest architecture all 8-bit, all low-bit, and one block low-bit at a time."""
    from quasar_vit.data import BatchTransform
    from quasar_vit.training.checkpoint import load_supernet
    from quasar_vit.training.evaluate import evaluate_subnet

    net, cfg, _ = load_supernet(checkpoint, device)
    space = cfg.model.space()
    splits = eval_splits(cfg)
    data = splits.val if split == "val" else splits.test
    tf = BatchTransform.from_config(cfg.data, train=False)
    big = space.largest()
    hi, lo = space.w8_shares[-1], space.w8_shares[0]

    def acc(shares: list[float]) -> float:
        sub = space.make(big.embed_dim, big.depth, big.num_heads, big.mlp_ratios, shares)
        return evaluate_subnet(net, sub, data, tf, device, batch_size=1000)

    all_hi, all_lo = acc([hi] * big.depth), acc([lo] * big.depth)
    per_block = [all_hi - acc([lo if j == i else hi for j in range(big.depth)]) for i in range(big.depth)]
    return {
        "checkpoint": checkpoint,
        "split": split,
        "images": len(data),
        "w_bits_low": cfg.quant.w_bits_low,
        "architecture": big.describe(),
        "all_8bit": all_hi,
        "all_low": all_lo,
        "drop_block_low": per_block,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, help="trained supernet (repeatable)")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--device", default="cpu")
    p.add_argument("--results", default=str(RESULTS / "share_sensitivity.json"))
    args = p.parse_args(argv)
    try:
        rows = [sensitivity(c, args.split, args.device) for c in args.checkpoint]
    except QuasarError as exc:
        return user_error("share_sensitivity.py", exc)
    depth = max(len(r["drop_block_low"]) for r in rows)
    print(f"Largest architecture, {args.split} top-1 (%); 'block i' = drop when only block i's rows are low-bit\n")
    print("| supernet | low bits | all 8-bit | all low | " + " | ".join(f"block {i}" for i in range(depth)) + " |")
    print("|---" * (depth + 4) + "|")
    for r in rows:
        drops = [f"{d:+.2f}" for d in r["drop_block_low"]] + ["-"] * (depth - len(r["drop_block_low"]))
        print(
            f"| {r['checkpoint']} | {r['w_bits_low']} | {r['all_8bit']:.2f} | {r['all_low']:.2f} | "
            + " | ".join(drops)
            + " |"
        )
    write_results(args.results, {"rows": rows})
    print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
