"""The GEMM core's cycles on a paper-size subnet's linears and LayerNorms, measured in Verilator and predicted.

Each block linear of the quasar-L2-like subnet (``hardware/calibration.py``; DeiT-Small size, 197
tokens) runs on the simulated RTL core at a DeiT-Small-size design (R = 32 slots, T = 24 tokens,
KP = 8 lanes: 6144 W4A6 units, packing 4), with weights streamed from a modelled DDR.  The weights
are random (the cycles depend only on the shapes and the 8-bit rows); the codes are checked against
the exact GEMM.  The table gives the measured cycles, the schedule model's prediction, the array's
utilisation (useful nibble MACs over units x cycles) and the DDR bytes per cycle.

Block 0's LayerNorm (197 rows of 384 residual codes, random) runs as the core's LayerNorm step.

This prices the linears and LayerNorms only.  Attention, softmax, the stem and the head are not on
the core yet (docs/rtl.md).  So the sum is a lower bound on an image's cycles, not an FPS.

Run: ``python benchmarks/rtl_gemm.py [--blocks N]`` (about 40 s a layer on 2 cores); writes
``benchmarks/results/rtl_gemm.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, argv_string, today, write_results

from quasar_vit.hardware.calibration import QUASAR_L2_LIKE
from quasar_vit.hardware.engine import row_mask
from quasar_vit.quantization import intops
from quasar_vit.rtl.gemm import Layer, run_layers, run_linear
from quasar_vit.rtl.layout import Ddr, GemmShape, row_tiles, tile_beats
from quasar_vit.rtl.schedule import layernorm_cycles, linear_cycles

OUT = RESULTS / "rtl_gemm.json"
SHAPE = GemmShape(R=32, T=24, KP=8, WB=256, tiles_max=16, ch_max=512, wch_max=256, rch_max=64)
# two 128-bit HP ports at 150 MHz (4.8 GB/s, a third of the ZCU102's usable PS DDR bandwidth from the
# PL); the first beat about 430 ns after a layer starts
DDR = Ddr(latency=64, num=1, den=1)
CLOCK_MHZ = 150.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=1, help="blocks of the subnet to simulate (default 1)")
    args = ap.parse_args(argv)
    sub = QUASAR_L2_LIKE
    specs = [s for s in sub.linear_layers() if s.name.startswith("blocks.")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            block = int(spec.name.split(".")[1])
            measure = block < args.blocks
            rows.append(_layer(spec, Path(tmp) / spec.name, measure))
    rows.append(_layernorm(sub.embed_dim, specs[0].tokens, args.blocks > 0))
    n_ln = 2 * sub.depth + 1  # two a block, and the final one (on all tokens: an upper bound)
    total_model = sum(r["model"] for r in rows[:-1]) + n_ln * rows[-1]["model"]
    measured = [r for r in rows if r["rtl"] is not None]
    md = _markdown(rows, total_model, n_ln)
    print(md)
    write_results(
        OUT,
        {
            "date": today(),
            "command": f"python benchmarks/rtl_gemm.py {argv_string(argv)}".strip(),
            "design": SHAPE.params(),
            "ddr": vars(DDR),
            "rows": rows,
            "linear_and_layernorm_cycles_model": total_model,
            "measured_layers": len(measured),
            "max_model_error": max(abs(r["model"] / r["rtl"] - 1) for r in measured) if measured else None,
        },
        md,
    )
    print(f"wrote {OUT}")


def _layer(spec: Any, workdir: Path, measure: bool) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    m, k, n = spec.out_features, spec.in_features, spec.tokens
    is8 = np.array(row_mask(m, spec.n8_rows, spec.sections))
    nibble_macs = n * k * (m + int(is8.sum()))
    row = {"layer": spec.name, "tokens": n, "k": k, "m": m, "n8": int(is8.sum()), "rtl": None, "seconds": None}
    row["model"] = linear_cycles(SHAPE, n, k, is8, DDR)
    row["ideal"] = nibble_macs / (SHAPE.R * SHAPE.T * SHAPE.KP)
    if measure:
        w = np.where(is8[:, None], rng.integers(-128, 128, (m, k)), rng.integers(-8, 8, (m, k)))
        a = rng.integers(-32, 32, (n, k))
        acc = a @ w.T
        mult = np.full(m, 2**16)
        shift = np.array([max(1, int(np.abs(acc[:, r]).max() * 2**16).bit_length() - 6) for r in range(m)])
        offset = 2 ** (shift - 1)
        want = intops.requant(
            acc.astype(np.float64),
            mult.astype(np.float64),
            offset.astype(np.float64),
            shift.astype(np.float64),
            -32,
            31,
        )
        t0 = time.time()
        run = run_linear(SHAPE, w, is8, mult, offset, shift, a, True, (-32, 31), workdir, DDR)
        row["seconds"] = round(time.time() - t0, 1)
        if not np.array_equal(run.codes, want.astype(np.int64)):
            raise SystemExit(f"error: {spec.name}: the RTL's codes differ from the exact GEMM's")
        row["rtl"] = run.cycles
    cycles = row["rtl"] or row["model"]
    row["utilisation"] = round(row["ideal"] / cycles, 3)
    beats = SHAPE.WB // 8  # bytes a beat
    row["ddr_bytes_per_cycle"] = round(row_tiles(is8, SHAPE) * tile_beats(k, SHAPE) * beats / cycles, 2)
    return row


def _layernorm(e: int, n: int, measure: bool) -> dict[str, Any]:
    """Block 0's LayerNorm on the core: random residual codes, the model's constants' ranges."""
    rng = np.random.default_rng(1)
    res = rng.integers(-30000, 30000, (n, e))
    gain, offset = rng.integers(2**15, 2**16, e), rng.integers(-(2**30), 2**30, e) + 2**23
    sg, eps = 24, 1000
    row = {"layer": "blocks.0.norm1", "tokens": n, "k": e, "m": e, "n8": 0, "rtl": None, "seconds": None}
    row["model"] = layernorm_cycles(SHAPE, n, e, DDR)
    row["ideal"] = n * e / SHAPE.R  # R channels a cycle
    if measure:
        lay = Layer.layernorm(gain, offset, sg, eps, (-32, 31))
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            chain = run_layers(SHAPE, [lay], np.zeros((n, 0), np.int64), True, Path(tmp), DDR, residual=res)
        row["seconds"] = round(time.time() - t0, 1)
        f = [np.asarray(v, np.float64) for v in (gain, offset)]
        want = intops.layernorm(res.astype(np.float64), *f, float(sg), float(eps), -32, 31)
        if not np.array_equal(chain.layers[0].codes, want.astype(np.int64)):
            raise SystemExit("error: the RTL LayerNorm's codes differ from intops.layernorm")
        row["rtl"] = chain.layers[0].cycles
    row["utilisation"] = round(row["ideal"] / (row["rtl"] or row["model"]), 3)
    row["ddr_bytes_per_cycle"] = round(
        (e // SHAPE.R) * tile_beats(0, SHAPE) * SHAPE.WB / 8 / (row["rtl"] or row["model"]), 2
    )
    return row


def _markdown(rows: list[dict[str, Any]], total: int, n_ln: int) -> str:
    lines = [
        "| layer | tokens x K x M | 8-bit rows | RTL cycles | model | model/RTL | array use | DDR B/cycle |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["rtl"] is None:
            continue
        lines.append(
            f"| {r['layer']} | {r['tokens']} x {r['k']} x {r['m']} | {r['n8']} | {r['rtl']} | {r['model']} | "
            f"{r['model'] / r['rtl']:.4f} | {100 * r['utilisation']:.1f} % | {r['ddr_bytes_per_cycle']} |"
        )
    fps = CLOCK_MHZ * 1e6 / total
    lines.append("")
    lines.append(
        f"The {len(rows) - 1} block linears and {n_ln} LayerNorms of quasar-L2-like by the model: {total} cycles, "
        f"{total / (CLOCK_MHZ * 1e3):.2f} ms at {CLOCK_MHZ:.0f} MHz (a bound of {fps:.0f} FPS from these alone)."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
