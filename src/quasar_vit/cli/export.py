"""``quasar-vit export``: a searched subnet as a deployable package (weights, ONNX, accelerator, report)."""

from __future__ import annotations

import argparse

from quasar_vit.cli.common import nonneg_int
import json


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="supernet.pt / last.pt, or a training run directory")
    p.add_argument(
        "--subnet",
        required=True,
        help="subnet JSON file (a search result's {'subnet': ...} works too), or largest | smallest",
    )
    p.add_argument(
        "--platform",
        default=None,
        help="board preset (zcu102, zcu104, kv260, ...) or a platform YAML "
        "(default: the board a searched subnet was searched for, else zcu102)",
    )
    p.add_argument(
        "--re-explore",
        action="store_true",
        help="design a new accelerator for this subnet instead of using the one its search chose "
        "(needed to export a searched subnet for another board)",
    )
    p.add_argument("--out", required=True, help="export directory (written atomically)")
    p.add_argument("--data-root", default=None, help="override the data root stored in the checkpoint's config")
    p.add_argument(
        "--eval-limit",
        type=nonneg_int,
        default=1000,
        help="test images used for the accuracy in the report (0 = the test split as data.test_limit leaves it)",
    )
    p.add_argument("--no-eval", dest="evaluate", action="store_false", help="skip the accuracy evaluation")
    p.add_argument("--hls", action="store_true", help="also generate the HLS C++ accelerator (OUT/hls)")
    p.add_argument("--force", action="store_true", help="replace --out even if it is not an earlier export")


def run(args: argparse.Namespace) -> int:
    from quasar_vit.export.exporter import export_subnet

    out = export_subnet(
        args.checkpoint,
        args.subnet,
        args.platform,
        args.out,
        re_explore=args.re_explore,
        data_root=args.data_root,
        eval_limit=args.eval_limit or None,
        evaluate=args.evaluate,
        force=args.force,
    )
    if args.hls:
        from quasar_vit.hls import generate_hls

        generate_hls(out)
    info = json.loads((out / "export.json").read_text())
    print(
        json.dumps(
            {
                "out": str(out),
                "platform": info["platform"],
                "predicted": info["predicted"],
                "evaluation": info["evaluation"],
            },
            indent=2,
        )
    )
    return 0
