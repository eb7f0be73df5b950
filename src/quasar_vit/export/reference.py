"""Integer reference engine (NumPy): the exported subnet run with the accelerator's arithmetic.

What runs where (paper, section 4):

* **fabric (W4A6 array), integers only** - every linear layer: the 6-bit input codes times the
  weight codes, accumulated exactly.  A 4-bit row is one pass of the array; an 8-bit row is two
  passes, its signed high nibble and its unsigned low nibble, shifted and added in the output
  stage: ``acc = 16 * (x @ hi) + (x @ lo)``.  The attention matmuls ``q k^T`` and ``P v`` run on
  the same array: their stationary 6-bit operand (k, v) is split into two nibbles likewise.
  Then one float rescale per output row (``s_x * s_row``) and the bias; the layer scale multiplies
  the branch output before the residual add.
* **integer requantisation** - the ``P v`` accumulator goes straight into the 6-bit code of the
  projection input with a fixed-point multiplier and a shift, as gemmlowp/TFLite do (no float):
  ``code = clamp((acc * mult + 2**(shift-1)) >> shift)`` with ``mult / 2**shift ~= s_P * s_v / s_proj_in``
  and a 17-bit ``mult`` (one DSP48E2 per output row; :func:`requant_multiplier`).
* **ARM cores, float** (``nonlinear: float`` exports) - LayerNorm, softmax, GELU (exact erf) and the
  residual adds, followed by the 6-bit quantisation of their outputs (round half to even, clamp).
* **integers throughout** (``nonlinear: integer``, the default) - LayerNorm, softmax, GELU, the
  residual adds and the layer scaling are the integer ops of :mod:`quasar_vit.quantization.intops`
  on the exact accumulators, wired by :func:`quasar_vit.export.intforward.integer_forward`; only the
  head's logits are a float rescale.

Exactness: the integer GEMMs are evaluated with BLAS on small integers stored as floats.  Every
product and every partial sum is an integer below ``2**24`` (float32) or ``2**53`` (float64),
checked per layer from the operand ranges, so the result is the exact integer sum whatever the
summation order; ``exact=True`` uses int64 matmuls instead (slow, for tests).

Only NumPy is needed (SciPy's ``erf`` is used when installed, else ``math.erf`` vectorised).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Mapping, overload

import numpy as np

from quasar_vit.export.ir import IntBlock, IntLinear, IntViT, as_ir, requant_multiplier

try:  # pragma: no cover - depends on the environment
    from scipy.special import erf as _erf

    ERF_IMPL = "cephes"  # SciPy's erf (Cephes); the generated C++ host re-implements it
except ImportError:  # pragma: no cover
    _erf = np.vectorize(math.erf, otypes=[np.float64])
    ERF_IMPL = "libm"  # the C library's erf

F32 = np.float32
Trace = dict[str, np.ndarray]  # integer codes of every quantisation point, by name (``forward(trace=True)``)


def _blas_thread_controls() -> list[tuple[Any, Any]]:
    """(get, set) thread-count functions of every OpenBLAS loaded in this process (Linux, best effort)."""
    import ctypes
    import os

    found: list[tuple[Any, Any]] = []
    try:
        with open(f"/proc/{os.getpid()}/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return found
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    found.append((get, set_))
                    break
            else:
                continue
            break
    return found


class single_thread_blas:
    """Run BLAS single-threaded inside the block.

    The engine's GEMMs are small; on a busy machine multi-threaded OpenBLAS spin-waits and was
    measured 8x slower than one thread.
    """

    _controls: list[tuple[Any, Any]] | None = None

    def __enter__(self) -> "single_thread_blas":
        if single_thread_blas._controls is None:
            single_thread_blas._controls = _blas_thread_controls()
        self._saved = []
        for get, set_ in single_thread_blas._controls:
            try:
                self._saved.append((set_, int(get())))
                set_(1)
            except Exception:  # noqa: BLE001 - best effort
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for set_, n in self._saved:
            try:
                set_(n)
            except Exception:  # noqa: BLE001
                pass


def quantize(x: np.ndarray, step: float | np.floating[Any] | np.ndarray, qn: int, qp: int) -> np.ndarray:
    """``clamp(round_half_even(x / step), qn, qp)`` as int32 (the rule of ``lsq.py``), in float32."""
    return np.clip(np.rint(np.asarray(x, F32) / F32(step)), qn, qp).astype(np.int32)


def requantize(acc: np.ndarray, mult: int, shift: int, qn: int, qp: int) -> np.ndarray:
    """``clamp((acc * mult + 2**(shift-1)) >> shift, qn, qp)`` in int64 (round half up)."""
    v = (np.asarray(acc, np.int64) * np.int64(mult) + (np.int64(1) << np.int64(shift - 1))) >> np.int64(shift)
    return np.clip(v, qn, qp).astype(np.int32)


def _bound(a_max: int, b_max: int, k: int) -> int:
    return int(a_max) * int(b_max) * int(k)


def int_matmul(a: np.ndarray, b: np.ndarray, a_max: int, b_max: int, exact: bool = False) -> np.ndarray:
    """Exact integer ``a @ b`` (int64) for ``|a| <= a_max``, ``|b| <= b_max``."""
    k = a.shape[-1]
    bound = _bound(a_max, b_max, k)
    if exact or bound >= 2**53:
        return np.matmul(a.astype(np.int64), b.astype(np.int64))
    dt = np.float32 if bound < 2**24 else np.float64
    return np.matmul(a.astype(dt), b.astype(dt)).astype(np.int64)


def split_operand(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nibble split of a signed operand (8-bit weights or 6-bit activations): ``v = 16*hi + lo``."""
    v = v.astype(np.int32)
    return v >> 4, v & 15


def _layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    mu = x64.mean(-1, keepdims=True)
    var = ((x64 - mu) ** 2).mean(-1, keepdims=True)
    return ((x64 - mu) / np.sqrt(var + eps) * w + b).astype(F32)


def _softmax(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).astype(F32)


def _gelu(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))).astype(F32)


def patchify(x: np.ndarray, patch: int) -> np.ndarray:
    """``[B, C, H, W]`` -> ``[B, N, C*p*p]`` in (c, dy, dx) order (as ``models.layers.patchify``)."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


class IntegerLinear:
    """One linear layer as the array runs it: row groups, nibble passes, per-row rescale."""

    def __init__(self, lin: IntLinear) -> None:
        self.lin = lin
        self.name = lin.name
        self.qn, self.qp = lin.act_range
        self.act_step = lin.act_step
        self.out_features, self.in_features = lin.out_features, lin.in_features
        self.a_max = lin.a_max

    def accumulate(self, x_int: np.ndarray, exact: bool = False) -> np.ndarray:
        """Exact int64 accumulator ``x_int @ w_int^T``, 8-bit rows as two nibble passes."""
        lin = self.lin
        acc = np.empty(x_int.shape[:-1] + (self.out_features,), np.int64)
        if len(lin.rows4):
            acc[..., lin.rows4] = int_matmul(x_int, lin.w4.T, self.a_max, 8, exact)
        if len(lin.rows8):
            hi = int_matmul(x_int, lin.hi.T, self.a_max, 8, exact)
            lo = int_matmul(x_int, lin.lo.T, self.a_max, 15, exact)
            acc[..., lin.rows8] = hi * 16 + lo
        return acc

    def rescale(self, acc: np.ndarray) -> np.ndarray:
        return acc.astype(F32) * self.lin.scale + self.lin.bias

    def __call__(self, x_int: np.ndarray, exact: bool = False) -> np.ndarray:
        return self.rescale(self.accumulate(x_int, exact))


class IntegerViT:
    """The exported subnet on integer arithmetic; ``forward(images) -> logits`` (float32).

    ``images`` are normalised float ``[B, C, H, W]`` (what ``BatchTransform`` produces).
    With ``trace`` the integer codes of every quantisation point are returned as well.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray] | IntViT,
        manifest: Mapping[str, Any] | None = None,
        exact: bool = False,
        check_nibbles: bool = False,
    ) -> None:
        self.ir = as_ir(arrays, manifest)
        self.exact, self.check_nibbles = exact, check_nibbles
        self.linears = {lin.name: IntegerLinear(lin) for lin in self.ir.linears()}

    @classmethod
    def from_dir(cls, directory: str | Path, **kw: Any) -> "IntegerViT":
        from quasar_vit.export.ir import load_ir

        return cls(load_ir(directory), **kw)

    # ---- pieces ---------------------------------------------------------------------------------
    def _linear(
        self, name: str, x: np.ndarray | None, trace: Trace | None, x_int: np.ndarray | None = None
    ) -> np.ndarray:
        """Layer ``name`` on float input ``x``, or on its ready input codes ``x_int`` (then ``x`` is unused)."""
        lin = self.linears[name]
        if x_int is None:
            assert x is not None, "a linear needs its float input or its input codes"
            x_int = quantize(x, lin.act_step, lin.qn, lin.qp)
        if trace is not None:
            trace[f"{name}.in"] = x_int
        acc = lin.accumulate(x_int, self.exact)
        if self.check_nibbles:
            assert np.array_equal(acc, int_matmul(x_int, lin.lin.w_int.T, lin.a_max, 128, exact=True)), name
        return lin.rescale(acc)

    def act_matmul(self, a: np.ndarray, b: np.ndarray, a_max: int) -> np.ndarray:
        """``a @ b`` with ``b`` (the stationary 6-bit operand) as two nibble passes."""
        hi, lo = split_operand(b)
        acc = int_matmul(a, hi, a_max, 8, self.exact) * 16 + int_matmul(a, lo, a_max, 15, self.exact)
        if self.check_nibbles:
            assert np.array_equal(acc, int_matmul(a, b, a_max, 64, exact=True))
        return acc

    def _block(self, blk: IntBlock, x: np.ndarray, trace: Trace | None) -> np.ndarray:
        p = f"blocks.{blk.index}"
        b, t, e = x.shape
        heads, hd = blk.heads, blk.head_dim
        qn, qp = self.ir.act_range_signed
        un, up = self.ir.act_range_unsigned
        eps = self.ir.layer_norm_eps
        # attention branch
        h = _layernorm(x, *blk.norm1, eps)
        qkv = self._linear(f"{p}.qkv", h, trace)
        qkv = qkv.reshape(b, t, 3, heads, hd).transpose(2, 0, 3, 1, 4)
        qi, ki, vi = (
            quantize(qkv[0], blk.s_q, qn, qp),
            quantize(qkv[1], blk.s_k, qn, qp),
            quantize(qkv[2], blk.s_v, qn, qp),
        )
        scores = self.act_matmul(qi, ki.transpose(0, 1, 3, 2), max(-qn, qp)).astype(F32) * blk.score_scale
        scores = scores * self.ir.attn_scale
        probs = _softmax(scores)
        pi = quantize(probs, blk.s_attn, un, up)
        av = self.act_matmul(pi, vi, up)  # int [B, H, T, hd]
        av = av.transpose(0, 2, 1, 3).reshape(b, t, heads * hd)
        oi = requantize(av, *blk.requant, *blk.proj.act_range)  # integer requantisation
        if trace is not None:
            trace.update({f"{p}.q": qi, f"{p}.k": ki, f"{p}.v": vi, f"{p}.attn": pi})
        o = self._linear(f"{p}.proj", None, trace, x_int=oi)
        x = x + blk.ls1 * o
        # MLP branch
        h = _layernorm(x, *blk.norm2, eps)
        h = _gelu(self._linear(f"{p}.fc1", h, trace))
        h = self._linear(f"{p}.fc2", h, trace)
        return x + blk.ls2 * h

    # ---- public -----------------------------------------------------------------------------
    @overload
    def forward(self, images: np.ndarray, trace: Literal[False] = False) -> np.ndarray: ...

    @overload
    def forward(self, images: np.ndarray, trace: Literal[True]) -> tuple[np.ndarray, Trace]: ...

    @overload
    def forward(self, images: np.ndarray, trace: bool) -> np.ndarray | tuple[np.ndarray, Trace]: ...

    def forward(self, images: np.ndarray, trace: bool = False) -> np.ndarray | tuple[np.ndarray, Trace]:
        """Logits of ``images`` (float32 ``[B, classes]``).

        Args:
            images: normalised float ``[B, C, H, W]``.
            trace: also return the integer codes of every quantisation point.

        Returns:
            The logits, or ``(logits, codes)`` with ``trace``.
        """
        codes: Trace | None = {} if trace else None
        with single_thread_blas():
            logits = self._forward(images, codes)
        return (logits, codes) if codes is not None else logits

    def _forward(self, images: np.ndarray, codes: Trace | None) -> np.ndarray:
        """The logits; the integer codes go into ``codes`` unless it is None."""
        ir = self.ir
        if ir.nonlinear == "integer":
            from quasar_vit.export.intforward import NumpyGemms, integer_forward

            raw: dict[str, np.ndarray] | None = {} if codes is not None else None
            logits = integer_forward(ir, np.asarray(images, F32), NumpyGemms(self), raw)
            if codes is not None and raw is not None:
                codes.update({k: v.astype(np.int32) for k, v in raw.items()})
            return logits
        x = np.asarray(images, F32)
        tok = self._linear("patch_embed", patchify(x, ir.patch_size), codes)
        cls = np.broadcast_to(ir.cls_token, (x.shape[0], 1, tok.shape[-1]))
        x = np.concatenate([cls, tok], axis=1) + ir.pos_embed
        for blk in ir.blocks:
            x = self._block(blk, x, codes)
        x = _layernorm(x, *ir.norm, ir.layer_norm_eps)[:, 0]
        return self._linear("head", x, codes)

    __call__ = forward

    def predict(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``(logits, labels)`` in batches."""
        out = [self.forward(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        logits = np.concatenate(out) if out else np.zeros((0, 0), F32)
        return logits, logits.argmax(-1)


__all__ = [
    "IntegerViT",
    "IntegerLinear",
    "quantize",
    "int_matmul",
    "split_operand",
    "patchify",
    "requant_multiplier",
    "requantize",
    "ERF_IMPL",
]
