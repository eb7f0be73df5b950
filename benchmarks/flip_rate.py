"""Flipped activation codes at 224 against training steps (issue 18): does training damp the spread?

``verify`` compares the fake-quant model's 6-bit activation codes with the integer engine's.  At
224 a barely trained model shows a few percent flipped; this script trains the smallest
``imagenet-small`` subnet alone (``train_supernet(..., only_subnet=...)``, the shipped DeiT recipe,
batch 8) on a synthetic ImageFolder of 4 classes, and after each stage exports it and verifies it
on ``--verify-images`` test images, recording the flipped fraction, the points with most flips,
the label agreement and the largest logit difference.  A stage already in the results is skipped,
so an interrupted run continues (the training run resumes from its last checkpoint).

With integer nonlinear ops (``--nonlinear integer``, the default since they exist) the fake-quant
model computes the engine's integers, so every stage must show 0 flipped codes and equal logits;
``--nonlinear float`` measures the float ops' spread as before.

Run::

    python benchmarks/flip_rate.py --stages 3,100,300     # about 12 min on 2 cores

Writes ``benchmarks/results/flip_rate_224-MODE.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, argv_string, machine_info, write_results


#: shrunk in batch and data sizes only; the recipe, model and quantization are the shipped ones
SETS = [
    "train.batch_size=8",
    "model.geometry.num_classes=4",
    "data.val_size=32",
    "data.num_workers=1",
    "train.checkpoint_every=50",
    "train.log_every=10",
    "train.warmup_steps=20",
    "train.amp=none",
]


def stage(cfg: Any, run: Path, steps: int, workdir: Path, verify_images: int) -> dict[str, Any]:
    """Train to ``steps`` (resuming), export the smallest subnet and verify it against the checkpoint."""
    from quasar_vit.export.exporter import export_subnet
    from quasar_vit.export.verify import verify_export
    from quasar_vit.training.trainer import train_supernet

    sub = cfg.model.space().smallest()
    t0 = time.perf_counter()
    train_supernet(cfg, run, resume=(run / "last.pt").exists(), progress=False, stop_at=steps, only_subnet=sub)
    train_s = time.perf_counter() - t0
    exp = workdir / f"export-{steps}"
    export_subnet(run / "last.pt", sub, "zcu102", exp, eval_limit=32, force=True)
    ck = verify_export(exp, limit=verify_images)["checkpoint"]
    keys = ("flipped_code_fraction", "activation_codes_compared", "agreement_percent", "max_abs_logit_error")
    return {
        "train_seconds": round(train_s, 1),
        **{k: ck[k] for k in keys},
        "logit_scale": ck["logit_scale"],
        "max_code_difference": ck["max_code_difference"],
        "most_flips": ck["most_flips"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default="3,100,300", help="training steps after which to verify")
    ap.add_argument("--workdir", default="runs/bench-flip-rate")
    ap.add_argument("--verify-images", type=int, default=8)
    ap.add_argument("--nonlinear", choices=("integer", "float"), default="integer")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/flip_rate_224-MODE.json")
    args = ap.parse_args(argv)
    args.out = args.out or str(RESULTS / f"flip_rate_224-{args.nonlinear}.json")
    from quasar_vit.config import load_config
    from quasar_vit.data.synthetic import write_synthetic_imagefolder

    work = Path(args.workdir) / args.nonlinear
    data = Path(args.workdir) / "data"
    if not (data / "train").is_dir():
        write_synthetic_imagefolder(data, {"train": 100, "val": 16}, 4)
    stages = sorted(int(s) for s in args.stages.split(",") if s)
    sets = [*SETS, f"model.nonlinear={args.nonlinear}"]
    cfg = load_config("imagenet-small", [*sets, f"data.root={data}", f"train.steps={stages[-1]}"])
    prev = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    results: dict[str, Any] = prev.get("stages", {}) if prev.get("sets") == sets else {}
    for n in stages:
        if str(n) not in results:
            results[str(n)] = stage(cfg, work / "run", n, work, args.verify_images)
            write_results(
                args.out, {"machine": machine_info(), "argv": argv_string(argv), "sets": sets, "stages": results}
            )
        r = results[str(n)]
        worst = ", ".join(f"{m['point']} {100 * m['fraction']:.1f} %" for m in r["most_flips"][:3])
        print(
            f"step {n:>5}: {100 * r['flipped_code_fraction']:.2f} % of "
            f"{r['activation_codes_compared']:,} codes flipped, "
            f"label agreement {r['agreement_percent']:.1f} %, max logit difference {r['max_abs_logit_error']:.3f}; "
            f"most: {worst}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
