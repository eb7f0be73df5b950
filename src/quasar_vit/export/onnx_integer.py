"""ONNX and QONNX graphs of an integer export (``nonlinear: integer``): the integers of ``integer_forward``, exactly.

An export with integer nonlinear ops has one definition of its arithmetic,
:mod:`quasar_vit.quantization.intops`, wired through the subnet by
:func:`quasar_vit.export.intforward.integer_forward`.  The graphs built here compute those very
integers, step for step, so their logits are bit-identical to the NumPy reference engine's
(``IntegerViT(ir).forward(x)``) and to ``model.pt2``: there is no float LayerNorm, Softmax or
GELU left in them.  (Float exports keep the graphs of :mod:`.onnx_export` / :mod:`.qonnx_export`.)

Representation (one wiring, :func:`build_integer_graph`, for the three files; only the GEMMs, the
weight storage and the patch quantiser differ):

* **Three kinds of tensors.**  (1) *Integer containers* where an integer op takes them: 6-bit
  codes as ``uint8``/``int8`` into ``MatMulInteger`` and its ``int32`` accumulators; ``int64`` for
  the per-row values that may pass 2**53 (LayerNorm's ``V``, up to 2**62) or need an integer
  division (the softmax's row sum and reciprocal); ``uint64`` for the one ``BitShift``; ``int64``
  table indices.  (2) *double tensors holding integers* for every element-wise stage: the
  accumulators after ``Cast``, the residual stream (``residual_bits``-bit codes), the
  LayerNorm/requantiser/softmax intermediates and every code until it enters the next GEMM.
  That is intops' own representation, and the reason is ONNX's: a requantiser
  ``(v * M + B) >> S`` in int64 would need an arithmetic right shift by a per-row ``S`` of a signed
  value, and ONNX has only ``BitShift`` on unsigned types and an int64 ``Div`` that truncates
  towards zero.  intops evaluates it as ``floor(v * (M * 2**-S) + B * 2**-S)``, exact because
  every operand stays below 2**53 and scaling by a power of two is exact; here the per-row
  constants are pre-scaled in NumPy exactly as intops scales them (``mult * 2.0**-shift``,
  ``offset * 2.0**-shift``) and the ops run in intops' order with the same operands, so even a
  rounding, were there one, would be the same rounding.  (3) float32 only at the two ends: the
  images (quantised to the patch codes) and the logits, ``Cast(acc -> float32) * scale + bias``
  with float32 ``lin.scale`` and ``lin.bias`` (the engine's ``rescale``).
* **Ops of the element-wise stages**: ``Mul``, ``Add``, ``Sub``, ``Neg``, ``Floor``, ``Clip`` (the
  clamps), ``ReduceSum``/``ReduceMax`` over the last axis (row sums, the softmax's row maximum),
  ``Gather`` on the tables (``rsqrt_table()``, ``exp_table(F)``, the GELU table, and ``2**-(4+k)``
  for LayerNorm's scale) with ``Cast`` of the index to int64.  LayerNorm's
  ``V = E*sum(r^2) - sum(r)^2 + EPS`` is int64; its even normaliser ``k`` (the smallest ``k >= 0``
  with ``V >> 2k < 2**10``) is the number of thresholds ``2**(10+2j)``, ``j = 0..26``, that ``V``
  reaches (``GreaterOrEqual`` + ``ReduceSum``: ONNX has no frexp), and ``V >> 2k`` is a
  ``BitShift`` on uint64 (``V >= 0``).  The softmax's ``inv = ((recip << 16) + (s >> 1)) // s``
  is int64 ``Div``/``Add`` (``Div`` truncates, which is floor for these non-negative operands).
  Squares are written ``x * (-x)`` (``Neg``): no node takes one tensor twice, as qonnx's
  ``cleanup_model`` renames only the first of two equal inputs and leaves such a node dangling.
* **GEMMs, onnxruntime** (``model.onnx``, variant ``qdq``; ``model.int8.onnx``, variant ``int8``):
  ``MatMulInteger`` (exact int32 accumulation; the builder checks ``K * max|a| * max|b| < 2**31``),
  then ``Cast`` to double (to float32 for the head).  onnxruntime's optimiser leaves every
  ``MatMulInteger`` as it is (no float kernel, no ``MatMulIntegerToFloat`` fusion: the ``Cast`` is
  to double).  The first operand of every GEMM (a linear's input codes, ``q``, the probabilities)
  is ``uint8``: a signed 6-bit code ``c`` is stored as ``c + 32`` with ``a_zero_point`` 32,
  probabilities (0..63) as they are; the second operand is ``int8``: the weights, ``k^T`` and
  ``v``.  Signed codes go in as uint8 with a zero point rather than as int8 because uint8 x int8
  (U8S8) is the pair every x86 integer kernel runs natively, with 16-bit pair sums on AVX2 without
  VNNI (``vpmaddubsw``): codes <= 63 keep ``2 * 63 * 128 < 2**15`` from saturating, while an int8
  first operand may be shifted by 128 into that kernel, where ``2 * 160 * 128`` could saturate and
  the accumulator would no longer be exact.  Weights: ``qdq`` stores each linear's two row groups
  at their true widths (an ``INT4`` and an ``INT8`` initializer, ``[in, rows]``), ``Cast`` to int8,
  ``Concat`` and back in row order by a ``Gather`` (onnxruntime folds these at load time); ``int8``
  stores one int8 ``[in, out]`` initializer.  The patch codes: ``qdq`` quantises as the float QDQ
  graph does (``QuantizeLinear`` to uint8, zero point 32, then ``Clip`` to the 6-bit range in the
  integer domain), ``int8`` as the float int8 graph (float ``Clip`` to ``[lo*s, hi*s]``, then
  ``QuantizeLinear``); both are ``reference.quantize``'s codes plus 32 and feed ``MatMulInteger``
  with zero point 32 directly.
* **GEMMs, QONNX** (``model.qonnx.onnx``): a qonnx ``Quant`` outputs float32, which
  ``MatMulInteger`` cannot take (a ``Cast`` to uint8 behind every ``Quant`` would hide the widths
  from qonnx's datatype inference again, and FINN's streamlining works on ``MatMul``), so every
  GEMM is a ``MatMul`` on float32 tensors holding the codes: exact, every partial sum being an
  integer below 2**24 (checked per GEMM from ``K * max|a| * max|b|``; a wider GEMM is ``Cast`` to
  double and multiplied there, exact below 2**53).  Every GEMM operand is marked: the patch codes
  are ``Div`` by the step -> ``Quant`` (as in the float QONNX graph: ``Div`` rounds like the
  engine's ``x / s``, ``Quant`` rounds half to even and clamps), every 6-bit code an integer stage
  computed is ``Cast`` to float32 -> ``Quant`` with the bits and signedness of its range (the
  identity on codes already in range, so exactness is untouched), and the weights are the float
  QONNX graph's ``Quant(bits 8)`` + ``Quant(bits 4)`` row groups (``Concat``, ``Gather``).  qonnx's
  ``InferDataTypes`` then reports INT6/UINT6 codes, INT4/INT8 weights and INT32 accumulators.  The
  element-wise stages are the same double ops as above; the head's ``MatMul`` output (float32, the
  exact accumulator) is rescaled as in the engine.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from quasar_vit.errors import ExportError
from quasar_vit.export import qonnx_export
from quasar_vit.export.ir import IntBlock, IntLinear, IntNorm, IntViT, Requant
from quasar_vit.export.onnx_export import _Graph, _patchify
from quasar_vit.export.qonnx_export import _bits, _QonnxGraph
from quasar_vit.quantization import intops

#: LayerNorm's even normaliser: k = #{j : V >= 2**(RSQRT_INDEX_BITS + 2j)} for j = 0.._K_MAX - 1 (V < 2**63)
_K_MAX = (63 - intops.RSQRT_INDEX_BITS) // 2 + 1


class Operand(NamedTuple):
    """A GEMM operand: the tensor and its ``MatMulInteger`` zero point (``""``: none)."""

    name: str
    zero_point: str = ""


class _IntegerStages:
    """The stages of :mod:`~quasar_vit.quantization.intops` as ONNX nodes on double tensors.

    A mixin for a graph class (``op``, ``const``, ``name`` of :class:`~.onnx_export._Graph`); the
    GEMM methods (``patch_codes``, ``operand``, ``linear_acc``, ``matmul_acc``, ``logits``) come
    from the concrete graph.
    """

    TP: Any
    op: Any
    const: Any

    # ---- constants -----------------------------------------------------------------------------
    def f64(self, value: Any, base: str) -> str:
        return self.const(np.asarray(value, np.float64), base)

    def int64(self, value: Any, base: str) -> str:
        return self.const(np.asarray(value, np.int64), base)

    def shared(self, name: str, value: np.ndarray) -> str:
        """One initializer ``name`` for a constant every stage of its kind reads (the tables)."""
        cache: dict[str, str] = self.__dict__.setdefault("_shared", {})
        if name not in cache:
            cache[name] = self.const(value, name)
        return cache[name]

    # ---- the fused steps of intops ------------------------------------------------------------
    def axpb(self, x: str, m: Any, b: Any, base: str) -> str:
        """``x * m + b`` (two roundings, as NumPy; exact in intops' ranges), ``m``/``b`` constants or tensors."""
        m = m if isinstance(m, str) else self.f64(m, f"{base}.m")
        b = b if isinstance(b, str) else self.f64(b, f"{base}.b")
        return self.op("Add", [self.op("Mul", [x, m], f"{base}.mul"), b], f"{base}.add")

    def floor_clip(self, x: str, lo: int | None, hi: int | None, base: str) -> str:
        """``clamp(floor(x), lo, hi)`` (no clamp for ``lo is None``)."""
        y = self.op("Floor", [x], f"{base}.floor")
        if lo is None:
            return y
        return self.clip(y, lo, hi, base)

    def clip(self, x: str, lo: Any, hi: Any, base: str) -> str:
        return self.op(
            "Clip", [x, self.f64(float(lo), f"{base}.lo"), self.f64(float(hi), f"{base}.hi")], f"{base}.clip"
        )

    def row(self, op_type: str, x: str, base: str) -> str:
        """``op_type`` (``ReduceSum``/``ReduceMax``) over the last axis, kept as an axis of length 1."""
        return self.op(op_type, [x, self.int64([-1], f"{base}.axis")], base, keepdims=1)

    def take(self, table: str, idx: str, base: str) -> str:
        """``table[idx]`` for a double index tensor holding integers (``Cast`` to int64, ``Gather``)."""
        i = self.op("Cast", [idx], f"{base}.idx", to=self.TP.INT64)
        return self.op("Gather", [table, i], base, axis=0)

    def cast(self, x: str, to: Any, base: str) -> str:
        return self.op("Cast", [x], base, to=to)

    # ---- the ops -------------------------------------------------------------------------------
    def int_requant(self, acc: str, rq: Requant, lo: int, hi: int, base: str) -> str:
        """:func:`intops.requant`: ``clamp(floor(acc * (mult 2**-shift) + offset 2**-shift), lo, hi)``."""
        scale = intops.pow2(-rq.shift)
        return self.floor_clip(self.axpb(acc, rq.mult * scale, rq.offset * scale, base), lo, hi, base)

    def int_residual_add(self, r: str, acc: str, rq: Requant, lo: int, hi: int, base: str) -> str:
        """:func:`intops.residual_add`: ``clamp(r + requant(acc), lo, hi)``."""
        d = self.int_requant(acc, rq, lo, hi, f"{base}.rq")
        return self.clip(self.op("Add", [d, r], f"{base}.add"), lo, hi, base)

    def int_gelu(self, acc: str, rq: Requant, table: np.ndarray, in_bits: int, base: str) -> str:
        """:func:`intops.gelu`: the requantised table index, then the table."""
        idx = self.int_requant(acc, rq, 0, (1 << in_bits) - 1, f"{base}.rq")
        return self.take(self.f64(table, f"{base}.table"), idx, f"{base}.table")

    def int_layernorm(self, r: str, n: IntNorm, e: int, lo: int, hi: int, base: str) -> str:
        """:func:`intops.layernorm` of residual codes ``r`` ``[..., E]`` (see the module docstring)."""
        tp = self.TP
        # squares as x * (-x): a node never takes one tensor twice (qonnx's cleanup_model renames only
        # the first of two equal inputs and leaves the graph broken)
        s1 = self.row("ReduceSum", r, f"{base}.s1")  # exact: |s1| < 2**29
        s1i = self.cast(s1, tp.INT64, f"{base}.s1i")
        r2 = self.op("Mul", [r, self.op("Neg", [r], f"{base}.neg_r")], f"{base}.neg_r2")  # -r**2, exact
        s2 = self.cast(self.row("ReduceSum", r2, f"{base}.neg_s2"), tp.INT64, f"{base}.neg_s2i")
        v = self.op("Mul", [s2, self.int64(-e, f"{base}.neg_E")], f"{base}.es2")  # E * sum(r**2)
        s1sq = self.op("Mul", [s1i, self.op("Neg", [s1i], f"{base}.neg_s1")], f"{base}.neg_s1sq")  # -sum(r)**2
        v = self.op("Add", [v, s1sq], f"{base}.var")
        v = self.op("Add", [v, self.int64(intops.to_int(n.eps), f"{base}.eps")], f"{base}.V")  # int64, >= 0
        # k: the even normaliser, counted: k = #{j : V >= 2**(10 + 2j)}
        limits = np.array([1 << (intops.RSQRT_INDEX_BITS + 2 * j) for j in range(_K_MAX)], np.int64)
        ge = self.op("GreaterOrEqual", [v, self.shared("tables.ln_limits", limits)], f"{base}.ge")
        k = self.row("ReduceSum", self.cast(ge, tp.INT64, f"{base}.ge64"), f"{base}.k")
        shift = self.cast(self.op("Mul", [k, self.int64(2, f"{base}.two")], f"{base}.2k"), tp.UINT64, f"{base}.2k.u64")
        top = self.op("BitShift", [self.cast(v, tp.UINT64, f"{base}.V.u64"), shift], f"{base}.top", direction="RIGHT")
        top = self.cast(top, tp.INT64, f"{base}.top.i64")
        rsqrt = self.shared("tables.rsqrt", np.asarray(intops.rsqrt_table(), np.float64))
        rs = self.op("Gather", [rsqrt, top], f"{base}.rs", axis=0)
        # zs = rs * 2**-(RSQRT_BITS - LN_FRAC + k): the power of two from a table indexed by k
        p2 = intops.pow2(-(intops.RSQRT_BITS - intops.LN_FRAC + np.arange(_K_MAX + 1, dtype=np.float64)))
        p2k = self.op("Gather", [self.shared("tables.ln_pow2", p2), k], f"{base}.p2k", axis=0)
        zs = self.op("Mul", [rs, p2k], f"{base}.zs")
        # Z = floor(r * (E*zs) + (0.5 - s1*zs))
        ezs = self.op("Mul", [zs, self.f64(float(e), f"{base}.Ef")], f"{base}.ezs")
        c = self.op("Sub", [self.f64(0.5, f"{base}.half"), self.op("Mul", [s1, zs], f"{base}.s1zs")], f"{base}.c")
        z = self.floor_clip(self.axpb(r, ezs, c, f"{base}.z"), None, None, f"{base}.z")
        scale = intops.pow2(-n.shift)
        return self.floor_clip(self.axpb(z, n.gain * scale, n.offset * scale, f"{base}.affine"), lo, hi, base)

    def int_softmax(self, a: str, blk: IntBlock, frac_bits: int, hi: int, base: str) -> str:
        """:func:`intops.softmax` of the score accumulators ``a`` over the last axis."""
        assert blk.ops is not None
        sm, tp = blk.ops.softmax, self.TP
        m = sm.mult * intops.pow2(-sm.shift)
        rmax = self.row("ReduceMax", a, f"{base}.max")
        c = self.op(
            "Add",
            [self.op("Mul", [rmax, self.f64(m, f"{base}.m")], f"{base}.maxm"), self.f64(0.5, f"{base}.h")],
            f"{base}.c",
        )
        u = self.floor_clip(self.axpb(a, -m, c, f"{base}.u"), 0, (intops.EXP_BITS + 1) << frac_bits, f"{base}.u")
        exp = self.shared("tables.exp", np.asarray(intops.exp_table(frac_bits), np.float64))
        ex = self.take(exp, u, f"{base}.exp")
        s = self.cast(self.row("ReduceSum", ex, f"{base}.sum"), tp.INT64, f"{base}.s")
        half = self.op("Div", [s, self.int64(2, f"{base}.two")], f"{base}.s_half")  # s >> 1 (s > 0)
        num = self.op(
            "Add", [self.int64(intops.to_int(sm.recip) << intops.RECIP_BITS, f"{base}.recip"), half], f"{base}.num"
        )
        inv = self.op("Div", [num, s], f"{base}.inv")  # floor: both non-negative
        f = self.op(
            "Mul",
            [self.cast(inv, tp.DOUBLE, f"{base}.inv.f64"), self.f64(intops.pow2(-2 * intops.RECIP_BITS), f"{base}.p")],
            f"{base}.f",
        )
        return self.floor_clip(self.axpb(ex, f, 0.5, f"{base}.code"), 0, hi, base)


def build_integer_graph(g: Any, ir: IntViT) -> None:
    """Fill ``g`` with the integer subnet, ``images`` -> ``logits``: :func:`integer_forward`'s wiring."""
    ops = ir.ops
    if ir.nonlinear != "integer" or ops is None:
        raise ExportError("the integer ONNX graphs need an export with nonlinear: integer")
    rlo, rhi = ops.residual_range
    e = ir.embed_dim
    pe = ir.patch_embed
    acc = g.linear_acc(pe, g.patch_codes(pe, _patchify(g, ir)))
    start = np.asarray(ops.start, np.float64)
    tok = g.int_residual_add(g.f64(start[1:], "residual.start"), acc, ops.patch_embed, rlo, rhi, "stem")
    batch = g.op("Shape", [tok], "batch", start=0, end=1)
    shape = g.op("Concat", [batch, g.int64([1, e], "cls.tail")], "cls.shape", axis=0)
    cls = g.op("Expand", [g.f64(start[:1][None], "residual.start_cls"), shape], "cls")
    r = g.op("Concat", [cls, tok], "stem.res", axis=1)
    for blk in ir.blocks:
        r = _block(g, ir, blk, r)
    r0 = g.op("Gather", [r, g.int64(0, "cls_index")], "cls_res", axis=1)
    head = ir.head
    h = g.int_layernorm(r0, ops.norm, e, *head.act_range, "norm")
    g.logits(head, g.operand(h, *head.act_range, f"{head.name}.in", "a"))


def _linear(g: Any, lin: IntLinear, codes: str) -> str:
    """The double accumulator of ``lin`` on input codes (double, in ``lin.act_range``)."""
    return g.linear_acc(lin, g.operand(codes, *lin.act_range, f"{lin.name}.in", "a"))


def _block(g: Any, ir: IntViT, blk: IntBlock, r: str) -> str:
    """One block on the residual codes ``r`` ``[B, T, E]`` (``intforward._block``)."""
    assert blk.ops is not None and ir.ops is not None
    o, pre, t, e = blk.ops, f"blocks.{blk.index}", ir.tokens, ir.embed_dim
    qn, qp = ir.act_range_signed
    _, up = ir.act_range_unsigned
    rlo, rhi = ir.ops.residual_range
    amax = max(-qn, qp)
    # attention
    h = g.int_layernorm(r, o.norm1, e, *blk.qkv.act_range, f"{pre}.norm1")
    qkv = g.int_requant(_linear(g, blk.qkv, h), o.qkv, qn, qp, f"{pre}.qkv.rq")
    qkv = g.op("Reshape", [qkv, g.int64([-1, t, 3, blk.heads, blk.head_dim], f"{pre}.qkv.shape")], f"{pre}.qkv.r")
    qkv = g.op("Transpose", [qkv], f"{pre}.qkv.t", perm=[2, 0, 3, 1, 4])
    q, k, v = (g.op("Gather", [qkv, g.int64(j, f"{pre}.idx{j}")], f"{pre}.{n}", axis=0) for j, n in enumerate("qkv"))
    kt = g.op("Transpose", [k], f"{pre}.kT", perm=[0, 1, 3, 2])
    hd = blk.head_dim
    scores = g.matmul_acc(
        g.operand(q, qn, qp, f"{pre}.aq_q", "a"),
        g.operand(kt, qn, qp, f"{pre}.aq_k", "b"),
        hd * amax * amax,
        f"{pre}.qk",
    )
    pr = g.int_softmax(scores, blk, ir.ops.softmax_frac_bits, up, f"{pre}.softmax")
    av = g.matmul_acc(
        g.operand(pr, 0, up, f"{pre}.aq_attn", "a"),
        g.operand(v, qn, qp, f"{pre}.aq_v", "b"),
        t * up * amax,
        f"{pre}.av",
    )
    av = g.op("Transpose", [av], f"{pre}.av.t", perm=[0, 2, 1, 3])
    av = g.op("Reshape", [av, g.int64([-1, t, blk.attn_dim], f"{pre}.av.shape")], f"{pre}.av.r")
    a = g.int_requant(av, o.pv, *blk.proj.act_range, f"{pre}.pv")
    r = g.int_residual_add(r, _linear(g, blk.proj, a), o.proj, rlo, rhi, f"{pre}.res1")
    # MLP
    h = g.int_layernorm(r, o.norm2, e, *blk.fc1.act_range, f"{pre}.norm2")
    gc = g.int_gelu(_linear(g, blk.fc1, h), o.fc1, o.gelu_table, ir.ops.gelu_in_bits, f"{pre}.gelu")
    return g.int_residual_add(r, _linear(g, blk.fc2, gc), o.fc2, rlo, rhi, f"{pre}.res2")


def _weight_bound(lin: IntLinear) -> int:
    """``K * max|x| * max|w|``: a bound of the layer's partial sums."""
    return lin.in_features * lin.a_max * int(np.abs(lin.w_int).max(initial=0))


class IntegerOrtGraph(_IntegerStages, _Graph):
    """``model.onnx`` (``variant="qdq"``) and ``model.int8.onnx`` (``variant="int8"``) of an integer export."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        if variant not in ("qdq", "int8"):
            raise ExportError(f"no integer ONNX variant {variant!r}")
        self.variant = variant
        weights = (
            "row groups: INT4 rows + INT8 rows (Cast to int8, Concat, Gather)"
            if variant == "qdq"
            else "one INT8 tensor per linear (4-bit rows stored in int8)"
        )
        self.description = {
            "weights": weights,
            "activations": "integer nonlinear ops: MatMulInteger (uint8 codes, zero point 32 if signed, x int8), "
            "element-wise stages in double holding integers, int64 per-row steps",
        }

    def patch_codes(self, lin: IntLinear, patches: str) -> Operand:
        """The patch codes as uint8 ``code - lo`` (zero point ``-lo``), as ``reference.quantize`` makes them."""
        lo, hi = lin.act_range
        zp = -lo if lo < 0 else 0
        base = f"{lin.name}.in"
        s = self.const(np.array(lin.act_step, np.float32), f"{base}.act_step")
        z = self.const(np.array(zp, np.uint8), f"{base}.act_zp")
        if self.variant == "int8":  # float Clip, then QuantizeLinear (the float int8 graph's layout)
            c = self.op(
                "Clip",
                [
                    patches,
                    self.const(np.array(lo * lin.act_step, np.float32), f"{base}.min"),
                    self.const(np.array(hi * lin.act_step, np.float32), f"{base}.max"),
                ],
                f"{base}.clip",
            )
            q = self.op("QuantizeLinear", [c, s, z], f"{base}.q")
        else:  # QuantizeLinear, then Clip in the integer domain (the float QDQ graph's layout)
            q = self.op("QuantizeLinear", [patches, s, z], f"{base}.q")
            q = self.op(
                "Clip",
                [
                    q,
                    self.const(np.array(0, np.uint8), f"{base}.qmin"),
                    self.const(np.array(hi - lo, np.uint8), f"{base}.qmax"),
                ],
                f"{base}.clip",
            )
        return Operand(q, z if zp else "")

    def operand(self, codes: str, lo: int, hi: int, base: str, side: str) -> Operand:
        """Double codes in ``[lo, hi]`` as a ``MatMulInteger`` operand: first (``"a"``) uint8 with zero
        point ``-lo`` if signed, second (``"b"``) int8."""
        if side == "b":
            return Operand(self.cast(codes, self.TP.INT8, f"{base}.i8"))
        if lo >= 0:
            return Operand(self.cast(codes, self.TP.UINT8, f"{base}.u8"))
        x = self.op("Add", [codes, self.f64(float(-lo), f"{base}.zpf")], f"{base}.shift")
        return Operand(self.cast(x, self.TP.UINT8, f"{base}.u8"), self.const(np.array(-lo, np.uint8), f"{base}.zp"))

    def weight_codes(self, lin: IntLinear) -> str:
        """The int8 ``[in, out]`` weight codes (variant ``qdq``: from the INT4 and INT8 row groups)."""
        name = lin.name
        if self.variant == "int8":
            return self.const(np.ascontiguousarray(lin.w_int.T.astype(np.int8)), f"{name}.w")
        parts = []
        if len(lin.rows4):
            parts.append(self.cast(self.int4(lin.w4.T, f"{name}.w4"), self.TP.INT8, f"{name}.w4.i8"))
        if len(lin.rows8):
            parts.append(self.const(np.ascontiguousarray(lin.w_int[lin.rows8].T.astype(np.int8)), f"{name}.w8"))
        if len(parts) == 1:
            return parts[0]
        cat = self.op("Concat", parts, f"{name}.w_groups", axis=1)
        order = np.argsort(np.concatenate([lin.rows4, lin.rows8])).astype(np.int64)
        return self.op("Gather", [cat, self.const(order, f"{name}.order")], f"{name}.w", axis=1)

    def _mm(self, a: Operand, b: str, bound: int, base: str) -> str:
        """``MatMulInteger``: the exact int32 accumulator (``bound``: of its partial sums)."""
        if bound >= 2**31:
            raise ExportError(f"{base}: partial sums up to {bound} overflow MatMulInteger's int32 accumulator")
        ins = [a.name, b] + ([a.zero_point] if a.zero_point else [])
        return self.op("MatMulInteger", ins, f"{base}.i32")

    def linear_acc(self, lin: IntLinear, a: Operand) -> str:
        acc = self._mm(a, self.weight_codes(lin), _weight_bound(lin), f"{lin.name}.acc")
        return self.cast(acc, self.TP.DOUBLE, f"{lin.name}.acc")

    def matmul_acc(self, a: Operand, b: Operand, bound: int, base: str) -> str:
        return self.cast(self._mm(a, b.name, bound, base), self.TP.DOUBLE, base)

    def logits(self, lin: IntLinear, a: Operand) -> None:
        """``Cast(acc -> float32) * scale + bias`` (the engine's ``rescale``), output ``logits``."""
        acc = self._mm(a, self.weight_codes(lin), _weight_bound(lin), f"{lin.name}.acc")
        acc = self.cast(acc, self.TP.FLOAT, f"{lin.name}.acc.f32")
        y = self.op(
            "Mul", [acc, self.const(np.asarray(lin.scale, np.float32), f"{lin.name}.scale")], f"{lin.name}.rescale"
        )
        bias = self.const(np.asarray(lin.bias, np.float32), f"{lin.name}.bias")
        self.nodes.append(self.h.make_node("Add", [y, bias], ["logits"], name="logits"))


class IntegerQonnxGraph(_IntegerStages, _QonnxGraph):
    """``model.qonnx.onnx`` of an integer export: ``Quant``-marked codes, float32 ``MatMul`` on them."""

    description = {
        "weights": "row groups: Quant(bits 8) rows + Quant(bits 4) rows (integer codes)",
        "activations": "integer nonlinear ops: every 6-bit code a Quant(bits 6, scale 1), MatMul on codes, "
        "element-wise stages in double holding integers, int64 per-row steps",
    }

    def patch_codes(self, lin: IntLinear, patches: str) -> Operand:
        lo, hi = lin.act_range
        return Operand(self.fake_quant(patches, float(lin.act_step), lo, hi, f"{lin.name}.in"))

    def operand(self, codes: str, lo: int, hi: int, base: str, side: str) -> Operand:
        """Double codes in ``[lo, hi]`` -> float32 -> ``Quant`` (the identity on them; it marks the width)."""
        return Operand(self.quant(self.cast(codes, self.TP.FLOAT, f"{base}.f32"), *_bits(lo, hi), base))

    def _mm(self, a: str, b: str, bound: int, base: str, to: Any) -> str:
        """The exact accumulator of codes ``a @ b`` as ``to`` (float32 MatMul while every partial sum is
        an integer below 2**24, ``qonnx_export.EXACT_F32``; else a double MatMul)."""
        if bound < qonnx_export.EXACT_F32:
            acc = self.op("MatMul", [a, b], base)
            return acc if to == self.TP.FLOAT else self.cast(acc, to, f"{base}.f64")
        wide = [self.cast(x, self.TP.DOUBLE, f"{base}.in64") for x in (a, b)]
        acc = self.op("MatMul", wide, f"{base}64")
        return acc if to == self.TP.DOUBLE else self.cast(acc, to, f"{base}.f32")

    def linear_acc(self, lin: IntLinear, a: Operand) -> str:
        return self._mm(a.name, self.weight(lin), _weight_bound(lin), f"{lin.name}.acc", self.TP.DOUBLE)

    def matmul_acc(self, a: Operand, b: Operand, bound: int, base: str) -> str:
        return self._mm(a.name, b.name, bound, base, self.TP.DOUBLE)

    def logits(self, lin: IntLinear, a: Operand) -> None:
        """``acc * scale + bias`` in float32 (the accumulator is exact, so ``acc`` is the engine's ``float32(acc)``)."""
        acc = self._mm(a.name, self.weight(lin), _weight_bound(lin), f"{lin.name}.acc", self.TP.FLOAT)
        y = self.op(
            "Mul", [acc, self.const(np.asarray(lin.scale, np.float32), f"{lin.name}.scale")], f"{lin.name}.rescale"
        )
        bias = self.const(np.asarray(lin.bias, np.float32), f"{lin.name}.bias")
        self.nodes.append(self.h.make_node("Add", [y, bias], ["logits"], name="logits"))


__all__ = ["IntegerOrtGraph", "IntegerQonnxGraph", "build_integer_graph", "Operand"]
