"""``quasar-vit hw``: predict FPS and resources of a subnet on an FPGA board (torch-free).

Without ``--design`` the accelerator is chosen for the subnet by design-space exploration
(model-adaptive design); with ``--design FILE.json`` a fixed design is costed.
"""

from __future__ import annotations

import argparse

from quasar_vit.cli.common import positive_int
import json
import sys
from pathlib import Path

from quasar_vit.errors import HardwareError, QuasarError


def add_parser(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--subnet", metavar="FILE.json", help="subnet JSON (as written by search/export)")
    src.add_argument("--preset", choices=("deit-tiny", "deit-small", "deit-base"), help="a DeiT reference subnet")
    src.add_argument("--list-platforms", action="store_true", help="list the preset boards and exit")
    p.add_argument("--platform", default="zcu102", help="preset name or path of a platform YAML file (default zcu102)")
    p.add_argument("--resolution", type=positive_int, default=224, help="input resolution of --preset (default 224)")
    p.add_argument("--share-8bit", type=float, default=0.3, help="8-bit row share of --preset (default 0.3)")
    p.add_argument("--design", metavar="FILE.json", help="cost this fixed accelerator design instead of exploring")
    p.add_argument(
        "--nonlinear",
        choices=("integer", "float"),
        default="integer",
        help="the model's LayerNorm/softmax/GELU: integer (fabric units, the default) or float (on the host)",
    )
    p.add_argument("--fps-target", type=float, default=None, help="fail unless the best design reaches this FPS")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-layers", action="store_true", help="totals only (no per-layer table)")
    p.add_argument("--out", metavar="FILE.json", help="also write the JSON report to this file")


def run(args: argparse.Namespace) -> int:
    from quasar_vit.hardware import design_from_dict, evaluate, explore, list_platforms, load_platform
    from quasar_vit.space import SubnetConfig, preset_subnet

    if args.list_platforms:
        for name in list_platforms():
            p = load_platform(name)
            print(f"{name:<8} {p.description}")
        return 0
    if args.subnet:
        subnet = SubnetConfig.load(args.subnet)
    else:
        if not 0.0 <= args.share_8bit <= 1.0:
            raise HardwareError(f"--share-8bit must be in [0, 1], got {args.share_8bit}")
        subnet = preset_subnet(args.preset, args.resolution, args.share_8bit)
    platform = load_platform(args.platform)
    if args.design:
        path = Path(args.design)
        if not path.is_file():
            raise HardwareError(f"design file not found: {path}")
        try:
            design = design_from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise HardwareError(f"{path} is not valid JSON: {exc}") from None
        report = evaluate(subnet, platform, design)
        if args.fps_target is not None and report.fps < args.fps_target:
            raise HardwareError(f"FPS target {args.fps_target:g} is not met by this design: {report.fps:.1f} FPS")
    else:
        report = explore(subnet, platform, fps_target=args.fps_target, nonlinear=args.nonlinear)
    data = report.to_dict(layers=not args.no_layers)
    if args.out:
        from quasar_vit.utils.io import atomic_write_json

        atomic_write_json(args.out, data)
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        print(report.format_table(layers=not args.no_layers))
    if not report.fits:
        print("quasar-vit hw: warning: the design exceeds the board's utilisation caps", file=sys.stderr)
    return 0


__all__ = ["add_parser", "run", "QuasarError"]
