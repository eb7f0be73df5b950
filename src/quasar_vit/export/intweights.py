"""Integer weights of an extracted subnet, laid out the way the W4A6 accelerator reads them.

:func:`integer_weights` turns a :class:`~quasar_vit.models.vit.QuantViT` into a flat dict of NumPy
arrays (saved as ``weights.npz``) plus a JSON-able manifest (``manifest.json``).  Everything the
integer reference engine, the ONNX graphs and the torch.export deployment model need comes from this
one dict, so the three cannot drift apart.

Key layout (``L`` is a linear layer name from ``SubnetConfig.linear_layers()``: ``patch_embed``,
``blocks.{i}.qkv``, ``blocks.{i}.proj``, ``blocks.{i}.fc1``, ``blocks.{i}.fc2``, ``head``):

===========================  ============  =====================================================
key                          dtype/shape   meaning
===========================  ============  =====================================================
``L.w_int``                  int8 [O, I]   integer weight code of every row (4-bit rows in
                                           [-8, 7], 8-bit rows in [-128, 127])
``L.step``                   f32 [O]       per-row step: weight = ``w_int * step``
``L.is8``                    bool [O]      per-row bit map: True for an 8-bit row
``L.bits``                   u8 [O]        the same bit map as bit widths (4 or 8)
``L.rows4`` / ``L.rows8``    i32 [n4]/[n8] indices of the 4-bit / 8-bit rows (row groups)
``L.w4``                     int8 [n4, I]  the 4-bit rows: one nibble pass each
``L.hi``                     int8 [n8, I]  8-bit rows, signed high nibble ``w_int >> 4`` in [-8, 7]
``L.lo``                     u8 [n8, I]    8-bit rows, unsigned low nibble ``w_int & 15`` in [0, 15]
``L.bias``                   f32 [O]       bias (added after the per-row rescale)
``L.act_step``               f32 []        step of the layer's input activation quantizer
``cls_token``                f32 [E]       class token
``pos_embed``                f32 [T, E]    position embedding (T = patches + 1)
``blocks.{i}.norm1.weight``  f32 [E]       LayerNorm parameters (also ``.bias``, ``norm2``)
``blocks.{i}.ls1`` / ``ls2`` f32 [E]       layer scales of the attention / MLP branch
``blocks.{i}.aq_q.step``     f32 []        steps of the attention operands q, k, v (signed) and of
                                           the softmax probabilities ``aq_attn`` (unsigned)
``norm.weight`` / ``.bias``  f32 [E]       final LayerNorm
===========================  ============  =====================================================

``w_int == 16 * hi + lo`` holds exactly for every 8-bit row (see :func:`nibble_split`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypedDict, cast

import numpy as np
import torch

from quasar_vit.errors import ExportError
from quasar_vit.hardware.engine import nibble_join, nibble_split
from quasar_vit.quantization.lsq import ActQuantizer, effective_step, qrange

if TYPE_CHECKING:  # the models are imported lazily at run time (see _check_exportable)
    from quasar_vit.models.layers import Block, QuantLinear
    from quasar_vit.models.vit import QuantViT

FORMAT = "quasar-vit-intweights"
VERSION = 1
BLOCK_LINEARS = ("qkv", "proj", "fc1", "fc2")
ATTN_QUANTIZERS = ("aq_q", "aq_k", "aq_v", "aq_attn")


class LayerInfo(TypedDict):
    """One entry of ``manifest["layers"]``: a linear layer's shape and how its input is quantized."""

    name: str
    in_features: int
    out_features: int
    n8_rows: int
    sections: int
    act_signed: bool


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _act_step(aq: ActQuantizer) -> np.ndarray:
    return np.asarray(float(effective_step(aq.step.detach())), dtype=np.float32)


def _linear(prefix: str, layer: QuantLinear, out: dict[str, np.ndarray]) -> LayerInfo:
    w_t, step_t, is8_t = layer.integer_weights()
    w_int, step, is8 = _np(w_t).astype(np.int8), _np(step_t).astype(np.float32), _np(is8_t).astype(bool)
    bits_lo, bits_hi = layer.quant.w_bits_low, layer.quant.w_bits_high
    rows8 = np.flatnonzero(is8).astype(np.int32)
    rows4 = np.flatnonzero(~is8).astype(np.int32)
    hi, lo = nibble_split(w_int[rows8])
    out[f"{prefix}.w_int"] = w_int
    out[f"{prefix}.step"] = step
    out[f"{prefix}.is8"] = is8
    out[f"{prefix}.bits"] = np.where(is8, bits_hi, bits_lo).astype(np.uint8)
    out[f"{prefix}.rows4"] = rows4
    out[f"{prefix}.rows8"] = rows8
    out[f"{prefix}.w4"] = w_int[rows4]
    out[f"{prefix}.hi"] = hi
    out[f"{prefix}.lo"] = lo
    out[f"{prefix}.bias"] = _np(layer.bias).astype(np.float32)
    out[f"{prefix}.act_step"] = _act_step(layer.aq)
    return {
        "name": prefix,
        "in_features": int(w_int.shape[1]),
        "out_features": int(w_int.shape[0]),
        "n8_rows": int(len(rows8)),
        "sections": int(layer.sections),
        "act_signed": bool(layer.aq.signed),
    }


@torch.no_grad()
def integer_weights(model: torch.nn.Module) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, manifest)`` of a :class:`QuantViT` (see the module docstring for the keys)."""
    vit = _check_exportable(model)
    sub = vit.subnet
    arrays: dict[str, np.ndarray] = {}  # insertion order is the order of weights.npz
    layers = [_linear("patch_embed", vit.patch_embed, arrays)]
    arrays["cls_token"] = _np(vit.cls_token).reshape(-1).astype(np.float32)
    arrays["pos_embed"] = _np(vit.pos_embed)[0].astype(np.float32)
    eps: list[float] = []
    for i, blk in enumerate(vit.blocks):
        # a QuantViT's ModuleList holds only Blocks (its constructor takes Sequence[Block])
        layers += _block(f"blocks.{i}", cast("Block", blk), sub.embed_dim, arrays, eps)
    arrays["norm.weight"] = _np(vit.norm.weight).astype(np.float32)
    arrays["norm.bias"] = _np(vit.norm.bias).astype(np.float32)
    eps.append(float(vit.norm.eps))
    layers.append(_linear("head", vit.head, arrays))
    if vit.nonlinear == "integer":
        _integer_arrays(vit, arrays)
    if len(set(eps)) != 1:
        raise ExportError("LayerNorms with different eps are not supported")
    names = [l.name for l in sub.linear_layers()]
    if names != [l["name"] for l in layers]:  # pragma: no cover - internal consistency
        raise ExportError("exported layers do not match SubnetConfig.linear_layers()")
    return arrays, _manifest(vit, layers, eps[0], arrays)


def _integer_arrays(vit: QuantViT, arrays: dict[str, np.ndarray]) -> None:
    """The integer nonlinear ops' constants (int64) and tables (``nonlinear: integer``).

    They come from :func:`quasar_vit.models.intpath.integer_constants`, the functions the model's
    own forward derives them with, so the export holds the integers the model computed with.
    """
    from quasar_vit.models.intpath import integer_constants
    from quasar_vit.quantization import intops

    if not bool(vit.res_q.initialized):
        raise ExportError("the residual quantizer of this integer model was never calibrated: nothing to export")
    for k, v in integer_constants(vit).items():
        arrays[k] = v.detach().cpu().numpy().astype(np.int64)
    arrays["tables.rsqrt"] = np.array(intops.rsqrt_table())
    arrays["tables.exp2"] = np.array(intops.exp2_table(vit.quant.softmax_frac_bits))


def _check_exportable(model: torch.nn.Module) -> QuantViT:
    """``model`` itself, checked to be an extracted, quantized QuantViT whose bit widths the W4A6 array runs."""
    from quasar_vit.models.vit import QuantViT

    if not isinstance(model, QuantViT):
        raise ExportError(f"expected an extracted QuantViT, got {type(model).__name__}")
    q = model.quant
    if not q.enabled:
        raise ExportError(
            "quantization is disabled in this checkpoint's config (quant.enabled=false): "
            "there are no integer weights to export"
        )
    if q.w_bits_high != 8 or q.w_bits_low > 4:
        raise ExportError(f"the W4A6 array needs <=4-bit and 8-bit rows, got {q.w_bits_low}/{q.w_bits_high}")
    return model


def _block(p: str, blk: Block, embed_dim: int, arrays: dict[str, np.ndarray], eps: list[float]) -> list[LayerInfo]:
    """Add block ``p``'s arrays (norms, linears, attention quantizers, layer scales) to ``arrays`` and
    its LayerNorm eps to ``eps``; return its linear layers' manifest entries."""
    layers: list[LayerInfo] = []
    for n in ("norm1", "norm2"):
        norm = getattr(blk, n)
        arrays[f"{p}.{n}.weight"] = _np(norm.weight).astype(np.float32)
        arrays[f"{p}.{n}.bias"] = _np(norm.bias).astype(np.float32)
        eps.append(float(norm.eps))
    for n in BLOCK_LINEARS:
        layers.append(_linear(f"{p}.{n}", getattr(blk, n), arrays))
    for n in ATTN_QUANTIZERS:
        arrays[f"{p}.{n}.step"] = _act_step(getattr(blk, n))
    if blk.layer_scale:
        arrays[f"{p}.ls1"] = _np(blk.ls1).astype(np.float32)
        arrays[f"{p}.ls2"] = _np(blk.ls2).astype(np.float32)
    else:
        arrays[f"{p}.ls1"] = np.ones(embed_dim, np.float32)
        arrays[f"{p}.ls2"] = np.ones(embed_dim, np.float32)
    return layers


def _manifest(model: QuantViT, layers: list[LayerInfo], eps: float, arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``manifest.json``: the quantisation, the layers and the layout of ``arrays``."""
    q, sub = model.quant, model.subnet
    act_n, act_p = qrange(q.act_bits, True)
    prob_n, prob_p = qrange(q.act_bits, False)
    return {
        "format": FORMAT,
        "version": VERSION,
        "subnet": sub.to_dict(),
        "quant": {
            "w_bits_low": q.w_bits_low,
            "w_bits_high": q.w_bits_high,
            "act_bits": q.act_bits,
            "act_range_signed": [act_n, act_p],
            "act_range_unsigned": [prob_n, prob_p],
            "rounding": "half to even",
            "nibble": "w_int = 16*hi + lo, hi = w_int >> 4 signed, lo = w_int & 15 unsigned",
        },
        "layer_norm_eps": eps,
        "layer_scale": bool(model.layer_scale),
        "attn_scale": float(sub.geometry.head_dim**-0.5),
        "gelu": "exact (erf)" if model.nonlinear == "float" else "table (integer)",
        "nonlinear": model.nonlinear,
        **({"integer": _integer_manifest(model)} if model.nonlinear == "integer" else {}),
        "layers": layers,
        "arrays": {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in arrays.items()},
    }


def _integer_manifest(model: QuantViT) -> dict[str, Any]:
    """The integer formats of ``nonlinear: integer`` (constants in ``weights.npz``, docs/design.md)."""
    from quasar_vit.quantization import intops

    q = model.quant
    return {
        "residual_bits": q.residual_bits,
        "residual_step": float(model.res_q.step_value()),
        "gelu_in_bits": q.gelu_in_bits,
        "softmax_frac_bits": q.softmax_frac_bits,
        "rsqrt_index_bits": intops.RSQRT_INDEX_BITS,
        "rsqrt_bits": intops.RSQRT_BITS,
        "ln_frac_bits": intops.LN_FRAC,
        "exp_bits": intops.EXP_BITS,
        "recip_bits": intops.RECIP_BITS,
        "mult_bits": intops.MULT_BITS,
        "requant": "clamp((acc * mult + offset) >> shift); offset holds the bias and the rounding half",
    }


def save_weights(directory: str | Path, arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> None:
    directory = Path(directory)
    # numpy's stub types **kwds next to the keyword-only `allow_pickle: bool`, so any **Mapping of
    # arrays is rejected; the keys here are layer/array names, never "allow_pickle"
    np.savez_compressed(directory / "weights.npz", **arrays)  # type: ignore[arg-type]
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def bitmap(arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The per-row bit map of every layer (side file of the ONNX model)."""
    out = {}
    for l in manifest["layers"]:
        is8 = arrays[f"{l['name']}.is8"]
        out[l["name"]] = {
            "rows": int(len(is8)),
            "n8_rows": int(is8.sum()),
            "bits": [8 if b else int(manifest["quant"]["w_bits_low"]) for b in is8],
        }
    return {"format": "quasar-vit-bitmap", "version": 1, "layers": out}


def load_weights(directory: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read ``weights.npz`` and ``manifest.json`` from an export directory."""
    directory = Path(directory)
    wpath, mpath = directory / "weights.npz", directory / "manifest.json"
    for p in (wpath, mpath):
        if not p.is_file():
            raise ExportError(f"{directory} is not a quasar-vit export: {p.name} is missing")
    try:
        manifest = json.loads(mpath.read_text())
        with np.load(wpath, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{directory}: unreadable export ({exc})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ExportError(f"{mpath} is not a quasar-vit integer-weight manifest (version {VERSION})")
    missing = sorted(set(manifest.get("arrays", {})) - set(arrays))
    if missing:
        raise ExportError(f"{wpath} lacks array(s): {', '.join(missing[:5])}")
    return arrays, manifest


__all__ = ["integer_weights", "save_weights", "load_weights", "nibble_split", "nibble_join", "bitmap"]
