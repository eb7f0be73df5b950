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
from quasar_vit.export.ir import IntBlock, IntLinear, IntViT, load_ir
from quasar_vit.export.reference import ERF_IMPL
from quasar_vit.hardware.engine import ROW_4BIT, ROW_HI, ROW_LO, ROW_PAD, EngineTiming, nibble_program
from quasar_vit.space import nest_geometry
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
CXXFLAGS = [
    "-O2",
    "-std=c++17",
    "-ffp-contract=off",
    "-fno-fast-math",
    "-Wall",
    "-Wno-unknown-pragmas",
    "-Wno-unused-label",
]
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
        self.entries.append({"name": name, "dtype": dtype, "shape": list(a.shape), "offset": off, "bytes": len(data)})
        return off

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def _read_export(export_dir: Path) -> tuple[dict, IntViT, dict]:
    """``(accelerator.json, the export's IntViT, export.json facts)``; raises :class:`ExportError`."""
    if not export_dir.is_dir():
        raise ExportError(f"export directory not found: {export_dir}")
    apath = export_dir / "accelerator.json"
    if not apath.is_file():
        raise ExportError(f"{export_dir} is not a quasar-vit export: accelerator.json is missing")
    accel = read_json(apath, ExportError)
    if accel.get("format") != "quasar-vit-accelerator" or "design" not in accel:
        raise ExportError(f"{apath} is not a quasar-vit accelerator description")
    ir = load_ir(export_dir)
    if ir.nonlinear != "float":
        raise ExportError(
            "the HLS kernel runs LayerNorm/softmax/GELU in float on the host; this export uses integer "
            "nonlinear ops (model.nonlinear: integer), which the HLS path does not implement"
        )
    spath = export_dir / "subnet.json"
    if spath.is_file():
        try:
            sub_file = json.loads(spath.read_text())
        except json.JSONDecodeError as exc:
            raise ExportError(f"{spath} is not valid JSON: {exc}") from None
        sub_file = nest_geometry(sub_file)  # a subnet.json written before ViTGeometry is flat
        keys = ("embed_dim", "depth", "num_heads", "geometry")
        if any(sub_file.get(k) != ir.subnet.get(k) for k in keys):
            raise ExportError(f"{spath} does not match the subnet of weights.npz/manifest.json")
    info: dict[str, Any] = {}
    ejson = export_dir / "export.json"
    if ejson.is_file():
        try:
            e = json.loads(ejson.read_text())
            info = {"config_name": e.get("config", {}).get("name", ""), "checkpoint_step": e.get("checkpoint_step")}
        except json.JSONDecodeError:
            info = {}
    return accel, ir, info


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
    if d.pe_rows < 2:
        raise ExportError("the engine needs pe_rows >= 2: an 8-bit row's two nibble rows must share a row tile")
    if d.packing == 4 and (d.pe_cols % 2 or d.lut_cols % 2):
        raise ExportError(f"packing 4 needs an even number of columns and LUT columns, got {d.describe()}")
    packing = d.packing
    return {
        "platform": d.platform,
        "part": part or "xczu9eg-ffvb1156-2-e",
        "part_known": bool(part),
        "clock_mhz": d.clock_mhz,
        "clock_period_ns": round(1000.0 / d.clock_mhz, 4),
        "pe_rows": d.pe_rows,
        "pe_cols": d.pe_cols,
        "tile_tokens": d.tile_tokens,
        "tile_k": d.tile_k,
        "k_chunks": d.tile_k // d.pe_cols,
        "packing": packing,
        "packing_code": {3: 3, 4: 4, "lut": 0}[packing],
        "lut_cols": d.lut_cols,
        "dsp_cols": d.dsp_cols,
        "units": d.units,
        "dsp_slices": d.dsp_slices,
        "input_buffer_mem": d.input_buffer_mem,
        "describe": d.describe(),
        "axi_bits": 8 * timing.axi_bytes,
        "axi_bytes": timing.axi_bytes,
        "axi_latency": timing.axi_latency,
        "compute_depth": timing.compute_depth,
        "param_depth": timing.param_depth,
        "output_depth": timing.output_depth,
        "store_depth": timing.store_depth,
    }


def _layer_record(lin: IntLinear, design: Mapping[str, Any], blob: _Blob, ls: np.ndarray | None) -> dict[str, Any]:
    """A linear layer's nibble-row program and output-stage parameters, added to the blob."""
    kinds, src = nibble_program(lin.is8, design["pe_rows"])
    pos4 = {int(r): i for i, r in enumerate(lin.rows4)}
    pos8 = {int(r): i for i, r in enumerate(lin.rows8)}
    nib = np.zeros((len(kinds), lin.in_features), np.int8)
    for n, (kd, o) in enumerate(zip(kinds, src)):
        if kd == ROW_4BIT:
            nib[n] = lin.w4[pos4[o]]
        elif kd == ROW_HI:
            nib[n] = lin.hi[pos8[o]]
        elif kd == ROW_LO:
            nib[n] = lin.lo[pos8[o]]
    name, ab = lin.name, design["axi_bytes"]
    ldw = nibble_row_bytes(lin.in_features, ab)
    return {
        "name": name,
        "cname": c_ident(name),
        "in_features": lin.in_features,
        "out_features": lin.out_features,
        "n8_rows": lin.n8_rows,
        "nibble_rows": len(kinds),
        "pad_rows": kinds.count(ROW_PAD),
        "sections": lin.sections,
        "ldw": ldw,
        "ldx": code_row_bytes(lin.in_features, ab),
        "act_step": hex_f32(lin.act_step),
        "act_step_dec": f"{float(lin.act_step):.9g}",
        "qn": lin.act_range[0],
        "qp": lin.act_range[1],
        "w_off": blob.add(f"{name}.nibbles", pack_nibbles(nib, ldw), "u1"),
        "kind_off": blob.add(f"{name}.row_kind", np.asarray(kinds, np.uint8), "u1"),
        # output-stage parameters per nibble row (the output stage reads them row tile by row tile)
        "scale_off": blob.add(f"{name}.scale", _per_nibble_row(lin.scale, kinds, src), "f4"),
        "bias_off": blob.add(f"{name}.bias", _per_nibble_row(lin.bias, kinds, src), "f4"),
        "ls_off": blob.add(f"{name}.ls", _per_nibble_row(ls, kinds, src), "f4") if ls is not None else 0,
    }


def _block_record(blk: IntBlock, layers: Mapping[str, dict[str, Any]], blob: _Blob) -> dict[str, Any]:
    """A block's layers, attention steps, requantisation and LayerNorm offsets."""
    mult, shift = blk.requant
    p = f"blocks.{blk.index}"
    return {
        "index": blk.index,
        "cname": f"block{blk.index}",
        "heads": blk.heads,
        "hidden": blk.fc1.out_features,
        "attn_dim": blk.attn_dim,
        **{n: layers[f"{p}.{n}"]["cname"] for n in ("qkv", "proj", "fc1", "fc2")},
        "s_q": hex_f32(blk.s_q),
        "s_k": hex_f32(blk.s_k),
        "s_v": hex_f32(blk.s_v),
        "s_attn": hex_f32(blk.s_attn),
        "score_scale": hex_f32(blk.score_scale),
        "requant_mult": mult,
        "requant_shift": shift,
        "norm1_w_off": blob.add(f"{p}.norm1.weight", blk.norm1[0], "f4"),
        "norm1_b_off": blob.add(f"{p}.norm1.bias", blk.norm1[1], "f4"),
        "norm2_w_off": blob.add(f"{p}.norm2.weight", blk.norm2[0], "f4"),
        "norm2_b_off": blob.add(f"{p}.norm2.bias", blk.norm2[1], "f4"),
    }


def _points(ir: IntViT) -> list[dict[str, Any]]:
    """Every quantisation point the host dumps, in the reference trace's order."""
    T, E, hd = ir.tokens, ir.embed_dim, ir.head_dim
    out: list[dict[str, Any]] = [{"key": "patch_embed.in", "shape": [T - 1, ir.patch_embed.in_features]}]
    for b in ir.blocks:
        p, H = f"blocks.{b.index}", b.heads
        out += [
            {"key": f"{p}.qkv.in", "shape": [T, E]},
            {"key": f"{p}.q", "shape": [H, T, hd]},
            {"key": f"{p}.k", "shape": [H, T, hd]},
            {"key": f"{p}.v", "shape": [H, T, hd]},
            {"key": f"{p}.attn", "shape": [H, T, T]},
            {"key": f"{p}.proj.in", "shape": [T, H * hd]},
            {"key": f"{p}.fc1.in", "shape": [T, E]},
            {"key": f"{p}.fc2.in", "shape": [T, b.fc1.out_features]},
        ]
    out.append({"key": "head.in", "shape": [E]})
    return out


def _gemms(ir: IntViT) -> list[dict[str, Any]]:
    """Engine calls in execution order, each with the shape the latency model prices it from."""
    T, hd = ir.tokens, ir.head_dim

    def lin(l: IntLinear, tokens: int, mode: str) -> dict[str, Any]:
        return {
            "key": l.name,
            "kind": "linear",
            "shape": [tokens, l.out_features],
            "tokens": tokens,
            "k": l.in_features,
            "rows": l.out_features,
            "n8_rows": l.n8_rows,
            "sections": l.sections,
            "mode": mode,
        }

    out = [lin(ir.patch_embed, T - 1, "affine")]
    for b in ir.blocks:
        p = f"blocks.{b.index}"
        out.append(lin(b.qkv, T, "affine"))
        out += [
            {
                "key": f"{p}.scores.{h}",
                "kind": "scores",
                "block": b.index,
                "head": h,
                "shape": [T, T],
                "tokens": T,
                "k": hd,
                "rows": T,
                "stationary": True,
                "mode": "scores",
            }
            for h in range(b.heads)
        ]
        out += [
            {
                "key": f"{p}.av.{h}",
                "kind": "av",
                "block": b.index,
                "head": h,
                "shape": [T, hd],
                "tokens": T,
                "k": T,
                "rows": hd,
                "stationary": True,
                "mode": "requant",
            }
            for h in range(b.heads)
        ]
        out += [lin(b.proj, T, "ls_residual"), lin(b.fc1, T, "affine"), lin(b.fc2, T, "ls_residual")]
    out.append(lin(ir.head, 1, "affine"))
    return out


def _model_record(
    ir: IntViT, lin_list: list[dict[str, Any]], gemms: list[dict[str, Any]], design: Mapping[str, Any], name: str
) -> dict[str, Any]:
    """Model constants of qvit_params.hpp, and the m_axi depths of the subnet's largest GEMM."""
    sub, T, E, hd = ir.subnet, ir.tokens, ir.embed_dim, ir.head_dim
    p, C, img = ir.patch_size, ir.geometry.in_chans, ir.geometry.img_size
    heads = [b.heads for b in ir.blocks]
    hidden = [b.fc1.out_features for b in ir.blocks]
    stationary = [len(nibble_program([True] * n, design["pe_rows"])[0]) for n in (T, hd)]  # k rows, v columns
    max_nib = max([l["nibble_rows"] for l in lin_list] + stationary)
    ab = design["axi_bytes"]
    return {
        "name": name,
        "embed_dim": E,
        "depth": len(ir.blocks),
        "head_dim": hd,
        "patch_size": p,
        "in_chans": C,
        "img_size": img,
        "grid": img // p,
        "patches": T - 1,
        "tokens": T,
        "patch_dim": p * p * C,
        "num_classes": ir.head.out_features,
        "num_heads": heads,
        "mlp_hidden": hidden,
        "w8_shares": list(sub.get("w8_shares", [])),
        "act_qn": ir.act_range_signed[0],
        "act_qp": ir.act_range_signed[1],
        "prob_qn": ir.act_range_unsigned[0],
        "prob_qp": ir.act_range_unsigned[1],
        "ln_eps": hex_f64(ir.layer_norm_eps),
        "ln_eps_dec": repr(float(ir.layer_norm_eps)),
        "attn_scale": hex_f32(ir.attn_scale),
        "erf": ERF_IMPL,
        "max_heads": max(heads),
        "max_width": max([E, 3 * max(heads) * hd] + hidden),
        "max_nibble_rows": int(max_nib),
        "depth_x": max(g["tokens"] * code_row_bytes(g["k"], ab) for g in gemms),
        "depth_w": max([l["nibble_rows"] * l["ldw"] for l in lin_list] + [max_nib * nibble_row_bytes(max(T, hd), ab)]),
        "depth_y": T * max([E, T, 3 * max(heads) * hd] + hidden),
        "depth_codes": T * max(b.attn_dim for b in ir.blocks),
        "total_rows": sum(l["out_features"] for l in lin_list),
        "total_n8": sum(l["n8_rows"] for l in lin_list),
    }


def build_context(export_dir: str | Path) -> tuple[dict[str, Any], bytes]:
    """``(context, weight blob)`` of the export in ``export_dir`` (raises :class:`ExportError`)."""
    accel, ir, info = _read_export(Path(export_dir))
    design = _design(accel)
    if ir.act_range_signed != (-32, 31) or ir.act_range_unsigned != (0, 63):
        raise ExportError(
            f"the generated W4A6 engine needs 6-bit activations, got signed {ir.act_range_signed} "
            f"and unsigned {ir.act_range_unsigned} code ranges"
        )
    if any(l.w4.size and (l.w4.min() < -8 or l.w4.max() > 7) for l in ir.linears()):
        raise ExportError("the generated W4A6 engine needs 4-bit low-precision rows (codes in [-8, 7])")
    blob = _Blob()
    layer_scales = {b.proj.name: b.ls1 for b in ir.blocks} | {b.fc2.name: b.ls2 for b in ir.blocks}
    layers = {l.name: _layer_record(l, design, blob, layer_scales.get(l.name)) for l in ir.linears()}
    glob = {
        "cls_off": blob.add("cls_token", ir.cls_token, "f4"),
        "pos_off": blob.add("pos_embed", ir.pos_embed, "f4"),
        "norm_w_off": blob.add("norm.weight", ir.norm[0], "f4"),
        "norm_b_off": blob.add("norm.bias", ir.norm[1], "f4"),
    }
    blocks = [_block_record(b, layers, blob) for b in ir.blocks]
    points, gemms = _points(ir), _gemms(ir)
    lin_list = list(layers.values())
    blob_bytes = blob.bytes()
    ctx = {
        "generator": {"version": GENERATOR_VERSION, "tool": "quasar-vit hls"},
        "design": design,
        "model": _model_record(ir, lin_list, gemms, design, str(info.get("config_name") or "subnet")),
        "layers": lin_list,
        "blocks": blocks,
        "globals": glob,
        "points": points,
        "gemms": gemms,
        "code_bytes_per_image": int(sum(int(np.prod(pt["shape"])) for pt in points)),
        "acc_words_per_image": int(sum(int(np.prod(gm["shape"])) for gm in gemms)),
        "blob": {
            "file": BLOB_NAME,
            "bytes": len(blob_bytes),
            "sha256": hashlib.sha256(blob_bytes).hexdigest(),
            "entries": blob.entries,
        },
        "build": {
            "cxxflags": " ".join(CXXFLAGS),
            "sources": CSIM_SOURCES,
            "binary": CSIM_BINARY,
            "ap_types": _ap_types_hint(),
        },
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

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    return env


def render(ctx: Mapping[str, Any]) -> dict[str, str]:
    """``{file name: text}`` of every template rendered with ``ctx``."""
    env = _env()
    return {out: env.get_template(tpl).render(**ctx) for tpl, out in TEMPLATES.items()}


def generate_hls(export_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Generate the HLS kernel, host program, weight blob and build scripts for an export folder.

    Deterministic: the same export gives identical files, so a regenerated folder diffs clean.

    Args:
        export_dir: a folder written by :func:`quasar_vit.export.export_subnet` (its ``manifest.json``,
            ``weights.npz`` and ``accelerator.json`` are the only inputs).
        out_dir: where to write; default ``export_dir/hls``.  An existing folder is replaced only if
            it is empty or an earlier HLS output (it holds a layout file).

    Returns:
        The output folder.
    """
    export_dir = Path(export_dir)
    out = Path(out_dir) if out_dir is not None else export_dir / "hls"
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / LAYOUT_NAME).is_file())):
        raise ExportError(
            f"--out {out} exists and is not an earlier HLS output (no {LAYOUT_NAME}); choose a new or empty directory"
        )
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
    layout = {
        "format": "quasar-vit-hls-layout",
        "version": GENERATOR_VERSION,
        "points": ctx["points"],
        "gemms": ctx["gemms"],
        "model": ctx["model"],
        "design": ctx["design"],
        "code_bytes_per_image": ctx["code_bytes_per_image"],
        "acc_words_per_image": ctx["acc_words_per_image"],
        "blob": {k: ctx["blob"][k] for k in ("file", "bytes", "sha256")},
        "files": sorted(files) + [BLOB_NAME],
        "build": ctx["build"],
    }
    (out / LAYOUT_NAME).write_text(json.dumps(layout, indent=2) + "\n")


__all__ = [
    "generate_hls",
    "build_context",
    "render",
    "nibble_program",
    "hex_f32",
    "hex_f64",
    "CXXFLAGS",
    "CSIM_SOURCES",
    "CSIM_BINARY",
    "BLOB_NAME",
    "LAYOUT_NAME",
]
