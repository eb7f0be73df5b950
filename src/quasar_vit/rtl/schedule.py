"""The cycles of ``qv_gemm_core``, from its schedule: the model the RTL measurements check.

The core (``hdl/qv_gemm_core.v``) runs a layer as row tiles.  A row tile's weights arrive as
stream beats into one half of ``qv_weight_buf``; its compute starts on the cycle after its last beat
and after the previous row tile's issue; it issues ``n_tt`` token tiles of ``n_ch`` chunks, with
``T - n_ch`` idle cycles after each tile when ``n_ch < T`` (the drain takes a tile every ``T``
cycles); its half is free again when its last token has left the drain.  The stream offers a
beat ``latency`` cycles after start at most ``num / den`` beats a cycle (the testbench's DDR).
:func:`linear_cycles` plays this out row tile by row tile, beat by beat: the latencies below
are the pipeline depths of the HDL, read off its modules, not fitted to simulations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from quasar_vit.rtl.gemm import MODE_GELU, MODE_LN, MODE_PV, MODE_QK, MODE_SM, Layer, terms
from quasar_vit.rtl.layout import Ddr, GemmShape, row_tiles, tile_beats

READ_STAGES = 2  # address register, block-RAM read (qv_gemm_core, qv_act_mem, qv_weight_buf)
ACC_STAGE = 1  # the accumulate after the tree (qv_dot_array)
DSP_STAGES = 3  # qv_mul_pack4
LANE_STAGES = 7  # qv_outstage
# after the lanes: a valid token's codes are registered once more (the write-back, W2); `busy` falls
# on the edge after the lanes' valid pipeline and the write-back register are empty
TAIL_LAST = LANE_STAGES + 2  # from the last token handed to the lanes to `busy` low
TAIL_VALID = LANE_STAGES + 3  # ... from the last token with codes (the write-back stage)
TB_COUNT = 2  # the testbench counts from its start edge to the first edge it sees `busy` low, inclusive


def array_latency(kp: int) -> int:
    """Edges from a tile's last chunk's issue to the drain taking the tile (the array's
    ``out_valid`` comes one edge earlier)."""
    return READ_STAGES + DSP_STAGES + int(math.log2(kp)) + ACC_STAGE


class _Stream:
    """The testbench's DDR, beat by beat: :meth:`take` gives the edge a beat is taken at, given the
    earliest edge the core would take it.  The credit grows by ``num`` a cycle up to ``fifo * den``
    and a beat costs ``den`` (``tb_qv_gemm_core.sv``)."""

    def __init__(self, ddr: Ddr) -> None:
        self.ddr, self.cap = ddr, ddr.fifo * ddr.den
        self.x, self.c = 0, 0  # the credit is c before edge x (no beat taken since)
        self.last = -1  # the edge of the last beat

    def take(self, earliest: int) -> int:
        d = self.ddr
        credit_edge = self.x + max(0, math.ceil((d.den - self.c) / d.num))
        e = max(earliest, self.last + 1, d.latency, credit_edge)
        before = min(self.c + d.num * (e - self.x), self.cap)
        self.x, self.c, self.last = e + 1, min(before + d.num - d.den, self.cap), e
        return e

    def take_run(self, earliest: int, n: int) -> int:
        """The edge of the last of ``n`` beats the core would each take from edge ``earliest`` on
        (the edge of the previous beat if ``n`` is 0).  At full rate (``num >= den``) a beat's credit
        is back before the next edge, so after the first beat the rest follow one an edge: worked
        out at once instead of beat by beat (the search prices thousands of layers)."""
        if n <= 0:
            return self.last
        d = self.ddr
        if d.num < d.den:
            for _ in range(n):
                self.take(earliest)
            return self.last
        first = self.take(earliest)
        self.last = first + n - 1
        self.x, self.c = self.last + 1, min(self.c + (n - 1) * (d.num - d.den), self.cap)
        return self.last


def _done(last: int, last_valid: int) -> int:
    """The cycles a run takes (as the testbench counts them) when its last token goes to the lanes
    at edge ``last`` and its last token with codes at ``last_valid``."""
    return max(last + TAIL_LAST, last_valid + TAIL_VALID) + TB_COUNT


# qv_kv_loader as a stream: its first beat on the edge after start, then one a cycle while taken
# (the testbench's DDR with these numbers offers the same beats)
LOADER = Ddr(latency=1, num=1, den=1, fifo=1)


def linear_cycles(
    shape: GemmShape,
    n_tokens: int,
    k: int,
    is8: np.ndarray,
    ddr: Ddr = Ddr(),
    gelu: bool = False,
    section: int = 0,
    pair: bool = False,
) -> int:
    """Cycles from start to done of one linear layer (``n_tokens`` x ``k`` input, rows ``is8``).

    A GELU layer's stream starts with its table: ``1024 * 8 / WB`` beats, each unpacked into the
    tables one entry a cycle before the next beat is taken.  ``section``: the row tiles break at
    its multiples (the qkv layer's thirds, :func:`~quasar_vit.rtl.layout.slot_program`).  An
    attention matmul (Q K^T, P V) is a layer whose stream is :data:`LOADER`, with all rows 8-bit.
    ``pair``: the drain emits two tokens a cycle (Q K^T: T is even), so it takes a tile every T / 2
    cycles.
    """
    n_tt, n_ch = -(-n_tokens // shape.T), k // shape.KP
    n_rt = row_tiles(is8, shape, section)
    per = 2 if pair else 1  # tokens a drain emission
    emits = shape.T // per  # the drain's emissions of a tile
    gap = max(0, emits - n_ch)
    tile_cycles = n_ch + gap
    beats_per_tile = tile_beats(k, shape)
    free_at = [0, 0]  # the edge after which each half takes beats again
    next_issue = 1  # the first edge the sequencer may issue at
    stream = _Stream(ddr)
    edge = 0  # the edge the last beat was taken at
    last_emit = 0  # the edge the drain hands the lanes the layer's last token
    per_beat = shape.WB // 8  # table entries a beat
    for i in range(1024 // per_beat if gelu else 0):  # one beat, then its entries a cycle each
        edge = stream.take(edge + per_beat + 1 if i else 0)
    table_end = edge + per_beat if gelu else 0  # the edge of the last table write
    for i in range(n_rt):
        half = i % 2
        edge = stream.take_run(max(free_at[half] + 1, table_end + 1 if gelu else 0), beats_per_tile)
        issue = max(edge + 1, next_issue)
        next_issue = issue + n_tt * tile_cycles
        last_chunk = next_issue - gap - 1
        last_emit = last_chunk + array_latency(shape.KP) + emits  # the drain's last emission
        free_at[half] = last_emit + 1  # released on this edge (rel_en the edge before); a beat on the next
    last_token = n_tokens - 1 - (n_tt - 1) * shape.T  # the last tile's last real token
    return _done(last_emit, last_emit - (emits - 1 - last_token // per))


def linear_array_cycles(shape: GemmShape, n_tokens: int, k: int, is8: np.ndarray) -> int:
    """The array's busy cycles alone (issue cycles, idle gaps included): the compute bound."""
    n_tt, n_ch = -(-n_tokens // shape.T), k // shape.KP
    return row_tiles(is8, shape) * n_tt * max(n_ch, shape.T)


LN_RUN_STAGES = 5  # qv_ln_path: the residual read, its data, C, C*RS, the shift (a read to its Z)
# qv_ln_path: from the last statistics read to the first apply read: the read and its data (2),
# the statistics (2), the prep (6: two products, V, k, the index, the rsqrt ROM) and the phase change
LN_WAIT = 10


def layernorm_cycles(shape: GemmShape, n_tokens: int, e: int, ddr: Ddr = Ddr()) -> int:
    """Cycles from start to done of a LayerNorm step (``qv_gemm_core`` mode 3) over ``n_tokens``
    rows of ``e`` residual codes.

    Statistics: one read of R codes a cycle, ``e / R`` a token.  Then, after the per-token prep,
    each row tile of R channels (its gains and offsets stream in as R slot constants) gives every
    token's R values, one token a cycle; a tile's half is freed ``LN_RUN_STAGES + 1`` cycles after
    its last read.
    """
    groups = e // shape.R
    stats_end = n_tokens * groups  # the edge of the last statistics read
    apply_from = stats_end + LN_WAIT + 1
    free_at = [0, 0]
    stream = _Stream(ddr)
    edge, next_issue, last_read = 0, apply_from, 0
    for g in range(groups):
        half = g % 2
        edge = stream.take_run(free_at[half] + 1, tile_beats(0, shape))
        issue = max(edge + 1, next_issue)
        last_read = issue + n_tokens - 1
        next_issue = last_read + 1
        free_at[half] = last_read + LN_RUN_STAGES + 1  # rel_en with the last Z, the release on the next edge
    last = last_read + LN_RUN_STAGES
    return _done(last, last)


SM_MAX_DEPTH = 2  # qv_sm_path: from a read's edge to its row maximum (the data, the run's maximum)
SM_SUM_DEPTH = 11  # ... to the divider's first stage (the data, 7 stages to e, the run's sum, the row's)
SM_DIV_EXTRA = 17  # the pipelined divider: a stage per dividend bit (Qa's qa_w + 17)
SM_INV_READY = 2  # the divider's last stage -> the inv table and the row count -> CODE's read of the row
SM_CODE_DEPTH = 5  # CODE: from its read of the e ring to the write (the data, e * inv, rounding, clamp, write)
# a phase waits for the previous one's pipeline to empty: the last stage's valid falls an edge after
# it was set, the wait sees it low on the next edge, the next phase's first read is an edge later
SM_WAIT = 3
SM_END = 2  # at the end: the last write's valid falls an edge after it was set, the path's busy the next
SM_LAUNCH = 1 + TB_COUNT  # a softmax step's own cycles: the core's busy falls on the edge after its start
STEP_GAP = 1  # tb_qv_gemm_core starts a step on the edge after the one it saw the previous step's busy low on
# qv_top: the sequencer launches a step on the edge it sees the previous one's busy low on (no gap), and
# the first step two edges after `run` is taken (the descriptor table's read of step 0, the launch)
RUN_LEAD = 2
# a load step: from its last beat's edge, the word's write on the next edge (busy falls), the next
# step's launch on the one after; the first beat is taken an edge after the DDR offers it
LOAD_TAIL = 3


def softmax_cycles(shape: GemmShape, n_tokens: int, maxima: bool = True) -> int:
    """Cycles of a softmax's background run (``qv_gemm_core`` mode 6), from its start to its end
    (``qv_sm_path``'s busy low), over ``n_tokens`` rows of as many scores, a run of R scores a cycle.  With ``maxima`` (after its head's Q K^T) the row
    maxima are known and the step starts with the sums; otherwise a first phase finds them, and the
    sums start when its pipeline has emptied.  A row's codes are read (from the e ring) as soon as
    its inv is in the table, a run a cycle, so the codes trail the sums by the divider."""
    words = -(-n_tokens // shape.KP)
    reads = n_tokens * -(-words // (shape.R // shape.KP))  # a phase's reads: the rows' runs
    if maxima:
        last_sum = reads  # the first read on the edge after start
    else:
        last_sum = reads + SM_MAX_DEPTH + SM_WAIT + reads - 1
    runs = reads // n_tokens  # a row's runs: its codes are read as soon as its inv is in the table
    last_code = last_sum + SM_SUM_DEPTH + shape.qa_w + SM_DIV_EXTRA + SM_INV_READY + runs - 1
    return last_code + SM_CODE_DEPTH + SM_END + TB_COUNT


def step_cycles(shape: GemmShape, step: Layer, n_tokens: int, ddr: Ddr = Ddr()) -> int:
    """The model's cycles of one step of :func:`~quasar_vit.rtl.gemm.run_layers` on ``n_tokens``
    tokens when it does not wait for a softmax (:func:`chain_cycles`): a linear layer (its weights
    from ``ddr``), a LayerNorm, or a head's Q K^T, softmax (its launch: the run is in the
    background) or P V (their operands from :data:`LOADER`)."""
    if step.mode == MODE_LN:
        return layernorm_cycles(shape, n_tokens, step.w_int.shape[0], ddr)
    if step.mode == MODE_SM:
        return SM_LAUNCH
    k = terms(step, shape)
    if step.mode in (MODE_QK, MODE_PV):
        return linear_cycles(shape, n_tokens, k, step.is8, LOADER, pair=step.mode == MODE_QK)
    return linear_cycles(shape, n_tokens, k, step.is8, ddr, gelu=step.mode == MODE_GELU, section=step.section)


@dataclass(frozen=True)
class ChainCycles:
    """The model of a chain of steps as :func:`~quasar_vit.rtl.gemm.run_layers` measures it."""

    steps: list[int]  # each step's cycles from its start to busy low (waits for a softmax included)
    softmax: list[int]  # each softmax's background run, from its step's start to its end
    gap: int = STEP_GAP  # edges between a step's end and the next one's start

    @property
    def total(self) -> int:
        """From the first step's start to the last one's end, the gaps between steps included (a
        softmax the last steps leave running is not)."""
        return sum(self.steps) + self.gap * (len(self.steps) - 1)


def chain_cycles(
    shape: GemmShape, steps: list[Layer], n_tokens: int, ddr: Ddr = Ddr(), gap: int = STEP_GAP
) -> ChainCycles:
    """Each step's cycles in a chain (``step.tokens`` or ``n_tokens`` tokens each), with ``gap`` edges
    between a step's end and the next one's start (``tb_qv_gemm_core``'s; ``qv_top`` has none).  A
    softmax runs in the background: its step ends at once and Q K^T steps run beside it; the next
    other step (its head's P V) starts its units on the edge after the softmax's busy falls, and its
    cycles include the wait."""
    cycles, runs = [], []
    start = 0  # the step's start edge, counted from the first step's
    free = 0  # the first edge a waiting step may go at: after the running softmax has ended
    for step in steps:
        n = step.tokens or n_tokens
        wait = 0 if step.mode == MODE_QK else max(0, free - start)
        c = wait + step_cycles(shape, step, n, ddr)
        if step.mode == MODE_SM:
            run = softmax_cycles(shape, n, step.maxima)
            runs.append(wait + run)
            free = start + wait + run - TB_COUNT + 1
        cycles.append(c)
        start += c + gap
    return ChainCycles(cycles, runs, gap)


@lru_cache(maxsize=1024)
def load_cycles(n_beats: int, ddr: Ddr = Ddr()) -> int:
    """Cycles of a ``qv_top`` load step of ``n_beats`` stream beats, from its launch to the next
    step's: its loader takes a beat whenever the DDR offers one and writes a word a cycle."""
    return _Stream(ddr).take_run(0, n_beats) + LOAD_TAIL


@dataclass(frozen=True)
class ProgramCycles:
    """The model of an image on ``qv_top``: its load steps, its core steps (no gap between steps:
    a step's cycles run from its launch to the next one's), and the image from ``run`` to ``done``."""

    loads: list[int]
    chain: ChainCycles

    @property
    def total(self) -> int:
        return RUN_LEAD + sum(self.loads) + sum(self.chain.steps)


def program_cycles(
    shape: GemmShape, load_beats: list[int], steps: list[Layer], n_tokens: int, ddr: Ddr = Ddr()
) -> ProgramCycles:
    """:class:`ProgramCycles` of loads of ``load_beats`` beats, then ``steps``."""
    return ProgramCycles([load_cycles(b, ddr) for b in load_beats], chain_cycles(shape, steps, n_tokens, ddr, gap=0))
