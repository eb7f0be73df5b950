"""Start a supernet from pretrained ViT weights (``quasar-vit train --init FILE``, ``train.init``).

Two layouts are recognised by their keys:

* **timm / DeiT** ViT state dicts (``.pth``/``.pt``, or ``.safetensors``; DeiT's own files wrap them
  in ``{'model': ...}``): ``patch_embed.proj.*``, ``cls_token``, ``pos_embed``,
  ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*`` (optionally ``ls1/ls2.gamma``),
  ``norm.*``, ``head.*``;
* **AutoFormer** supernet checkpoints (``{'model': ...}``, microsoft/Cream AutoFormer/model):
  ``patch_embed_super.proj.*``, ``blocks.N.{attn_layer_norm,attn.qkv,attn.proj,ffn_layer_norm,fc1,fc2}.*``,
  ``norm.*``, ``head.*`` and relative-position tables (not used: this supernet has absolute
  positions only).  AutoFormer's ``qkv_super`` interleaves the rows (row ``3j+s`` is feature ``j`` of
  q/k/v ``s``) but slices its bias contiguously; the weight is de-interleaved and the bias read as the
  largest subnet reads it.  Its released runs use ``--change_qkv`` (head dim 64), assumed here.

Mapping into the supernet's largest dims (weight entanglement keeps every subnet a leading slice):
the overlap is copied, larger source dims are sliced, and the rest is filled so that the subnet at
the source's own dims computes the pretrained network and no unit is dead:

* what writes into the residual stream beyond the source (patch-embedding rows, class/position
  channels, ``proj``/``fc2`` rows and columns, ``head`` columns) and what reads new stream channels
  (``qkv``/``fc1`` columns) is zero;
* new units keep their random initial values on the reading side (``qkv``/``fc1`` rows), so their
  zero outputs still get gradients (zero on both sides would never move);
* blocks beyond the source's depth keep their initial values with zero ``proj``/``fc2``: deeper
  subnets start as the pretrained network;
* the layer scales become 1 when the source has none (DeiT, AutoFormer), else take its values;
* ``pos_embed`` is resampled bicubically when the patch grid differs (timm's rule).

Afterwards every weight quantizer's steps are re-initialised from the loaded weights (LSQ rule;
all-zero rows take the layer's mean step, else their codes could never leave the clamp), and the
activation quantizers are marked uncalibrated so the trainer calibrates them on the first batch.
Files are read with ``torch.load(weights_only=True)`` or safetensors: tensors only, never code.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from quasar_vit.errors import CheckpointError
from quasar_vit.models.layers import QuantLinear
from quasar_vit.quantization.lsq import ActQuantizer, init_weight_steps

TIMM, AUTOFORMER = "timm/DeiT ViT", "AutoFormer supernet"
#: our per-block tensor -> (timm key, AutoFormer key) below ``blocks.N.``
BLOCK_KEYS: dict[str, tuple[str, str]] = {
    "norm1.weight": ("norm1.weight", "attn_layer_norm.weight"),
    "norm1.bias": ("norm1.bias", "attn_layer_norm.bias"),
    "qkv.weight": ("attn.qkv.weight", "attn.qkv.weight"),
    "qkv.bias": ("attn.qkv.bias", "attn.qkv.bias"),
    "proj.weight": ("attn.proj.weight", "attn.proj.weight"),
    "proj.bias": ("attn.proj.bias", "attn.proj.bias"),
    "norm2.weight": ("norm2.weight", "ffn_layer_norm.weight"),
    "norm2.bias": ("norm2.bias", "ffn_layer_norm.bias"),
    "fc1.weight": ("mlp.fc1.weight", "fc1.weight"),
    "fc1.bias": ("mlp.fc1.bias", "fc1.bias"),
    "fc2.weight": ("mlp.fc2.weight", "fc2.weight"),
    "fc2.bias": ("mlp.fc2.bias", "fc2.bias"),
    "ls1": ("ls1.gamma", ""),
    "ls2": ("ls2.gamma", ""),
}
#: per-dimension fill beyond the source: "zero", "keep" (initial value) or "" (sizes must agree)
FILLS: dict[str, tuple[str, ...]] = {
    "patch_embed.weight": ("zero", ""),
    "patch_embed.bias": ("zero",),
    "cls_token": ("", "", "zero"),
    "pos_embed": ("", "", "zero"),
    "norm.weight": ("keep",),
    "norm.bias": ("keep",),
    "head.weight": ("", "zero"),
    "head.bias": ("",),
    "norm1.weight": ("keep",),
    "norm1.bias": ("keep",),
    "norm2.weight": ("keep",),
    "norm2.bias": ("keep",),
    "qkv.weight": ("", "keep", "zero"),
    "qkv.bias": ("", "keep"),
    "proj.weight": ("zero", "zero"),
    "proj.bias": ("zero",),
    "fc1.weight": ("keep", "zero"),
    "fc1.bias": ("keep",),
    "fc2.weight": ("zero", "zero"),
    "fc2.bias": ("zero",),
    "ls1": ("keep",),
    "ls2": ("keep",),
}


@dataclass
class InitReport:
    """What ``--init`` did to each parameter of the supernet (printed, and saved as ``init.json``)."""

    source: str
    layout: str
    loaded: list[str] = field(default_factory=list)  # copied whole, same shape
    resized: list[str] = field(default_factory=list)  # "name [src] -> [dst] (how)"
    initial: list[str] = field(default_factory=list)  # left at the supernet's initial value
    unused: list[str] = field(default_factory=list)  # keys of the file that were not used
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """A short human summary (block indices folded: ``blocks.[0-11].qkv.weight``)."""
        out = [
            f"init: {self.source} ({self.layout} layout)",
            f"  loaded as is: {len(self.loaded)} tensors",
            f"  resized: {len(self.resized)}" + "".join(f"\n    {r}" for r in fold_names(self.resized)),
        ]
        if self.initial:
            out.append("  left at initial value: " + ", ".join(fold_names(self.initial)))
        if self.unused:
            out.append("  not used from the file: " + ", ".join(fold_names(self.unused)))
        out += [f"  note: {n}" for n in self.notes]
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fold_names(names: list[str]) -> list[str]:
    """Group names that differ only in their block index: ``blocks.[0-2,5].fc1.weight``."""
    groups: dict[str, list[int]] = {}
    for n in names:
        m = re.match(r"^blocks\.(\d+)\.(.*)$", n)
        key, idx = (f"blocks.#.{m.group(2)}", int(m.group(1))) if m else (n, -1)
        groups.setdefault(key, []).append(idx)
    out = []
    for key, found in groups.items():
        if found == [-1]:
            out.append(key)
            continue
        nums = sorted(set(found))
        spans: list[str] = []
        start: int | None = None
        for a, b in zip(nums, [*nums[1:], None]):
            start = a if start is None else start
            if b != a + 1:
                spans.append(f"{start}" if start == a else f"{start}-{a}")
                start = None
        out.append(key.replace("#", f"[{','.join(spans)}]" if len(nums) > 1 else str(nums[0])))
    return out


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.pth``/``.pt``/``.bin`` (``weights_only``) or ``.safetensors`` file, unwrapped
    from ``{'model': ...}`` / ``{'state_dict': ...}`` and stripped of a DDP ``module.`` prefix."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"--init {p}: no such file")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise CheckpointError(
                f"--init {p}: reading .safetensors needs the safetensors package (pip install 'quasar-vit[imagenet]')"
            ) from None
        try:
            obj: Any = load_file(str(p), device="cpu")
        except Exception as exc:  # noqa: BLE001 - a corrupt header or truncated file
            raise CheckpointError(f"--init {p}: not a readable safetensors file ({str(exc).splitlines()[0]})") from None
    else:
        try:
            # AutoFormer's training checkpoints also pickle their argparse.Namespace of options: a plain
            # attribute container, allowed here; anything else that is not a tensor or container is refused
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickled code, a truncated zip, not a torch file at all
            why = (
                "it holds objects other than tensors (refused: loading them could run code)"
                if "Weights only load failed" in str(exc)
                else str(exc).splitlines()[0]
            )
            raise CheckpointError(f"--init {p}: cannot be read as a tensor checkpoint: {why}") from None
    for key in ("model", "state_dict", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise CheckpointError(f"--init {p}: expected a state dict, found a {type(obj).__name__}")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items() if isinstance(v, Tensor)}


def detect_layout(sd: dict[str, Tensor], path: str | Path) -> str:
    """``TIMM`` or ``AUTOFORMER`` by the patch-embedding and first-block keys, else one clear error."""
    if "patch_embed.proj.weight" in sd and "blocks.0.attn.qkv.weight" in sd and "blocks.0.mlp.fc1.weight" in sd:
        return TIMM
    if "patch_embed_super.proj.weight" in sd and "blocks.0.attn.qkv.weight" in sd and "blocks.0.fc1.weight" in sd:
        return AUTOFORMER
    hint = " (it looks like a quasar-vit run: continue it with --resume)" if "patch_embed.step_lo" in sd else ""
    raise CheckpointError(
        f"--init {path}: matches neither a timm/DeiT ViT state dict (patch_embed.proj.weight, "
        "blocks.N.attn.qkv.weight, blocks.N.mlp.fc1.weight, ...) nor an AutoFormer supernet "
        f"checkpoint (patch_embed_super.proj.weight, blocks.N.fc1.weight, ...){hint}"
    )


def _deinterleave_qkv(w: Tensor) -> Tensor:
    """AutoFormer's qkv rows ``3j + s`` -> our sections layout ``[q; k; v]`` (rows ``s * Q + j``)."""
    if w.shape[0] % 3:
        raise CheckpointError(f"attn.qkv.weight has {w.shape[0]} rows, not a multiple of 3")
    q = w.shape[0] // 3
    return w.reshape(q, 3, *w.shape[1:]).transpose(0, 1).reshape(w.shape)


@dataclass
class Pretrained:
    """A pretrained file's tensors under this project's names and conventions (see :func:`read_pretrained`)."""

    path: str
    layout: str
    tensors: dict[str, Tensor]
    unused: list[str]  # keys of the file no rule reads
    depth: int  # number of transformer blocks in the file
    patch_kernel: tuple[int, ...]  # the patch-embedding conv's [E, C, p, p]


def read_pretrained(path: str | Path) -> Pretrained:
    """Read and recognise ``path``; every problem is one :class:`CheckpointError` (before any run
    directory is made).  Conventions: the patch embedding becomes a ``[E, C*p*p]`` matrix (patchify's
    (c, dy, dx) order is a conv kernel's flattening) and qkv is in sections ``[q; k; v]``."""
    sd = read_state_dict(path)
    layout = detect_layout(sd, path)
    af = layout == AUTOFORMER
    out: dict[str, Tensor] = {}
    used: set[str] = set()

    def take(ours: str, theirs: str) -> None:
        if theirs in sd:
            out[ours] = sd[theirs].detach().float()
            used.add(theirs)

    pe = "patch_embed_super.proj" if af else "patch_embed.proj"
    take("patch_embed.weight", f"{pe}.weight")
    take("patch_embed.bias", f"{pe}.bias")
    kernel = tuple(out["patch_embed.weight"].shape)
    if len(kernel) != 4:
        raise CheckpointError(
            f"--init {path}: {pe}.weight has shape {list(kernel)}, expected a conv kernel [E, C, p, p]"
        )
    out["patch_embed.weight"] = out["patch_embed.weight"].flatten(1)
    for name in ("cls_token", "pos_embed", "norm.weight", "norm.bias", "head.weight", "head.bias"):
        take(name, name)
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"^blocks\.(\d+)\.", k)))
    for i in range(depth):
        for ours, keys in BLOCK_KEYS.items():
            if keys[af]:
                take(f"blocks.{i}.{ours}", f"blocks.{i}.{keys[af]}")
        if af and f"blocks.{i}.qkv.weight" in out:
            out[f"blocks.{i}.qkv.weight"] = _deinterleave_qkv(out[f"blocks.{i}.qkv.weight"])
    return Pretrained(str(path), layout, out, sorted(set(sd) - used), depth, kernel)


def _place(dst: Tensor, src: Tensor, fills: tuple[str, ...], name: str) -> str:
    """Copy ``src`` into the leading corner of ``dst``; beyond ``src`` along dim ``d`` (within the
    copied extent of the earlier dims) write zeros or keep ``dst``'s values, as ``fills[d]`` says.
    Returns how: "" (same shape), or "sliced" / "zero-padded" / "padded with initial values"."""
    if src.dim() != dst.dim():
        raise CheckpointError(f"--init: {name} has shape {list(src.shape)}, the model needs {list(dst.shape)}")
    how = set()
    n = [min(a, b) for a, b in zip(dst.shape, src.shape)]
    for d, (a, b) in enumerate(zip(dst.shape, src.shape)):
        if a != b and not fills[d]:
            raise CheckpointError(
                f"--init: {name} has shape {list(src.shape)}, the model needs {list(dst.shape)} "
                f"(dimension {d} cannot be resized)"
            )
        if b > a:
            how.add("sliced")
        elif a > b:
            how.add("zero-padded" if fills[d] == "zero" else "padded with initial values")
            if fills[d] == "zero":
                dst[
                    tuple(
                        slice(0, n[k]) if k < d else slice(b, None) if k == d else slice(None) for k in range(dst.dim())
                    )
                ] = 0
    corner = tuple(slice(0, k) for k in n)
    dst[corner] = src[corner].to(dst.dtype)
    return " and ".join(sorted(how))


def resample_pos_embed(pos: Tensor, grid: int, path: str) -> tuple[Tensor, str]:
    """``[1, 1 + g*g, E]`` (or ``[1, g*g, E]`` without a class-token position, which becomes zero)
    -> ``[1, 1 + grid*grid, E]``, bicubic over the patch grid as timm's ``resample_abs_pos_embed``."""
    n, e = pos.shape[1], pos.shape[2]
    g = math.isqrt(n - 1)
    if g * g == n - 1:
        cls, patches, note = pos[:, :1], pos[:, 1:], ""
    elif math.isqrt(n) ** 2 == n:
        g, cls, patches, note = math.isqrt(n), pos.new_zeros(1, 1, e), pos, "no class-token position in the file (zero)"
    else:
        raise CheckpointError(f"--init {path}: pos_embed has {n} tokens, not a square patch grid")
    if g != grid:
        img = patches.reshape(1, g, g, e).permute(0, 3, 1, 2)
        img = F.interpolate(img, size=(grid, grid), mode="bicubic", align_corners=False, antialias=g > grid)
        patches = img.permute(0, 2, 3, 1).reshape(1, grid * grid, e)
        note = "; ".join(filter(None, [note, f"patch grid {g}x{g} resampled to {grid}x{grid} (bicubic)"]))
    return torch.cat([cls, patches], dim=1), note


def _short(name: str) -> str:
    """``blocks.3.qkv.weight`` -> ``qkv.weight`` (the key of :data:`FILLS`)."""
    return re.sub(r"^blocks\.\d+\.", "", name)


def _source_tensor(model: Any, pre: Pretrained, name: str, report: InitReport) -> Tensor | None:
    """The file's tensor for parameter ``name``, adapted (pos_embed grid, folded layer scale), or None
    when the model keeps its initial value (and the report says why)."""
    src = pre.tensors.get(name)
    if src is None:
        return None
    g = model.geometry
    if name == "patch_embed.weight" and tuple(pre.patch_kernel[1:]) != (g.in_chans, g.patch_size, g.patch_size):
        report.notes.append(
            f"patch embedding: the file's kernel is {list(pre.patch_kernel[1:])} (C, p, p), the model's "
            f"[{g.in_chans}, {g.patch_size}, {g.patch_size}]: left at initial value"
        )
        return None
    if name == "patch_embed.bias" and "patch_embed.weight" not in pre.tensors:
        return None
    head = pre.tensors.get("head.weight")
    if name.startswith("head.") and (head is None or head.shape[0] != g.num_classes):
        if name == "head.weight" and head is not None:  # always so: ``src`` is this tensor
            report.notes.append(
                f"head: the file has {head.shape[0]} classes, the model {g.num_classes}: left at initial value"
            )
        return None
    if name == "pos_embed":
        src, note = resample_pos_embed(src, g.img_size // g.patch_size, pre.path)
        if note:
            report.notes.append(f"pos_embed: {note}")
    m = re.match(r"^blocks\.(\d+)\.(proj|fc2)\.(weight|bias)$", name)
    gamma = pre.tensors.get(f"blocks.{m.group(1)}.ls{1 if m.group(2) == 'proj' else 2}") if m else None
    if gamma is not None and not model.layer_scale:  # fold the file's layer scale into the rows it scales
        src = src * (gamma[:, None] if src.dim() == 2 else gamma)
    return src


def _load_tensor(dst: Tensor, src: Tensor, name: str, report: InitReport) -> None:
    """Place one tensor (qkv in its three sections) and file it under loaded or resized."""
    fills = FILLS[_short(name)]
    if _short(name).startswith("qkv."):
        if src.shape[0] % 3:
            raise CheckpointError(f"--init: {name} has {src.shape[0]} rows, not three equal q/k/v sections")
        how = _place(dst.view(3, -1, *dst.shape[1:]), src.reshape(3, -1, *src.shape[1:]), fills, name)
    else:
        how = _place(dst, src, fills, name)
    if how:
        report.resized.append(f"{name} {list(src.shape)} -> {list(dst.shape)} ({how})")
    else:
        report.loaded.append(name)


def _reset_linear_steps(layer: QuantLinear) -> None:
    """LSQ step init from the (loaded) weights; all-zero rows take the mean step of the others so
    their codes stay inside the clamp and their weights can learn.  A layer that is all zeros keeps
    the steps of its random initial weights."""
    w = layer.weight.detach()
    dead = w.abs().amax(dim=1) == 0
    if bool(dead.all()):
        return
    for step, bits in ((layer.step_lo, layer.quant.w_bits_low), (layer.step_hi, layer.quant.w_bits_high)):
        s = init_weight_steps(w, bits)
        s[dead] = s[~dead].mean()
        step.copy_(s)


def _finish_blocks(model: Any, pre: Pretrained, touched: set[str], report: InitReport) -> None:
    """Layer scales where the file has none, and blocks deeper than the file's."""
    loaded = min(pre.depth, len(model.blocks))
    if model.layer_scale and "blocks.0.ls1" not in pre.tensors:
        for i in range(loaded):
            for n in ("ls1", "ls2"):
                getattr(model.blocks[i], n).fill_(1.0)
                touched.add(f"blocks.{i}.{n}")
        report.notes.append("layer scales set to 1 (the file has none, so this computes the pretrained network)")
    elif not model.layer_scale and "blocks.0.ls1" in pre.tensors:
        report.notes.append("the file's layer scales were folded into proj/fc2 (model.layer_scale is off)")
    if pre.depth > len(model.blocks):
        report.notes.append(
            f"the file has {pre.depth} blocks, the model {len(model.blocks)}: "
            f"blocks {len(model.blocks)}-{pre.depth - 1} not used"
        )
    if pre.depth < len(model.blocks):
        for i in range(pre.depth, len(model.blocks)):
            for n in ("proj", "fc2"):
                layer = getattr(model.blocks[i], n)
                layer.weight.zero_()
                layer.bias.zero_()
                touched.update({f"blocks.{i}.{n}.weight", f"blocks.{i}.{n}.bias"})
        report.notes.append(
            f"the file has {pre.depth} blocks, the model {len(model.blocks)}: blocks "
            f"{pre.depth}-{len(model.blocks) - 1} keep their initial values with zero proj/fc2, "
            "so deeper subnets start as the pretrained network"
        )


@torch.no_grad()
def apply_pretrained(model: Any, pre: Pretrained) -> InitReport:
    """Map ``pre`` into ``model`` (a :class:`~quasar_vit.supernet.SuperViT`) in place; see the module
    docstring for the rules.  Returns what was loaded, resized and left at its initial value."""
    report = InitReport(pre.path, pre.layout, unused=list(pre.unused))
    params = dict(model.named_parameters())
    touched: set[str] = set()
    for name, dst in params.items():
        if _short(name) not in FILLS or (name.startswith("blocks.") and int(name.split(".")[1]) >= pre.depth):
            continue
        src = _source_tensor(model, pre, name, report)
        if src is not None:
            _load_tensor(dst, src, name, report)
            touched.add(name)
    _finish_blocks(model, pre, touched, report)
    for module in model.modules():
        if isinstance(module, QuantLinear):
            _reset_linear_steps(module)
        elif isinstance(module, ActQuantizer):
            module.initialized.fill_(False)
    report.initial = [n for n in params if n not in touched and not n.endswith(("step_lo", "step_hi", ".step"))]
    if pre.layout == AUTOFORMER:
        report.notes.append(
            "AutoFormer's released supernets were trained with --gp (the head reads the mean of the "
            "patch tokens); this supernet's head reads the class token, so the head and the final "
            "norm need the fine-tuning the training run gives them"
        )
    report.notes.append(
        "weight quantizer steps re-initialised from the loaded weights; activation quantizer "
        "steps are calibrated on the first training batch"
    )
    return report
