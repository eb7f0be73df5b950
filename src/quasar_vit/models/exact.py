"""Exact integer GEMMs inside the fake-quant forward (``model.nonlinear: integer``).

With integer nonlinear ops every quantisation point is computed from a GEMM's exact integer
accumulator (as the accelerator computes it), so the training forward needs that accumulator, not
a float sum of fake-quant products that may round differently.  :func:`exact_matmul` gets it with
one matmul on the integer codes (float32 holds every product and partial sum exactly below 2**24;
float64 above), and still returns a differentiable float output ``acc * s_a * s_b`` whose backward
is the ordinary matmul's on the fake-quant operands: one GEMM forward, two backward, as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

_F32_EXACT = 2**24


class _ExactMatmul(torch.autograd.Function):
    """``(acc * s_a * s_b, acc)`` for fake-quant operands ``a = codes_a * s_a``, ``b = codes_b * s_b``."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, s_a: Tensor, s_b: Tensor, bound: int) -> tuple[Tensor, Tensor]:
        ctx.save_for_backward(a, b)
        dt = torch.float32 if bound < _F32_EXACT else torch.float64
        with torch.autocast(device_type=a.device.type, enabled=False):
            ca = torch.round(a.float() / s_a.float()).to(dt)
            cb = torch.round(b.float() / s_b.float()).to(dt)
            acc = torch.matmul(ca, cb)
            y = acc.float() * (s_a.float() * s_b.float())
        ctx.mark_non_differentiable(acc)
        return y, acc

    @staticmethod
    def backward(ctx: Any, gy: Tensor, _gacc: Any) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        a, b = ctx.saved_tensors
        gy = gy.to(a.dtype)
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = torch.matmul(gy, b.transpose(-2, -1).to(gy.dtype))
        if ctx.needs_input_grad[1]:
            if b.dim() == 2 and a.dim() > 2:  # a linear layer: sum over the batch dimensions
                gb = a.reshape(-1, a.shape[-1]).transpose(0, 1).to(gy.dtype) @ gy.reshape(-1, gy.shape[-1])
            else:
                gb = torch.matmul(a.transpose(-2, -1).to(gy.dtype), gy)
        return ga, gb, None, None, None


def exact_matmul(a: Tensor, b: Tensor, s_a: Tensor, s_b: Tensor, a_max: int, b_max: int) -> tuple[Tensor, Tensor]:
    """``(y, acc)``: the exact ``codes_a @ codes_b`` and ``y = float32(acc) * (s_a * s_b)``.

    Args:
        a: fake-quant values ``codes_a * s_a`` ``[..., M, K]``.
        b: fake-quant values ``codes_b * s_b`` ``[K, N]`` or ``[..., K, N]``.
        s_a: the step of ``a`` (a scalar tensor).
        s_b: the step of ``b``: a scalar, or one per column ``[N]`` (a weight's per-row steps).
        a_max, b_max: largest code magnitudes (for the exactness bound of the float matmul).

    Returns:
        ``y`` (differentiable; its backward is ``a @ b``'s) and ``acc`` (no gradient; float32
        holding the exact integers, float64 when the bound needs it).
    """
    bound = int(a_max) * int(b_max) * int(a.shape[-1])
    return _ExactMatmul.apply(a, b, s_a, s_b, bound)


__all__ = ["exact_matmul"]
