"""The integer forward of an exported subnet (``nonlinear: integer``), written once for two array libraries.

:func:`integer_forward` wires the stages of :mod:`quasar_vit.quantization.intops` through the
subnet described by an :class:`~quasar_vit.export.ir.IntViT`: the NumPy reference engine runs it
with :class:`NumpyGemms` (exact int64 GEMMs, 8-bit rows as two nibble passes), the ``torch.export``
deploy model with :class:`TorchGemms` (float32 GEMMs on the codes, exact below 2**24).  Only the
GEMMs and the array plumbing differ; every quantisation point is the same line of
:mod:`~quasar_vit.quantization.intops`, so the two agree bit for bit, and with the training forward
(:mod:`quasar_vit.models.intpath`), which runs the same ops on the same constants.

The constants are read by attribute (``blk.ops.qkv.mult``): from the IR's dataclasses (NumPy) or
from a module tree of buffers with the same names (torch, :mod:`quasar_vit.export.deploy`).
"""

from __future__ import annotations

from typing import Any, Protocol

from quasar_vit.quantization import intops


class Gemms(Protocol):
    """What the integer forward needs from an array library besides :mod:`intops`."""

    def quantize(self, x: Any, step: Any, qn: int, qp: int) -> Any: ...
    def patchify(self, x: Any, patch: int) -> Any: ...
    def linear(self, name: str, codes: Any) -> Any: ...
    def matmul(self, a: Any, b: Any, a_max: int, b_max: int) -> Any: ...
    def logits(self, name: str, acc: Any) -> Any: ...
    def permute(self, a: Any, axes: tuple[int, ...]) -> Any: ...
    def concat(self, parts: list[Any], axis: int) -> Any: ...
    def expand(self, a: Any, shape: tuple[int, ...]) -> Any: ...


def integer_forward(vit: Any, images: Any, g: Gemms, trace: dict[str, Any] | None = None) -> Any:
    """Logits of ``images`` (normalised float ``[B, C, H, W]``) on the integer path of ``vit``.

    Args:
        vit: the subnet's constants (an :class:`IntViT` with ``nonlinear == "integer"`` or its
            torch mirror): ``patch_size``, ``patch_embed``, ``blocks``, ``head``, ``ops``,
            ``act_range_signed`` / ``act_range_unsigned``.
        images: the input batch.
        g: the GEMMs and array plumbing of the library ``images`` belong to.
        trace: if given, filled with the codes of every quantisation point (float arrays holding
            integers), keyed as the engine's trace: ``L.in`` for a linear's input, ``blocks.i.q``,
            ``.k``, ``.v``, ``.attn``, and the residual codes ``stem.res``, ``blocks.i.res1``, ``.res2``.
    """
    ops = vit.ops
    rlo, rhi = ops.residual_range
    pe = vit.patch_embed
    x = g.quantize(g.patchify(images, vit.patch_size), pe.act_step, *pe.act_range)
    _put(trace, "patch_embed.in", x)
    acc = g.linear("patch_embed", x)
    start = ops.start
    tok = _residual_add(start[1:], acc, ops.patch_embed, rlo, rhi)
    e = tok.shape[-1]
    r = g.concat([g.expand(start[:1][None], (tok.shape[0], 1, e)), tok], 1)
    _put(trace, "stem.res", r)
    for blk in vit.blocks:
        r = _block(vit, blk, r, g, trace)
    o = ops.norm
    h = _layernorm(r[:, 0], o, vit.head.act_range)
    _put(trace, "head.in", h)
    return g.logits("head", g.linear("head", h))


def _put(trace: dict[str, Any] | None, key: str, codes: Any) -> None:
    if trace is not None:
        trace[key] = codes


# the ops on a stage's constants (an IR dataclass or its buffers), named as the IR names them
def _requant(acc: Any, rq: Any, lo: int, hi: int) -> Any:
    return intops.requant(acc, rq.mult, rq.offset, rq.shift, lo, hi)


def _residual_add(r: Any, acc: Any, rq: Any, lo: int, hi: int) -> Any:
    return intops.residual_add(r, acc, rq.mult, rq.offset, rq.shift, lo, hi)


def _layernorm(r: Any, n: Any, out_range: tuple[int, int]) -> Any:
    return intops.layernorm(r, n.gain, n.offset, n.shift, n.eps, out_range[0], out_range[1])


def _block(vit: Any, blk: Any, r: Any, g: Gemms, trace: dict[str, Any] | None) -> Any:
    """One block: ``r`` (residual codes ``[B, T, E]``) -> the block's output codes."""
    o, p = blk.ops, f"blocks.{blk.index}"
    qn, qp = vit.act_range_signed
    un, up = vit.act_range_unsigned
    rlo, rhi = vit.ops.residual_range
    b, t, _ = r.shape
    heads, hd = blk.heads, blk.head_dim
    amax = max(-qn, qp)
    # attention
    h = _layernorm(r, o.norm1, blk.qkv.act_range)
    _put(trace, f"{p}.qkv.in", h)
    qkv = _requant(g.linear(f"{p}.qkv", h), o.qkv, qn, qp)
    qkv = g.permute(qkv.reshape(b, t, 3, heads, hd), (2, 0, 3, 1, 4))
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = g.matmul(q, g.permute(k, (0, 1, 3, 2)), amax, amax)
    sm = o.softmax
    pr = intops.softmax(scores, sm.mult, sm.shift, sm.recip, vit.ops.softmax_frac_bits, up)
    av = g.matmul(pr, v, up, amax)
    av = g.permute(av, (0, 2, 1, 3)).reshape(b, t, heads * hd)
    a = _requant(av, o.pv, *blk.proj.act_range)
    if trace is not None:
        trace.update({f"{p}.q": q, f"{p}.k": k, f"{p}.v": v, f"{p}.attn": pr, f"{p}.proj.in": a})
    r = _residual_add(r, g.linear(f"{p}.proj", a), o.proj, rlo, rhi)
    _put(trace, f"{p}.res1", r)
    # MLP
    h = _layernorm(r, o.norm2, blk.fc1.act_range)
    _put(trace, f"{p}.fc1.in", h)
    f1 = o.fc1
    gcodes = intops.gelu(g.linear(f"{p}.fc1", h), f1.mult, f1.offset, f1.shift, o.gelu_table, vit.ops.gelu_in_bits)
    _put(trace, f"{p}.fc2.in", gcodes)
    r = _residual_add(r, g.linear(f"{p}.fc2", gcodes), o.fc2, rlo, rhi)
    _put(trace, f"{p}.res2", r)
    return r


class NumpyGemms:
    """The NumPy engine's GEMMs: exact int64 accumulators from the nibble passes (:mod:`.reference`)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def quantize(self, x: Any, step: Any, qn: int, qp: int) -> Any:
        from quasar_vit.export.reference import quantize

        return quantize(x, step, qn, qp).astype("float64")

    def patchify(self, x: Any, patch: int) -> Any:
        from quasar_vit.export.reference import patchify

        return patchify(x, patch)

    def linear(self, name: str, codes: Any) -> Any:
        return self.engine.linears[name].accumulate(codes.astype("int64"), self.engine.exact).astype("float64")

    def matmul(self, a: Any, b: Any, a_max: int, b_max: int) -> Any:
        return self.engine.act_matmul(a.astype("int64"), b.astype("int64"), a_max).astype("float64")

    def logits(self, name: str, acc: Any) -> Any:
        return self.engine.linears[name].rescale(acc.astype("int64"))

    def permute(self, a: Any, axes: tuple[int, ...]) -> Any:
        return a.transpose(axes)

    def concat(self, parts: list[Any], axis: int) -> Any:
        import numpy as np

        return np.concatenate(parts, axis=axis)

    def expand(self, a: Any, shape: tuple[int, ...]) -> Any:
        import numpy as np

        return np.broadcast_to(a, shape)


__all__ = ["integer_forward", "NumpyGemms", "Gemms"]
