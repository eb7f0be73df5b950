"""Linear layers and LayerNorm steps on the simulated RTL (``qv_gemm_core``): codes out, cycles taken.

:func:`run_layers` lays a chain of steps out (:mod:`quasar_vit.rtl.layout`), runs the core's
Verilator testbench with DDR modelled as a beat source of a given latency and bandwidth, and
returns each step's output codes and its cycles from start to done (a measurement of the RTL,
which :mod:`quasar_vit.rtl.schedule` predicts), the activation memory's last output and the
residual memory.  :func:`run_linear` runs one layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quasar_vit.errors import RtlError
from quasar_vit.export.ir import IntLinear, Requant
from quasar_vit.rtl import sim
from quasar_vit.rtl.layout import (
    GELU_ENTRIES,
    Ddr,
    GemmShape,
    activation_codes,
    activation_words,
    residual_codes,
    residual_words,
    row_tiles,
    split_words,
    table_beats,
    weight_stream,
)
from quasar_vit.rtl.modules import tb_sources

BEATS_MAX = 1 << 18  # the testbench's DDR model holds this many beats (one build for every layer)
MODE_CODES, MODE_RESIDUAL, MODE_GELU, MODE_LN = 0, 1, 2, 3  # qv_gemm_core's modes
_MISSING = np.iinfo(np.int64).min  # an output the lanes never gave

__all__ = ["Ddr", "Layer", "LinearRun", "ChainRun", "run_layers", "run_linear", "run_ir_linear"]


@dataclass(frozen=True)
class LinearRun:
    codes: np.ndarray  # [N, M] the lanes' outputs (codes, GELU indices, residual updates)
    cycles: int  # start to done
    overrun: bool


@dataclass(frozen=True)
class ChainRun:
    layers: list[LinearRun]
    act: np.ndarray  # the last code-writing step's output, read back from the activation memory
    residual: np.ndarray  # the residual memory at the end [N, E]


@dataclass(frozen=True)
class Layer:
    """A step as the core runs it: a linear layer (weights, per-row requantiser, output range, mode)
    or a LayerNorm (:meth:`layernorm`)."""

    w_int: np.ndarray
    is8: np.ndarray
    mult: np.ndarray
    offset: np.ndarray
    shift: np.ndarray
    out_range: tuple[int, int]
    mode: int = MODE_CODES
    table: np.ndarray | None = None  # the GELU table (MODE_GELU)
    out_signed_codes: bool | None = None  # the written codes' signedness (default: out_range's)
    eps: int = 0  # a LayerNorm's EPS

    @classmethod
    def layernorm(
        cls, gain: np.ndarray, offset: np.ndarray, shift: int, eps: int, out_range: tuple[int, int]
    ) -> "Layer":
        """A LayerNorm step over the residual's ``len(gain)`` channels: ``(Z * gain + offset) >> shift``."""
        e = len(gain)
        g, b = (np.asarray(v).astype(np.int64) for v in (gain, offset))
        w, is8 = np.zeros((e, 0), np.int64), np.zeros(e, bool)
        return cls(w, is8, g, b, np.full(e, int(shift)), out_range, MODE_LN, eps=int(eps))

    @property
    def out_signed(self) -> bool:
        """Whether the codes this layer writes are signed (the next layer's input)."""
        if self.out_signed_codes is not None:
            return self.out_signed_codes
        return self.out_range[0] < 0


def _check(i: int, lay: Layer, k_in: int, e: int, shape: GemmShape) -> None:
    """One line for each way a step would not run as asked on this core (the HDL does not check)."""
    m, k = lay.w_int.shape
    lo, hi = lay.out_range
    problems = []
    if lay.mode == MODE_LN:
        if m != e or e == 0 or e % shape.R:
            problems.append(f"a LayerNorm of {m} channels needs the residual's {e} channels, a multiple of R={shape.R}")
    elif k != k_in:
        problems.append(f"takes K={k} but its input has {k_in} channels")
    if k % shape.KP or k // shape.KP > shape.wch_max:
        problems.append(f"K={k} must be a multiple of KP={shape.KP} and at most {shape.KP * shape.wch_max}")
    if lay.mode == MODE_RESIDUAL:
        if m != e or e == 0:
            problems.append(f"a residual layer's {m} outputs need a residual of as many channels (it has {e})")
        if not -(1 << (shape.res_w - 1)) <= lo <= hi < 1 << (shape.res_w - 1):
            problems.append(f"its range {lay.out_range} exceeds the {shape.res_w}-bit residual")
    elif lay.mode == MODE_GELU:
        if lay.out_range != (0, GELU_ENTRIES - 1) or lay.table is None or len(lay.table) != GELU_ENTRIES:
            problems.append(
                f"a GELU layer needs the index range (0, {GELU_ENTRIES - 1}) and a {GELU_ENTRIES}-entry table"
            )
    elif not (-32 <= lo <= hi <= 31 or 0 <= lo <= hi <= 63):
        problems.append(f"its code range {lay.out_range} is not 6-bit")
    if problems:
        raise RtlError(f"step {i}: {'; '.join(problems)}")


def run_layers(
    shape: GemmShape,
    layers: list[Layer],
    codes: np.ndarray,
    a_signed: bool,
    workdir: Path,
    ddr: Ddr = Ddr(),
    residual: np.ndarray | None = None,
) -> ChainRun:
    """Runs ``layers`` one after the other on the core, each reading the codes the previous one
    wrote into the on-chip activation memory (the first reads ``codes`` ``[N, K]``).  The matrices
    lie side by side in the memory: the input from chunk 0, each layer's output after its input;
    a LayerNorm writes from its input's chunk (it starts a new chain).

    ``residual`` (``[N, E]`` codes) is loaded into the residual memory first; residual-mode layers
    add to it, LayerNorm steps read it.  Returns per step its :class:`LinearRun`, the last
    code-writing step's output as read back from the activation memory, and the residual at the end.
    """
    n = codes.shape[0]
    n_tt = -(-n // shape.T)
    if n_tt > shape.tiles_max:
        raise RtlError(f"{n} tokens do not fit the core ({shape})")
    res = np.zeros((n, 0), np.int64) if residual is None else np.asarray(residual, np.int64)
    e = res.shape[1]
    if e % shape.KP or e // shape.KP > shape.rch_max:
        raise RtlError(f"a residual of {e} channels does not fit the core ({shape})")
    stim: list[int] = [len(layers), ddr.latency, ddr.num, ddr.den, ddr.fifo]
    words = activation_words(codes, a_signed, shape.KP)
    stim.append(len(words))
    for w in words:
        stim += list(w)
    rwords = residual_words(res, shape)
    stim.append(len(rwords))
    for rw in rwords:
        stim += rw
    signed, base, k_in = a_signed, 0, codes.shape[1]
    dump_base, dump_m, dump_signed = 0, codes.shape[1], a_signed
    for i, lay in enumerate(layers):
        _check(i, lay, k_in, e, shape)
        m, k = lay.w_int.shape
        out_base = base + k // shape.KP
        if out_base + -(-m // shape.KP) > shape.ch_max:
            raise RtlError(f"step {i}: its output does not fit the activation memory ({shape})")
        beats = weight_stream(lay.w_int, lay.is8, lay.mult, lay.offset, lay.shift, shape)
        if lay.mode == MODE_GELU:
            beats = table_beats(lay.table, shape.WB) + beats  # type: ignore[arg-type]
        if len(beats) > BEATS_MAX:
            raise RtlError(f"step {i}: {len(beats)} stream beats exceed the testbench's DDR model ({BEATS_MAX})")
        n_ch, n_rt = k // shape.KP, row_tiles(lay.is8, shape)
        stim += [n, n_tt, n_ch, n_rt, k, int(signed), int(lay.out_signed), lay.mode, base, out_base, 0, m, lay.eps]
        stim += [*lay.out_range, len(beats)]
        for b in beats:
            stim += split_words(b, shape.WB // 32, 32)
        if lay.mode != MODE_RESIDUAL:  # the next layer reads what this one wrote
            signed, base, k_in = lay.out_signed, out_base, m
            dump_base, dump_m, dump_signed = out_base, m, signed
    stim += [dump_base, n_tt, -(-dump_m // shape.KP), n, e // shape.KP]
    exe = sim.build("tb_qv_gemm_core", tb_sources("qv_gemm_core"), {**shape.params(), "BEATS_MAX": BEATS_MAX})
    out = sim.run(exe, np.array(stim, dtype=object), workdir)
    return _parse(out, layers, n, shape, dump_m, dump_signed, e)


def _parse(
    out: np.ndarray, layers: list[Layer], n: int, shape: GemmShape, m_dump: int, signed: bool, e: int
) -> ChainRun:
    runs, pos = [], 0
    for lay in layers:
        m = lay.w_int.shape[0]
        result = np.full((n, m), _MISSING, np.int64)
        while out[pos] != -1:
            t, r, c = (int(v) for v in out[pos : pos + 3])
            if result[t, r] != _MISSING:
                raise RtlError(f"output ({t}, {r}) written twice")
            result[t, r] = c
            pos += 3
        n_codes, cycles, overrun = (int(v) for v in out[pos + 1 : pos + 4])
        pos += 4
        if n_codes != int((result != _MISSING).sum()):
            raise RtlError(f"the testbench reported {n_codes} codes and wrote another number")
        runs.append(LinearRun(result, cycles, bool(overrun)))
    if out[pos] != -2:
        raise RtlError("the testbench's output lacks the activation dump")
    end = pos + 1 + -(-n // shape.T) * -(-m_dump // shape.KP) * shape.T
    act = activation_codes(out[pos + 1 : end], n, m_dump, shape, signed)
    if out[end] != -3:
        raise RtlError("the testbench's output lacks the residual dump")
    return ChainRun(runs, act, residual_codes(out[end + 1 :], n, e, shape))


def run_linear(
    shape: GemmShape,
    w_int: np.ndarray,
    is8: np.ndarray,
    mult: np.ndarray,
    offset: np.ndarray,
    shift: np.ndarray,
    codes: np.ndarray,
    a_signed: bool,
    out_range: tuple[int, int],
    workdir: Path,
    ddr: Ddr = Ddr(),
) -> LinearRun:
    """``clamp((codes @ w_int.T) * mult + offset) >> shift)`` per output, computed by the RTL."""
    chain = run_layers(shape, [Layer(w_int, is8, mult, offset, shift, out_range)], codes, a_signed, workdir, ddr)
    return chain.layers[0]


def run_ir_linear(
    shape: GemmShape,
    lin: IntLinear,
    rq: Requant,
    codes: np.ndarray,
    out_range: tuple[int, int],
    workdir: Path,
    ddr: Ddr = Ddr(),
) -> LinearRun:
    """:func:`run_linear` of an exported layer (the IR's weights and its integer requantiser)."""
    mult, offset, shift = (np.asarray(v).astype(np.int64) for v in (rq.mult, rq.offset, rq.shift))
    signed = lin.act_range[0] < 0
    x = np.asarray(codes, np.int64)
    return run_linear(shape, lin.w_int, lin.is8, mult, offset, shift, x, signed, out_range, workdir, ddr)
