"""Cycle model of the generated GEMM engine (``hls/templates/qvit_kernel.cpp.j2``), loop by loop.

The engine is a DATAFLOW region of five processes (load_x, load_w, compute, output stage, store)
that all walk the same tile nest: token tiles of ``tile_tokens``, row tiles of ``pe_rows`` nibble
rows, reduction tiles of ``tile_k``.  This module evaluates that nest analytically with the trip
counts of every pipelined loop of the C++ (II = 1), the same pipeline depths, and the same dataflow
recurrence that the C simulation applies to the counters in the generated loops
(``qvit::last_gemm_cycles``).  ``quasar-vit verify --csim`` prints both per GEMM, so a change to
either side that the other does not follow shows up as a disagreement.

No constant here is fitted.  The AXI port width is the Zynq UltraScale+ HP port width (128 bit);
the read latency and the pipeline depths are stated assumptions (:class:`EngineTiming`), the depth
each pipelined loop would get from Vitis HLS at the board clock, to be replaced by the csynth
report's figures once a synthesis run exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import numpy as np

from quasar_vit.hardware.design import AcceleratorDesign
from quasar_vit.hardware.params import ModelParams

ROW_PAD, ROW_4BIT, ROW_HI, ROW_LO = 0, 1, 2, 3
STAGES = ("load_x", "load_w", "compute", "output", "store")
OUT_MODES = {"affine": 0, "ls_residual": 1, "scores": 2, "requant": 3}  # the kernel's OutMode values


@dataclass(frozen=True)
class EngineTiming:
    """Port width and pipeline depths of the generated loops (written into ``qvit_params.hpp``)."""

    axi_bytes: int  # bytes per AXI beat (port width / 8)
    axi_latency: int  # cycles from a burst's read request to its first beat (paid once per stream)
    compute_depth: int  # pipeline depth of the array loop: unpack, multiply, adder tree, accumulate
    param_depth: int  # pipeline depth of the output stage's parameter reads
    output_depth: int  # pipeline depth of the output stage (float multiply-add or requantisation)
    store_depth: int  # pipeline depth of the store loop

    @classmethod
    def of(cls, design: AcceleratorDesign, params: ModelParams) -> "EngineTiming":
        tree = math.ceil(math.log2(max(2, design.pe_cols)))
        return cls(
            axi_bytes=params.axi_bits // 8,
            axi_latency=params.axi_read_latency_cycles,
            compute_depth=params.array_pipeline_base + tree,
            param_depth=params.param_pipeline_depth,
            output_depth=params.output_pipeline_depth,
            store_depth=params.store_pipeline_depth,
        )


# ---- the nibble-row program: how a layer's rows occupy the array's rows ----------------------------------
def row_mask(out_features: int, n8_rows: int, sections: int = 1) -> list[bool]:
    """8-bit flag per output row: the leading ``n8_rows / sections`` rows of each section (q, k, v)."""
    per = out_features // sections
    n8 = n8_rows // sections
    return [r % per < n8 for r in range(out_features)]


def nibble_split(w_int: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split 8-bit codes into ``(hi int8 in [-8, 7], lo uint8 in [0, 15])`` with ``w = 16*hi + lo``."""
    w = np.asarray(w_int).astype(np.int16)
    if w.size and (w.min() < -128 or w.max() > 127):
        raise ValueError("nibble_split expects 8-bit signed codes in [-128, 127]")
    hi = (w >> 4).astype(np.int8)  # arithmetic shift: floor(w / 16)
    lo = (w & 15).astype(np.uint8)
    return hi, lo


def nibble_join(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return (hi.astype(np.int32) * 16 + lo.astype(np.int32)).astype(np.int32)


def nibble_program(is8: Iterable[bool], pe_rows: int) -> tuple[list[int], list[int]]:
    """``(kinds, sources)`` per nibble row; ``sources`` index the output row (-1 for pad rows).

    Rows in order; a 4-bit row takes one nibble row, an 8-bit row two (signed high nibble, then
    unsigned low nibble), and a pair never straddles a tile of ``pe_rows`` rows (a pad row goes
    first), so the output stage combines ``16*hi + lo`` inside one tile.  The generated
    ``split_stationary`` follows the same rule.
    """
    kinds: list[int] = []
    src: list[int] = []
    for o, b8 in enumerate(is8):
        if b8:
            if pe_rows > 1 and len(kinds) % pe_rows == pe_rows - 1:
                kinds.append(ROW_PAD)
                src.append(-1)
            kinds += [ROW_HI, ROW_LO]
            src += [o, o]
        else:
            kinds.append(ROW_4BIT)
            src.append(o)
    return kinds, src


def row_tiles(kinds: Sequence[int], pe_rows: int) -> tuple[tuple[int, int], ...]:
    """``(nibble rows, outputs)`` of each row tile of a nibble-row program."""
    out = []
    for m0 in range(0, len(kinds), pe_rows):
        tile = kinds[m0 : m0 + pe_rows]
        out.append((len(tile), sum(1 for k in tile if k in (ROW_4BIT, ROW_LO))))
    return tuple(out)


@lru_cache(maxsize=8192)
def layer_row_tiles(out_features: int, n8_rows: int, sections: int, pe_rows: int) -> tuple[tuple[int, int], ...]:
    """Row tiles of a weight layer (memoised)."""
    return row_tiles(nibble_program(row_mask(out_features, n8_rows, sections), pe_rows)[0], pe_rows)


@lru_cache(maxsize=8192)
def stationary_row_tiles(rows: int, pe_rows: int) -> tuple[tuple[int, int], ...]:
    """Row tiles of an attention operand whose ``rows`` 6-bit rows are all split into two nibbles."""
    return row_tiles(nibble_program([True] * rows, pe_rows)[0], pe_rows)


# ---- the loop nest --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GemmCycles:
    """Cycles of one engine call: the dataflow makespan, each process's busy cycles, beats moved."""

    total: int
    busy: tuple[int, int, int, int, int]  # load_x, load_w, compute, output, store
    tiles: int
    read_beats: int
    write_beats: int

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "busy": dict(zip(STAGES, self.busy)),
            "tiles": self.tiles,
            "read_beats": self.read_beats,
            "write_beats": self.write_beats,
        }


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def gemm_cycles(
    design: AcceleratorDesign, timing: EngineTiming, tokens: int, k: int, tiles_m: Sequence[tuple[int, int]], mode: str
) -> GemmCycles:
    """Cycles of one ``qvit_gemm`` call: ``tokens x k`` codes times the nibble-row program whose
    row tiles are ``tiles_m`` (``(rows, outputs)`` each), output stage ``mode`` (see :data:`OUT_MODES`)."""
    if mode not in OUT_MODES:
        raise ValueError(f"unknown output mode {mode!r} (one of {', '.join(OUT_MODES)})")
    s = _stages(design, timing, tokens, k, tiles_m, mode)
    n = len(s.lx)
    cp = _compute_trips(s, timing.compute_depth)
    total = _dataflow_total(s, cp)
    busy = (sum(s.lx), sum(s.lw), sum(cp), sum(s.out), sum(s.st))
    return GemmCycles(total, busy, n, s.read_beats, s.write_beats)


@dataclass
class _Stages:
    """Per tile step (token tile x row tile x reduction tile) cycles of each dataflow stage."""

    lx: list[int]  # load codes (with the first call's AXI latency)
    lw: list[int]  # load weights
    fill_x: list[int]  # beats the compute stage waits for
    fill_w: list[int]
    comp: list[int]  # array passes
    emit: list[int]  # tokens emitted to the output stage (last reduction tile only)
    out: list[int]  # output stage
    st: list[int]  # store
    read_beats: int
    write_beats: int


def _stages(
    design: AcceleratorDesign, timing: EngineTiming, tokens: int, k: int, tiles_m: Sequence[tuple[int, int]], mode: str
) -> _Stages:
    """The loop nest of one engine call, as the kernel runs it."""
    C, TN, TK = design.pe_cols, design.tile_tokens, design.tile_k
    ab = timing.axi_bytes
    n_tt, n_mt, n_kt = _cdiv(tokens, TN), len(tiles_m), _cdiv(k, TK)
    n = n_tt * n_mt * n_kt
    n_params = {"affine": 2, "ls_residual": 3}.get(mode, 0)
    per_beat = ab if mode == "requant" else ab // 4
    store_depth = timing.axi_latency if mode == "ls_residual" else timing.store_depth
    lx = [0] * n
    lw = [0] * n
    fill_w = [0] * n
    fill_x = [0] * n
    comp = [0] * n
    emit = [0] * n
    out = [0] * n
    st = [0] * n
    read_beats = write_beats = 0
    i = 0
    for tt in range(n_tt):
        n_tok = min(TN, tokens - tt * TN)
        for mt, (rows, n_out) in enumerate(tiles_m):
            for kt in range(n_kt):
                kv = min(TK, k - kt * TK)
                first, last = kt == 0, kt == n_kt - 1
                xb = n_tok * _cdiv(kv, ab) if (n_kt > 1 or mt == 0) else 0
                kb = _cdiv(rows, ab) if first else 0
                wb = kb + rows * _cdiv(kv, 2 * ab)
                lx[i] = xb + (timing.axi_latency if i == 0 and xb else 0)
                lw[i] = wb + (timing.axi_latency if i == 0 else 0)
                fill_w[i], fill_x[i] = wb, xb
                if design.packing == 4:
                    comp[i] = _cdiv(n_tok, 2) * _cdiv(kv, C // 2)
                else:
                    comp[i] = n_tok * _cdiv(kv, C)
                read_beats += xb + wb
                if last:
                    emit[i] = n_tok
                    kinds = _cdiv(rows, ab)  # the row tile's kinds (read with its first reduction tile)
                    o = kinds + timing.param_depth
                    pb = n_params * _cdiv(rows, ab // 4)
                    o += (pb + timing.param_depth if pb else 0) + n_tok + timing.output_depth
                    out[i] = o
                    beats = n_tok * _cdiv(n_out, per_beat)
                    st[i] = beats + store_depth if beats else 0
                    read_beats += pb + (beats if mode == "ls_residual" else 0)
                    write_beats += beats
                i += 1
    return _Stages(lx, lw, fill_x, fill_w, comp, emit, out, st, read_beats, write_beats)


def _compute_trips(s: _Stages, compute_depth: int) -> list[int]:
    """The compute stage of step ``j`` overlaps the fills of ``j``, the passes of ``j - 1`` and the
    emission of ``j - 2`` (a three-deep pipeline)."""
    n = len(s.lx)
    cp = [0] * (n + 2)
    for j in range(n + 2):
        trips = max(
            s.fill_w[j] if j < n else 0,
            s.fill_x[j] if j < n else 0,
            s.comp[j - 1] if 1 <= j <= n else 0,
            s.emit[j - 2] if j >= 2 else 0,
        )
        cp[j] = trips + compute_depth if trips else 0
    return cp


def _dataflow_total(s: _Stages, cp: list[int]) -> int:
    """The call's cycles: the dataflow recurrence over the stages (same as qvit::last_gemm_cycles)."""
    n = len(s.lx)
    f_lx = f_lw = f = f_o = f_s = 0
    fin_x = [0] * n
    fin_w = [0] * n
    for j in range(n):
        f_lx += s.lx[j]
        f_lw += s.lw[j]
        fin_x[j], fin_w[j] = f_lx, f_lw
    fin_cp = [0] * (n + 2)
    for j in range(n + 2):
        f += cp[j]
        if j < n:
            f = max(f, max(fin_x[j], fin_w[j]) + 1)
        fin_cp[j] = f
    for j in range(n):
        if s.out[j]:
            f_o = max(f_o + s.out[j], fin_cp[j + 2] + 1)
        if s.st[j]:
            f_s = max(f_s + s.st[j], f_o + 1)
    return max(f_s, fin_cp[n + 1]) if n else 0


__all__ = [
    "EngineTiming",
    "GemmCycles",
    "gemm_cycles",
    "nibble_split",
    "nibble_join",
    "nibble_program",
    "row_mask",
    "row_tiles",
    "layer_row_tiles",
    "stationary_row_tiles",
    "STAGES",
    "OUT_MODES",
    "ROW_PAD",
    "ROW_4BIT",
    "ROW_HI",
    "ROW_LO",
]
