"""ONNX graph of the exported subnet (opset 21), built directly from the integer weights.

This module builds the graphs of float exports (``nonlinear: float``: float LayerNorm, softmax and
GELU between the integer GEMMs) and the ``fp32`` baseline of any export.  For an integer export
(``nonlinear: integer``) :func:`build_onnx` builds ``model.onnx`` and ``model.int8.onnx`` with
:mod:`quasar_vit.export.onnx_integer` instead: ``MatMulInteger`` GEMMs and the integer stages of
``quantization/intops.py`` on double tensors holding integers, bit-identical to the engine.

Representation of the float graphs (documented in ``docs/export.md``):

* **weights**: every linear layer is split into its two row groups.  The 4-bit rows are an
  ``INT4`` initializer, the 8-bit rows an ``INT8`` initializer, both stored transposed
  (``[in, rows]``) with one scale per row (``DequantizeLinear``, ``axis=1``, zero point 0).  The
  two dequantized groups are concatenated and put back in row order with a ``Gather``
  (``L.order``), so the graph holds exactly the integers of ``weights.npz`` at their true widths.
  The per-row bit map is also written as the side file ``bitmap.json``.
* **activations**: each 6-bit quantisation point is ``QuantizeLinear`` (int8, or uint8 for the
  softmax probabilities; zero point 0; round half to even) -> ``Clip`` to the 6-bit range
  ([-32, 31] or [0, 63]) -> ``DequantizeLinear``.
* LayerNorm is ``LayerNormalization``, GELU is the exact ``0.5 x (1 + erf(x / sqrt 2))``, the
  layer scales are ``Mul`` before the residual ``Add``.

The builder reads the :class:`~quasar_vit.export.ir.IntViT` of the export.  The graph is built
with ``onnx.helper`` instead of ``torch.onnx.export`` because the training-time
LSQ autograd function does not export and because this keeps the row groups explicit.

The stages below call the layer builders of a graph object (``fake_quant``, ``weight``,
``linear``, ``attention``), so the other graphs of the same subnet override only those:
:class:`_IntegerGraph` (``model.int8.onnx``, the layout onnxruntime fuses into integer matmuls),
:class:`_FloatGraph` (float32, the benchmark's baseline) and the QONNX graph
(:mod:`quasar_vit.export.qonnx_export`).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from quasar_vit.errors import ExportError
from quasar_vit.export.ir import IntBlock, IntLinear, IntViT, as_ir

OPSET = 21


class _Graph:
    """The QDQ graph of ``model.onnx`` and the layer builders every ONNX variant shares."""

    description = {
        "weights": "row groups: INT4 rows + INT8 rows, per-row scales",
        "activations": "QDQ (int8/uint8 + Clip in the integer domain)",
    }

    def __init__(self) -> None:
        from onnx import helper, numpy_helper, TensorProto

        self.h, self.nh, self.TP = helper, numpy_helper, TensorProto
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value: np.ndarray, base: str) -> str:
        n = self.name(base)
        self.inits.append(self.nh.from_array(np.asarray(value), n))
        return n

    def int4(self, value: np.ndarray, base: str) -> str:
        n = self.name(base)
        v = np.asarray(value, np.int8)
        self.inits.append(self.h.make_tensor(n, self.TP.INT4, list(v.shape), v.flatten().tolist()))
        return n

    def op(self, op_type: str, inputs: list[str], base: str | None = None, **attrs: Any) -> str:
        out = self.name(base or op_type.lower())
        self.nodes.append(self.h.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    # ---- building blocks -----------------------------------------------------------------------
    def fake_quant(self, x: str, step: float, lo: int, hi: int, base: str) -> str:
        """``x`` quantised to the codes ``[lo, hi]`` (signed iff ``lo < 0``) and dequantized."""
        dt = np.int8 if lo < 0 else np.uint8
        s = self.const(np.array(step, np.float32), f"{base}.act_step")
        z = self.const(np.array(0, dt), f"{base}.act_zp")
        q = self.op("QuantizeLinear", [x, s, z], f"{base}.q")
        c = self.op(
            "Clip",
            [q, self.const(np.array(lo, dt), f"{base}.qmin"), self.const(np.array(hi, dt), f"{base}.qmax")],
            f"{base}.clip",
        )
        return self.op("DequantizeLinear", [c, s, z], f"{base}.dq")

    def weight(self, lin: IntLinear) -> str:
        """The dequantized ``[in, out]`` weight: INT4 and INT8 row groups, put back in row order."""
        name, step, rows4, rows8 = lin.name, lin.step, lin.rows4, lin.rows8
        parts = []
        if len(rows4):
            w = self.int4(lin.w4.T, f"{name}.w4")
            s = self.const(step[rows4].astype(np.float32), f"{name}.step4")
            z = self.int4(np.zeros(len(rows4), np.int8), f"{name}.zp4")
            parts.append(self.op("DequantizeLinear", [w, s, z], f"{name}.w4_dq", axis=1))
        if len(rows8):
            w8 = lin.w_int[rows8].astype(np.int8)
            w = self.const(np.ascontiguousarray(w8.T), f"{name}.w8")
            s = self.const(step[rows8].astype(np.float32), f"{name}.step8")
            z = self.const(np.zeros(len(rows8), np.int8), f"{name}.zp8")
            parts.append(self.op("DequantizeLinear", [w, s, z], f"{name}.w8_dq", axis=1))
        if len(parts) == 1:
            return parts[0]
        cat = self.op("Concat", parts, f"{name}.w_groups", axis=1)
        order = np.argsort(np.concatenate([rows4, rows8])).astype(np.int64)
        return self.op("Gather", [cat, self.const(order, f"{name}.order")], f"{name}.w", axis=1)

    def linear(self, lin: IntLinear, x: str) -> str:
        """Input fake-quant (the layer's own activation range), MatMul, bias."""
        lo, hi = lin.act_range
        xq = self.fake_quant(x, float(lin.act_step), lo, hi, f"{lin.name}.in")
        y = self.op("MatMul", [xq, self.weight(lin)], f"{lin.name}.matmul")
        return self.op("Add", [y, self.const(lin.bias.astype(np.float32), f"{lin.name}.bias")], lin.name)

    def layernorm(self, norm: tuple[np.ndarray, np.ndarray], prefix: str, x: str, eps: float) -> str:
        weight, bias = norm
        return self.op(
            "LayerNormalization",
            [x, self.const(weight, f"{prefix}.weight"), self.const(bias, f"{prefix}.bias")],
            prefix,
            axis=-1,
            epsilon=eps,
        )

    def i64(self, v: list[int], base: str) -> str:
        return self.const(np.array(v, np.int64), base)

    def attention(self, blk: IntBlock, qkv: str, ir: IntViT) -> str:
        """Attention of the ``qkv`` output through ``proj`` (a hook: the QONNX graph runs it on integer codes)."""
        return _attention_core(self, blk, qkv, ir)


# ---- the graph, stage by stage (each returns the name of its output tensor) -----------------------
def _patchify(g: _Graph, ir: IntViT) -> str:
    """``images`` [B, C, H, W] -> patches [B, N, C*p*p] in (c, dy, dx) order."""
    geo = ir.geometry
    c, hw, p = geo.in_chans, geo.img_size, geo.patch_size
    n = (hw // p) ** 2
    x = g.op("Reshape", ["images", g.i64([-1, c, hw // p, p, hw // p, p], "patch.shape1")], "patch.r1")
    x = g.op("Transpose", [x], "patch.t", perm=[0, 2, 4, 1, 3, 5])
    return g.op("Reshape", [x, g.i64([-1, n, c * p * p], "patch.shape2")], "patch.r2")


def _embed_tokens(g: _Graph, ir: IntViT, patches: str) -> str:
    """Patch embedding, the class token in front (expanded to the batch), plus the position embedding."""
    e = ir.subnet["embed_dim"]
    tok = g.linear(ir.patch_embed, patches)
    batch = g.op("Shape", [tok], "batch", start=0, end=1)
    cshape = g.op("Concat", [batch, g.i64([1, e], "cls.tail")], "cls.shape", axis=0)
    cls = g.op("Expand", [g.const(ir.cls_token.reshape(1, 1, e), "cls_token"), cshape], "cls")
    x = g.op("Concat", [cls, tok], "tokens", axis=1)
    return g.op("Add", [x, g.const(ir.pos_embed[None], "pos_embed")], "embed")


def _quantized_q_kt_v(g: _Graph, blk: IntBlock, qkv: str, ir: IntViT) -> list[str]:
    """Split ``qkv`` [B, T, 3*H*d] into the fake-quantized heads q, k^T, v ([B, H, T, d], k^T [B, H, d, T])."""
    pre, t = f"blocks.{blk.index}", ir.tokens
    qkv = g.op("Reshape", [qkv, g.i64([-1, t, 3, blk.heads, blk.head_dim], f"{pre}.qkv.shape")], f"{pre}.qkv.r")
    qkv = g.op("Transpose", [qkv], f"{pre}.qkv.t", perm=[2, 0, 3, 1, 4])
    ops = []
    for j, (nm, step) in enumerate((("aq_q", blk.s_q), ("aq_k", blk.s_k), ("aq_v", blk.s_v))):
        v = g.op("Gather", [qkv, g.const(np.array(j, np.int64), f"{pre}.idx{j}")], f"{pre}.{nm[-1]}", axis=0)
        if nm == "aq_k":  # k^T, transposed before its (elementwise) quantisation
            v = g.op("Transpose", [v], f"{pre}.kT", perm=[0, 1, 3, 2])
        ops.append(g.fake_quant(v, float(step), *ir.act_range_signed, f"{pre}.{nm}"))
    return ops


def _attention_core(g: "_Graph", blk: IntBlock, qkv: str, ir: IntViT) -> str:
    """``proj(softmax(q k^T / sqrt d) v)`` of the ``qkv`` output (heads merged before ``proj``)."""
    pre, hd = f"blocks.{blk.index}", blk.head_dim
    qq, kt, vv = _quantized_q_kt_v(g, blk, qkv, ir)
    s = g.op("MatMul", [qq, kt], f"{pre}.qk")
    s = g.op("Mul", [s, g.const(np.array(hd**-0.5, np.float32), f"{pre}.attn_scale")], f"{pre}.scores")
    s = g.op("Softmax", [s], f"{pre}.softmax", axis=-1)
    s = g.fake_quant(s, float(blk.s_attn), *ir.act_range_unsigned, f"{pre}.aq_attn")
    a = g.op("MatMul", [s, vv], f"{pre}.av")
    return g.linear(blk.proj, merge_heads(g, blk, a, ir))


def merge_heads(g: "_Graph", blk: IntBlock, a: str, ir: IntViT) -> str:
    """[B, H, T, d] -> [B, T, H*d]."""
    pre = f"blocks.{blk.index}"
    a = g.op("Transpose", [a], f"{pre}.av.t", perm=[0, 2, 1, 3])
    return g.op("Reshape", [a, g.i64([-1, ir.tokens, blk.attn_dim], f"{pre}.av.shape")], f"{pre}.av.r")


def _attention_branch(g: "_Graph", blk: IntBlock, x: str, ir: IntViT) -> str:
    """``ls1 * proj(attention(qkv(norm1(x))))``, probabilities quantized (unsigned)."""
    pre = f"blocks.{blk.index}"
    h = g.layernorm(blk.norm1, f"{pre}.norm1", x, ir.layer_norm_eps)
    a = g.attention(blk, g.linear(blk.qkv, h), ir)
    return g.op("Mul", [a, g.const(blk.ls1, f"{pre}.ls1")], f"{pre}.ls1_mul")


def _exact_gelu(g: _Graph, h: str, pre: str) -> str:
    """``0.5 * h * (1 + erf(h / sqrt 2))``."""
    u = g.op("Mul", [h, g.const(np.array(1 / math.sqrt(2.0), np.float32), f"{pre}.rsqrt2")], f"{pre}.gelu.u")
    u = g.op("Erf", [u], f"{pre}.gelu.erf")
    u = g.op("Add", [u, g.const(np.array(1.0, np.float32), f"{pre}.one")], f"{pre}.gelu.add")
    u = g.op("Mul", [h, u], f"{pre}.gelu.mul")
    return g.op("Mul", [u, g.const(np.array(0.5, np.float32), f"{pre}.half")], f"{pre}.gelu")


def _mlp_branch(g: _Graph, blk: IntBlock, x: str, ir: IntViT) -> str:
    """``ls2 * fc2(gelu(fc1(norm2(x))))``."""
    pre = f"blocks.{blk.index}"
    h = g.layernorm(blk.norm2, f"{pre}.norm2", x, ir.layer_norm_eps)
    h = _exact_gelu(g, g.linear(blk.fc1, h), pre)
    h = g.linear(blk.fc2, h)
    return g.op("Mul", [h, g.const(blk.ls2, f"{pre}.ls2")], f"{pre}.ls2_mul")


def _block(g: _Graph, blk: IntBlock, x: str, ir: IntViT) -> str:
    """One transformer block: the two residual branches."""
    pre = f"blocks.{blk.index}"
    x = g.op("Add", [x, _attention_branch(g, blk, x, ir)], f"{pre}.res1")
    return g.op("Add", [x, _mlp_branch(g, blk, x, ir)], f"{pre}.res2")


def _classifier(g: _Graph, ir: IntViT, x: str) -> str:
    """Final LayerNorm, the class token's row, the head; its output is renamed ``logits``.

    The class token stays ``[B, 1, E]`` through the head and is squeezed after it: on a 2-D input
    onnxruntime first fuses MatMul + Add into a ``Gemm``, which its QDQ transformer then cannot
    turn into an integer kernel (the float bias has no ``DequantizeLinear``).
    """
    x = g.layernorm(ir.norm, "norm", x, ir.layer_norm_eps)
    x = g.op("Gather", [x, g.const(np.array([0], np.int64), "cls_index")], "cls_out", axis=1)
    logits = g.linear(ir.head, x)
    g.nodes.append(g.h.make_node("Squeeze", [logits, g.i64([1], "cls_axis")], ["logits"], name="logits"))
    return "logits"


def _act_bits(ir: IntViT) -> int:
    """Activation width, from the unsigned range ``[0, 2**bits - 1]``."""
    return (int(ir.act_range_unsigned[1]) + 1).bit_length() - 1


class _IntegerGraph(_Graph):
    """The onnxruntime integer layout (``model.int8.onnx``): every matmul a ``DequantizeLinear`` pair.

    onnxruntime's QDQ transformer turns ``DQ(a) -> MatMul <- DQ(b)`` into ``MatMulIntegerToFloat``
    (no ``QuantizeLinear`` after it) or ``QLinearMatMul`` (with one), but only when the two
    ``DequantizeLinear`` nodes feed the MatMul directly.  In ``model.onnx`` an int8-domain ``Clip``
    sits between Q and DQ and a ``Concat``/``Gather`` between the weight DQ and the MatMul.  Here:

    * a 6-bit activation is ``Clip`` in float to ``[lo*s, hi*s]`` -> ``QuantizeLinear`` to uint8
      -> ``DequantizeLinear``: signed codes sit at zero point ``-lo`` ([-32, 31] -> [0, 63]),
      unsigned at 0.  ``round(clip(x, lo s, hi s) / s) == clip(round(x / s), lo, hi)``, so the codes
      are the QDQ graph's.  uint8 x int8 is the x86 kernels' native pair (U8S8); codes <= 63 keep
      AVX2's 16-bit pair sums (2 * 63 * 128 < 2**15) from saturating.
    * a weight is one int8 ``[in, out]`` initializer (the 4-bit rows hold codes in [-8, 7]) with
      one scale per output row (``axis=1``); nothing between it and the MatMul.
    """

    description = {
        "weights": "one INT8 tensor per linear (4-bit rows stored in int8), per-row scales",
        "activations": "codes in uint8 (zero point -lo if signed, else 0), float Clip before QuantizeLinear",
    }

    def fake_quant(self, x: str, step: float, lo: int, hi: int, base: str) -> str:
        zp = -lo if lo < 0 else 0
        s = self.const(np.array(step, np.float32), f"{base}.act_step")
        z = self.const(np.array(zp, np.uint8), f"{base}.act_zp")
        c = self.op(
            "Clip",
            [
                x,
                self.const(np.array(lo * step, np.float32), f"{base}.min"),
                self.const(np.array(hi * step, np.float32), f"{base}.max"),
            ],
            f"{base}.clip",
        )
        q = self.op("QuantizeLinear", [c, s, z], f"{base}.q")
        return self.op("DequantizeLinear", [q, s, z], f"{base}.dq")

    def weight(self, lin: IntLinear) -> str:
        w = self.const(np.ascontiguousarray(lin.w_int.T.astype(np.int8)), f"{lin.name}.w")
        s = self.const(lin.step.astype(np.float32), f"{lin.name}.step")
        z = self.const(np.zeros(lin.out_features, np.int8), f"{lin.name}.zp")
        return self.op("DequantizeLinear", [w, s, z], f"{lin.name}.w_dq", axis=1)


class _FloatGraph(_Graph):
    """The float32 graph of the same subnet (the benchmark's baseline): dequantized weights, no quantizers."""

    description = {"weights": "float32 (w_int * step)", "activations": "float32, not quantized"}

    def fake_quant(self, x: str, step: float, lo: int, hi: int, base: str) -> str:
        return x

    def weight(self, lin: IntLinear) -> str:
        w = lin.w_int.astype(np.float32) * lin.step[:, None].astype(np.float32)
        return self.const(np.ascontiguousarray(w.T), f"{lin.name}.w")


GRAPHS: dict[str, type[_Graph]] = {"qdq": _Graph, "int8": _IntegerGraph, "fp32": _FloatGraph}


def _model(g: _Graph, ir: IntViT, domains: Mapping[str, int] | None = None, batch: int | str = "batch"):
    """The checked ``ModelProto`` of the finished graph ``g``, with its I/O declarations and metadata."""
    import onnx

    helper, tp, sub = g.h, g.TP, ir.subnet
    geo = ir.geometry
    c, hw = geo.in_chans, geo.img_size
    graph = helper.make_graph(
        g.nodes,
        "quasar_vit_subnet",
        [helper.make_tensor_value_info("images", tp.FLOAT, [batch, c, hw, hw])],
        [helper.make_tensor_value_info("logits", tp.FLOAT, [batch, geo.num_classes])],
        g.inits,
    )
    imports = [helper.make_opsetid("", OPSET)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    model = helper.make_model(graph, opset_imports=imports, producer_name="quasar-vit")
    model.ir_version = 10
    helper.set_model_props(
        model, {"subnet": json.dumps(sub), "bitmap": "bitmap.json", "act_bits": str(_act_bits(ir)), **g.description}
    )
    if not domains:  # the checker rejects custom domains (QONNX's Quant); qonnx checks those graphs
        onnx.checker.check_model(model)
    return model


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:  # pragma: no cover
        raise ExportError("the ONNX export needs the 'onnx' package (pip install quasar-vit[export])") from None


def build_graph(g: _Graph, ir: IntViT) -> None:
    """Fill ``g`` with the whole subnet, ``images`` -> ``logits``, through ``g``'s layer builders."""
    x = _embed_tokens(g, ir, _patchify(g, ir))
    for blk in ir.blocks:
        x = _block(g, blk, x, ir)
    _classifier(g, ir, x)


def build_onnx(ir: IntViT | Mapping[str, np.ndarray], manifest: Mapping[str, Any] | None = None, variant: str = "qdq"):
    """The ONNX ``ModelProto`` of the exported subnet (input ``images`` [N, C, H, W] -> ``logits``).

    ``ir``: the :class:`~quasar_vit.export.ir.IntViT` of the export (or its ``arrays, manifest``).
    ``variant``: ``"qdq"`` (``model.onnx``: INT4/INT8 row groups, 6-bit QDQ with an integer Clip),
    ``"int8"`` (``model.int8.onnx``: the layout onnxruntime fuses into integer matmuls) or
    ``"fp32"`` (no quantization; a speed baseline).  For an integer export (``ir.nonlinear ==
    "integer"``) ``"qdq"`` and ``"int8"`` are the integer graphs of :mod:`.onnx_integer` (the
    engine's integers exactly, every GEMM a ``MatMulInteger``); ``"fp32"`` stays the float graph of
    the same weights (float LayerNorm/softmax/GELU), the speed baseline.
    """
    _require_onnx()
    if variant not in GRAPHS:
        raise ExportError(f"unknown ONNX variant {variant!r}; choose one of {', '.join(GRAPHS)}")
    ir = as_ir(ir, manifest)
    if ir.nonlinear == "integer" and variant != "fp32":  # the integers of integer_forward (onnx_integer.py)
        from quasar_vit.export.onnx_integer import IntegerOrtGraph, build_integer_graph

        ig = IntegerOrtGraph(variant)
        build_integer_graph(ig, ir)
        return _model(ig, ir)
    g = GRAPHS[variant]()
    build_graph(g, ir)
    return _model(g, ir)


def save_onnx(ir: IntViT | Mapping[str, np.ndarray], *args: Any, variant: str = "qdq") -> None:
    """Write the ONNX model: ``save_onnx(ir, path)``, or ``save_onnx(arrays, manifest, path)``."""
    import onnx

    if len(args) not in (1, 2):
        raise TypeError("save_onnx(ir, path) or save_onnx(arrays, manifest, path)")
    manifest = args[0] if len(args) == 2 else None
    onnx.save(build_onnx(ir, manifest, variant=variant), str(args[-1]))


def onnx_session(path: str | Path):
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover
        raise ExportError("running the ONNX model needs 'onnxruntime'") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


#: the integer matmul kernels onnxruntime's QDQ transformer produces
INTEGER_MATMULS = ("MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger")


def matmul_count(ir: IntViT) -> int:
    """Matmuls of the subnet: every linear layer, and ``q k^T`` and ``P v`` in each block."""
    return sum(1 for _ in ir.linears()) + 2 * len(ir.blocks)


def optimized_op_counts(path: str | Path) -> Counter:
    """Op types of the graph onnxruntime really runs: all its optimisations on, the result saved and counted."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="qvit-ort-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


def run_onnx(session: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    out = [
        session.run(["logits"], {"images": np.ascontiguousarray(images[i : i + batch_size], np.float32)})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


__all__ = [
    "build_onnx",
    "build_graph",
    "save_onnx",
    "onnx_session",
    "run_onnx",
    "optimized_op_counts",
    "matmul_count",
    "INTEGER_MATMULS",
    "OPSET",
    "GRAPHS",
]
