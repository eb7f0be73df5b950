"""``generate_hls``: an export directory -> Vitis-HLS-style C++ of its accelerator + host program.

The generator is *templates + data*: :func:`build_context` turns ``accelerator.json``,
``weights.npz``/``manifest.json`` and ``subnet.json`` into a plain, JSON-able dict (design
constants, one record per linear layer and per block, the list of quantisation points) and a
binary weight blob; :func:`generate_hls` renders the Jinja2 templates in ``hls/templates`` with it.
No C++ is assembled in Python code.

Every float constant is written as a C++ hexadecimal literal (``0x1.99999ap-4f``): it is the exact
bit pattern of the exported value, so the C simulation computes with the same numbers as the NumPy
integer reference engine.

Weight layout (the order the accelerator's weight tiles read them): per linear layer a
*nibble-row program* of ``nibble_rows`` rows of ``in_features`` int8 nibbles, in output-row order:
a 4-bit row is one nibble row (its code), an 8-bit row two adjacent nibble rows (signed high nibble
``w >> 4``, then unsigned low nibble ``w & 15``).  A pair never straddles a row tile of ``PE_ROWS``
rows (a zero pad row is inserted instead), so the per-row output stage combines ``16*hi + lo``
inside one tile.  ``row_kind`` (0 pad, 1 4-bit, 2 high, 3 low) describes each nibble row.
"""
from __future__ import annotations

import hashlib
import json
import os
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from quasar_vit.errors import ExportError, HardwareError
from quasar_vit.export.reference import requant_multiplier
from quasar_vit.hardware.engine import ROW_4BIT, ROW_HI, ROW_LO, ROW_PAD, EngineTiming, nibble_program
from quasar_vit.utils.io import atomic_dir, read_json

TEMPLATE_DIR = Path(__file__).parent / "templates"
BLOB_NAME = "qvit_weights.bin"
LAYOUT_NAME = "layout.json"
ALIGN = 16
GENERATOR_VERSION = 1

# rendered template -> output file
TEMPLATES = {
    "qvit_params.hpp.j2": "qvit_params.hpp",
    "qvit_pack.hpp.j2": "qvit_pack.hpp",
    "qvit_kernel.hpp.j2": "qvit_kernel.hpp",
    "qvit_kernel.cpp.j2": "qvit_kernel.cpp",
    "qvit_host.cpp.j2": "qvit_host.cpp",
    "run_hls.tcl.j2": "run_hls.tcl",
    "Makefile.j2": "Makefile",
    "README.md.j2": "README.md",
}

# g++ flags of the C simulation (the Makefile and run_csim use these)
CXXFLAGS = ["-O2", "-std=c++17", "-ffp-contract=off", "-fno-fast-math", "-Wall", "-Wno-unknown-pragmas", "-Wno-unused-label"]
CSIM_SOURCES = ["qvit_kernel.cpp", "qvit_host.cpp"]
CSIM_BINARY = "qvit_csim"



# ---- number formatting -----------------------------------------------------------------------
def hex_f32(v: Any) -> str:
    """Exact C++ literal of a float32 value."""
    f = float(np.float32(v))
    if not math.isfinite(f):
        raise ExportError(f"non-finite constant {f} in the export")
    return f"{f.hex()}f"


def hex_f64(v: Any) -> str:
    f = float(v)
    if not math.isfinite(f):
        raise ExportError(f"non-finite constant {f} in the export")
    return f.hex()


def c_ident(name: str) -> str:
    """``blocks.0.qkv`` -> ``blocks_0_qkv``."""
    return "".join(c if c.isalnum() else "_" for c in name)


# ---- packed DDR layouts -----------------------------------------------------------------------------------
def code_row_bytes(n: int, axi_bytes: int) -> int:
    """Bytes of a row of ``n`` 6-bit codes in DDR, rounded up to whole AXI beats (``code_row_bytes``)."""
    return -(-n // axi_bytes) * axi_bytes


def nibble_row_bytes(n: int, axi_bytes: int) -> int:
    """Bytes of a row of ``n`` nibbles, two per byte, rounded up to whole beats (``nibble_row_bytes``)."""
    return -(-((n + 1) // 2) // axi_bytes) * axi_bytes


def pack_nibbles(nib: np.ndarray, row_bytes: int) -> np.ndarray:
    """``[rows][k]`` nibbles (signed or unsigned 4-bit) -> ``[rows][row_bytes]`` bytes, column ``2j`` in
    the low nibble of byte ``j`` and ``2j + 1`` in its high nibble."""
    rows, k = nib.shape
    n = np.zeros((rows, 2 * row_bytes), np.uint8)
    n[:, :k] = nib.astype(np.int16) & 15
    return (n[:, 0::2] | (n[:, 1::2] << 4)).astype(np.uint8)


class _Blob:
    """The binary weight file: aligned little-endian arrays, with their offsets recorded."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.entries: list[dict[str, Any]] = []

    def add(self, name: str, arr: np.ndarray, dtype: str) -> int:
        a = np.ascontiguousarray(np.asarray(arr).astype(np.dtype(dtype).newbyteorder("<")))
        pad = (-self.size) % ALIGN
        if pad:
            self.parts.append(b"\0" * pad)
            self.size += pad
        off = self.size
        data = a.tobytes()
        self.parts.append(data)
        self.size += len(data)
        self.entries.append({"name": name, "dtype": dtype, "shape": list(a.shape), "offset": off,
                             "bytes": len(data)})
        return off

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def _read_export(export_dir: Path) -> tuple[dict, dict, dict[str, np.ndarray], dict]:
    from quasar_vit.export.intweights import load_weights

    if not export_dir.is_dir():
        raise ExportError(f"export directory not found: {export_dir}")
    apath = export_dir / "accelerator.json"
    if not apath.is_file():
        raise ExportError(f"{export_dir} is not a quasar-vit export: accelerator.json is missing")
    accel = read_json(apath, ExportError)
    if accel.get("format") != "quasar-vit-accelerator" or "design" not in accel:
        raise ExportError(f"{apath} is not a quasar-vit accelerator description")
    arrays, manifest = load_weights(export_dir)
    spath = export_dir / "subnet.json"
    subnet = manifest["subnet"]
    if spath.is_file():
        try:
            sub_file = json.loads(spath.read_text())
        except json.JSONDecodeError as exc:
            raise ExportError(f"{spath} is not valid JSON: {exc}") from None
        keys = ("embed_dim", "depth", "num_heads", "head_dim", "patch_size", "num_classes")
        if any(sub_file.get(k) != subnet.get(k) for k in keys):
            raise ExportError(f"{spath} does not match the subnet of weights.npz/manifest.json")
    return accel, manifest, arrays, subnet


def _per_nibble_row(values: np.ndarray, kinds: list[int], src: list[int]) -> np.ndarray:
    """A per-output-row float array laid out per nibble row (zero on pad and high-nibble rows)."""
    out = np.zeros(len(kinds), np.float32)
    for n, (kd, o) in enumerate(zip(kinds, src)):
        if kd in (ROW_4BIT, ROW_LO):
            out[n] = values[o]
    return out


def _design(accel: Mapping[str, Any]) -> dict[str, Any]:
    from quasar_vit.hardware.design import AcceleratorDesign

    try:
        d = AcceleratorDesign.from_dict(accel["design"])
    except HardwareError as exc:
        raise ExportError(f"accelerator.json: {exc}") from None
    from quasar_vit.hardware.params import ModelParams

    part, params = "", ModelParams()
    try:
        from quasar_vit.hardware import load_platform

        plat = load_platform(d.platform)
        part, params = plat.part, plat.params
    except Exception:  # noqa: BLE001 - a custom board file that is not at hand
        part = ""
    timing = EngineTiming.of(d, params)
    if d.packing == 4 and (d.pe_cols % 2 or d.lut_cols % 2):
        raise ExportError(f"packing 4 needs an even number of columns and LUT columns, got {d.describe()}")
    packing = d.packing
    return {
        "platform": d.platform, "part": part or "xczu9eg-ffvb1156-2-e", "part_known": bool(part),
        "clock_mhz": d.clock_mhz, "clock_period_ns": round(1000.0 / d.clock_mhz, 4),
        "pe_rows": d.pe_rows, "pe_cols": d.pe_cols, "tile_tokens": d.tile_tokens, "tile_k": d.tile_k,
        "k_chunks": d.tile_k // d.pe_cols,
        "packing": packing, "packing_code": {3: 3, 4: 4, "lut": 0}[packing], "lut_cols": d.lut_cols,
        "dsp_cols": d.dsp_cols, "units": d.units, "dsp_slices": d.dsp_slices,
        "input_buffer_mem": d.input_buffer_mem,
        "describe": d.describe(),
        "axi_bits": 8 * timing.axi_bytes, "axi_bytes": timing.axi_bytes, "axi_latency": timing.axi_latency,
        "compute_depth": timing.compute_depth, "param_depth": timing.param_depth,
        "output_depth": timing.output_depth, "store_depth": timing.store_depth,
    }


def _erf_impl() -> str:
    """Which erf the reference engine uses here: SciPy's Cephes erf or the C library's."""
    from quasar_vit.export import reference

    return "libm" if isinstance(reference._erf, np.vectorize) else "cephes"


def build_context(export_dir: str | Path) -> tuple[dict[str, Any], bytes]:
    """``(context, weight blob)`` of the export in ``export_dir`` (raises :class:`ExportError`)."""
    export_dir = Path(export_dir)
    accel, manifest, arrays, sub = _read_export(export_dir)
    design = _design(accel)
    q = manifest["quant"]
    if q.get("act_bits") != 6 or q.get("w_bits_high") != 8:
        raise ExportError(f"the generated W4A6 engine needs 6-bit activations and 4/8-bit rows, "
                          f"got A{q.get('act_bits')} W{q.get('w_bits_low')}/{q.get('w_bits_high')}")
    E, depth, hd = int(sub["embed_dim"]), int(sub["depth"]), int(sub["head_dim"])
    p, C, img = int(sub["patch_size"]), int(sub["in_chans"]), int(sub["img_size"])
    patches = (img // p) ** 2
    T = patches + 1
    srange, urange = [int(v) for v in q["act_range_signed"]], [int(v) for v in q["act_range_unsigned"]]
    blob = _Blob()
    F32 = np.float32

    def g(k: str) -> np.ndarray:
        if k not in arrays:
            raise ExportError(f"weights.npz lacks array {k!r}")
        return arrays[k]

    layers: dict[str, dict[str, Any]] = {}
    layer_rows: dict[str, tuple[list[int], list[int]]] = {}
    for info in manifest["layers"]:
        name = info["name"]
        w_int = g(f"{name}.w_int").astype(np.int32)
        M, K = w_int.shape
        is8 = g(f"{name}.is8").astype(bool)
        rows4, rows8 = g(f"{name}.rows4").astype(np.int64), g(f"{name}.rows8").astype(np.int64)
        w4, hi, lo = g(f"{name}.w4"), g(f"{name}.hi"), g(f"{name}.lo")
        if not (np.array_equal(rows8, np.flatnonzero(is8)) and np.array_equal(rows4, np.flatnonzero(~is8))):
            raise ExportError(f"{name}: row groups (rows4/rows8) do not match the bit map is8")
        kinds, src = nibble_program(is8, design["pe_rows"])
        pos4 = {int(r): i for i, r in enumerate(rows4)}
        pos8 = {int(r): i for i, r in enumerate(rows8)}
        nib = np.zeros((len(kinds), K), np.int8)
        for n, (kd, o) in enumerate(zip(kinds, src)):
            if kd == ROW_4BIT:
                nib[n] = w4[pos4[o]]
            elif kd == ROW_HI:
                nib[n] = hi[pos8[o]]
            elif kd == ROW_LO:
                nib[n] = lo[pos8[o]]
        act_step = F32(g(f"{name}.act_step"))
        scale = (act_step * g(f"{name}.step").astype(F32)).astype(F32)   # s_x * s_row, as reference.py
        bias = g(f"{name}.bias").astype(F32)
        cid = c_ident(name)
        rng = srange if info.get("act_signed", True) else urange
        ldw = nibble_row_bytes(K, design["axi_bytes"])
        layers[name] = {
            "name": name, "cname": cid, "in_features": int(K), "out_features": int(M),
            "n8_rows": int(is8.sum()), "nibble_rows": len(kinds), "pad_rows": kinds.count(ROW_PAD),
            "ldw": ldw, "ldx": code_row_bytes(K, design["axi_bytes"]),
            "act_step": hex_f32(act_step), "act_step_dec": f"{float(act_step):.9g}",
            "qn": rng[0], "qp": rng[1],
            "w_off": blob.add(f"{name}.nibbles", pack_nibbles(nib, ldw), "u1"),
            "kind_off": blob.add(f"{name}.row_kind", np.asarray(kinds, np.uint8), "u1"),
            # output-stage parameters per nibble row (the output stage reads them row tile by row tile)
            "scale_off": blob.add(f"{name}.scale", _per_nibble_row(scale, kinds, src), "f4"),
            "bias_off": blob.add(f"{name}.bias", _per_nibble_row(bias, kinds, src), "f4"),
            "ls_off": 0,
        }
        layer_rows[name] = (kinds, src)
    glob = {
        "cls_off": blob.add("cls_token", g("cls_token").astype(F32), "f4"),
        "pos_off": blob.add("pos_embed", g("pos_embed").astype(F32), "f4"),
        "norm_w_off": blob.add("norm.weight", g("norm.weight").astype(F32), "f4"),
        "norm_b_off": blob.add("norm.bias", g("norm.bias").astype(F32), "f4"),
    }
    if g("pos_embed").shape != (T, E):
        raise ExportError(f"pos_embed has shape {g('pos_embed').shape}, expected {(T, E)}")
    attn_scale = F32(manifest["attn_scale"])
    blocks = []
    points: list[dict[str, Any]] = [{"key": "patch_embed.in", "shape": [patches, p * p * C]}]
    for i in range(depth):
        pre = f"blocks.{i}"
        H = int(sub["num_heads"][i])
        hidden = layers[f"{pre}.fc1"]["out_features"]
        s = {n: F32(g(f"{pre}.{n}.step")) for n in ("aq_q", "aq_k", "aq_v", "aq_attn")}
        proj_step = F32(g(f"{pre}.proj.act_step"))
        try:
            mult, shift = requant_multiplier(np.float64(s["aq_attn"]) * np.float64(s["aq_v"]) / np.float64(proj_step))
        except ValueError as exc:
            raise ExportError(f"{pre}: {exc}") from None
        for lname, ls_key in ((f"{pre}.proj", "ls1"), (f"{pre}.fc2", "ls2")):
            kinds, src = layer_rows[lname]
            layers[lname]["ls_off"] = blob.add(f"{lname}.ls", _per_nibble_row(g(f"{pre}.{ls_key}").astype(F32), kinds, src), "f4")
        qkv = layers[f"{pre}.qkv"]
        if qkv["out_features"] != 3 * H * hd or layers[f"{pre}.proj"]["in_features"] != H * hd:
            raise ExportError(f"{pre}: qkv/proj shapes do not match {H} heads of dim {hd}")
        blocks.append({
            "index": i, "cname": f"block{i}", "heads": H, "hidden": int(hidden), "attn_dim": H * hd,
            "qkv": qkv["cname"], "proj": layers[f"{pre}.proj"]["cname"],
            "fc1": layers[f"{pre}.fc1"]["cname"], "fc2": layers[f"{pre}.fc2"]["cname"],
            "s_q": hex_f32(s["aq_q"]), "s_k": hex_f32(s["aq_k"]), "s_v": hex_f32(s["aq_v"]),
            "s_attn": hex_f32(s["aq_attn"]),
            "score_scale": hex_f32(F32(s["aq_q"] * s["aq_k"])),
            "requant_mult": mult, "requant_shift": shift,
            "norm1_w_off": blob.add(f"{pre}.norm1.weight", g(f"{pre}.norm1.weight").astype(F32), "f4"),
            "norm1_b_off": blob.add(f"{pre}.norm1.bias", g(f"{pre}.norm1.bias").astype(F32), "f4"),
            "norm2_w_off": blob.add(f"{pre}.norm2.weight", g(f"{pre}.norm2.weight").astype(F32), "f4"),
            "norm2_b_off": blob.add(f"{pre}.norm2.bias", g(f"{pre}.norm2.bias").astype(F32), "f4"),
        })
        points += [{"key": f"{pre}.qkv.in", "shape": [T, E]},
                   {"key": f"{pre}.q", "shape": [H, T, hd]}, {"key": f"{pre}.k", "shape": [H, T, hd]},
                   {"key": f"{pre}.v", "shape": [H, T, hd]}, {"key": f"{pre}.attn", "shape": [H, T, T]},
                   {"key": f"{pre}.proj.in", "shape": [T, H * hd]},
                   {"key": f"{pre}.fc1.in", "shape": [T, E]}, {"key": f"{pre}.fc2.in", "shape": [T, hidden]}]
    points.append({"key": "head.in", "shape": [E]})
    # GEMM accumulators dumped by the host, in execution order
    # GEMM calls in execution order: their accumulators are dumped by the host, their cycles counted;
    # each carries its shape so that the latency model can price it independently of the kernel
    sections = {l["name"]: int(l.get("sections", 1)) for l in manifest["layers"]}

    def lin(key: str, tokens: int, mode: str) -> dict[str, Any]:
        L = layers[key]
        return {"key": key, "kind": "linear", "shape": [tokens, L["out_features"]], "tokens": tokens,
                "k": L["in_features"], "rows": L["out_features"], "n8_rows": L["n8_rows"],
                "sections": sections[key], "mode": mode}

    gemms: list[dict[str, Any]] = [lin("patch_embed", patches, "affine")]
    for i, b in enumerate(blocks):
        pre = f"blocks.{i}"
        gemms.append(lin(f"{pre}.qkv", T, "affine"))
        for h in range(b["heads"]):
            gemms.append({"key": f"{pre}.scores.{h}", "kind": "scores", "block": i, "head": h, "shape": [T, T],
                          "tokens": T, "k": hd, "rows": T, "stationary": True, "mode": "scores"})
        for h in range(b["heads"]):
            gemms.append({"key": f"{pre}.av.{h}", "kind": "av", "block": i, "head": h, "shape": [T, hd],
                          "tokens": T, "k": T, "rows": hd, "stationary": True, "mode": "requant"})
        gemms += [lin(f"{pre}.proj", T, "ls_residual"), lin(f"{pre}.fc1", T, "affine"),
                  lin(f"{pre}.fc2", T, "ls_residual")]
    gemms.append(lin("head", 1, "affine"))

    lin_list = [layers[l["name"]] for l in manifest["layers"]]
    max_nib = max([l["nibble_rows"] for l in lin_list] + [2 * n + n // max(1, design["pe_rows"]) + 2 for n in (T, hd)])
    blob_bytes = blob.bytes()
    export_info = {}
    ejson = export_dir / "export.json"
    if ejson.is_file():
        try:
            e = json.loads(ejson.read_text())
            export_info = {"config_name": e.get("config", {}).get("name", ""),
                           "checkpoint_step": e.get("checkpoint_step")}
        except json.JSONDecodeError:
            export_info = {}
    model = {
        "name": str(export_info.get("config_name") or "subnet"),
        "embed_dim": E, "depth": depth, "head_dim": hd, "patch_size": p, "in_chans": C, "img_size": img,
        "grid": img // p, "patches": patches, "tokens": T, "patch_dim": p * p * C,
        "num_classes": layers["head"]["out_features"], "num_heads": [int(h) for h in sub["num_heads"]],
        "mlp_hidden": [b["hidden"] for b in blocks], "w8_shares": list(sub.get("w8_shares", [])),
        "act_qn": srange[0], "act_qp": srange[1], "prob_qn": urange[0], "prob_qp": urange[1],
        "ln_eps": hex_f64(manifest["layer_norm_eps"]), "ln_eps_dec": repr(float(manifest["layer_norm_eps"])),
        "attn_scale": hex_f32(attn_scale), "erf": _erf_impl(),
        "max_heads": max(int(h) for h in sub["num_heads"]),
        "max_width": max([E, 3 * max(int(h) for h in sub["num_heads"]) * hd] + [b["hidden"] for b in blocks]),
        "max_nibble_rows": int(max_nib),
        "depth_x": max(gm["tokens"] * code_row_bytes(gm["k"], design["axi_bytes"]) for gm in gemms),
        "depth_w": max([l["nibble_rows"] * l["ldw"] for l in lin_list]
                       + [max_nib * nibble_row_bytes(max(T, hd), design["axi_bytes"])]),
        "depth_y": T * max([E, T, 3 * max(int(h) for h in sub["num_heads"]) * hd] + [b["hidden"] for b in blocks]),
        "depth_codes": T * max(b["attn_dim"] for b in blocks),
        "total_rows": sum(l["out_features"] for l in lin_list),
        "total_n8": sum(l["n8_rows"] for l in lin_list),
    }
    ctx = {
        "generator": {"version": GENERATOR_VERSION, "tool": "quasar-vit hls"},
        "design": design, "model": model, "layers": lin_list, "blocks": blocks, "globals": glob,
        "points": points, "gemms": gemms,
        "code_bytes_per_image": int(sum(int(np.prod(pt["shape"])) for pt in points)),
        "acc_words_per_image": int(sum(int(np.prod(gm["shape"])) for gm in gemms)),
        "blob": {"file": BLOB_NAME, "bytes": len(blob_bytes), "sha256": hashlib.sha256(blob_bytes).hexdigest(),
                 "entries": blob.entries},
        "build": {"cxxflags": " ".join(CXXFLAGS), "sources": CSIM_SOURCES, "binary": CSIM_BINARY,
                  "ap_types": _ap_types_hint()},
    }
    return ctx, blob_bytes


def _ap_types_hint() -> str:
    """Where the Makefile looks for ap_types by default (the hls4ml copy when installed)."""
    from quasar_vit.hls.csim import ap_types_dir

    try:
        return str(ap_types_dir())
    except ExportError:
        return "/path/to/ap_types"


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    return env


def render(ctx: Mapping[str, Any]) -> dict[str, str]:
    """``{file name: text}`` of every template rendered with ``ctx``."""
    env = _env()
    return {out: env.get_template(tpl).render(**ctx) for tpl, out in TEMPLATES.items()}


def generate_hls(export_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Generate the HLS kernel, host program, weight blob and build scripts; returns the output dir.

    Default output: ``export_dir/hls``.  Deterministic: the same export gives identical files.
    """
    export_dir = Path(export_dir)
    out = Path(out_dir) if out_dir is not None else export_dir / "hls"
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / LAYOUT_NAME).is_file())):
        raise ExportError(f"--out {out} exists and is not an earlier HLS output (no {LAYOUT_NAME}); "
                          "choose a new or empty directory")
    ctx, blob = build_context(export_dir)
    files = render(ctx)
    with atomic_dir(out) as tmp:
        _write_hls(tmp, ctx, blob, files)
    return out


def _write_hls(out: Path, ctx: dict, blob: bytes, files: dict[str, str]) -> None:
    os.chmod(out, 0o755)
    (out / BLOB_NAME).write_bytes(blob)
    for name, text in files.items():
        (out / name).write_text(text)
    layout = {"format": "quasar-vit-hls-layout", "version": GENERATOR_VERSION,
              "points": ctx["points"], "gemms": ctx["gemms"], "model": ctx["model"], "design": ctx["design"],
              "code_bytes_per_image": ctx["code_bytes_per_image"], "acc_words_per_image": ctx["acc_words_per_image"],
              "blob": {k: ctx["blob"][k] for k in ("file", "bytes", "sha256")}, "files": sorted(files) + [BLOB_NAME],
              "build": ctx["build"]}
    (out / LAYOUT_NAME).write_text(json.dumps(layout, indent=2) + "\n")


__all__ = ["generate_hls", "build_context", "render", "nibble_program", "hex_f32", "hex_f64", "CXXFLAGS",
           "CSIM_SOURCES", "CSIM_BINARY", "BLOB_NAME", "LAYOUT_NAME"]
