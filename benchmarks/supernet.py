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
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from quasar_vit.config import load_config
from quasar_vit.models import QuantSpec, QuantViT
from quasar_vit.supernet import build_supernet
from quasar_vit.training.trainer import sandwich_subnets, train_supernet
from quasar_vit.utils.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"


def time_steps(cfg, reps: int, batch: int) -> dict[str, float]:
    """Median seconds of: supernet sandwich step, largest subnet pass in the supernet, FP32 step."""
    torch.manual_seed(0)
    space = cfg.model.space()
    supernet = build_supernet(cfg.model, cfg.quant).train()
    fp32 = QuantViT(space.largest(), QuantSpec(enabled=False), cfg.model.layer_scale).train()
    x = torch.randn(batch, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size)
    y = torch.randint(0, cfg.model.num_classes, (batch,))

    def sandwich(step: int) -> None:
        for sub in sandwich_subnets(space, 0, step, cfg.train.sandwich_random):
            F.cross_entropy(supernet(x, sub), y).backward()

    def largest(_: int) -> None:
        F.cross_entropy(supernet(x, space.largest()), y).backward()

    def plain(_: int) -> None:
        F.cross_entropy(fp32(x), y).backward()

    fns = {"supernet_step": sandwich, "supernet_largest_pass": largest, "fp32_step": plain}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (also initialises the activation quantizers)
        fn(0)
    for r in range(reps):
        for name, fn in fns.items():  # interleaved so that load changes hit all three alike
            t = time.perf_counter()
            fn(r + 1)
            times[name].append(time.perf_counter() - t)
            supernet.zero_grad(set_to_none=True)
            fp32.zero_grad(set_to_none=True)
    return {k: statistics.median(v) for k, v in times.items()}


def run_or_resume(cfg, out: Path, only_subnet=None) -> dict:
    if (out / "final.json").is_file():
        return json.loads((out / "final.json").read_text())
    return train_supernet(cfg, out, resume=(out / "last.pt").is_file(), progress=True, only_subnet=only_subnet)


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
    work = Path(args.workdir) / f"{cfg.name}-{cfg.train.steps}"

    print(f"[1/3] timing ({reps} interleaved reps, batch {cfg.train.batch_size})", flush=True)
    speed = time_steps(cfg, reps, cfg.train.batch_size)

    print(f"[2/3] supernet training: {cfg.train.steps} steps", flush=True)
    t0 = time.time()
    sup = run_or_resume(cfg, work / "supernet")
    sup_wall = time.time() - t0

    print(f"[3/3] largest architecture alone, FP32, {cfg.train.steps} steps", flush=True)
    largest = cfg.model.space().largest()
    alone = load_config(args.config, overrides + ["quant.enabled=false"])
    t0 = time.time()
    base = run_or_resume(alone, work / "fp32-alone", only_subnet=largest)
    base_wall = time.time() - t0

    # the largest architecture with a real 8/4-bit mix (half the rows of every layer 8-bit)
    from quasar_vit.data import BatchTransform, build_datasets
    from quasar_vit.training.checkpoint import load_supernet
    from quasar_vit.training.evaluate import evaluate_subnet

    net, _, _ = load_supernet(work / "supernet" / "supernet.pt")
    splits = build_datasets(cfg.data, cfg.model.img_size, cfg.model.in_chans, cfg.model.num_classes, cfg.train.seed)
    space = cfg.model.space()
    mixed = space.make(largest.embed_dim, largest.depth, largest.num_heads, largest.mlp_ratios, [0.5] * largest.depth)
    mixed_top1 = evaluate_subnet(net, mixed, splits.test, BatchTransform.from_config(cfg.data, train=False))

    result = {
        "config": cfg.name,
        "steps": cfg.train.steps,
        "batch_size": cfg.train.batch_size,
        "sandwich_subnets_per_step": len(sandwich_subnets(cfg.model.space(), 0, 1, cfg.train.sandwich_random)),
        "machine": {
            "cpus": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
        "seconds": speed,
        "ratio_supernet_step_vs_fp32_step": speed["supernet_step"] / speed["fp32_step"],
        "ratio_largest_pass_vs_fp32_step": speed["supernet_largest_pass"] / speed["fp32_step"],
        "supernet_largest_top1": sup.get("test_top1_largest"),
        "supernet_smallest_top1": sup.get("test_top1_smallest"),
        "supernet_largest_arch_half_8bit_top1": mixed_top1,
        "fp32_alone_top1": base.get("test_top1_only"),
        "supernet_train_seconds": sup.get("train_seconds"),
        "fp32_alone_train_seconds": base.get("train_seconds"),
        "wall_seconds_this_invocation": {"supernet": sup_wall, "fp32_alone": base_wall},
        "largest_subnet": largest.describe(),
    }
    result["gap_largest_vs_fp32"] = result["fp32_alone_top1"] - result["supernet_largest_top1"]
    atomic_write_json(args.out, result)

    print()
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| supernet step / FP32 step of the largest arch (time ratio) | "
        f"{result['ratio_supernet_step_vs_fp32_step']:.2f}x ({result['sandwich_subnets_per_step']} subnets/step) |"
    )
    print(f"| largest-subnet pass in the supernet / FP32 step | {result['ratio_largest_pass_vs_fp32_step']:.2f}x |")
    print(f"| supernet largest subnet top-1 (all rows 8-bit, A6) | {result['supernet_largest_top1']:.2f} % |")
    print(f"| supernet largest arch, 50 % 8-bit rows per layer, top-1 | {mixed_top1:.2f} % |")
    print(f"| supernet smallest subnet top-1 (all 4-bit, A6) | {result['supernet_smallest_top1']:.2f} % |")
    print(f"| largest arch alone, FP32, same steps | {result['fp32_alone_top1']:.2f} % |")
    print(f"| gap (FP32 alone - supernet largest) | {result['gap_largest_vs_fp32']:.2f} points |")
    print(f"| supernet training time | {result['supernet_train_seconds'] / 60:.1f} min |")
    print(f"\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
