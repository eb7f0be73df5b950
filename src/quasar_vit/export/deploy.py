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


# ---- nonlinear: integer -----------------------------------------------------------------------------
class _Consts(nn.Module):
    """Named constant arrays as buffers, read by attribute like the IR's dataclasses (``.mult``, ...)."""

    def __init__(self, **arrays: Any) -> None:
        super().__init__()
        for k, v in arrays.items():
            self.register_buffer(k, torch.from_numpy(np.array(v, np.float64)))


def _consts(obj: Any) -> _Consts:
    """The buffers of an IR constant group (``Requant``, ``IntNorm``, ``IntSoftmax``)."""
    from dataclasses import fields

    return _Consts(**{f.name: getattr(obj, f.name) for f in fields(obj)})


class _IntLinear(nn.Module):
    """A linear layer's weight codes (float32, exact in a float32 GEMM below 2**24), input quantizer and rescale."""

    act_step: Tensor  # buffers (register_buffer)
    w: Tensor
    scale: Tensor
    bias: Tensor

    def __init__(self, lin: IntLinear) -> None:
        super().__init__()
        self.name = lin.name
        self.act_range = lin.act_range
        self.register_buffer("act_step", torch.tensor(float(lin.act_step), dtype=torch.float32))
        self.register_buffer("w", torch.from_numpy(lin.w_int.astype(np.float32)).t().contiguous())
        self.register_buffer("scale", torch.from_numpy(np.asarray(lin.scale, np.float32)).clone())
        self.register_buffer("bias", _buffer(lin.bias))
        self.exact_f32 = lin.a_max * 128 * lin.in_features < 2**24


class _IntBlock(nn.Module):
    def __init__(self, blk: IntBlock) -> None:
        super().__init__()
        assert blk.ops is not None
        o = blk.ops
        self.index, self.heads, self.head_dim = blk.index, blk.heads, blk.head_dim
        self.qkv, self.proj = _IntLinear(blk.qkv), _IntLinear(blk.proj)
        self.fc1, self.fc2 = _IntLinear(blk.fc1), _IntLinear(blk.fc2)
        self.ops = nn.Module()
        for name in ("norm1", "qkv", "softmax", "pv", "proj", "norm2", "fc1", "fc2"):
            self.ops.add_module(name, _consts(getattr(o, name)))
        self.ops.register_buffer("gelu_table", torch.from_numpy(np.array(o.gelu_table, np.float64)))


class _TorchGemms:
    """The deploy model's GEMMs: float32 matmuls of the codes (exact: every sum is an integer below 2**24)."""

    def __init__(self, model: "DeployIntViT") -> None:
        self.lin = {m.name: m for m in model.modules() if isinstance(m, _IntLinear)}

    def quantize(self, x: Tensor, step: Tensor, qn: int, qp: int) -> Tensor:
        return torch.clamp(torch.round(x / step), qn, qp)

    def patchify(self, x: Tensor, p: int) -> Tensor:
        b, c, hgt, wid = x.shape
        x = x.reshape(b, c, hgt // p, p, wid // p, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(b, (hgt // p) * (wid // p), c * p * p)

    def linear(self, name: str, codes: Tensor) -> Tensor:
        lin = self.lin[name]
        dt = torch.float32 if lin.exact_f32 else torch.float64
        return torch.matmul(codes.to(dt), lin.w.to(dt))

    def matmul(self, a: Tensor, b: Tensor, a_max: int, b_max: int) -> Tensor:
        dt = torch.float32 if a_max * b_max * a.shape[-1] < 2**24 else torch.float64
        return torch.matmul(a.to(dt), b.to(dt))

    def logits(self, name: str, acc: Tensor) -> Tensor:
        lin = self.lin[name]
        return acc.float() * lin.scale + lin.bias

    def permute(self, a: Tensor, axes: tuple[int, ...]) -> Tensor:
        return a.permute(*axes)

    def concat(self, parts: list[Tensor], axis: int) -> Tensor:
        return torch.cat(parts, dim=axis)

    def expand(self, a: Tensor, shape: tuple[int, ...]) -> Tensor:
        return a.expand(*shape)


class _NetworkOps(nn.Module):
    """The network-level integer formats (``IntegerOps``) as buffers and plain numbers."""

    start: Tensor  # buffer

    def __init__(self, o: Any) -> None:
        super().__init__()
        self.residual_range: tuple[int, int] = o.residual_range
        self.gelu_in_bits: int = o.gelu_in_bits
        self.softmax_frac_bits: int = o.softmax_frac_bits
        self.patch_embed = _consts(o.patch_embed)
        self.norm = _consts(o.norm)
        self.register_buffer("start", torch.from_numpy(np.array(o.start, np.float64)))


class DeployIntViT(nn.Module):
    """The integer path of an export (``nonlinear: integer``) as a torch module for ``model.pt2``.

    It runs :func:`quasar_vit.export.intforward.integer_forward` (the NumPy engine's wiring and
    :mod:`quasar_vit.quantization.intops`' arithmetic) on the export's constants held as buffers, so
    ``torch.export`` traces it and its logits are the engine's, bit for bit.
    """

    def __init__(self, ir: IntViT | Mapping[str, np.ndarray], manifest: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        ir = as_ir(ir, manifest)
        assert ir.ops is not None, "DeployIntViT needs an integer export"
        o = ir.ops
        self.patch_size = ir.patch_size
        self.act_range_signed, self.act_range_unsigned = ir.act_range_signed, ir.act_range_unsigned
        self.patch_embed, self.head = _IntLinear(ir.patch_embed), _IntLinear(ir.head)
        self.blocks = nn.ModuleList([_IntBlock(b) for b in ir.blocks])
        self.ops = _NetworkOps(o)
        self.eval()

    def forward(self, x: Tensor, trace: dict[str, Tensor] | None = None) -> Tensor:
        from quasar_vit.export.intforward import integer_forward

        return integer_forward(self, x, _TorchGemms(self), trace)


def deploy_model(ir: IntViT) -> nn.Module:
    """The deploy model of an export: :class:`DeployIntViT` for integer nonlinear ops, else :class:`DeployViT`."""
    return DeployIntViT(ir) if ir.nonlinear == "integer" else DeployViT(ir)


__all__ = ["DeployViT", "DeployIntViT", "FakeQuant", "deploy_model"]
