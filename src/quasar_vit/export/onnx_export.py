"""ONNX graph of the exported subnet (opset 21), built directly from the integer weights.

Representation (documented in ``docs/export.md``):

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

The graph is built with ``onnx.helper`` instead of ``torch.onnx.export`` because the training-time
LSQ autograd function does not export and because this keeps the row groups explicit.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from quasar_vit.errors import ExportError

OPSET = 21


class _Graph:
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
    def fake_quant(self, x: str, step: float, lo: int, hi: int, signed: bool, base: str) -> str:
        dt = np.int8 if signed else np.uint8
        s = self.const(np.array(step, np.float32), f"{base}.act_step")
        z = self.const(np.array(0, dt), f"{base}.act_zp")
        q = self.op("QuantizeLinear", [x, s, z], f"{base}.q")
        c = self.op("Clip", [q, self.const(np.array(lo, dt), f"{base}.qmin"),
                             self.const(np.array(hi, dt), f"{base}.qmax")], f"{base}.clip")
        return self.op("DequantizeLinear", [c, s, z], f"{base}.dq")

    def weight(self, arrays: Mapping[str, np.ndarray], name: str) -> str:
        step, rows4, rows8 = arrays[f"{name}.step"], arrays[f"{name}.rows4"], arrays[f"{name}.rows8"]
        parts = []
        if len(rows4):
            w = self.int4(arrays[f"{name}.w4"].T, f"{name}.w4")
            s = self.const(step[rows4].astype(np.float32), f"{name}.step4")
            z = self.int4(np.zeros(len(rows4), np.int8), f"{name}.zp4")
            parts.append(self.op("DequantizeLinear", [w, s, z], f"{name}.w4_dq", axis=1))
        if len(rows8):
            w8 = arrays[f"{name}.w_int"][rows8].astype(np.int8)
            w = self.const(np.ascontiguousarray(w8.T), f"{name}.w8")
            s = self.const(step[rows8].astype(np.float32), f"{name}.step8")
            z = self.const(np.zeros(len(rows8), np.int8), f"{name}.zp8")
            parts.append(self.op("DequantizeLinear", [w, s, z], f"{name}.w8_dq", axis=1))
        if len(parts) == 1:
            return parts[0]
        cat = self.op("Concat", parts, f"{name}.w_groups", axis=1)
        order = np.argsort(np.concatenate([rows4, rows8])).astype(np.int64)
        return self.op("Gather", [cat, self.const(order, f"{name}.order")], f"{name}.w", axis=1)

    def linear(self, arrays: Mapping[str, np.ndarray], name: str, x: str, srange: tuple[int, int]) -> str:
        xq = self.fake_quant(x, float(arrays[f"{name}.act_step"]), *srange, True, f"{name}.in")
        y = self.op("MatMul", [xq, self.weight(arrays, name)], f"{name}.matmul")
        return self.op("Add", [y, self.const(arrays[f"{name}.bias"].astype(np.float32), f"{name}.bias")], name)

    def layernorm(self, arrays: Mapping[str, np.ndarray], prefix: str, x: str, eps: float) -> str:
        return self.op("LayerNormalization", [x, self.const(arrays[f"{prefix}.weight"], f"{prefix}.weight"),
                                              self.const(arrays[f"{prefix}.bias"], f"{prefix}.bias")],
                       prefix, axis=-1, epsilon=eps)

    def i64(self, v: list[int], base: str) -> str:
        return self.const(np.array(v, np.int64), base)


def build_onnx(arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]):
    """The ONNX ``ModelProto`` of the exported subnet (input ``images`` [N, C, H, W] -> ``logits``)."""
    try:
        import onnx
        from onnx import TensorProto, helper
    except ImportError:  # pragma: no cover
        raise ExportError("the ONNX export needs the 'onnx' package (pip install quasar-vit[export])") from None
    g = _Graph()
    sub = manifest["subnet"]
    q = manifest["quant"]
    srange, urange = tuple(q["act_range_signed"]), tuple(q["act_range_unsigned"])
    eps = float(manifest["layer_norm_eps"])
    c, hw, p, hd = sub["in_chans"], sub["img_size"], sub["patch_size"], sub["head_dim"]
    n = (hw // p) ** 2
    t = n + 1
    e = sub["embed_dim"]

    x = g.op("Reshape", ["images", g.i64([0, c, hw // p, p, hw // p, p], "patch.shape1")], "patch.r1")
    x = g.op("Transpose", [x], "patch.t", perm=[0, 2, 4, 1, 3, 5])
    x = g.op("Reshape", [x, g.i64([0, n, c * p * p], "patch.shape2")], "patch.r2")
    tok = g.linear(arrays, "patch_embed", x, srange)
    batch = g.op("Shape", [tok], "batch", start=0, end=1)
    cshape = g.op("Concat", [batch, g.i64([1, e], "cls.tail")], "cls.shape", axis=0)
    cls = g.op("Expand", [g.const(arrays["cls_token"].reshape(1, 1, e), "cls_token"), cshape], "cls")
    x = g.op("Concat", [cls, tok], "tokens", axis=1)
    x = g.op("Add", [x, g.const(arrays["pos_embed"][None], "pos_embed")], "embed")
    for i in range(sub["depth"]):
        pre = f"blocks.{i}"
        heads = sub["num_heads"][i]
        h = g.layernorm(arrays, f"{pre}.norm1", x, eps)
        qkv = g.linear(arrays, f"{pre}.qkv", h, srange)
        qkv = g.op("Reshape", [qkv, g.i64([0, t, 3, heads, hd], f"{pre}.qkv.shape")], f"{pre}.qkv.r")
        qkv = g.op("Transpose", [qkv], f"{pre}.qkv.t", perm=[2, 0, 3, 1, 4])
        ops = []
        for j, nm in enumerate(("aq_q", "aq_k", "aq_v")):
            v = g.op("Gather", [qkv, g.const(np.array(j, np.int64), f"{pre}.idx{j}")], f"{pre}.{nm[-1]}", axis=0)
            if nm == "aq_k":  # k^T, transposed before its (elementwise) quantisation
                v = g.op("Transpose", [v], f"{pre}.kT", perm=[0, 1, 3, 2])
            ops.append(g.fake_quant(v, float(arrays[f"{pre}.{nm}.step"]), *srange, True, f"{pre}.{nm}"))
        qq, kt, vv = ops
        s = g.op("MatMul", [qq, kt], f"{pre}.qk")
        s = g.op("Mul", [s, g.const(np.array(hd ** -0.5, np.float32), f"{pre}.attn_scale")], f"{pre}.scores")
        s = g.op("Softmax", [s], f"{pre}.softmax", axis=-1)
        s = g.fake_quant(s, float(arrays[f"{pre}.aq_attn.step"]), *urange, False, f"{pre}.aq_attn")
        a = g.op("MatMul", [s, vv], f"{pre}.av")
        a = g.op("Transpose", [a], f"{pre}.av.t", perm=[0, 2, 1, 3])
        a = g.op("Reshape", [a, g.i64([0, t, heads * hd], f"{pre}.av.shape")], f"{pre}.av.r")
        a = g.linear(arrays, f"{pre}.proj", a, srange)
        a = g.op("Mul", [a, g.const(arrays[f"{pre}.ls1"], f"{pre}.ls1")], f"{pre}.ls1_mul")
        x = g.op("Add", [x, a], f"{pre}.res1")
        h = g.layernorm(arrays, f"{pre}.norm2", x, eps)
        h = g.linear(arrays, f"{pre}.fc1", h, srange)
        u = g.op("Mul", [h, g.const(np.array(1 / math.sqrt(2.0), np.float32), f"{pre}.rsqrt2")], f"{pre}.gelu.u")
        u = g.op("Erf", [u], f"{pre}.gelu.erf")
        u = g.op("Add", [u, g.const(np.array(1.0, np.float32), f"{pre}.one")], f"{pre}.gelu.add")
        u = g.op("Mul", [h, u], f"{pre}.gelu.mul")
        h = g.op("Mul", [u, g.const(np.array(0.5, np.float32), f"{pre}.half")], f"{pre}.gelu")
        h = g.linear(arrays, f"{pre}.fc2", h, srange)
        h = g.op("Mul", [h, g.const(arrays[f"{pre}.ls2"], f"{pre}.ls2")], f"{pre}.ls2_mul")
        x = g.op("Add", [x, h], f"{pre}.res2")
    x = g.layernorm(arrays, "norm", x, eps)
    x = g.op("Gather", [x, g.const(np.array(0, np.int64), "cls_index")], "cls_out", axis=1)
    logits = g.linear(arrays, "head", x, srange)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="logits"))
    graph = helper.make_graph(
        g.nodes, "quasar_vit_subnet",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", c, hw, hw])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", sub["num_classes"]])],
        g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="quasar-vit")
    model.ir_version = 10
    helper.set_model_props(model, {"subnet": json.dumps(sub), "bitmap": "bitmap.json",
                                   "weights": "row groups: INT4 rows + INT8 rows, per-row scales",
                                   "activations": f"{q['act_bits']}-bit QDQ (int8/uint8 + Clip)"})
    onnx.checker.check_model(model)
    return model


def save_onnx(arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any], path: str | Path) -> None:
    import onnx

    onnx.save(build_onnx(arrays, manifest), str(path))


def onnx_session(path: str | Path):
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover
        raise ExportError("running the ONNX model needs 'onnxruntime'") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    out = [session.run(["logits"], {"images": np.ascontiguousarray(images[i:i + batch_size], np.float32)})[0]
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


__all__ = ["build_onnx", "save_onnx", "onnx_session", "run_onnx", "OPSET"]
