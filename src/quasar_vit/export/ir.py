"""The typed integer description of an exported subnet: one object every back end reads.

``weights.npz`` + ``manifest.json`` are the storage format (flat string keys, see
:mod:`quasar_vit.export.intweights`).  :func:`load_ir` turns them, once, into :class:`IntViT`: a
tree of frozen dataclasses (:class:`IntLinear`, :class:`IntBlock`) holding the integer codes,
steps, row groups and the derived quantities every back end needs (nibble rows, the per-row
rescale ``s_x * s_row``, the integer requantisation of ``P v``).  The NumPy reference engine and
the HLS generator read this object, not string keys, so a derived quantity is computed in one
place and a missing or inconsistent array is reported here, with its name, before any back end
runs.

NumPy only (no torch): the HLS path and the reference engine run without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from quasar_vit.errors import ExportError
from quasar_vit.space import ViTGeometry, nest_geometry

F32 = np.float32
REQUANT_MULT_BITS = 17  # mult in [2**16, 2**17): an 18-bit signed DSP48E2 port


def requant_multiplier(m: float) -> tuple[int, int]:
    """``(mult, shift)`` with ``mult / 2**shift`` the closest 17-bit fixed-point value of ``m > 0``."""
    m = float(m)
    if not (math.isfinite(m) and m > 0):
        raise ValueError(f"requantisation factor must be a positive finite number, got {m}")
    shift = (REQUANT_MULT_BITS - 1) - math.floor(math.log2(m))
    mult = int(round(m * 2.0**shift))
    if mult >= 2**REQUANT_MULT_BITS:
        mult //= 2
        shift -= 1
    if not 1 <= shift <= 48:  # the kernel rounds in a 50-bit product (qvit_kernel.cpp, OUT_REQUANT)
        raise ValueError(f"requantisation factor {m} is out of the fixed-point range (shift {shift})")
    return mult, shift


@dataclass(frozen=True, eq=False)
class IntLinear:
    """One linear layer: integer codes per row, 4- or 8-bit, and its input quantizer."""

    name: str
    w_int: np.ndarray  # int32 [M, K] weight codes
    is8: np.ndarray  # bool [M]: 8-bit rows
    step: np.ndarray  # float32 [M] per-row weight step
    bias: np.ndarray  # float32 [M]
    act_step: np.float32  # step of the input activation quantizer
    act_range: tuple[int, int]
    sections: int = 1  # q, k, v blocks of a qkv layer
    rows4: np.ndarray = field(init=False, repr=False)
    rows8: np.ndarray = field(init=False, repr=False)
    w4: np.ndarray = field(init=False, repr=False)  # int32 [n4, K]: the 4-bit rows
    hi: np.ndarray = field(init=False, repr=False)  # int32 [n8, K]: signed high nibbles of the 8-bit rows
    lo: np.ndarray = field(init=False, repr=False)  # int32 [n8, K]: unsigned low nibbles
    scale: np.ndarray = field(init=False, repr=False)  # float32 [M]: s_x * s_row, the per-row rescale

    def __post_init__(self) -> None:
        rows8, rows4 = np.flatnonzero(self.is8), np.flatnonzero(~self.is8)
        w8 = self.w_int[rows8]
        for k, v in (
            ("rows4", rows4),
            ("rows8", rows8),
            ("w4", self.w_int[rows4]),
            ("hi", w8 >> 4),
            ("lo", w8 & 15),
            ("scale", (self.act_step * self.step).astype(F32)),
        ):
            object.__setattr__(self, k, v)

    @property
    def out_features(self) -> int:
        return int(self.w_int.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.w_int.shape[1])

    @property
    def n8_rows(self) -> int:
        return int(self.is8.sum())

    @property
    def a_max(self) -> int:
        """Largest input code magnitude."""
        return max(abs(self.act_range[0]), abs(self.act_range[1]))


# ---- the integer nonlinear ops (``nonlinear: integer``; quasar_vit/quantization/intops.py) -------------
@dataclass(frozen=True, eq=False)
class Requant:
    """A requantiser ``clamp((acc * mult + offset) >> shift)``: per-row constants (float64 holding integers)."""

    mult: np.ndarray
    offset: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True, eq=False)
class IntNorm:
    """An integer LayerNorm of the residual codes: per-channel ``gain``/``offset``, ``shift``, ``eps``."""

    gain: np.ndarray
    offset: np.ndarray
    shift: np.ndarray
    eps: np.ndarray


@dataclass(frozen=True, eq=False)
class IntSoftmax:
    """An integer softmax: the exp2 argument's ``mult``/``shift`` and the probability step's ``recip``."""

    mult: np.ndarray
    shift: np.ndarray
    recip: np.ndarray


@dataclass(frozen=True, eq=False)
class IntBlockOps:
    """A block's integer nonlinear stages, in execution order."""

    norm1: IntNorm  # residual -> qkv input codes
    qkv: Requant  # qkv accumulators -> q, k, v codes
    softmax: IntSoftmax  # q k^T accumulators -> probability codes
    pv: Requant  # P v accumulators -> proj input codes
    proj: Requant  # proj accumulators -> residual update (layer scale folded in)
    norm2: IntNorm  # residual -> fc1 input codes
    fc1: Requant  # fc1 accumulators -> GELU table index
    gelu_table: np.ndarray  # index -> fc2 input code
    fc2: Requant  # fc2 accumulators -> residual update (layer scale folded in)


@dataclass(frozen=True, eq=False)
class IntegerOps:
    """The network-level integer formats: the residual stream, the stem, the final norm, the tables."""

    residual_bits: int
    residual_step: float
    residual_range: tuple[int, int]
    gelu_in_bits: int
    softmax_frac_bits: int
    patch_embed: Requant  # patch embedding accumulators -> residual update
    start: np.ndarray  # [T, E] residual codes the tokens start from (class token + positions)
    norm: IntNorm  # final LayerNorm (class token) -> head input codes


@dataclass(frozen=True, eq=False)
class IntBlock:
    """One transformer block: its four linears, the attention operand steps, norms and layer scales."""

    index: int
    heads: int
    head_dim: int
    qkv: IntLinear
    proj: IntLinear
    fc1: IntLinear
    fc2: IntLinear
    s_q: np.float32
    s_k: np.float32
    s_v: np.float32
    s_attn: np.float32  # step of the (unsigned) softmax probabilities
    norm1: tuple[np.ndarray, np.ndarray]
    norm2: tuple[np.ndarray, np.ndarray]
    ls1: np.ndarray
    ls2: np.ndarray
    ops: IntBlockOps | None = None  # the integer nonlinear stages (``nonlinear: integer``)
    requant: tuple[int, int] = field(init=False)  # (mult, shift): P v accumulator -> proj input codes

    def __post_init__(self) -> None:
        m = np.float64(self.s_attn) * np.float64(self.s_v) / np.float64(self.proj.act_step)
        try:
            object.__setattr__(self, "requant", requant_multiplier(m))
        except ValueError as exc:
            raise ExportError(f"blocks.{self.index}: {exc}") from None

    @property
    def attn_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def score_scale(self) -> np.float32:
        """float32(s_q * s_k): the rescale of a ``q k^T`` accumulator."""
        return F32(self.s_q * self.s_k)

    def linears(self) -> tuple[IntLinear, IntLinear, IntLinear, IntLinear]:
        return (self.qkv, self.proj, self.fc1, self.fc2)


@dataclass(frozen=True, eq=False)
class IntViT:
    """The whole exported subnet, integer parts typed (see module docstring)."""

    subnet: Mapping[str, Any]
    act_range_signed: tuple[int, int]
    act_range_unsigned: tuple[int, int]
    layer_norm_eps: float
    attn_scale: np.float32
    patch_embed: IntLinear
    cls_token: np.ndarray
    pos_embed: np.ndarray
    blocks: tuple[IntBlock, ...]
    norm: tuple[np.ndarray, np.ndarray]
    head: IntLinear
    nonlinear: str = "float"  # "integer": LayerNorm/softmax/GELU/residual in integers (``ops``)
    ops: IntegerOps | None = None

    @property
    def geometry(self) -> ViTGeometry:
        return ViTGeometry.from_dict(self.subnet["geometry"])

    @property
    def patch_size(self) -> int:
        return self.geometry.patch_size

    @property
    def head_dim(self) -> int:
        return self.geometry.head_dim

    @property
    def embed_dim(self) -> int:
        return int(self.subnet["embed_dim"])

    @property
    def tokens(self) -> int:
        return int(self.pos_embed.shape[0])

    def linears(self) -> Iterator[IntLinear]:
        """Every linear layer in execution order (the order of ``SubnetConfig.linear_layers``)."""
        yield self.patch_embed
        for b in self.blocks:
            yield from b.linears()
        yield self.head

    def linear(self, name: str) -> IntLinear:
        for lin in self.linears():
            if lin.name == name:
                return lin
        raise KeyError(name)


# ---- building it from the storage format --------------------------------------------------------
class _Arrays:
    """Typed access to ``weights.npz`` arrays: a missing key or a wrong shape is an ExportError."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = arrays

    def get(self, key: str, dtype: Any = F32, shape: tuple | None = None) -> np.ndarray:
        if key not in self.arrays:
            raise ExportError(f"weights.npz lacks array {key!r}")
        a = np.asarray(self.arrays[key]).astype(dtype)
        if shape is not None and a.shape != shape:
            raise ExportError(f"weights.npz array {key!r} has shape {a.shape}, expected {shape}")
        return a

    def scalar(self, key: str) -> np.float32:
        return F32(self.get(key, shape=()))


def _linear(a: _Arrays, info: Mapping[str, Any], srange: tuple[int, int], urange: tuple[int, int]) -> IntLinear:
    name = info["name"]
    w_int = a.get(f"{name}.w_int", np.int32)
    if w_int.ndim != 2:
        raise ExportError(f"{name}.w_int must be a matrix, got shape {w_int.shape}")
    m = w_int.shape[0]
    lin = IntLinear(
        name,
        w_int,
        a.get(f"{name}.is8", bool, (m,)),
        a.get(f"{name}.step", shape=(m,)),
        a.get(f"{name}.bias", shape=(m,)),
        a.scalar(f"{name}.act_step"),
        srange if info.get("act_signed", True) else urange,
        int(info.get("sections", 1)),
    )
    stored = {
        k: a.get(f"{name}.{k}", np.int64) for k in ("rows4", "rows8", "w4", "hi", "lo") if f"{name}.{k}" in a.arrays
    }
    for k, v in stored.items():  # the stored row groups and nibbles must be the ones the codes imply
        if not np.array_equal(v, getattr(lin, k)):
            raise ExportError(f"{name}: stored {k} does not match w_int and is8")
    return lin


def _expect_shapes(prefix: str, e: int, qkv: IntLinear, proj: IntLinear, fc1: IntLinear, fc2: IntLinear) -> None:
    """The block's linears must chain: embed -> qkv, proj -> embed, embed -> fc1 -> fc2 -> embed."""
    got = (qkv.in_features, proj.out_features, fc1.in_features, fc2.in_features, fc2.out_features)
    want = (e, e, e, fc1.out_features, e)
    if got != want:
        raise ExportError(
            f"{prefix}: layer shapes do not chain through embed dim {e} "
            f"(qkv in, proj out, fc1 in, fc2 in, fc2 out = {got}, expected {want})"
        )


def _act_range(quant: Mapping[str, Any], key: str) -> tuple[int, int]:
    """``(qn, qp)`` of the manifest's ``quant[key]``: the two ends of an activation code range.

    Args:
        quant: the manifest's ``quant`` section.
        key: ``"act_range_signed"`` or ``"act_range_unsigned"``.

    Returns:
        The smallest and the largest code, as ints.
    """
    ends = [int(v) for v in quant[key]]
    if len(ends) != 2:
        raise ExportError(f"manifest.json quant.{key} must be [min, max], got {quant[key]}")
    return ends[0], ends[1]


def build_ir(arrays: Mapping[str, np.ndarray], manifest: Mapping[str, Any]) -> IntViT:
    """:class:`IntViT` from the arrays and manifest of an export (raises :class:`ExportError`)."""
    a = _Arrays(arrays)
    sub, q = nest_geometry(manifest["subnet"]), manifest["quant"]  # exports before ViTGeometry: flat
    srange, urange = _act_range(q, "act_range_signed"), _act_range(q, "act_range_unsigned")
    lins = {l["name"]: _linear(a, l, srange, urange) for l in manifest["layers"]}
    geo = ViTGeometry.from_dict(sub.get("geometry", {}))
    e, hd = int(sub["embed_dim"]), geo.head_dim
    patches = geo.num_patches
    blocks = [_block(a, lins, i, int(sub["num_heads"][i]), e, hd) for i in range(int(sub["depth"]))]
    if "patch_embed" not in lins or "head" not in lins:
        raise ExportError("manifest.json lacks the patch_embed or head layer")
    pe, head = lins["patch_embed"], lins["head"]
    nonlinear = str(manifest.get("nonlinear", "float"))  # exports before integer ops: float
    if nonlinear not in ("float", "integer"):
        raise ExportError(f"manifest.json: unknown nonlinear {nonlinear!r}")
    if nonlinear == "integer":
        blocks = [replace(b, ops=_block_ops(a, b.index)) for b in blocks]
    pdim = geo.patch_dim
    if (pe.in_features, pe.out_features, head.in_features) != (pdim, e, e):
        raise ExportError(
            f"patch_embed is {pe.out_features}x{pe.in_features} and head takes {head.in_features} "
            f"inputs; the subnet needs {e}x{pdim} and {e}"
        )
    return IntViT(
        sub,
        srange,
        urange,
        float(manifest["layer_norm_eps"]),
        F32(manifest["attn_scale"]),
        lins["patch_embed"],
        a.get("cls_token", shape=(e,)),
        a.get("pos_embed", shape=(patches + 1, e)),
        tuple(blocks),
        _norm(a, "norm", e),
        lins["head"],
        nonlinear,
        _integer_ops(a, manifest, patches + 1, e) if nonlinear == "integer" else None,
    )


def _requant(a: _Arrays, prefix: str) -> Requant:
    return Requant(*(a.get(f"{prefix}.{k}", np.float64) for k in ("mult", "offset", "shift")))


def _int_norm(a: _Arrays, prefix: str) -> IntNorm:
    return IntNorm(*(a.get(f"{prefix}.{k}", np.float64) for k in ("gain", "offset", "shift", "eps")))


def _block_ops(a: _Arrays, i: int) -> IntBlockOps:
    p = f"blocks.{i}"
    sm = IntSoftmax(*(a.get(f"{p}.softmax.{k}", np.float64) for k in ("mult", "shift", "recip")))
    return IntBlockOps(
        _int_norm(a, f"{p}.norm1.int"),
        _requant(a, f"{p}.qkv.rq"),
        sm,
        _requant(a, f"{p}.pv"),
        _requant(a, f"{p}.proj.rq"),
        _int_norm(a, f"{p}.norm2.int"),
        _requant(a, f"{p}.fc1.rq"),
        a.get(f"{p}.fc1.rq.table", np.float64),
        _requant(a, f"{p}.fc2.rq"),
    )


def _integer_ops(a: _Arrays, manifest: Mapping[str, Any], tokens: int, e: int) -> IntegerOps:
    """The network-level integer formats; the stored tables must be the ones this version computes."""
    from quasar_vit.quantization import intops

    info = manifest.get("integer")
    if not isinstance(info, Mapping):
        raise ExportError("manifest.json: an integer export lacks its 'integer' section")
    for key, table in (
        ("tables.rsqrt", intops.rsqrt_table()),
        ("tables.exp2", intops.exp2_table(int(info["softmax_frac_bits"]))),
    ):
        if not np.array_equal(a.get(key, np.int64), table):
            raise ExportError(f"weights.npz {key} differs from this version's table: the export used other arithmetic")
    bits = int(info["residual_bits"])
    return IntegerOps(
        bits,
        float(info["residual_step"]),
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1),
        int(info["gelu_in_bits"]),
        int(info["softmax_frac_bits"]),
        _requant(a, "patch_embed.rq"),
        a.get("residual.start", np.float64, (tokens, e)),
        _int_norm(a, "norm.int"),
    )


def _norm(a: _Arrays, pre: str, e: int) -> tuple[np.ndarray, np.ndarray]:
    return a.get(f"{pre}.weight", shape=(e,)), a.get(f"{pre}.bias", shape=(e,))


def _block(a: _Arrays, lins: Mapping[str, IntLinear], i: int, heads: int, e: int, hd: int) -> IntBlock:
    """Block ``i`` (``heads`` heads of dim ``hd``, embed dim ``e``), its linears checked to chain."""
    p = f"blocks.{i}"
    try:
        qkv, proj, fc1, fc2 = (lins[f"{p}.{n}"] for n in ("qkv", "proj", "fc1", "fc2"))
    except KeyError as exc:
        raise ExportError(f"manifest.json lacks layer {exc.args[0]}") from None
    if qkv.out_features != 3 * heads * hd or proj.in_features != heads * hd:
        raise ExportError(f"{p}: qkv/proj shapes do not match {heads} heads of dim {hd}")
    _expect_shapes(p, e, qkv, proj, fc1, fc2)
    return IntBlock(
        i,
        heads,
        hd,
        qkv,
        proj,
        fc1,
        fc2,
        a.scalar(f"{p}.aq_q.step"),
        a.scalar(f"{p}.aq_k.step"),
        a.scalar(f"{p}.aq_v.step"),
        a.scalar(f"{p}.aq_attn.step"),
        _norm(a, f"{p}.norm1", e),
        _norm(a, f"{p}.norm2", e),
        a.get(f"{p}.ls1", shape=(e,)),
        a.get(f"{p}.ls2", shape=(e,)),
    )


def as_ir(ir: "IntViT | Mapping[str, np.ndarray]", manifest: Mapping[str, Any] | None = None) -> IntViT:
    """``ir`` itself, or the IR built from the storage format ``(arrays, manifest)``."""
    if isinstance(ir, IntViT):
        return ir
    if manifest is None:
        raise TypeError("pass an IntViT, or the arrays and the manifest of an export")
    return build_ir(ir, manifest)


def load_ir(directory: str | Path) -> IntViT:
    """:class:`IntViT` of the export in ``directory``."""
    from quasar_vit.export.intweights import load_weights

    return build_ir(*load_weights(directory))


__all__ = [
    "IntLinear",
    "IntBlock",
    "IntViT",
    "Requant",
    "IntNorm",
    "IntSoftmax",
    "IntBlockOps",
    "IntegerOps",
    "as_ir",
    "build_ir",
    "load_ir",
    "requant_multiplier",
    "REQUANT_MULT_BITS",
]
