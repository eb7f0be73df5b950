"""``quasar-vit rtl``: write an export's RTL accelerator folder (``qv_top``, its program, its DDR image)."""

from __future__ import annotations

import argparse


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="export directory written by 'quasar-vit export' (nonlinear: integer)")
    p.add_argument("--out", default=None, help="output directory (default: DIR/rtl)")


def run(args: argparse.Namespace) -> int:
    from quasar_vit.rtl.package import write_rtl

    out = write_rtl(args.dir, args.out)
    print(
        f"RTL written to {out}: hdl/, descriptors.hex, ddr.bin, rtl.json, package_ip.tcl "
        f"(simulate: quasar-vit verify {args.dir} --rtl; package: vivado -mode batch -source {out}/package_ip.tcl)"
    )
    return 0
