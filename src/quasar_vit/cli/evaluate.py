"""``quasar-vit eval``: top-1 of a subnet of a trained supernet on the test split."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sized
from typing import cast

from quasar_vit.cli.common import add_device, add_progress, positive_int
from quasar_vit.export.resolve import resolve_subnet


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="supernet.pt / last.pt, or a run directory")
    p.add_argument("--subnet", default="largest", help="largest | smallest | FILE.json (default: largest)")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--batch-size", type=positive_int, default=500)
    p.add_argument("--data-root", default=None, help="override the data root stored in the checkpoint's config")
    add_device(p)
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    from quasar_vit.data import BatchTransform, build_datasets
    from quasar_vit.training.checkpoint import load_supernet
    from quasar_vit.training.distributed import pick_device
    from quasar_vit.training.evaluate import evaluate_subnet

    device = pick_device(args.device)
    model, cfg, _ = load_supernet(args.checkpoint, device)
    if args.data_root:
        cfg.data.root = args.data_root
    space = cfg.model.space()
    subnet = resolve_subnet(args.subnet, space).subnet
    g = cfg.model.geometry
    splits = build_datasets(cfg.data, g.img_size, g.in_chans, g.num_classes, seed=cfg.train.seed)
    dataset = splits.test if args.split == "test" else splits.val
    top1 = evaluate_subnet(
        model,
        subnet,
        dataset,
        BatchTransform.from_config(cfg.data, train=False),
        device,
        args.batch_size,
        args.progress,
    )
    images = len(cast(Sized, dataset))  # the splits all have a length; torch's Dataset declares none
    print(json.dumps({"subnet": subnet.describe(), "split": args.split, "images": images, "top1": top1}, indent=2))
    return 0
