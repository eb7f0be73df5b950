"""Learned-step-size (LSQ) fake quantization, row-wise mixed precision for weights.

Integer semantics (what export and the integer reference engine reproduce exactly):

* rounding is ``torch.round``: round half to even (the same as ``numpy.round``);
* a weight row ``r`` with ``b`` bits and step ``s_r > 0`` is stored as the integer
  ``w_int = clamp(round(w / s_r), -2**(b-1), 2**(b-1) - 1)`` and means ``w_int * s_r``;
  4-bit rows lie in [-8, 7], 8-bit rows in [-128, 127];
* an 8-bit integer is split for the W4A6 array as ``w_int = 16 * hi + lo`` with a signed high
  nibble ``hi = w_int >> 4`` in [-8, 7] and an unsigned low nibble ``lo = w_int & 15`` in [0, 15];
* an activation tensor with ``b`` bits and step ``s_x`` is ``x_int = clamp(round(x / s_x), qn, qp)``
  with ``[qn, qp] = [-2**(b-1), 2**(b-1) - 1]`` when signed and ``[0, 2**b - 1]`` when unsigned;
* a quantized linear layer computes ``y = s_x * s_r * (x_int @ w_int_r) + bias_r`` per output
  row: the integer GEMM accumulates exactly (int32), one float rescale per row follows.

Gradients: rounding passes gradients straight through (STE); clamped values pass none; the
steps get LSQ gradients scaled by ``1 / sqrt(numel * qp)`` (Esser et al., 2020).

Mixed precision: under ``torch.autocast`` activations arrive in bf16/fp16.  ``x / s`` in bf16 has
only 8 significant bits, so a value a hair from a rounding boundary would land on the wrong integer
and the step's gradient would be summed in bf16.  Every quantizer therefore divides, rounds, clamps
and reduces in fp32 and returns the dequantized value in the input's dtype (the codes, at most 8
bits, are exact in bf16; only the following matmul's own rounding remains).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor


def round_ste(x: Tensor) -> Tensor:
    """Round half to even in the forward pass, identity gradient in the backward pass."""
    return (torch.round(x) - x).detach() + x


def grad_scale(x: Tensor, scale: float | Tensor) -> Tensor:
    """Leave the value of ``x`` unchanged but multiply its gradient by ``scale``."""
    y = x * scale
    return (x - y).detach() + y


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of a ``bits``-bit code."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def effective_step(step: Tensor) -> Tensor:
    """The step actually used: ``|step| + 1e-8`` keeps it positive whatever the optimizer does."""
    return step.abs() + 1e-8


def _sum_to(t: Tensor, shape: torch.Size) -> Tensor:
    """Sum a broadcast gradient back to ``shape``."""
    if t.shape == shape:
        return t
    lead = t.dim() - len(shape)
    if lead:
        t = t.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and t.shape[i] != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


def _clamp(x: Tensor, lo: Tensor | float, hi: Tensor | float) -> Tensor:
    """``torch.clamp(x, lo, hi)`` for bounds that are both tensors (per-row) or both numbers.

    ``torch.clamp`` has one overload for tensor bounds and one for number bounds and rejects a
    mix; branching on the bounds' kind picks the overload explicitly (and lets the type checker
    see which one is meant).

    Args:
        x: the tensor to clamp.
        lo: lower bound, a tensor broadcastable to ``x`` or a number.
        hi: upper bound, of the same kind as ``lo``.

    Returns:
        The clamped tensor (a new one).

    Raises:
        TypeError: one bound is a tensor and the other a number (as ``torch.clamp`` itself).
    """
    if isinstance(lo, Tensor) and isinstance(hi, Tensor):
        return torch.clamp(x, lo, hi)
    if isinstance(lo, Tensor) or isinstance(hi, Tensor):
        raise TypeError("clamp bounds must be both tensors or both numbers")
    return torch.clamp(x, lo, hi)


class _LSQ(torch.autograd.Function):
    """Fused LSQ fake quantization: one forward pass, analytic backward (STE + LSQ step gradient).

    Equivalent to ``round_ste(clamp(x / s, qn, qp)) * s`` with the step gradient scaled by ``g``,
    but with two saved tensors (a mask and the step's local derivative) instead of a chain of
    elementwise autograd nodes (the unfused chain doubled the cost of a training step).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        s: Tensor,
        qn: Tensor | float,
        qp: Tensor | float,
        g: Tensor | float,
        codes: Tensor | None = None,
        out_dtype: torch.dtype | None = None,
    ) -> Tensor:
        ctx.in_dtype = x.dtype
        xs = x.float() / s.float()  # fp32 whatever autocast made of x (see the module docstring)
        # clamp first: round(clamp(v)) == clamp(round(v)) for integer bounds, and ``clamp(v) == v``
        # is the in-range mask in one comparison (NaN compares unequal: out of range, as before)
        q = _clamp(xs, qn, qp)
        inside = q == xs
        q.round_()
        # ``codes``: the output is these integers (an integer op's exact result) times the step,
        # while the gradients stay those of quantizing ``x`` (its float surrogate): see ``ActQuantizer.forward``
        out = ((q if codes is None else codes.to(torch.float32)) * s.float()).to(out_dtype or x.dtype)
        # d out / d s: round(x/s) - x/s inside the range, the clipped code outside it, computed in
        # xs's memory (q - xs * inside): two fewer full-size allocations per call, which on a CPU
        # cost page faults comparable to the arithmetic itself
        ds = torch.sub(q, xs.mul_(inside), out=xs)
        ctx.save_for_backward(inside, ds, s, *(t for t in (g,) if isinstance(t, Tensor)))
        ctx.g = None if isinstance(g, Tensor) else g
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None, None, None]:
        inside, ds, s, *rest = ctx.saved_tensors
        g = ctx.g if ctx.g is not None else rest[0]
        grad_x = (grad * inside).to(ctx.in_dtype) if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            grad32 = grad.float()  # the step's gradient is a sum over many elements: fp32
            if s.numel() == 1 and not isinstance(g, Tensor):
                grad_s = (torch.dot(grad32.reshape(-1), ds.reshape(-1)) * g).reshape(s.shape)
            else:
                grad_s = _sum_to((grad32 * ds).mul_(g), s.shape)
            grad_s = grad_s.to(s.dtype)
        return grad_x, grad_s, None, None, None, None, None


def lsq_fake_quant(
    x: Tensor,
    step: Tensor,
    qn: int | Tensor,
    qp: int | Tensor,
    g: float | Tensor,
    codes: Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """``clamp(round(x / s), qn, qp) * s`` with STE rounding and LSQ step gradients (scaled by ``g``).

    With ``codes`` the value is ``codes * s`` instead (in ``out_dtype``, default ``x``'s), and the
    gradients are still those of quantizing ``x``: an integer op's exact codes, trained through its
    float surrogate ``x`` (straight through, as LSQ does for the rounding itself).
    """
    if codes is not None and (not torch.is_grad_enabled() or not (x.requires_grad or step.requires_grad)):
        return (codes.to(torch.float32) * step.float()).to(out_dtype or x.dtype)
    if codes is None and (not torch.is_grad_enabled() or not (x.requires_grad or step.requires_grad)):
        # inference: same arithmetic, computed in place (evaluation during search is memory-bound)
        s = step.float()
        q = x.float() / s
        q.round_()
        q = _clamp(q, qn, qp) if isinstance(qn, Tensor) or isinstance(qp, Tensor) else q.clamp_(qn, qp)
        return q.mul_(s).to(x.dtype)
    lo: Tensor | float
    hi: Tensor | float
    if isinstance(qn, Tensor) or isinstance(qp, Tensor):
        lo = qn if isinstance(qn, Tensor) else torch.tensor(float(qn), device=x.device)
        hi = qp if isinstance(qp, Tensor) else torch.tensor(float(qp), device=x.device)
    else:
        lo, hi = float(qn), float(qp)
    return _LSQ.apply(x, step, lo, hi, g, codes, out_dtype)


def lsq_fake_quant_reference(x: Tensor, step: Tensor, qn: int | Tensor, qp: int | Tensor, g: float | Tensor) -> Tensor:
    """Unfused autograd formulation of :func:`lsq_fake_quant` (kept as the test oracle)."""
    s = grad_scale(step, g)
    return round_ste(_clamp(x / s, qn, qp)) * s


def row_bit_mask(rows: int, n8: int, sections: int, device: torch.device) -> Tensor:
    """Boolean column vector: True for 8-bit rows.

    The rows form ``sections`` equal blocks (q, k, v for the fused QKV weight); the leading
    ``n8 // sections`` rows of each block are 8-bit.  Moving this boundary is how one shared weight
    tensor serves every 8-bit share (mixed-precision weight entanglement).
    """
    per = rows // sections
    n8_per = n8 // sections
    idx = torch.arange(per, device=device)
    return (idx < n8_per).repeat(sections).unsqueeze(1)


def quantize_weight_rows(
    weight: Tensor,
    step_lo: Tensor,
    step_hi: Tensor,
    n8: int,
    sections: int = 1,
    bits_lo: int = 4,
    bits_hi: int = 8,
    lsq_grad: bool = True,
) -> Tensor:
    """Row-wise mixed-precision fake quantization of a ``[rows, cols]`` weight.

    ``step_lo`` / ``step_hi`` hold one step per row for the low- and high-precision version of
    that row; the row's bit width decides which one is used.  Both live beside the one shared
    float weight, so a row can change precision from subnet to subnet without new weights.
    """
    rows, cols = weight.shape
    step_lo, step_hi = effective_step(step_lo), effective_step(step_hi)
    lo_n, lo_p = qrange(bits_lo, True)
    hi_n, hi_p = qrange(bits_hi, True)
    g: float | Tensor  # one scale for a uniform width, one per row for mixed rows
    if n8 <= 0:
        g = 1.0 / math.sqrt(cols * lo_p) if lsq_grad else 1.0
        return lsq_fake_quant(weight, step_lo.unsqueeze(1), lo_n, lo_p, g)
    if n8 >= rows:
        g = 1.0 / math.sqrt(cols * hi_p) if lsq_grad else 1.0
        return lsq_fake_quant(weight, step_hi.unsqueeze(1), hi_n, hi_p, g)
    mask = row_bit_mask(rows, n8, sections, weight.device)
    step = torch.where(mask, step_hi.unsqueeze(1), step_lo.unsqueeze(1))
    qn = torch.where(mask, hi_n, lo_n).to(torch.float32)  # bounds and codes in fp32 (module docstring)
    qp = torch.where(mask, hi_p, lo_p).to(torch.float32)
    g = (1.0 / torch.sqrt(cols * qp)) if lsq_grad else torch.ones_like(qp)
    return lsq_fake_quant(weight, step, qn, qp, g)


def row_steps(step_lo: Tensor, step_hi: Tensor, n8: int, sections: int = 1) -> Tensor:
    """The effective step of each row (detached float32): ``step_hi`` for the 8-bit rows, else ``step_lo``."""
    rows = step_lo.shape[0]
    lo, hi = effective_step(step_lo.detach()).float(), effective_step(step_hi.detach()).float()
    if n8 <= 0:
        return lo
    if n8 >= rows:
        return hi
    return torch.where(row_bit_mask(rows, n8, sections, step_lo.device).squeeze(1), hi, lo)


def integer_weight_rows(
    weight: Tensor, step_lo: Tensor, step_hi: Tensor, n8: int, sections: int = 1, bits_lo: int = 4, bits_hi: int = 8
) -> tuple[Tensor, Tensor, Tensor]:
    """The integer codes behind :func:`quantize_weight_rows`: ``(w_int int32, step per row, is_8bit)``."""
    rows, _ = weight.shape
    mask = (
        row_bit_mask(rows, n8, sections, weight.device)
        if 0 < n8 < rows
        else torch.full((rows, 1), n8 >= rows, dtype=torch.bool, device=weight.device)
    )
    lo_n, lo_p = qrange(bits_lo, True)
    hi_n, hi_p = qrange(bits_hi, True)
    step = torch.where(mask, effective_step(step_hi).unsqueeze(1), effective_step(step_lo).unsqueeze(1)).detach()
    qn = torch.where(mask, hi_n, lo_n).to(torch.float32)
    qp = torch.where(mask, hi_p, lo_p).to(torch.float32)
    w_int = torch.clamp(torch.round(weight.float() / step.float()), qn, qp).to(torch.int32)
    return w_int, step.squeeze(1), mask.squeeze(1)


def init_weight_steps(weight: Tensor, bits: int) -> Tensor:
    """LSQ initialisation per row: ``2 * mean|w| / sqrt(qp)``."""
    _, qp = qrange(bits, True)
    return (2.0 * weight.detach().abs().mean(dim=1) / math.sqrt(qp)).clamp_min(1e-8)


class ActQuantizer(torch.nn.Module):
    """Per-tensor LSQ quantizer for activations (6-bit by default).

    The step is initialised from data by an explicit calibration pass (:func:`calibrate`), not by
    whatever batch happens to come first: a new quantizer refuses to run until calibrated, so an
    uncalibrated model fails loudly instead of quietly fixing its steps on, say, a test batch.  The
    ``initialized`` buffer travels with the state dict, so a loaded checkpoint needs no calibration.
    Under data parallel training the trainer broadcasts rank 0's calibrated steps to every rank.
    """

    initialized: Tensor  # a registered buffer (bool scalar): declared so its type is known

    def __init__(self, bits: int = 6, signed: bool = True, enabled: bool = True, lsq_grad: bool = True) -> None:
        super().__init__()
        self.bits, self.signed, self.enabled, self.lsq_grad = bits, signed, enabled, lsq_grad
        self.qn, self.qp = qrange(bits, signed)
        self.step = torch.nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))
        self.calibrating = False  # set by :func:`calibration`; not state: never saved

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, enabled={self.enabled}"

    @torch.no_grad()
    def init_step(self, x: Tensor) -> None:
        """LSQ initialisation from one batch: ``step = 2 * mean|x| / sqrt(qp)`` (at least 1e-6)."""
        self.step.copy_((2.0 * x.detach().float().abs().mean() / math.sqrt(self.qp)).clamp_min(1e-6))
        self.initialized.fill_(True)

    def forward(self, x: Tensor, codes: Tensor | None = None) -> Tensor:
        """``x`` quantized: ``clamp(round(x / s), qn, qp) * s`` with LSQ gradients.

        With ``codes`` (``model.nonlinear: integer``) the value is ``codes * s`` in float32 instead:
        an integer op computed this quantisation point's codes exactly, and ``x`` is the float op's
        output it approximates; the gradients to ``x`` and to the step stay LSQ's for quantizing
        ``x``, so the surrogate trains and the step keeps learning.
        """
        if codes is not None:
            g = 1.0 / math.sqrt(x[0].numel() * self.qp) if self.lsq_grad else 1.0
            return lsq_fake_quant(x, effective_step(self.step), self.qn, self.qp, g, codes, torch.float32)
        if not self.enabled:
            return x
        if not bool(self.initialized):
            if not self.calibrating:
                raise RuntimeError(
                    "activation quantizer used before calibration: run "
                    "quasar_vit.quantization.calibrate(model, batch, ...) on a new model first "
                    "(a model loaded from a checkpoint is calibrated already)"
                )
            self.init_step(x)
        g = 1.0 / math.sqrt(x[0].numel() * self.qp) if self.lsq_grad else 1.0
        return lsq_fake_quant(x, effective_step(self.step), self.qn, self.qp, g)

    def step_value(self) -> Tensor:
        """The effective step as a detached float32 tensor (for the integer constants)."""
        return effective_step(self.step.detach()).float()

    def integer(self, x: Tensor) -> Tensor:
        """Integer codes of ``x`` (int32), the exact counterpart of :meth:`forward`."""
        s = effective_step(self.step.detach())
        return torch.clamp(torch.round(x.float() / s), self.qn, self.qp).to(torch.int32)

    def scale(self) -> float:
        return float(effective_step(self.step.detach()))


class ResidualQuantizer(torch.nn.Module):
    """The residual stream's integer format (``model.nonlinear: integer``): ``bits``-bit codes, one step.

    The step is a calibrated buffer, not a learned parameter: it only has to keep the stream from
    clipping, and AdamW would move a parameter of ~1e-3 by ~lr a step (``docs/design.md``).  A
    calibration pass (:func:`calibration`) runs the float forward and records the largest
    ``|x|`` the stream reaches anywhere; the step is then ``headroom * max / qp``, so the stream may
    grow ``headroom`` times during training before it saturates.
    """

    step: Tensor  # buffers (register_buffer): declared so their types are known
    initialized: Tensor

    def __init__(self, bits: int = 16, headroom: float = 4.0) -> None:
        super().__init__()
        self.bits, self.headroom = bits, headroom
        self.qn, self.qp = qrange(bits, True)
        self.register_buffer("step", torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))
        self.calibrating = False  # set by :func:`calibration`; not state
        self._seen = 0.0

    def extra_repr(self) -> str:
        return f"bits={self.bits}, headroom={self.headroom}"

    @property
    def active(self) -> bool:
        """Whether the integer path may run: calibrated, and not in a calibration pass."""
        return bool(self.initialized) and not self.calibrating

    def observe(self, x: Tensor) -> Tensor:
        """In a calibration pass: record ``max |x|`` of a residual point; returns ``x`` unchanged."""
        if self.calibrating:
            self._seen = max(self._seen, float(x.detach().float().abs().max()))
        return x

    @torch.no_grad()
    def finish_calibration(self) -> None:
        """Set the step from the pass's maximum (if this pass saw the stream and it was uncalibrated)."""
        if self._seen > 0 and not bool(self.initialized):
            self.step.fill_(self.headroom * self._seen / self.qp)
            self.initialized.fill_(True)
        self._seen = 0.0

    def step_value(self) -> Tensor:
        return self.step.detach().float()

    def codes(self, x: Tensor) -> Tensor:
        """The codes of a residual value ``x`` (float64 holding integers; ``x`` is ``codes * step`` in float32)."""
        return torch.round(x.detach().float() / self.step_value()).double()

    def forward(self, x: Tensor, codes: Tensor) -> Tensor:
        """``codes * step`` (float32) with the gradient of ``x`` (the float residual add) passed straight through."""
        xf = x.float()
        return xf + (codes.to(torch.float32) * self.step_value() - xf).detach()


@contextmanager
def calibration(model: torch.nn.Module) -> Iterator[list[ActQuantizer]]:
    """Put every :class:`ActQuantizer` of ``model`` in calibration mode for the ``with`` body.

    In calibration mode an uninitialised quantizer takes its step from the first tensor it sees
    (then quantizes with it, so the quantizers after it see what they will see in training);
    initialised ones are left alone.  Yields the quantizers; the mode ends even on an error.
    """
    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    residuals = [m for m in model.modules() if isinstance(m, ResidualQuantizer)]
    modules: list[ActQuantizer | ResidualQuantizer] = [*quantizers, *residuals]
    for q in modules:
        q.calibrating = True
    try:
        yield quantizers
    finally:
        for q in modules:
            q.calibrating = False
        for r in residuals:
            r.finish_calibration()


def calibrate(model: torch.nn.Module, batch: Tensor, *args: Any, **kwargs: Any) -> int:
    """Initialise ``model``'s uncalibrated activation quantizers from one forward pass on ``batch``.

    Runs ``model(batch, *args, **kwargs)`` once without gradients, in calibration mode (see
    :func:`calibration`).  The model's train/eval mode is left as it is (it changes what the pass
    computes, e.g. stochastic depth).  Call it again with other arguments (e.g. another subnet of a
    supernet) to reach quantizers the first pass did not use.

    Args:
        model: a module holding :class:`ActQuantizer` s (a supernet, a :class:`QuantViT`, ...).
        batch: the input, preprocessed as the model will see it in training.
        *args: further positional arguments of the forward pass (a supernet's subnet).
        **kwargs: keyword arguments of the forward pass.

    Returns:
        How many quantizers this pass initialised.
    """
    residuals = [m for m in model.modules() if isinstance(m, ResidualQuantizer) and not bool(m.initialized)]
    with calibration(model) as quantizers, torch.no_grad():
        todo = [q for q in quantizers if q.enabled and not bool(q.initialized)]
        model(batch, *args, **kwargs)
    return sum(bool(q.initialized) for q in todo) + sum(bool(r.initialized) for r in residuals)
