"""``quasar-vit train``: train a quantization-aware supernet (runs under torchrun too)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from quasar_vit.cli.common import add_device, add_progress
from quasar_vit.errors import ConfigError
from quasar_vit.utils.lock import is_main_process


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=None,
        help="YAML file, or a bundled name (fmnist-tiny, imagenet-small, ...); with --resume the "
        "default is the run's own OUT/config.yaml",
    )
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, supernet.pt)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly where it stopped; --set train.steps=N with a larger N "
        "extends it (the warm-down is re-planned to end at N)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.steps=500 (repeatable)",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="FILE",
        help="start from pretrained weights: a timm/DeiT ViT state dict (.pth/.pt/.safetensors) or an "
        "AutoFormer supernet checkpoint, mapped into the supernet's largest dims (sets train.init; "
        "prints what was loaded, resized and left at its initial value)",
    )
    add_device(p)
    add_progress(p)


def _config_path(args: argparse.Namespace) -> str | Path:
    """``--config``, or with ``--resume`` the run's own ``OUT/config.yaml``."""
    if args.config is not None:
        return args.config
    if not args.resume:
        raise ConfigError("--config is required to start a run (with --resume it defaults to OUT/config.yaml)")
    config = Path(args.out) / "config.yaml"
    if not config.is_file():
        raise ConfigError(f"--resume: {config} not found; is --out {args.out} a training run?")
    return config


def run(args: argparse.Namespace) -> int:
    """Train (or resume) the run in ``--out``; under torchrun only rank 0 prints the summary.

    Args:
        args: the parsed ``train`` command line.

    Returns:
        The exit status (0; errors raise).
    """
    from quasar_vit.config import load_config
    from quasar_vit.training.distributed import cleanup
    from quasar_vit.training.trainer import train_supernet

    config = _config_path(args)
    if args.init is not None and args.resume:
        raise ConfigError(
            "--init starts a new run from pretrained weights; a resumed run continues from its "
            "own checkpoint (drop --init)"
        )
    cfg = load_config(config, args.overrides, stored=args.resume)
    if args.init is not None:
        cfg.train.init = args.init
    try:
        summary = train_supernet(cfg, args.out, resume=args.resume, device=args.device, progress=args.progress)
    finally:
        # train_supernet destroys the process group after its final barrier; when it raises instead,
        # destroy it here so gloo's threads are not left to be torn down during interpreter exit
        # (a SIGABRT that would hide the real error).  A no-op when already destroyed or not under torchrun.
        cleanup()
    if summary.get("test_top1_largest") is not None and is_main_process():
        print(json.dumps(summary, indent=2))  # under torchrun only rank 0 reports
    return 0
