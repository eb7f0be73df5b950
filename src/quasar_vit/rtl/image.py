"""A whole image on the simulated RTL core: the subnet's steps, made from its integer IR, in one chain.

:func:`image_steps` is the core's program for an exported subnet (``nonlinear: integer``): the patch
embedding (a residual-mode linear that leaves the class token's row alone), every block as a chain
of steps (:func:`block_steps`), then the final LayerNorm and the head on the class token alone.
:func:`run_image` runs it in Verilator on one image and returns the head's accumulators, the
logits the engine's float rescale makes of them, and every step's codes and cycles.

The image runs on ``qv_top`` (:mod:`quasar_vit.rtl.program`): two load steps bring the patch codes
and the residual the tokens start from (the class token and the positions, ``ops.start``) from
DDR, then the sequencer runs the core's steps from the descriptor table; the head's accumulators
leave on the result port.  Its cycles are measured from ``run`` to ``done``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from quasar_vit.errors import RtlError
from quasar_vit.export.ir import IntBlock, IntViT
from quasar_vit.rtl.gemm import MODE_GELU, MODE_RESIDUAL, Layer
from quasar_vit.rtl.layout import Ddr, GemmShape
from quasar_vit.rtl.program import Program, TopRun, make_program, run_program


def head_order(heads: int) -> list[tuple[str, int]]:
    """The order of the heads' steps, ``("qk" | "sm" | "pv", head)``: the softmax of head h runs in
    the background beside Q K^T of head h + 1, and P V of head h then waits for it:
    QK0 SM0 QK1 PV0 SM1 QK2 PV1 ... SM(H-1) PV(H-1)."""
    order = [("qk", 0)]
    for h in range(heads):
        order += [("sm", h)] + ([("qk", h + 1)] if h + 1 < heads else []) + [("pv", h)]
    return order


def attention_steps(ir: IntViT, blk: IntBlock, n: int, heads: int | None = None) -> list[Layer]:
    """The Q K^T, softmax and P V steps of a block's first ``heads`` heads (all by default), in
    :func:`head_order`."""
    o, vit_ops = blk.ops, ir.ops
    assert o is not None and vit_ops is not None
    hd, total = blk.head_dim, blk.heads
    pv = tuple(int(np.asarray(v).ravel()[0]) for v in (o.pv.mult, o.pv.offset, o.pv.shift))
    sm = tuple(int(np.asarray(v).ravel()[0]) for v in (o.softmax.mult, o.softmax.shift, o.softmax.recip))
    make = {
        "qk": lambda h: Layer.scores(n, hd, h, total),
        "sm": lambda h: Layer.softmax(n, h, total, sm, ir.act_range_unsigned[1], vit_ops.softmax_frac_bits),  # type: ignore[arg-type]
        "pv": lambda h: Layer.attend(n, hd, h, total, pv, blk.proj.act_range),  # type: ignore[arg-type]
    }
    return [make[kind](h) for kind, h in head_order(total if heads is None else heads)]


def block_steps(ir: IntViT, blk: IntBlock, n: int) -> list[Layer]:
    """A block's steps: LayerNorm, qkv (a kv layer), the heads' Q K^T, softmax and P V
    (:func:`attention_steps`), proj with its residual add, LayerNorm, fc1 with GELU, fc2 with its
    residual add."""
    o, vit_ops = blk.ops, ir.ops
    assert o is not None and vit_ops is not None
    res = vit_ops.residual_range
    steps = [
        _layernorm(o.norm1, blk.qkv.act_range),
        Layer.from_ir(blk.qkv, o.qkv, ir.act_range_signed, kv=True),
        *attention_steps(ir, blk, n),
    ]
    top = 2**vit_ops.gelu_in_bits - 1
    return steps + [
        Layer.from_ir(blk.proj, o.proj, res, MODE_RESIDUAL),
        _layernorm(o.norm2, blk.fc1.act_range),
        Layer.from_ir(blk.fc1, o.fc1, (0, top), MODE_GELU, o.gelu_table, blk.fc2.act_range[0] < 0),
        Layer.from_ir(blk.fc2, o.fc2, res, MODE_RESIDUAL),
    ]


def _layernorm(norm: Any, out_range: tuple[int, int]) -> Layer:
    return Layer.layernorm(norm.gain, norm.offset, int(norm.shift), int(norm.eps), out_range)


def image_steps(ir: IntViT, shape: GemmShape) -> list[Layer]:
    """Every step of an image of ``ir`` on a core of ``shape``, in order."""
    ops = ir.ops
    if ir.nonlinear != "integer" or ops is None:
        raise RtlError("the RTL runs subnets exported with nonlinear: integer (every op in integers)")
    n = int(ops.start.shape[0])
    pe = ir.patch_embed
    kpad = -(-pe.in_features // shape.KP) * shape.KP
    w = np.zeros((pe.out_features, kpad), np.int64)
    w[:, : pe.in_features] = pe.w_int
    embed = Layer.from_ir(dataclasses.replace(pe, w_int=w), ops.patch_embed, ops.residual_range, MODE_RESIDUAL)
    steps = [dataclasses.replace(embed, skip_first=True)]
    for blk in ir.blocks:
        steps += block_steps(ir, blk, n)
    steps.append(dataclasses.replace(_layernorm(ops.norm, ir.head.act_range), tokens=1))
    head, wide = ir.head, (-(1 << (shape.out_w - 1)), (1 << (shape.out_w - 1)) - 1)
    one = np.ones(head.out_features, np.int64)
    steps.append(Layer(head.w_int, head.is8, one, 0 * one, 0 * one, wide, tokens=1, values_out=True))
    return steps


def image_codes(ir: IntViT, image: np.ndarray, shape: GemmShape) -> np.ndarray:
    """The patch embedding's input codes ``[N, K]`` of one normalised image ``[C, H, W]``: the engine's
    quantised patches from row 1 (row 0, the class token's, is zero) and K padded to a chunk."""
    from quasar_vit.export.reference import patchify, quantize

    pe = ir.patch_embed
    x = quantize(patchify(np.asarray(image)[None], ir.geometry.patch_size), pe.act_step, *pe.act_range)[0]
    codes = np.zeros((x.shape[0] + 1, -(-x.shape[1] // shape.KP) * shape.KP), np.int64)
    codes[1:, : x.shape[1]] = x
    return codes


@dataclass(frozen=True)
class ImageRun:
    acc: np.ndarray  # the head's accumulators [classes], from the result port
    logits: np.ndarray  # float32: acc * scale + bias, as the engine rescales them
    run: TopRun  # every step's codes and cycles, and the image's from run to done

    @property
    def cycles(self) -> int:
        """From ``run`` taken to ``done`` set (measured)."""
        return self.run.cycles


def image_program(ir: IntViT, image: np.ndarray, shape: GemmShape) -> Program:
    """The program of one image: its loads and :func:`image_steps`."""
    steps = image_steps(ir, shape)  # (one error line for a float-ops IR)
    assert ir.ops is not None
    signed = ir.patch_embed.act_range[0] < 0
    return make_program(shape, steps, image_codes(ir, image, shape), signed, np.asarray(ir.ops.start, np.int64))


def run_image(shape: GemmShape, ir: IntViT, image: np.ndarray, workdir: Path, ddr: Ddr = Ddr()) -> ImageRun:
    """One image through the whole subnet on the simulated accelerator (``qv_top``)."""
    run = run_program(shape, image_program(ir, image, shape), workdir, ddr)
    acc = run.results[0]
    head = ir.head
    logits = acc.astype(np.float32) * head.scale + head.bias
    return ImageRun(acc, logits, run)


__all__ = [
    "head_order",
    "attention_steps",
    "block_steps",
    "image_steps",
    "image_codes",
    "image_program",
    "run_image",
    "ImageRun",
]
