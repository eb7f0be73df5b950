"""``quasar-vit search``: the most accurate subnet per latency target on a board (runs under torchrun)."""

from __future__ import annotations

import argparse

from quasar_vit.cli.common import add_device, add_progress, positive_int


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="supernet.pt / last.pt, or a training run directory")
    p.add_argument(
        "--out",
        required=True,
        help="output directory (pareto.json, subnet_*.json, history.jsonl, pareto.png, search_state.json)",
    )
    p.add_argument(
        "--platform",
        default=None,
        help="board preset (zcu102, zcu104, kv260, vcu118, u250) or a platform YAML file "
        "(default: the checkpoint config's search.platform)",
    )
    p.add_argument("--fps", default=None, metavar="LIST", help="throughput targets in FPS, e.g. 100,150,250")
    p.add_argument("--latency-ms", default=None, metavar="LIST", help="latency targets in ms, e.g. 10,6.6")
    p.add_argument(
        "--mode",
        default="flexible",
        help="flexible (per-layer 8-bit share, the method) | random | uniform8 | uniform4 | fixed "
        "| fixed:SHARE (default: flexible)",
    )
    p.add_argument(
        "--baselines",
        default="",
        metavar="LIST",
        help="also run these modes with the same budget and targets, e.g. random,uniform8,uniform4,"
        "fixed or 'all' (results in OUT/baselines/MODE and in pareto.json/png)",
    )
    p.add_argument("--population", type=positive_int, default=None)
    p.add_argument("--generations", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--val-images",
        "--val-size",
        dest="val_images",
        type=positive_int,
        default=None,
        help="validation images per candidate (search.val_images; taken from the split held out at training time)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a search setting, e.g. --set search.mutations=10 (repeatable)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard a saved search state in --out and start over (default: resume it)",
    )
    p.add_argument("--max-generations", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--data-root", default=None, help="override the data root stored in the checkpoint's config")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw pareto.png")
    add_device(p)
    add_progress(p)


def parse_baselines(text: str) -> list[str]:
    from quasar_vit.search.encoding import parse_mode

    items = [b.strip() for b in (text or "").split(",") if b.strip()]
    if items == ["all"]:
        return ["random", "uniform8", "uniform4", "fixed"]
    for b in items:
        parse_mode(b)  # raises ConfigError naming the bad one
    return items


def format_summary(result) -> str:
    lines = [
        f"search on {result.platform}: {result.main.evolution.evaluations} candidates measured "
        f"({result.val_images} validation images each), front of {len(result.main.front)}, "
        f"{result.main.evolution.elapsed_s:.1f} s"
    ]
    hdr = f"{'target':<12} {'FPS>=':>9} {'status':<10} {'val %':>7} {'test %':>7} {'FPS':>9} {'8-bit':>6}  subnet"
    lines += [hdr, "-" * len(hdr)]
    for e in result.main.target_entries(result.targets):
        if e["status"] == "met":
            test = f"{e['test_top1']:7.2f}" if e.get("test_top1") is not None else f"{'-':>7}"
            lines.append(
                f"{e['name']:<12} {e['target_fps']:9.1f} {'met':<10} {e['val_top1']:7.2f} {test} "
                f"{e['fps']:9.1f} {100 * e['share_8bit']:5.1f}%  {e['description']}"
            )
        else:
            lines.append(
                f"{e['name']:<12} {e['target_fps']:9.1f} {e['status']:<10} fastest reachable {e['fastest_fps']:.1f} FPS"
            )
    for mode, r in result.baselines.items():
        parts = []
        for e in r.target_entries(result.targets):
            parts.append(f"{e['name']}={e['val_top1']:.2f}%" if e["status"] == "met" else f"{e['name']}=-")
        lines.append(f"baseline {mode:<10} HV {r.hypervolume_normalized:.4f}  " + " ".join(parts))
    lines.append(f"hypervolume (normalised) {result.main.hypervolume_normalized:.4f}")
    lines.append(f"results in {result.out_dir}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from quasar_vit.errors import ConfigError
    from quasar_vit.search.runner import SearchRequest, run_search
    from quasar_vit.search.targets import parse_targets
    from quasar_vit.training.distributed import cleanup, init_distributed

    targets = None
    if args.fps is not None or args.latency_ms is not None:
        targets = parse_targets(args.fps, args.latency_ms)
    baselines = parse_baselines(args.baselines)
    overrides = list(args.overrides)
    for key in ("population", "generations", "seed", "val_images"):
        v = getattr(args, key)
        if v is not None:
            overrides.append(f"search.{key}={v}")
    if args.max_generations is not None and args.max_generations < 1:
        raise ConfigError("--max-generations must be >= 1")
    info = init_distributed(args.device)
    try:
        request = SearchRequest(
            args.checkpoint,
            args.out,
            platform=args.platform,
            targets=targets,
            mode=args.mode,
            baselines=baselines,
            overrides=overrides,
            device=args.device,
            progress=args.progress,
            restart=args.restart,
            max_generations=args.max_generations,
            data_root=args.data_root,
            plot=args.plot,
        )
        result = run_search(request)
        if info.is_main:
            print(format_summary(result))
    finally:
        cleanup()
    return 0
