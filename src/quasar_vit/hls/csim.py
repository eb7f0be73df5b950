"""``run_csim``: compile the generated HLS C++ with g++, run it on real test images, and compare it
with the NumPy integer reference engine (``quasar_vit.export.reference``).

Two runs of the C simulation binary:

* **free-running**: the C++ host + engine run the whole subnet alone; its 6-bit codes (every
  quantisation point), GEMM accumulators and logits are compared with the reference's;
* **forced** (stage-wise): every quantisation point takes the reference's codes, so each GEMM sees
  exactly the reference's integer inputs; its int32 accumulators are compared with the reference's
  integer GEMMs (``IntegerLinear.accumulate`` and the nibble-split attention matmuls) bit for bit,
  whatever happens in the float parts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quasar_vit.errors import ExportError
from quasar_vit.hls.generator import BLOB_NAME, CSIM_BINARY, CSIM_SOURCES, CXXFLAGS, LAYOUT_NAME, generate_hls


def ap_types_dir() -> Path:
    """The Vivado/Vitis ``ap_types`` headers (``ap_int.h``, ``ap_fixed.h``, ``hls_stream.h``).

    ``QVIT_AP_TYPES`` names a folder; otherwise the copy that the ``hls4ml`` package ships
    (Apache-2.0) is used, found without importing hls4ml.
    """
    import importlib.util
    import os

    env = os.environ.get("QVIT_AP_TYPES")
    if env:
        path = Path(env)
        if not (path / "ap_int.h").is_file():
            raise ExportError(f"QVIT_AP_TYPES={env} holds no ap_int.h")
        return path
    spec = importlib.util.find_spec("hls4ml")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "templates" / "vivado" / "ap_types"
        if (path / "ap_int.h").is_file() and (path / "hls_stream.h").is_file():
            return path
    raise ExportError(
        "C simulation needs the HLS ap_types headers (ap_int.h, hls_stream.h): "
        "pip install 'quasar-vit[hls]' (they come with hls4ml), or set QVIT_AP_TYPES"
    )


def find_compiler(cxx: str | None = None) -> str:
    cxx = cxx or "g++"
    path = shutil.which(cxx)
    if path is None:
        raise ExportError(
            f"C simulation needs a C++17 compiler: '{cxx}' was not found on PATH "
            "(install g++, e.g. apt-get install g++)"
        )
    return path


def compile_csim(hls_dir: str | Path, build_dir: str | Path | None = None, cxx: str | None = None) -> Path:
    """Compile the generated sources in ``hls_dir``; returns the binary (raises ExportError)."""
    hls_dir = Path(hls_dir)
    build = Path(build_dir) if build_dir is not None else hls_dir / "build"
    build.mkdir(parents=True, exist_ok=True)
    for src in CSIM_SOURCES:
        if not (hls_dir / src).is_file():
            raise ExportError(f"{hls_dir} lacks {src}: generate the HLS code first (quasar-vit hls EXPORT)")
    binary = build / CSIM_BINARY
    cmd = [
        find_compiler(cxx),
        *CXXFLAGS,
        "-I",
        str(hls_dir),
        "-I",
        str(ap_types_dir()),
        "-o",
        str(binary),
        *[str(hls_dir / s) for s in CSIM_SOURCES],
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [l for l in proc.stderr.splitlines() if "error" in l.lower()] or proc.stderr.splitlines()
        raise ExportError("compiling the C simulation failed:\n  " + "\n  ".join(lines[:12]))
    return binary


def _read_layout(hls_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((hls_dir / LAYOUT_NAME).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{hls_dir}/{LAYOUT_NAME} is missing or unreadable ({exc}): regenerate") from None


def _reference(export_dir: Path, x: np.ndarray, layout: dict[str, Any], batch: int = 100):
    """Reference logits, codes (flat int8 per image, layout order) and accumulators (int32)."""
    from quasar_vit.export.reference import IntegerViT

    engine = IntegerViT.from_dir(export_dir)
    points, gemms = layout["points"], layout["gemms"]
    logits, codes, accs = [], [], []
    for i in range(0, len(x), batch):
        lg, tr = engine.forward(x[i : i + batch], trace=True)
        b = len(lg)
        logits.append(lg)
        codes.append(np.concatenate([tr[p["key"]].reshape(b, -1).astype(np.int8) for p in points], axis=1))
        parts = []
        for g in gemms:
            if g["kind"] == "linear":
                a = engine.linears[g["key"]].accumulate(tr[f"{g['key']}.in"])
            else:
                pre, h = f"blocks.{g['block']}", g["head"]
                if g["kind"] == "scores":
                    a = engine.act_matmul(tr[f"{pre}.q"][:, h], tr[f"{pre}.k"][:, h].transpose(0, 2, 1), 32)
                else:
                    a = engine.act_matmul(tr[f"{pre}.attn"][:, h], tr[f"{pre}.v"][:, h], 63)
            parts.append(np.asarray(a).reshape(b, -1).astype(np.int64))
        accs.append(np.concatenate(parts, axis=1))
    return np.concatenate(logits).astype(np.float32), np.concatenate(codes), np.concatenate(accs)


CYCLE_TOLERANCE = 0.10  # model vs counted cycles, per engine call


def model_cycles(layout: dict[str, Any]) -> list[int]:
    """The latency model's cycles of every engine call in ``layout["gemms"]`` (hardware/engine.py),
    priced from the GEMM shapes alone: the row tiles come from the model's own nibble program."""
    from quasar_vit.hardware.design import AcceleratorDesign
    from quasar_vit.hardware.engine import EngineTiming, gemm_cycles, layer_row_tiles, stationary_row_tiles

    d = layout["design"]
    design = AcceleratorDesign(
        d["platform"],
        float(d["clock_mhz"]),
        int(d["pe_rows"]),
        int(d["pe_cols"]),
        d["packing"],
        int(d["lut_cols"]),
        int(d["tile_tokens"]),
        int(d["tile_k"]),
        d.get("input_buffer_mem", "bram"),
    )
    timing = EngineTiming(
        int(d["axi_bytes"]),
        int(d["axi_latency"]),
        int(d["compute_depth"]),
        int(d["param_depth"]),
        int(d["output_depth"]),
        int(d["store_depth"]),
    )
    out = []
    for g in layout["gemms"]:
        if g.get("stationary"):
            tiles = stationary_row_tiles(int(g["rows"]), design.pe_rows)
        else:
            tiles = layer_row_tiles(int(g["rows"]), int(g["n8_rows"]), int(g["sections"]), design.pe_rows)
        out.append(gemm_cycles(design, timing, int(g["tokens"]), int(g["k"]), tiles, g["mode"]).total)
    return out


def compare_cycles(layout: dict[str, Any], counted: list[dict[str, Any]]) -> dict[str, Any]:
    """Per engine call: cycles counted in the C simulation beside the model's; worst relative error."""
    from quasar_vit.hardware.engine import STAGES

    model = model_cycles(layout)
    if len(counted) != len(model):
        raise ExportError(f"cycles.json has {len(counted)} records, the layout {len(model)} engine calls")
    rows, worst = [], 0.0
    for g, c, m in zip(layout["gemms"], counted, model):
        n = int(c["total"])
        err = abs(m - n) / n if n else (0.0 if m == 0 else 1.0)
        worst = max(worst, err)
        rows.append(
            {
                "key": g["key"],
                "counted": n,
                "model": int(m),
                "rel_err": round(err, 5),
                "busy": dict(zip(STAGES, c["busy"])),
            }
        )
    counted_total, model_total = sum(r["counted"] for r in rows), sum(r["model"] for r in rows)
    return {
        "per_gemm": rows,
        "max_rel_err": worst,
        "within_tolerance": worst <= CYCLE_TOLERANCE,
        "tolerance": CYCLE_TOLERANCE,
        "counted_total": counted_total,
        "model_total": model_total,
        "clock_mhz": float(layout["design"]["clock_mhz"]),
    }


def per_layer_cycles(cycles: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(layer, counted, model)`` with the per-head attention calls summed (for reports)."""
    out: dict[str, list[int]] = {}
    for r in cycles["per_gemm"]:
        key = r["key"]
        parts = key.split(".")
        if len(parts) == 4 and parts[2] in ("scores", "av"):
            key = ".".join(parts[:3])
        acc = out.setdefault(key, [0, 0])
        acc[0] += r["counted"]
        acc[1] += r["model"]
    return [(k, v[0], v[1]) for k, v in out.items()]


CYCLES_SECTION = "## C simulation: fabric cycles counted vs latency model"


def cycles_markdown(cycles: dict[str, Any]) -> str:
    """Per-layer table of counted and model cycles (attention heads summed)."""
    mhz = cycles["clock_mhz"]
    L = [
        CYCLES_SECTION,
        "",
        f"Cycles of the generated engine counted by its loop counters in the C simulation, beside the "
        f"latency model's (`hardware/engine.py`); worst engine call {100 * cycles['max_rel_err']:.2f} % "
        f"(tolerance {100 * cycles['tolerance']:.0f} %).",
        "",
        "| layer | counted cycles | model cycles | error |",
        "|---|---|---|---|",
    ]
    for k, c, m in per_layer_cycles(cycles):
        L.append(f"| {k} | {c} | {m} | {100 * (m - c) / c if c else 0.0:+.2f} % |")
    ct, mt = cycles["counted_total"], cycles["model_total"]
    L.append(
        f"| **all engine calls** | **{ct}** ({ct / mhz / 1e3:.3f} ms) | **{mt}** ({mt / mhz / 1e3:.3f} ms) | "
        f"{100 * (mt - ct) / ct if ct else 0.0:+.2f} % |"
    )
    return "\n".join(L) + "\n"


def _update_report(export_dir: Path, cycles: dict[str, Any]) -> None:
    """Put the cycles section into the export's report.md (replacing an earlier one)."""
    from quasar_vit.utils.io import atomic_write_text

    path = export_dir / "report.md"
    if not path.is_file():
        return
    text = path.read_text()
    if CYCLES_SECTION in text:
        head, rest = text.split(CYCLES_SECTION, 1)
        nxt = rest.find("\n## ")
        text = head + (rest[nxt + 1 :] if nxt >= 0 else "")
    atomic_write_text(path, text.rstrip("\n") + "\n\n" + cycles_markdown(cycles))


def _run(binary: Path, hls_dir: Path, images: Path, n: int, out: Path, ref_codes: Path | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), str(hls_dir / BLOB_NAME), str(images), str(n), str(out)]
    if ref_codes is not None:
        cmd.append(str(ref_codes))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ExportError(f"the C simulation failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}")
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        info = {}
    info["wall_seconds"] = time.perf_counter() - t0
    return info


@dataclass
class _Simulation:
    """What the C simulation and the NumPy reference produced on the same images."""

    y: np.ndarray  # labels
    logits: np.ndarray  # free-running C simulation
    codes: np.ndarray
    acc_free: np.ndarray
    acc_forced: np.ndarray  # the GEMM accumulators with every activation code forced to the reference's
    ref_logits: np.ndarray
    ref_codes: np.ndarray
    ref_acc: np.ndarray
    forced: dict[str, Any]  # the forced run's summary line
    cycles: dict[str, Any]  # counted against modelled cycles
    seconds: dict[str, float]  # compile, reference, csim_run, csim_forced_run


def _load_images(info: dict[str, Any], data_root: str | None, limit: int) -> tuple[np.ndarray, np.ndarray]:
    from quasar_vit.config import config_from_dict
    from quasar_vit.export.exporter import load_test_images

    images, y = load_test_images(config_from_dict(info["config"], stored=True), data_root, limit)
    x = np.ascontiguousarray(images.numpy(), dtype=np.float32)
    if len(x) == 0:
        raise ExportError("no test images for the C simulation")
    return x, y


def _simulate(
    export_dir: Path,
    info: dict[str, Any],
    hls: Path,
    layout: dict[str, Any],
    build: Path,
    cxx: str | None,
    data_root: str | None,
    limit: int,
) -> _Simulation:
    """Compile in ``build``, run free and with forced codes, and run the reference on the same images."""
    t_cc = time.perf_counter()
    binary = compile_csim(hls, build, cxx)
    t_cc = time.perf_counter() - t_cc
    x, y = _load_images(info, data_root, limit)
    n = len(x)
    images = build / "images.bin"
    x.tofile(images)
    t_ref = time.perf_counter()
    ref_logits, ref_codes, ref_acc = _reference(export_dir, x, layout)
    t_ref = time.perf_counter() - t_ref
    ref_codes_path = build / "ref_codes.bin"
    ref_codes.tofile(ref_codes_path)
    free = _run(binary, hls, images, n, build / "free", None)
    forced = _run(binary, hls, images, n, build / "forced", ref_codes_path)
    ncls = int(layout["model"]["num_classes"])
    cb, aw = int(layout["code_bytes_per_image"]), int(layout["acc_words_per_image"])
    read = lambda run, name, dt, w: np.fromfile(build / run / name, dt).reshape(n, w)  # noqa: E731
    try:
        counted = json.loads((build / "free" / "cycles.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"the C simulation wrote no readable cycles.json ({exc})") from None
    seconds = {"compile": round(t_cc, 3), "reference": round(t_ref, 3)}
    seconds["csim_run"] = round(float(free.get("wall_seconds", 0.0)), 3)
    seconds["csim_forced_run"] = round(float(forced.get("wall_seconds", 0.0)), 3)
    return _Simulation(
        np.asarray(y)[:n],
        read("free", "logits.bin", np.float32, ncls),
        read("free", "codes.bin", np.int8, cb),
        read("free", "acc.bin", np.int32, aw),
        read("forced", "acc.bin", np.int32, aw),
        ref_logits,
        ref_codes,
        ref_acc,
        forced,
        compare_cycles(layout, counted),
        seconds,
    )


def _mismatches_per_point(layout: dict[str, Any], code_diff: np.ndarray) -> dict[str, int]:
    """Differing activation codes per quantisation point (only the points that have any)."""
    per_point = {}
    pos = 0
    for p in layout["points"]:
        size = int(np.prod(p["shape"]))
        nd = int(code_diff[:, pos : pos + size].sum())
        if nd:
            per_point[p["key"]] = nd
        pos += size
    return per_point


def _csim_result(export_dir: Path, hls: Path, layout: dict[str, Any], s: _Simulation, t_gen: float) -> dict[str, Any]:
    """``csim.json``: the C simulation against the reference, bit for bit."""
    n = len(s.logits)
    gemm_exact = bool(np.array_equal(s.acc_forced.astype(np.int64), s.ref_acc))
    img_logits_exact = np.all(s.logits.view(np.uint32) == s.ref_logits.view(np.uint32), axis=1)
    code_diff = s.codes != s.ref_codes
    res: dict[str, Any] = {
        "export": str(export_dir),
        "hls_dir": str(hls),
        "images": int(n),
        "bit_exact_gemm": gemm_exact,
        "gemm_accumulators_compared": int(s.ref_acc.size),
        "gemm_mismatches": int((s.acc_forced.astype(np.int64) != s.ref_acc).sum()),
        "forced_code_mismatches": int(s.forced.get("code_mismatches", -1)),
        "codes_bit_exact": bool(not code_diff.any()),
        "codes_compared": int(code_diff.size),
        "code_mismatches": int(code_diff.sum()),
        "code_mismatches_per_point": _mismatches_per_point(layout, code_diff),
        "free_running_gemm_bit_exact": bool(np.array_equal(s.acc_free.astype(np.int64), s.ref_acc)),
        "logits_bit_exact": float(img_logits_exact.mean()),
        "label_agreement": float(np.mean(s.logits.argmax(1) == s.ref_logits.argmax(1))),
        "max_abs_logit_diff": float(np.abs(s.logits.astype(np.float64) - s.ref_logits).max()),
        "top1_csim": float(np.mean(s.logits.argmax(1) == s.y)),
        "top1_reference": float(np.mean(s.ref_logits.argmax(1) == s.y)),
        "seconds": {"generate": round(t_gen, 3), **s.seconds},
    }
    res["cycles"] = s.cycles
    res["passed"] = bool(gemm_exact and res["label_agreement"] >= 0.99 and s.cycles["within_tolerance"])
    return res


def run_csim(
    export_dir: str | Path,
    limit: int = 100,
    data_root: str | None = None,
    hls_dir: str | Path | None = None,
    build_dir: str | Path | None = None,
    cxx: str | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Generate the HLS C++, compile it, run it on test images and compare with the NumPy integer
    reference.

    Args:
        export_dir: the export directory.
        limit: the first ``limit`` test images.
        data_root: overrides the data root of the export's config.
        hls_dir: where the C++ is generated (default ``export_dir/hls``).
        build_dir: where it is compiled and run (default: a temporary directory, removed afterwards).
        cxx: the C++ compiler (default: found on the PATH).
        write: write ``hls/csim.json`` and add the cycle table to ``report.md``.

    Returns:
        A dict with ``images``, ``bit_exact_gemm``, ``codes_bit_exact``, ``logits_bit_exact``
        (fraction of images), ``label_agreement``, ``max_abs_logit_diff``, ``cycles``, timings and
        ``passed``.

    Raises:
        ExportError: not an export, no compiler, a failed build or run, or no test images.
    """
    from quasar_vit.export.verify import read_export

    export_dir = Path(export_dir)
    info = read_export(export_dir)
    find_compiler(cxx)
    t_gen = time.perf_counter()
    hls = generate_hls(export_dir, hls_dir)
    t_gen = time.perf_counter() - t_gen
    layout = _read_layout(hls)
    tmp_ctx = None
    if build_dir is None:
        tmp_ctx = tempfile.TemporaryDirectory(prefix="qvit-csim-")
        build = Path(tmp_ctx.name)
    else:
        build = Path(build_dir)
    try:
        sim = _simulate(export_dir, info, hls, layout, build, cxx, data_root, limit)
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    res = _csim_result(export_dir, hls, layout, sim, t_gen)
    if write:
        (hls / "csim.json").write_text(json.dumps(res, indent=2) + "\n")
        _update_report(export_dir, res["cycles"])
    return res


def csim_verdict(res: dict[str, Any]) -> str:
    """One line on a :func:`run_csim` result (printed by ``hls --csim`` and ``verify --csim``)."""
    return (
        f"csim {'PASSED' if res['passed'] else 'FAILED'}: {res['images']} images, integer GEMMs bit-exact: "
        f"{res['bit_exact_gemm']}, codes bit-exact: {res['codes_bit_exact']}, logits bit-exact on "
        f"{100 * res['logits_bit_exact']:.1f} % of images, label agreement {100 * res['label_agreement']:.1f} %, "
        f"fabric cycles counted {res['cycles']['counted_total']} vs model {res['cycles']['model_total']} "
        f"(worst engine call {100 * res['cycles']['max_rel_err']:.1f} %)"
    )


__all__ = [
    "run_csim",
    "compile_csim",
    "csim_verdict",
    "find_compiler",
    "ap_types_dir",
    "model_cycles",
    "compare_cycles",
    "per_layer_cycles",
    "cycles_markdown",
    "CYCLE_TOLERANCE",
]
