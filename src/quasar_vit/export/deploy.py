"""A self-contained, TorchScript-able fake-quant copy of the subnet (``model.pt``).

:class:`DeployViT` is built from the exported integer weights (``weights.npz``): each linear
layer holds its dequantized weight ``w_int * step`` as a constant, each activation quantizer
``clamp(round(x / s), qn, qp) * s`` with its step.  This is the exact forward computation of
:class:`~quasar_vit.models.vit.QuantViT` (the same float32 operations in the same order) without
the training-only LSQ autograd function, so ``torch.jit.script`` compiles it and
``torch.jit.load("model.pt")`` runs it in any process, without quasar-vit installed.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FakeQuant(nn.Module):
    """``clamp(round(x / step), qn, qp) * step`` (round half to even), the forward of LSQ."""

    def __init__(self, step: float, qn: int, qp: int) -> None:
        super().__init__()
        self.register_buffer("step", torch.tensor(float(step), dtype=torch.float32))
        self.qn = float(qn)
        self.qp = float(qp)

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(torch.round(x / self.step), self.qn, self.qp) * self.step


class DeployLinear(nn.Module):
    def __init__(self, arrays: Mapping[str, np.ndarray], name: str, act_range: tuple[int, int]) -> None:
        super().__init__()
        w_int = torch.from_numpy(arrays[f"{name}.w_int"].astype(np.float32))
        step = torch.from_numpy(arrays[f"{name}.step"].astype(np.float32))
        self.register_buffer("weight", w_int * step.unsqueeze(1))
        self.register_buffer("bias", torch.from_numpy(arrays[f"{name}.bias"].astype(np.float32)))
        self.aq = FakeQuant(float(arrays[f"{name}.act_step"]), *act_range)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.aq(x), self.weight, self.bias)


class DeployBlock(nn.Module):
    def __init__(self, arrays: Mapping[str, np.ndarray], i: int, heads: int, head_dim: int, eps: float,
                 srange: tuple[int, int], urange: tuple[int, int]) -> None:
        super().__init__()
        p = f"blocks.{i}"
        e = arrays[f"{p}.norm1.weight"].shape[0]
        self.heads, self.head_dim = heads, head_dim
        self.scale = float(head_dim ** -0.5)
        self.norm1 = nn.LayerNorm(e, eps=eps)
        self.norm2 = nn.LayerNorm(e, eps=eps)
        with torch.no_grad():
            for n in ("norm1", "norm2"):
                getattr(self, n).weight.copy_(torch.from_numpy(arrays[f"{p}.{n}.weight"]))
                getattr(self, n).bias.copy_(torch.from_numpy(arrays[f"{p}.{n}.bias"]))
        self.qkv = DeployLinear(arrays, f"{p}.qkv", srange)
        self.proj = DeployLinear(arrays, f"{p}.proj", srange)
        self.fc1 = DeployLinear(arrays, f"{p}.fc1", srange)
        self.fc2 = DeployLinear(arrays, f"{p}.fc2", srange)
        self.aq_q = FakeQuant(float(arrays[f"{p}.aq_q.step"]), *srange)
        self.aq_k = FakeQuant(float(arrays[f"{p}.aq_k.step"]), *srange)
        self.aq_v = FakeQuant(float(arrays[f"{p}.aq_v.step"]), *srange)
        self.aq_attn = FakeQuant(float(arrays[f"{p}.aq_attn.step"]), *urange)
        self.register_buffer("ls1", torch.from_numpy(arrays[f"{p}.ls1"].astype(np.float32)))
        self.register_buffer("ls2", torch.from_numpy(arrays[f"{p}.ls2"].astype(np.float32)))

    def forward(self, x: Tensor) -> Tensor:
        b, t, e = x.shape
        h = self.norm1(x)
        qkv = self.qkv(h).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = self.aq_q(qkv[0]), self.aq_k(qkv[1]), self.aq_v(qkv[2])
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.aq_attn(attn.softmax(dim=-1))
        a = (attn @ v).transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
        a = self.proj(a)
        x = x + self.ls1 * a
        h = F.gelu(self.fc1(self.norm2(x)))
        h = self.fc2(h)
        return x + self.ls2 * h


class DeployViT(nn.Module):
    """Fake-quant forward of the exported subnet: ``[B, C, H, W]`` normalised images -> logits."""

    def __init__(self, arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> None:
        super().__init__()
        sub = manifest["subnet"]
        q = manifest["quant"]
        srange = tuple(q["act_range_signed"])
        urange = tuple(q["act_range_unsigned"])
        eps = float(manifest["layer_norm_eps"])
        self.patch = int(sub["patch_size"])
        self.patch_embed = DeployLinear(arrays, "patch_embed", srange)
        self.register_buffer("cls_token", torch.from_numpy(arrays["cls_token"]).view(1, 1, -1).clone())
        self.register_buffer("pos_embed", torch.from_numpy(arrays["pos_embed"]).unsqueeze(0).clone())
        self.blocks = nn.ModuleList([DeployBlock(arrays, i, int(sub["num_heads"][i]), int(sub["head_dim"]), eps,
                                                 srange, urange) for i in range(int(sub["depth"]))])
        e = arrays["norm.weight"].shape[0]
        self.norm = nn.LayerNorm(e, eps=eps)
        with torch.no_grad():
            self.norm.weight.copy_(torch.from_numpy(arrays["norm.weight"]))
            self.norm.bias.copy_(torch.from_numpy(arrays["norm.bias"]))
        self.head = DeployLinear(arrays, "head", srange)
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        p = self.patch
        x = x.reshape(b, c, hgt // p, p, wid // p, p).permute(0, 2, 4, 1, 3, 5)
        x = x.reshape(b, (hgt // p) * (wid // p), c * p * p)
        tok = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(b, -1, -1), tok], dim=1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)[:, 0]
        return self.head(x)


def save_torchscript(model: DeployViT, path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
    """Script ``model`` and save it; ``extra`` is stored as JSON files inside the archive."""
    files = {f"{k}.json": json.dumps(v, indent=2) for k, v in (extra or {}).items()}
    with warnings.catch_warnings():  # TorchScript is deprecated but remains the one format torch loads alone
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(path), _extra_files=files)


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        m = torch.jit.load(str(path), map_location="cpu")
    m.eval()
    return m


__all__ = ["DeployViT", "FakeQuant", "save_torchscript", "load_torchscript"]
