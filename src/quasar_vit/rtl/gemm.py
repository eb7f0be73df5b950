"""One linear layer on the simulated RTL (``qv_gemm_core``): codes out and the cycles it took.

:func:`run_linear` lays the layer out (:mod:`quasar_vit.rtl.layout`), runs the core's Verilator
testbench with DDR modelled as a beat source of a given latency and bandwidth, and returns the
output codes ``[N, M]`` and the cycles from start to done: a measurement of the RTL, which
:mod:`quasar_vit.rtl.schedule` predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quasar_vit.errors import RtlError
from quasar_vit.export.ir import IntLinear, Requant
from quasar_vit.rtl import sim
from quasar_vit.rtl.layout import GemmShape, activation_words, row_tiles, table_beats, weight_stream
from quasar_vit.rtl.modules import tb_sources
from quasar_vit.rtl.packing import A_OFFSET


BEATS_MAX = 1 << 18
MODE_CODES, MODE_RESIDUAL, MODE_GELU, MODE_LN = 0, 1, 2, 3  # qv_gemm_core's modes
RES_BITS = 20  # the testbench's DDR model holds this many beats (one build for every layer)


@dataclass(frozen=True)
class Ddr:
    """DDR as the testbench models it: the first beat ``latency`` cycles after start, then
    ``beats_per_cycle`` (``num / den``) while the core takes them."""

    latency: int = 64
    num: int = 1
    den: int = 1


@dataclass(frozen=True)
class LinearRun:
    codes: np.ndarray  # [N, M] output codes (from the output lanes)
    cycles: int  # start to done
    overrun: bool


@dataclass(frozen=True)
class Layer:
    """A linear layer as the core runs it: weights, per-row requantiser, output code range."""

    w_int: np.ndarray
    is8: np.ndarray
    mult: np.ndarray
    offset: np.ndarray
    shift: np.ndarray
    out_range: tuple[int, int]
    mode: int = MODE_CODES
    table: np.ndarray | None = None  # the GELU table (MODE_GELU)
    out_signed_codes: bool | None = None  # the written codes' signedness (default: out_range's)
    eps: int = 0  # a LayerNorm step's EPS (MODE_LN: w_int is [E, 0], mult/offset/shift the gain, offset, shift)

    @property
    def out_signed(self) -> bool:
        """Whether the codes this layer writes are signed (the next layer's input)."""
        if self.out_signed_codes is not None:
            return self.out_signed_codes
        return self.out_range[0] < 0


@dataclass(frozen=True)
class ChainRun:
    layers: list[LinearRun]
    act: np.ndarray  # the last code-writing layer's output, read back from the activation memory
    residual: np.ndarray  # the residual memory at the end [N, E]


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
    lie side by side in the memory: the input from chunk 0, each layer's output after its input.

    ``residual`` (``[N, E]`` codes) is loaded into the residual memory first; residual-mode layers
    add to it.  Returns per layer its :class:`LinearRun`, the last code-writing layer's output as
    read back from the activation memory, and the residual memory at the end.
    """
    n = codes.shape[0]
    n_tt = -(-n // shape.T)
    if n_tt > shape.tiles_max:
        raise RtlError(f"{n} tokens do not fit the core ({shape})")
    stim: list[int] = [len(layers), ddr.latency, ddr.num, ddr.den]
    words = activation_words(codes, a_signed, shape.KP)
    stim.append(len(words))
    for w in words:
        stim += list(w)
    res = np.zeros((n, 0), np.int64) if residual is None else np.asarray(residual, np.int64)
    e = res.shape[1]
    if e % shape.KP or e // shape.KP > shape.rch_max:
        raise RtlError(f"a residual of {e} channels does not fit the core ({shape})")
    rparts = -(-shape.KP * RES_BITS // 32)
    stim.append(n * (e // shape.KP))
    for t in range(n):
        for c in range(e // shape.KP):
            word = sum(
                (int(v) & ((1 << RES_BITS) - 1)) << (RES_BITS * i)
                for i, v in enumerate(res[t, c * shape.KP : (c + 1) * shape.KP])
            )
            stim += [t, c, *[(word >> (32 * j)) & 0xFFFFFFFF for j in range(rparts)]]
    signed, base = a_signed, 0
    dump_base, dump_m, dump_signed = 0, codes.shape[1], a_signed
    for i, lay in enumerate(layers):
        m, k = lay.w_int.shape
        if lay.mode == MODE_LN and (m != e or m % shape.R):
            raise RtlError(
                f"layer {i}: a LayerNorm of {m} channels needs the residual's {e}, a multiple of R={shape.R}"
            )
        out_base = base + k // shape.KP
        if k % shape.KP or k // shape.KP > shape.wch_max or out_base + -(-m // shape.KP) > shape.ch_max:
            raise RtlError(f"layer {i}: a {m}x{k} layer does not fit the core ({shape})")
        beats = weight_stream(lay.w_int, lay.is8, lay.mult, lay.offset, lay.shift, shape)
        if lay.mode == MODE_GELU:
            if lay.table is None:
                raise RtlError(f"layer {i}: a GELU layer needs its table")
            beats = table_beats(lay.table, shape.WB) + beats
        if len(beats) > BEATS_MAX:
            raise RtlError(f"layer {i}: {len(beats)} stream beats exceed the testbench's DDR model ({BEATS_MAX})")
        n_ch, n_rt = k // shape.KP, row_tiles(lay.is8, shape)
        stim += [n, n_tt, n_ch, n_rt, k, int(signed), int(lay.out_signed), lay.mode, base, out_base, 0, m, lay.eps]
        stim += [*lay.out_range, len(beats)]
        for b in beats:
            stim += [(b >> (32 * j)) & 0xFFFFFFFF for j in range(shape.WB // 32)]
        if lay.mode != MODE_RESIDUAL:  # the next layer reads what this one wrote
            signed, base = lay.out_signed, out_base
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
        result = np.full((n, m), MISSING, np.int64)
        while out[pos] != -1:
            t, r, c = (int(v) for v in out[pos : pos + 3])
            if result[t, r] != MISSING:
                raise RtlError(f"output ({t}, {r}) written twice")
            result[t, r] = c
            pos += 3
        n_codes, cycles, overrun = (int(v) for v in out[pos + 1 : pos + 4])
        pos += 4
        if n_codes != int((result != MISSING).sum()):
            raise RtlError(f"the testbench reported {n_codes} codes and wrote another number")
        runs.append(LinearRun(result, cycles, bool(overrun)))
    if out[pos] != -2:
        raise RtlError("the testbench's output lacks the activation dump")
    n_tt, n_words = -(-n // shape.T), -(-m_dump // shape.KP)
    end = pos + 1 + n_tt * n_words * shape.T
    words = out[pos + 1 : end].reshape(-1, shape.T)  # per (tile, chunk): the T tokens' words
    mem = np.zeros((n_tt * shape.T, n_words * shape.KP), np.int64)
    for i, row in enumerate(words):
        tile, chunk = divmod(i, n_words)
        for b, word in enumerate(row):
            for lane in range(shape.KP):
                mem[tile * shape.T + b, chunk * shape.KP + lane] = (int(word) >> (6 * lane)) & 63
    mem = mem[:n, :m_dump] - (A_OFFSET if signed else 0)
    if out[end] != -3:
        raise RtlError("the testbench's output lacks the residual dump")
    rparts = -(-shape.KP * RES_BITS // 32)
    parts = out[end + 1 :].reshape(n, e // shape.KP if e else 0, rparts)
    res = np.zeros((n, e), np.int64)
    for t in range(n):
        for c in range(e // shape.KP):
            word = sum(int(v) << (32 * j) for j, v in enumerate(parts[t, c]))
            for i in range(shape.KP):
                v = (word >> (RES_BITS * i)) & ((1 << RES_BITS) - 1)
                res[t, c * shape.KP + i] = v - (1 << RES_BITS) if v >= 1 << (RES_BITS - 1) else v
    return ChainRun(runs, mem, res)


MISSING = np.iinfo(np.int64).min


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
