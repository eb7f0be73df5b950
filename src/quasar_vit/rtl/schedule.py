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

import numpy as np

from quasar_vit.rtl.gemm import Ddr
from quasar_vit.rtl.layout import GemmShape, row_tiles

READ_STAGES = 2  # address register, block-RAM read (qv_gemm_core, qv_act_buf, qv_weight_buf)
ACC_STAGE = 1  # the accumulate after the tree (qv_dot_array)
DSP_STAGES = 3  # qv_mul_pack4
DRAIN_LOAD = 1  # qv_drain takes the tile
LANE_STAGES = 7  # qv_outstage
DONE_STAGES = 3  # the lanes' valid pipeline empties, the write-back register, then busy falls


def array_latency(kp: int) -> int:
    """Edges from a chunk's issue to the array's ``out_valid`` for it (when it is a tile's last)."""
    return READ_STAGES + DSP_STAGES + int(math.log2(kp)) + ACC_STAGE


def linear_cycles(
    shape: GemmShape, n_tokens: int, k: int, is8: np.ndarray, ddr: Ddr = Ddr(), gelu: bool = False
) -> int:
    """Cycles from start to done of one linear layer (``n_tokens`` x ``k`` input, rows ``is8``).

    A GELU layer's stream starts with its table: ``1024 * 8 / WB`` beats, each unpacked into the
    tables one entry a cycle before the next beat is taken.
    """
    n_tt, n_ch = -(-n_tokens // shape.T), k // shape.KP
    n_rt = row_tiles(is8, shape)
    gap = max(0, shape.T - n_ch)
    tile_cycles = n_ch + gap
    beats_per_tile = shape.R * shape.const_beats + n_ch * shape.chunk_beats
    free_at = [0, 0]  # the edge after which each half takes beats again
    next_issue = 1  # the first edge the sequencer may issue at
    beat = 0  # beats taken
    edge = 0  # the edge the last beat was taken at
    last_emit = 0
    per_beat = shape.WB // 8  # table entries a beat
    for _ in range(1024 // per_beat if gelu else 0):
        credit_edge = math.ceil((beat + 1) * ddr.den / ddr.num)
        edge = max(edge + per_beat + 1 if beat else 0, ddr.latency, credit_edge)
        beat += 1
    table_end = edge + per_beat if gelu else 0  # the edge of the last table write
    for i in range(n_rt):
        half = i % 2
        for _ in range(beats_per_tile):  # the beats of row tile i
            credit_edge = math.ceil((beat + 1) * ddr.den / ddr.num)
            edge = max(
                edge + 1 if beat else 0, ddr.latency, credit_edge, free_at[half] + 1, table_end + 1 if gelu else 0
            )
            beat += 1
        issue = max(edge + 1, next_issue)
        next_issue = issue + n_tt * tile_cycles
        last_chunk = next_issue - gap - 1
        last_emit = last_chunk + array_latency(shape.KP) + DRAIN_LOAD + shape.T
        free_at[half] = last_emit + 1
    return last_emit + LANE_STAGES + DONE_STAGES


def linear_array_cycles(shape: GemmShape, n_tokens: int, k: int, is8: np.ndarray) -> int:
    """The array's busy cycles alone (issue cycles, idle gaps included): the compute bound."""
    n_tt, n_ch = -(-n_tokens // shape.T), k // shape.KP
    return row_tiles(is8, shape) * n_tt * max(n_ch, shape.T)
