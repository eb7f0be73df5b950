"""QONNX graph of the exported subnet (``model.qonnx.onnx``): ``Quant`` nodes with explicit bit widths.

QONNX (the format FINN, hls4ml and the ``qonnx`` utilities read) marks every quantisation point
with a ``Quant`` node (domain ``qonnx.custom_op.general``) whose bit width is an input, so a 4-bit
and a 6-bit tensor are told apart in the graph itself rather than by an integer container type.
``model.onnx`` cannot be read by those tools: its INT4 initializers stop ``qonnx``'s
``QCDQToQuant`` (``Unsupported element type: 22``).

For an integer export (``nonlinear: integer``) :func:`build_qonnx` writes the integer graph of
:mod:`quasar_vit.export.onnx_integer` instead: the same ``Quant``-marked codes and row groups and
``MatMul``s on codes, with LayerNorm, softmax, GELU and the residual adds as the integer stages of
``quantization/intops.py`` (double tensors holding integers, a few int64 per-row steps); its
logits are the engine's bit for bit.  What follows describes the float exports' graph.

The graph is written in the integer form FINN's streamlining aims for, the arithmetic of the
NumPy reference engine (``export/reference.py``), so ``InferDataTypes`` sees integer tensors:

* a 6-bit activation is ``Div(x, s)`` -> ``Quant(scale 1, zero point 0, bits 6, signed as the
  layer's range)``: the tensor holds the codes themselves (``Div`` rounds like the engine's
  ``x / s``; ``Quant`` rounds half to even and clamps, as ``quantize`` does);
* a linear layer is split into its row groups: the 8-bit rows and the 4-bit rows are two integer
  initializers, each behind its own ``Quant`` (bits 8 / 4, scale 1; a Quant's bit width is one
  scalar), joined with ``Concat`` (8-bit group first, so qonnx's Concat rule, which takes the first
  input's type, reports INT8) and put back in row order by a ``Gather`` with a fixed permutation.
  ``MatMul`` of codes by codes is the exact integer accumulator (in float32 while every partial
  sum is an integer below 2**24, else in float64, like the engine's BLAS path), then ``Mul`` by
  the per-row ``s_x * s_row`` and ``Add`` of the bias;
* ``q k^T`` and ``P v`` multiply codes too; the ``P v`` accumulator is requantised to the
  projection's input code exactly as the engine does (``(acc * mult + 2**(shift-1)) >> shift``),
  computed in float64 where it is exact (``Cast``, ``Mul``, ``Add 0.5``, ``Floor``), then a ``Quant``
  clamps it;
* LayerNorm (``LayerNormalization``), Softmax and GELU (``Erf``) stay float32 ops, as on the ARM cores.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from quasar_vit.errors import ExportError
from quasar_vit.export.ir import IntBlock, IntLinear, IntViT, as_ir
from quasar_vit.export.onnx_export import _Graph, _model, _quantized_q_kt_v, _require_onnx, build_graph, merge_heads

QONNX_DOMAIN = "qonnx.custom_op.general"
EXACT_F32 = 2**24  # float32 adds integers exactly below this


def _bits(lo: int, hi: int) -> tuple[int, bool]:
    """``(bit width, signed)`` of the full two's-complement / unsigned range ``[lo, hi]``."""
    signed = lo < 0
    bits = (hi - lo + 1).bit_length() - 1
    want = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if (lo, hi) != want or 2**bits != hi - lo + 1:
        raise ExportError(
            f"activation range [{lo}, {hi}] is not a full {bits}-bit range; a QONNX Quant (narrow=0) cannot express it"
        )
    return bits, signed


class _QonnxGraph(_Graph):
    """The QONNX layer builders: quantisation points yield integer codes (see the module docstring)."""

    description = {
        "weights": "row groups: Quant(bits 8) rows + Quant(bits 4) rows (integer codes), per-row rescale",
        "activations": "Div by the step -> Quant(bits 6, scale 1): integer codes",
    }

    def quant(self, x: str, bits: int, signed: bool, base: str) -> str:
        """``Quant(x, scale=1, zeropt=0, bitwidth=bits)``: round half to even, clamp to the range."""
        one, zero = np.array(1.0, np.float32), np.array(0.0, np.float32)
        ins = [
            x,
            self.const(one, f"{base}.scale"),
            self.const(zero, f"{base}.zeropt"),
            self.const(np.array(float(bits), np.float32), f"{base}.bitwidth"),
        ]
        out = self.name(f"{base}.quant")
        self.nodes.append(
            self.h.make_node(
                "Quant", ins, [out], name=out, domain=QONNX_DOMAIN, signed=int(signed), narrow=0, rounding_mode="ROUND"
            )
        )
        return out

    def fake_quant(self, x: str, step: float, lo: int, hi: int, base: str) -> str:
        """The codes ``clamp(round(x / step), lo, hi)`` (not dequantized: consumers rescale); the
        Quant's width and signedness are those of ``[lo, hi]``."""
        bits, signed = _bits(lo, hi)
        d = self.op("Div", [x, self.const(np.array(step, np.float32), f"{base}.step")], f"{base}.div")
        return self.quant(d, bits, signed, base)

    def weight(self, lin: IntLinear) -> str:
        """The ``[in, out]`` integer weight codes: 8-bit and 4-bit row groups, back in row order."""
        groups = [(rows, bits) for rows, bits in ((lin.rows8, 8), (lin.rows4, 4)) if len(rows)]
        parts = []
        for rows, bits in groups:
            codes = self.const(np.ascontiguousarray(lin.w_int[rows].T.astype(np.float32)), f"{lin.name}.w{bits}")
            parts.append(self.quant(codes, bits, True, f"{lin.name}.w{bits}"))
        if len(parts) == 1:
            return parts[0]
        cat = self.op("Concat", parts, f"{lin.name}.w_groups", axis=1)
        order = np.argsort(np.concatenate([rows for rows, _ in groups])).astype(np.int64)
        return self.op("Gather", [cat, self.const(order, f"{lin.name}.order")], f"{lin.name}.w", axis=1)

    def int_linear(self, lin: IntLinear, codes: str) -> str:
        """Integer accumulator of input codes by weight codes, then ``acc * (s_x s_row) + bias``.

        A float32 MatMul sums integers exactly while every partial sum stays below 2**24, as in the
        engine; a layer whose bound ``K * max|x| * max|w|`` reaches it accumulates in float64.
        """
        bound = lin.in_features * lin.a_max * int(np.abs(lin.w_int).max(initial=0))
        w = self.weight(lin)
        if bound < EXACT_F32:
            acc = self.op("MatMul", [codes, w], f"{lin.name}.acc")
        else:
            wide = [self.op("Cast", [t], f"{lin.name}.f64", to=self.TP.DOUBLE) for t in (codes, w)]
            acc = self.op("Cast", [self.op("MatMul", wide, f"{lin.name}.acc64")], f"{lin.name}.acc", to=self.TP.FLOAT)
        y = self.op("Mul", [acc, self.const(lin.scale, f"{lin.name}.scale")], f"{lin.name}.rescale")
        return self.op("Add", [y, self.const(lin.bias.astype(np.float32), f"{lin.name}.bias")], lin.name)

    def linear(self, lin: IntLinear, x: str) -> str:
        lo, hi = lin.act_range
        return self.int_linear(lin, self.fake_quant(x, float(lin.act_step), lo, hi, f"{lin.name}.in"))

    def requant(self, acc: str, blk: IntBlock) -> str:
        """``clamp((acc * mult + 2**(shift-1)) >> shift)``: the engine's fixed-point requantisation.

        Exact in float64 (``acc * mult`` < 2**53); in float32 the product would round.
        """
        pre, (mult, shift) = f"blocks.{blk.index}", blk.requant
        tp = self.TP
        m = self.const(np.array(mult / 2.0**shift, np.float64), f"{pre}.requant.m")
        a = self.op("Cast", [acc], f"{pre}.pv.f64", to=tp.DOUBLE)
        a = self.op("Mul", [a, m], f"{pre}.pv.m")
        a = self.op("Add", [a, self.const(np.array(0.5, np.float64), f"{pre}.half")], f"{pre}.pv.h")
        a = self.op("Cast", [self.op("Floor", [a], f"{pre}.pv.floor")], f"{pre}.pv.f32", to=tp.FLOAT)
        return self.quant(a, *_bits(*blk.proj.act_range), f"{pre}.proj.in")

    def attention(self, blk: IntBlock, qkv: str, ir: IntViT) -> str:
        """``proj`` of the requantised ``P v``, with ``q k^T`` and ``P v`` on integer codes."""
        pre = f"blocks.{blk.index}"
        qq, kt, vv = _quantized_q_kt_v(self, blk, qkv, ir)
        s = self.op("MatMul", [qq, kt], f"{pre}.qk")
        s = self.op("Mul", [s, self.const(np.array(blk.score_scale, np.float32), f"{pre}.score_scale")], f"{pre}.qk.s")
        s = self.op("Mul", [s, self.const(np.array(ir.attn_scale, np.float32), f"{pre}.attn_scale")], f"{pre}.scores")
        s = self.op("Softmax", [s], f"{pre}.softmax", axis=-1)
        p = self.fake_quant(s, float(blk.s_attn), *ir.act_range_unsigned, f"{pre}.aq_attn")
        acc = self.op("MatMul", [p, vv], f"{pre}.av")
        return self.int_linear(blk.proj, merge_heads(self, blk, self.requant(acc, blk), ir))


def build_qonnx(ir: IntViT | Mapping[str, np.ndarray], manifest: Mapping[str, Any] | None = None, batch: int = 1):
    """The QONNX ``ModelProto`` (input ``images`` [batch, C, H, W] -> ``logits``); needs ``onnx`` only.

    The batch size is fixed (1 by default), as FINN and qonnx's executor want static shapes.
    """
    _require_onnx()
    ir = as_ir(ir, manifest)
    if ir.nonlinear == "integer":  # the integers of integer_forward, Quant-marked (onnx_integer.py)
        from quasar_vit.export.onnx_integer import IntegerQonnxGraph, build_integer_graph

        ig = IntegerQonnxGraph()
        build_integer_graph(ig, ir)
        return _model(ig, ir, domains={QONNX_DOMAIN: 1}, batch=batch)
    g = _QonnxGraph()
    build_graph(g, ir)
    return _model(g, ir, domains={QONNX_DOMAIN: 1}, batch=batch)


def save_qonnx(ir: IntViT, path: str | Path) -> None:
    import onnx

    onnx.save(build_qonnx(ir), str(path))


# ---- reading it back with the qonnx package (an optional extra: pip install quasar-vit[qonnx]) -----
def _qonnx():
    """The qonnx entry points used here, or an ExportError that says how to get them."""
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_datatypes import InferDataTypes
        from qonnx.transformation.infer_shapes import InferShapes
        from qonnx.util.cleanup import cleanup_model
    except ImportError:
        raise ExportError("checking a QONNX file needs the 'qonnx' package (pip install quasar-vit[qonnx])") from None
    return ModelWrapper, cleanup_model, InferShapes, InferDataTypes, execute_onnx


def qonnx_run(model: Any, images: np.ndarray, batch: int = 1) -> tuple[np.ndarray, Counter]:
    """Logits of ``images`` as qonnx computes them, and qonnx's datatypes as ``(op_type, datatype)`` counts.

    ``model``: a path or ``ModelProto``.  The file goes through what a FINN/hls4ml user runs first:
    ``ModelWrapper``, ``cleanup_model`` (which renames the tensors), ``InferShapes``,
    ``InferDataTypes``; then ``execute_onnx`` (node by node, ``Quant`` in NumPy) one image at a
    time, the file's batch size being 1.  With ``batch > 1`` the graph's input and output batch
    dimension is set to ``batch`` first (nothing else in the graph depends on it: its reshapes
    use -1) and ``batch`` images run per ``execute_onnx`` call, the last call zero-padded: the same
    per-image logits, far fewer single-node sessions.
    """
    wrapper, cleanup, shapes, dtypes, execute = _qonnx()
    import onnx

    proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
    if batch != 1:
        proto = onnx.ModelProto.FromString(proto.SerializeToString())  # the caller's proto stays as it is
        for vi in (proto.graph.input[0], proto.graph.output[0]):
            vi.type.tensor_type.shape.dim[0].dim_value = batch
    mw = cleanup(wrapper(proto)).transform(shapes()).transform(dtypes())
    inp, out = mw.graph.input[0].name, mw.graph.output[0].name
    logits = []
    for i in range(0, len(images), batch):
        x = np.ascontiguousarray(images[i : i + batch], np.float32)
        real = len(x)
        if real < batch:
            x = np.concatenate([x, np.zeros((batch - real, *x.shape[1:]), np.float32)])
        logits.append(execute(mw, {inp: x})[out][:real])
    kinds = Counter(
        (n.op_type, mw.get_tensor_datatype(o).get_canonical_name()) for n in mw.graph.node for o in n.output
    )
    return np.concatenate(logits), kinds


#: a linear layer's name at the start of one of its own tensors (its input codes, weights, accumulator, output)
_LINEAR = re.compile(
    r"^(patch_embed|head|blocks\.\d+\.(qkv|proj|fc1|fc2))"
    r"(?=$|\.(in\.|w4\.|w8\.|w_groups$|w$|acc$|rescale$))"
)


def qonnx_datatypes(model: Any) -> dict[str, list[str]]:
    """What qonnx's ``InferDataTypes`` infers for each kind of tensor: ``{role: [datatypes]}``.

    Runs without ``cleanup_model`` so the builder's tensor names survive; a role is a tensor name
    with its counter dropped, any linear layer written ``L`` and any block ``blocks.i``
    (``L.in.quant``: a linear layer's input codes, ``L.w4.quant``: its 4-bit weight rows, ...).
    """
    wrapper, _, shapes, dtypes, _ = _qonnx()
    mw = wrapper(model).transform(shapes()).transform(dtypes())
    roles: dict[str, set[str]] = {}
    for node in mw.graph.node:
        for o in node.output:
            role = re.sub(r"blocks\.\d+", "blocks.i", _LINEAR.sub("L", re.sub(r"_\d+$", "", o)))
            roles.setdefault(f"{node.op_type} {role}", set()).add(mw.get_tensor_datatype(o).get_canonical_name())
    return {k: sorted(v) for k, v in sorted(roles.items())}


__all__ = ["build_qonnx", "save_qonnx", "qonnx_run", "qonnx_datatypes", "QONNX_DOMAIN"]
