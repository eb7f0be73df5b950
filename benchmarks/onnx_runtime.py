"""onnxruntime latency of the three ONNX graphs of an export, with the matmuls onnxruntime fuses.

For each export (default: ``runs/demo/export`` and the DeiT-Small-size export of
``benchmarks/accelerator.py --deit``, when they exist) the three graphs are built from its
``weights.npz`` (``export/onnx_export.py``):

* ``fp32``: the same subnet in float32 (weights ``w_int * step``, no quantizers): the baseline;
* ``qdq``: ``model.onnx``, INT4/INT8 row groups and 6-bit QDQ with the Clip in the integer domain;
* ``int8``: ``model.int8.onnx``, the layout onnxruntime fuses into integer matmuls.

Each graph is loaded with all optimisations on; the optimised graph is saved
(``SessionOptions.optimized_model_filepath``) and its op types counted: integer matmuls
(``MatMulIntegerToFloat``/``QLinearMatMul``/``MatMulInteger``) against float ones
(``MatMul``/``FusedMatMul``/``Gemm``).  Latency is ms per image at each batch size: the median
of interleaved runs after a warm-up (the three graphs take turns, so load from other jobs on the
shared machine hits them alike; the minimum is recorded too), ``--threads`` intra-op threads (1 by
default).  Logits are compared with the NumPy integer reference engine on up to ``--images`` test
images (random normal images when the export's data set is not at hand).

Run: ``python benchmarks/onnx_runtime.py [--export DIR ...] [--batches 1 64] [--seconds 3]``;
writes ``benchmarks/results/onnx_runtime.json`` (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, argv_string, write_results

from quasar_vit.errors import QuasarError

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXPORTS = [ROOT / "runs/demo/export", ROOT / "runs/bench-accelerator/deit-small/export"]
GRAPHS = ("fp32", "qdq", "int8")
FLOAT_MATMULS = ("MatMul", "FusedMatMul", "Gemm")


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def latencies(sessions: dict[str, Any], x: np.ndarray, seconds: float) -> dict[str, dict[str, float]]:
    """ms per image of one ``run`` on batch ``x`` for every session: median and min of interleaved rounds.

    The graphs take turns (one run each per round, >= 3 rounds, at least ``seconds`` in all after a
    warm-up), so load from other jobs on the machine hits all of them alike.
    """
    times: dict[str, list[float]] = {g: [] for g in sessions}
    for sess in sessions.values():
        sess.run(None, {"images": x})
    start = time.perf_counter()
    while len(times[next(iter(times))]) < 3 or time.perf_counter() - start < seconds * len(sessions):
        for g, sess in sessions.items():
            t = time.perf_counter()
            sess.run(None, {"images": x})
            times[g].append(time.perf_counter() - t)
    return {
        g: {"median": round(1e3 * statistics.median(t) / len(x), 4), "min": round(1e3 * min(t) / len(x), 4)}
        for g, t in times.items()
    }


def eval_images(export: Path, n: int, shape: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """Up to ``n`` normalised test images of the export's data set, or random normal ones (and which it was)."""
    from quasar_vit.config import config_from_dict
    from quasar_vit.export.exporter import load_test_images

    try:
        info = json.loads((export / "export.json").read_text())
        x, _ = load_test_images(config_from_dict(info["config"]), None, n)
        if len(x):
            return x.numpy(), f"{info['config']['data']['name']} test split"
    except (QuasarError, OSError, KeyError, ValueError):
        pass
    return np.random.default_rng(0).standard_normal((n, *shape)).astype(np.float32), "random normal images"


def compare(path: Path, sess: Any, images: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Fused-node counts of one graph and its logit difference to the integer reference."""
    from quasar_vit.export.onnx_export import INTEGER_MATMULS, optimized_op_counts, run_onnx

    ops = optimized_op_counts(path)
    out = run_onnx(sess, images, batch_size=64)
    err = np.abs(out - ref)
    return {
        "integer_matmuls": sum(ops[k] for k in INTEGER_MATMULS),
        "float_matmuls": sum(ops[k] for k in FLOAT_MATMULS),
        "op_counts": {k: ops[k] for k in sorted(ops)},
        "file_mb": round(path.stat().st_size / 2**20, 3),
        "label_agreement_with_reference_percent": round(float(100 * np.mean(out.argmax(1) == ref.argmax(1))), 3),
        "max_abs_logit_diff_to_reference": float(err.max()),
        "median_abs_logit_diff_to_reference": float(np.median(err)),
        "images_within_1e-4_percent": round(float(100 * np.mean(err.max(1) < 1e-4)), 3),
    }


def _trace_key(q_output: str) -> str:
    """Name of a ``QuantizeLinear`` output -> the engine's trace key (``blocks.0.aq_k.q_12`` -> ``blocks.0.k``)."""
    base = re.sub(r"\.q_\d+$", "", q_output)
    m = re.match(r"(blocks\.\d+)\.aq_(\w+)$", base)
    return f"{m.group(1)}.{m.group(2)}" if m else base


def code_flips(ir: Any, images: np.ndarray, codes: dict[str, np.ndarray], threads: int) -> dict[str, Any]:
    """Share of ``model.int8.onnx``'s 6-bit codes (its ``QuantizeLinear`` outputs) that differ from the engine's."""
    import onnx
    from onnx import numpy_helper

    from quasar_vit.export.onnx_export import build_onnx

    model = build_onnx(ir, variant="int8")
    qs = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.UINT8, None) for n in qs)
    consts = {t.name: t for t in model.graph.initializer}
    zps = {n.input[2]: int(numpy_helper.to_array(consts[n.input[2]])) for n in qs}
    with tempfile.TemporaryDirectory(prefix="qvit-ortflips-") as tmp:
        onnx.save(model, str(Path(tmp) / "m.onnx"))
        sess = session(Path(tmp) / "m.onnx", threads)
        names = [n.output[0] for n in qs]
        outs = [sess.run(names, {"images": images[i : i + 64]}) for i in range(0, len(images), 64)]
    per: dict[str, list[int]] = {}
    for j, n in enumerate(qs):
        got = np.concatenate([o[j] for o in outs]).astype(np.int32) - zps[n.input[2]]
        key = _trace_key(n.output[0])
        want = codes[key].transpose(0, 1, 3, 2) if key.endswith(".k") else codes[key]  # k^T in the graph
        kind = re.sub(r"^blocks\.\d+\.", "", key)
        f = per.setdefault(kind, [0, 0])
        f[0] += int((got != want.reshape(got.shape)).sum())
        f[1] += got.size
    flips, total = sum(f for f, _ in per.values()), sum(t for _, t in per.values())
    return {"fraction": flips / total, "codes": total, "per_point": {k: f / t for k, (f, t) in sorted(per.items())}}


def measure_export(export: Path, args: argparse.Namespace) -> dict[str, Any]:
    from quasar_vit.export.ir import load_ir
    from quasar_vit.export.onnx_export import matmul_count, save_onnx
    from quasar_vit.export.reference import IntegerViT

    ir = load_ir(export)
    sub, geo = ir.subnet, ir.geometry
    images, source = eval_images(export, args.images, (geo.in_chans, geo.img_size, geo.img_size))
    ref, codes = IntegerViT(ir).forward(images, trace=True)
    row: dict[str, Any] = {
        "export": str(export),
        "subnet": dict(sub),
        "matmuls": matmul_count(ir),
        "images": len(images),
        "image_source": source,
        "graphs": {},
    }
    row["int8_flipped_codes"] = code_flips(ir, images, codes, args.threads)  # what the logit difference comes from
    del codes
    with tempfile.TemporaryDirectory(prefix="qvit-ortbench-") as tmp:
        sessions = {}
        for g in GRAPHS:
            path = Path(tmp) / f"{g}.onnx"
            save_onnx(ir, path, variant=g)
            sessions[g] = session(path, args.threads)
            row["graphs"][g] = compare(path, sessions[g], images, ref)
        rng = np.random.default_rng(1)
        for b in args.batches:  # a batch of any size, drawn from the images
            lat = latencies(sessions, np.ascontiguousarray(images[rng.integers(0, len(images), b)]), args.seconds)
            for g, t in lat.items():
                row["graphs"][g].setdefault("ms_per_image", {})[str(b)] = t["median"]
                row["graphs"][g].setdefault("ms_per_image_min", {})[str(b)] = t["min"]
    base = row["graphs"]["fp32"]["ms_per_image"]
    for g in GRAPHS:
        res = row["graphs"][g]
        res["speedup_vs_fp32"] = {b: round(base[b] / t, 3) for b, t in res["ms_per_image"].items()}
    return row


def print_table(rows: list[dict[str, Any]], batches: list[int]) -> None:
    head = "".join(f"{f'b={b} ms/img':>13}" for b in batches)
    print(
        f"{'export':<28}{'graph':<6}{'int mm':>7}{'float mm':>9}{head}{'x fp32 (b=' + str(batches[-1]) + ')':>15}"
        f"{'labels=ref %':>13}{'max|dlogit|':>12}"
    )
    for row in rows:
        name = Path(row["export"]).parent.name or row["export"]
        for g, r in row["graphs"].items():
            lat = "".join(f"{r['ms_per_image'][str(b)]:13.3f}" for b in batches)
            print(
                f"{name[:27]:<28}{g:<6}{r['integer_matmuls']:>4}/{row['matmuls']:<2}{r['float_matmuls']:>9}{lat}"
                f"{r['speedup_vs_fp32'][str(batches[-1])]:15.2f}"
                f"{r['label_agreement_with_reference_percent']:13.1f}{r['max_abs_logit_diff_to_reference']:12.3g}"
            )
        flips = row["int8_flipped_codes"]
        print(
            f"{'':<28}int8: {flips['fraction']:.2e} of {flips['codes']} 6-bit codes differ from the engine's "
            f"({row['images']} images, {row['image_source']})"
        )


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--export", action="append", type=Path, help="export directory (repeatable)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per graph and batch size")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument("--images", type=int, default=1000, help="images compared with the integer reference")
    p.add_argument("--out", type=Path, default=RESULTS / "onnx_runtime.json")
    args = p.parse_args(argv)
    exports = args.export or [d for d in DEFAULT_EXPORTS if (d / "weights.npz").is_file()]
    if not exports:
        print("benchmarks/onnx_runtime.py: error: no export found; pass --export DIR", file=sys.stderr)
        return 2
    load = os.getloadavg()
    try:
        rows = [measure_export(d, args) for d in exports]
    except QuasarError as exc:
        print(f"benchmarks/onnx_runtime.py: error: {exc}", file=sys.stderr)
        return 2
    print_table(rows, args.batches)
    write_results(
        args.out,
        {
            "machine": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "onnxruntime": ort.__version__,
            "threads": args.threads,
            "load_average_before_after": [load[0], os.getloadavg()[0]],
            "exports": rows,
            "command": "python benchmarks/onnx_runtime.py " + argv_string(argv),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
