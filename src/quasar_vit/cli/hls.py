"""``quasar-vit hls``: generate the HLS C++ accelerator of an export (and optionally C-simulate it)."""

from __future__ import annotations

import argparse
import json

from quasar_vit.cli.common import positive_int


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="export directory written by 'quasar-vit export'")
    p.add_argument("--out", default=None, help="output directory (default: DIR/hls)")
    p.add_argument(
        "--csim",
        action="store_true",
        help="also compile with g++ and run the C simulation against the NumPy integer reference",
    )
    p.add_argument("--limit", type=positive_int, default=100, help="test images for --csim (default 100)")
    p.add_argument("--data-root", default=None, help="override the data root stored in the export's config")


def run(args: argparse.Namespace) -> int:
    from quasar_vit.hls import csim_verdict, generate_hls, run_csim

    if not args.csim:
        out = generate_hls(args.dir, args.out)
        print(
            f"HLS sources written to {out} (C simulation: make -C {out}; synthesis: cd {out} && vitis_hls -f run_hls.tcl)"
        )
        return 0
    res = run_csim(args.dir, limit=args.limit, data_root=args.data_root, hls_dir=args.out)
    print(json.dumps(res, indent=2))
    print(csim_verdict(res))
    return 0 if res["passed"] else 1
