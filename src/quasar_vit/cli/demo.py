"""``quasar-vit demo``: the whole method end to end on Fashion-MNIST (resumable stage by stage)."""

from __future__ import annotations

import argparse

from quasar_vit.cli.common import add_device, add_progress, nonneg_int, positive_int


def add_parser(p: argparse.ArgumentParser) -> None:
    from quasar_vit.demo import DemoSettings

    d = DemoSettings()
    p.add_argument("--out", default="runs/demo", help="demo directory (default: runs/demo); rerun to resume")
    p.add_argument("--config", default=d.config)
    p.add_argument("--platform", default=d.search.platform)
    p.add_argument(
        "--steps", type=positive_int, default=d.train_steps, help=f"supernet training steps (default {d.train_steps})"
    )
    p.add_argument("--fps", default="", help="FPS targets, e.g. 20000,30000 (default: three spread over the space)")
    p.add_argument("--population", type=positive_int, default=d.search.population)
    p.add_argument("--generations", type=positive_int, default=d.search.generations)
    p.add_argument("--val-images", "--val-size", dest="val_images", type=positive_int, default=d.search.val_images)
    p.add_argument("--verify-limit", type=nonneg_int, default=d.verify_limit)
    p.add_argument("--no-csim", dest="csim", action="store_false", help="skip the HLS C simulation stage")
    p.add_argument("--data-root", default=None)
    add_device(p)
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from quasar_vit.demo import DemoSettings, run_demo
    from quasar_vit.search.targets import parse_targets

    fps = [t.fps for t in parse_targets(args.fps, None)] if args.fps else []
    search = replace(
        DemoSettings().search,
        platform=args.platform,
        fps_targets=fps,
        population=args.population,
        generations=args.generations,
        val_images=args.val_images,
    )
    s = DemoSettings(
        config=args.config, train_steps=args.steps, search=search, verify_limit=args.verify_limit, csim=args.csim
    )
    run_demo(args.out, s, device=args.device, progress=args.progress, data_root=args.data_root)
    return 0
