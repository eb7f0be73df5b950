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
from quasar_vit.rtl.layout import GemmShape, activation_words, row_tiles, weight_stream
from quasar_vit.rtl.modules import tb_sources


BEATS_MAX = 1 << 18  # the testbench's DDR model holds this many beats (one build for every layer)


@dataclass(frozen=True)
class Ddr:
    """DDR as the testbench models it: the first beat ``latency`` cycles after start, then
    ``beats_per_cycle`` (``num / den``) while the core takes them."""

    latency: int = 64
    num: int = 1
    den: int = 1


@dataclass(frozen=True)
class LinearRun:
    codes: np.ndarray  # [N, M] output codes
    cycles: int  # start to done
    overrun: bool


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
    n, k = codes.shape
    m = w_int.shape[0]
    n_tt, n_ch = -(-n // shape.T), k // shape.KP
    if n_tt > shape.tiles_max or n_ch > shape.ch_max or k % shape.KP:
        raise RtlError(f"a {n}x{k} input does not fit the core ({shape})")
    beats = weight_stream(w_int, is8, mult, offset, shift, shape)
    words = activation_words(codes, a_signed, shape.KP)
    stim: list[int] = [n, n_tt, n_ch, row_tiles(is8, shape), k, int(a_signed), *out_range]
    stim += [ddr.latency, ddr.num, ddr.den, len(words)]
    for w in words:
        stim += list(w)
    stim.append(len(beats))
    for b in beats:
        stim += [(b >> (32 * j)) & 0xFFFFFFFF for j in range(shape.WB // 32)]
    if len(beats) > BEATS_MAX:
        raise RtlError(f"the layer's {len(beats)} stream beats exceed the testbench's DDR model ({BEATS_MAX})")
    params = {**shape.params(), "BEATS_MAX": BEATS_MAX}
    exe = sim.build("tb_qv_gemm_core", tb_sources("qv_gemm_core"), params)
    out = sim.run(exe, np.array(stim, dtype=object), workdir)
    n_codes, cycles, overrun = (int(v) for v in out[-3:])
    triples = out[:-3].reshape(-1, 3)
    if len(triples) != n_codes:
        raise RtlError(f"the testbench reported {n_codes} codes and wrote {len(triples)}")
    result = np.full((n, m), np.iinfo(np.int64).min, np.int64)
    for t, r, c in triples:
        if result[t, r] != np.iinfo(np.int64).min:
            raise RtlError(f"output ({t}, {r}) written twice")
        result[t, r] = c
    return LinearRun(result, cycles, bool(overrun))


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
