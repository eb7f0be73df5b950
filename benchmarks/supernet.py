"""Supernet benchmark (issue: quantization-aware supernet).

Measures, in one run on this machine:
1. speed: one supernet training step (sandwich: largest + smallest + random subnets, fake-quant)
   and one pass of the largest subnet inside the supernet, against one FP32 training step of the
   same largest architecture as a plain fixed model (interleaved repetitions, median);
2. accuracy: the supernet trained with the config's budget, scored on the Fashion-MNIST test split
   for its largest subnet (its own 8/4-bit mix, A6) and smallest subnet, against the largest
   architecture trained alone in FP32 for the same number of steps with the same schedule.

Usage:  python benchmarks/supernet.py [--config fmnist-tiny] [--steps N] [--quick]
Writes benchmarks/results/supernet.json and prints a Markdown table.  Training runs are kept in
--workdir and resumed if interrupted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, eval_splits, machine_info, time_steps, today, train_or_resume, write_results

from quasar_vit.config import ExperimentConfig, load_config
from quasar_vit.training.trainer import sandwich_subnets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="fmnist-tiny")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    ap.add_argument("--quick", action="store_true", help="a few minutes: 300 steps, fewer timing reps")
    ap.add_argument("--workdir", default="runs/bench-supernet")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default=str(RESULTS / "supernet.json"))
    args = ap.parse_args(argv)

    overrides = []
    steps = args.steps or (300 if args.quick else None)
    if steps:
        overrides.append(f"train.steps={steps}")
    cfg = load_config(args.config, overrides)
    reps = 3 if args.quick else args.reps
    result = measure(cfg, load_config(args.config, overrides + ["quant.enabled=false"]), reps, Path(args.workdir))
    write_results(args.out, result)
    print()
    print(markdown(result))
    print(f"\nwritten {args.out}")
    return 0


def measure(cfg: ExperimentConfig, alone: ExperimentConfig, reps: int, workdir: Path) -> dict[str, Any]:
    """Time the steps, train (or resume) the supernet and the FP32 largest architecture, score them.

    Args:
        cfg: the supernet's config.
        alone: the same config without quantization, for the largest architecture trained alone.
        reps: interleaved timing repetitions.
        workdir: holds the two training runs (one folder per config and step count).

    Returns:
        The result written to ``supernet.json``.
    """
    work = workdir / f"{cfg.name}-{cfg.train.steps}"
    print(f"[1/3] timing ({reps} interleaved reps, batch {cfg.train.batch_size})", flush=True)
    speed = time_steps(cfg, reps, cfg.train.batch_size)

    print(f"[2/3] supernet training: {cfg.train.steps} steps", flush=True)
    t0 = time.time()
    sup = train_or_resume(cfg, work / "supernet")
    sup_wall = time.time() - t0

    print(f"[3/3] largest architecture alone, FP32, {cfg.train.steps} steps", flush=True)
    largest = cfg.model.space().largest()
    t0 = time.time()
    base = train_or_resume(alone, work / "fp32-alone", only_subnet=largest)
    base_wall = time.time() - t0

    result = {
        "config": cfg.name,
        "steps": cfg.train.steps,
        "batch_size": cfg.train.batch_size,
        "sandwich_subnets_per_step": len(sandwich_subnets(cfg.model.space(), 0, 1, cfg.train.sandwich_random)),
        "machine": machine_info(),
        "date": today(),
        "seconds": speed,
        "ratio_supernet_step_vs_fp32_step": speed["supernet_step"] / speed["fp32_step"],
        "ratio_largest_pass_vs_fp32_step": speed["supernet_largest_pass"] / speed["fp32_step"],
        "supernet_largest_top1": sup.get("test_top1_largest"),
        "supernet_smallest_top1": sup.get("test_top1_smallest"),
        "supernet_largest_arch_half_8bit_top1": half_8bit_top1(cfg, work / "supernet" / "supernet.pt"),
        "fp32_alone_top1": base.get("test_top1_only"),
        "supernet_train_seconds": sup.get("train_seconds"),
        "fp32_alone_train_seconds": base.get("train_seconds"),
        "wall_seconds_this_invocation": {"supernet": sup_wall, "fp32_alone": base_wall},
        "largest_subnet": largest.describe(),
    }
    result["gap_largest_vs_fp32"] = result["fp32_alone_top1"] - result["supernet_largest_top1"]
    return result


def half_8bit_top1(cfg: ExperimentConfig, checkpoint: Path) -> float:
    """Test top-1 of the largest architecture with a real 8/4-bit mix: half the rows of every layer 8-bit."""
    from quasar_vit.data import BatchTransform
    from quasar_vit.training.checkpoint import load_supernet
    from quasar_vit.training.evaluate import evaluate_subnet

    net, _, _ = load_supernet(checkpoint)
    splits = eval_splits(cfg)
    space = cfg.model.space()
    largest = space.largest()
    mixed = space.make(largest.embed_dim, largest.depth, largest.num_heads, largest.mlp_ratios, [0.5] * largest.depth)
    return evaluate_subnet(net, mixed, splits.test, BatchTransform.from_config(cfg.data, train=False))


def markdown(result: dict[str, Any]) -> str:
    """The Markdown table printed after a run."""
    return "\n".join(
        [
            "| measure | value |",
            "|---|---|",
            f"| supernet step / FP32 step of the largest arch (time ratio) | "
            f"{result['ratio_supernet_step_vs_fp32_step']:.2f}x ({result['sandwich_subnets_per_step']} subnets/step) |",
            f"| largest-subnet pass in the supernet / FP32 step | {result['ratio_largest_pass_vs_fp32_step']:.2f}x |",
            f"| supernet largest subnet top-1 (all rows 8-bit, A6) | {result['supernet_largest_top1']:.2f} % |",
            f"| supernet largest arch, 50 % 8-bit rows per layer, top-1 | "
            f"{result['supernet_largest_arch_half_8bit_top1']:.2f} % |",
            f"| supernet smallest subnet top-1 (all 4-bit, A6) | {result['supernet_smallest_top1']:.2f} % |",
            f"| largest arch alone, FP32, same steps | {result['fp32_alone_top1']:.2f} % |",
            f"| gap (FP32 alone - supernet largest) | {result['gap_largest_vs_fp32']:.2f} points |",
            f"| supernet training time | {result['supernet_train_seconds'] / 60:.1f} min |",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
