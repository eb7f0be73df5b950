"""A self-contained fake-quant copy of the subnet, saved as the ``torch.export`` program ``model.pt2``.

:class:`DeployViT` is built from the exported integer weights (the
:class:`~quasar_vit.export.ir.IntViT` of ``weights.npz`` + ``manifest.json``): each linear layer
holds its dequantized weight ``w_int * step`` as a constant, each activation quantizer
``clamp(round(x / s), qn, qp) * s`` with its step.  This is the exact forward computation of
:class:`~quasar_vit.models.vit.QuantViT` (the same float32 operations in the same order) without
the training-only LSQ autograd function, so ``torch.export`` traces it and
``torch.export.load("model.pt2").module()`` runs it in any process, without quasar-vit installed
(:mod:`quasar_vit.export.torch_export`).  TorchScript (the former ``model.pt``) was dropped: torch
2.13 deprecates ``torch.jit.load`` in favour of ``torch.export``, and nothing here needed it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quasar_vit.export.ir import IntBlock, IntLinear, IntViT, as_ir


class FakeQuant(nn.Module):
    """``clamp(round(x / step), qn, qp) * step`` (round half to even), the forward of LSQ."""

    step: Tensor  # buffer (register_buffer): declared so the type checker knows it is a Tensor

    def __init__(self, step: float, qn: int, qp: int) -> None:
        super().__init__()
        self.register_buffer("step", torch.tensor(float(step), dtype=torch.float32))
        self.qn = float(qn)
        self.qp = float(qp)

    def forward(self, x: Tensor) -> Tensor:
        return torch.clamp(torch.round(x / self.step), self.qn, self.qp) * self.step


def _buffer(a: np.ndarray) -> Tensor:
    """A float32 tensor with its own memory (the module's buffers never alias the IR's arrays)."""
    return torch.from_numpy(np.asarray(a, np.float32)).clone()


def _layer_norm(weight_bias: tuple[np.ndarray, np.ndarray], eps: float) -> nn.LayerNorm:
    weight, bias = weight_bias
    norm = nn.LayerNorm(weight.shape[0], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(weight))
        norm.bias.copy_(torch.from_numpy(bias))
    return norm


class DeployLinear(nn.Module):
    """Input fake-quant, then ``x @ (w_int * step)^T + bias``."""

    weight: Tensor  # buffers (register_buffer)
    bias: Tensor

    def __init__(self, lin: IntLinear) -> None:
        super().__init__()
        w_int = torch.from_numpy(lin.w_int.astype(np.float32))
        step = torch.from_numpy(lin.step.astype(np.float32))
        self.register_buffer("weight", w_int * step.unsqueeze(1))
        self.register_buffer("bias", _buffer(lin.bias))
        self.aq = FakeQuant(float(lin.act_step), *lin.act_range)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.aq(x), self.weight, self.bias)


class DeployBlock(nn.Module):
    ls1: Tensor  # buffers (register_buffer): the layer scales
    ls2: Tensor

    def __init__(self, blk: IntBlock, eps: float, srange: tuple[int, int], urange: tuple[int, int]) -> None:
        super().__init__()
        self.heads, self.head_dim = blk.heads, blk.head_dim
        self.scale = float(blk.head_dim**-0.5)
        self.norm1 = _layer_norm(blk.norm1, eps)
        self.norm2 = _layer_norm(blk.norm2, eps)
        self.qkv = DeployLinear(blk.qkv)
        self.proj = DeployLinear(blk.proj)
        self.fc1 = DeployLinear(blk.fc1)
        self.fc2 = DeployLinear(blk.fc2)
        self.aq_q = FakeQuant(float(blk.s_q), *srange)
        self.aq_k = FakeQuant(float(blk.s_k), *srange)
        self.aq_v = FakeQuant(float(blk.s_v), *srange)
        self.aq_attn = FakeQuant(float(blk.s_attn), *urange)
        self.register_buffer("ls1", _buffer(blk.ls1))
        self.register_buffer("ls2", _buffer(blk.ls2))

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

    cls_token: Tensor  # buffers (register_buffer)
    pos_embed: Tensor

    def __init__(self, ir: IntViT | Mapping[str, np.ndarray], manifest: Mapping[str, Any] | None = None) -> None:
        """From the :class:`~quasar_vit.export.ir.IntViT` of an export (or its ``arrays, manifest``)."""
        super().__init__()
        ir = as_ir(ir, manifest)
        srange, urange, eps = ir.act_range_signed, ir.act_range_unsigned, ir.layer_norm_eps
        self.patch = ir.patch_size
        self.patch_embed = DeployLinear(ir.patch_embed)
        self.register_buffer("cls_token", torch.from_numpy(ir.cls_token).view(1, 1, -1).clone())
        self.register_buffer("pos_embed", torch.from_numpy(ir.pos_embed).unsqueeze(0).clone())
        self.blocks = nn.ModuleList([DeployBlock(blk, eps, srange, urange) for blk in ir.blocks])
        self.norm = _layer_norm(ir.norm, eps)
        self.head = DeployLinear(ir.head)
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


__all__ = ["DeployViT", "FakeQuant"]
