"""The accelerator's program: ``qv_top``'s descriptor table and the DDR its DMA reads.

``qv_top`` (``hdl/qv_top.v``) runs an image with no host work between steps: a sequencer reads
one descriptor per step from its table, hands the core its configuration, asks the DMA for the
step's stream and starts the core; two load steps first bring the image's patch codes and the
residual the tokens start from (the class token and the positions) from DDR into the core's
memories.  :func:`make_program` builds that program for a chain of core steps
(:class:`~quasar_vit.rtl.gemm.Layer`): the descriptors, packed as ``qv_top.v`` declares them
(:func:`~quasar_vit.rtl.layout.descriptor_fields` reads the declaration from the HDL), and the DDR image of every step's
stream.  :func:`run_program` runs it in Verilator (``tb_qv_top``) and returns every step's codes and
cycles, the result port's values, and the image's cycles from ``run`` to ``done``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quasar_vit.errors import RtlError
from quasar_vit.rtl import sim
from quasar_vit.rtl.gemm import MODE_SM, Layer, LinearRun, parse_steps, place_steps, step_fields, step_stream
from quasar_vit.rtl.layout import (
    Ddr,
    GemmShape,
    activation_words,
    descriptor_fields,
    descriptor_words,
    pack_descriptor,
    pow2_at_least,
    residual_words,
    split_words,
)
from quasar_vit.rtl.modules import tb_sources

MODE_LOAD = 7  # a load step (qv_top's loader; the core stays idle)
DST_CODES, DST_RESIDUAL = 0, 1  # a load's memory: the activation memory, the residual memory


@dataclass(frozen=True)
class Load:
    """A load step: ``words`` (each ``width`` bits) into the activation (``DST_CODES``) or the residual
    (``DST_RESIDUAL``) memory, ``chunks`` a token for ``tokens`` tokens, from chunk 0."""

    dst: int
    tokens: int
    chunks: int
    width: int
    words: tuple[int, ...]

    def beats(self, wb: int) -> list[int]:
        """The stream: each word in whole beats, low bits first (as qv_top's loader takes them)."""
        per = word_beats(self.width, wb)
        return [b for w in self.words for b in split_words(w, per, wb)]


def word_beats(width: int, wb: int) -> int:
    """Stream beats a loaded word of ``width`` bits takes (``ceil(width / WB)``, as qv_top's loader)."""
    return -(-width // wb)


def code_word_bits(shape: GemmShape) -> int:
    """Bits of an activation-memory word: KP 6-bit codes."""
    return 6 * shape.KP


def residual_word_bits(shape: GemmShape) -> int:
    """Bits of a residual-memory word: KP ``res_w``-bit codes."""
    return shape.KP * shape.res_w


def load_beats(shape: GemmShape, n: int, k: int, e: int) -> list[int]:
    """Stream beats of an image's two loads (:func:`load_codes` of ``[n, k]`` patch codes,
    :func:`load_residual` of an ``[n, e]`` residual): a word of KP codes in whole beats."""
    codes = n * -(-k // shape.KP) * word_beats(code_word_bits(shape), shape.WB)
    return [codes, n * (e // shape.KP) * word_beats(residual_word_bits(shape), shape.WB)]


def load_codes(codes: np.ndarray, signed: bool, shape: GemmShape) -> Load:
    """The image's patch codes ``[N, K]`` (K a multiple of KP) into the activation memory."""
    words = activation_words(codes, signed, shape.KP)
    return Load(
        DST_CODES, codes.shape[0], codes.shape[1] // shape.KP, code_word_bits(shape), tuple(w for _, _, w in words)
    )


def load_residual(residual: np.ndarray, shape: GemmShape) -> Load:
    """The residual codes ``[N, E]`` the tokens start from into the residual memory."""
    words = [sum(int(p) << (32 * j) for j, p in enumerate(parts)) for _, _, *parts in residual_words(residual, shape)]
    return Load(DST_RESIDUAL, residual.shape[0], residual.shape[1] // shape.KP, residual_word_bits(shape), tuple(words))


@dataclass(frozen=True)
class Program:
    """An image's program: ``loads`` then ``layers``, one descriptor each, and the DDR beats."""

    loads: tuple[Load, ...]
    layers: tuple[Layer, ...]
    descriptors: tuple[tuple[int, ...], ...]
    beats: tuple[int, ...]
    n_tokens: int


def _load_fields(load: Load) -> dict[str, int]:
    zero = {f.name: 0 for f in descriptor_fields()}
    return {**zero, "n_tok": load.tokens, "n_ch": load.chunks, "mode": MODE_LOAD, "dst": load.dst}


def make_program(
    shape: GemmShape, layers: list[Layer], codes: np.ndarray, a_signed: bool, residual: np.ndarray
) -> Program:
    """The program of ``layers`` (as :func:`~quasar_vit.rtl.gemm.run_layers` chains them) on an
    image whose first step reads ``codes`` ``[N, K]``, with the residual memory starting at
    ``residual`` ``[N, E]``: a load step for each, then one descriptor per layer.  The last layer
    (the head) gives its values on the result port.  In DDR the subnet's part comes first (the
    residual start, every step's stream) and the image's codes last, so that a driver writes only
    those per image."""
    n = codes.shape[0]
    res = np.asarray(residual, np.int64)
    if -(-n // shape.T) > shape.tiles_max or res.shape[1] // shape.KP > shape.rch_max or res.shape[1] % shape.KP:
        raise RtlError(f"{n} tokens of {res.shape[1]} channels do not fit the core ({shape})")
    places, _ = place_steps(shape, layers, codes.shape[1], a_signed, res.shape[1], n)
    image, start = load_codes(codes, a_signed, shape), load_residual(res, shape)
    if not (image.words and start.words):
        raise RtlError("an image's loads need at least one token and one chunk each")
    if len(layers) + 2 > shape.steps_max:
        raise RtlError(f"{len(layers) + 2} steps do not fit the descriptor table ({shape.steps_max})")
    beats: list[int] = []

    def place(stream: list[int]) -> dict[str, int]:
        beats.extend(stream)
        return {"addr": len(beats) - len(stream), "beats": len(stream)}

    # DDR: what is the subnet's (the residual start, every step's stream), then the image's codes
    at_start = place(start.beats(shape.WB))
    steps = [
        {
            **step_fields(lay, pl, shape, n),
            "emit": int(i == len(layers) - 1),
            "dst": 0,
            **place(step_stream(i, lay, shape)),
        }
        for i, (lay, pl) in enumerate(zip(layers, places))
    ]
    at_image = place(image.beats(shape.WB))
    descriptors = [{**_load_fields(image), **at_image}, {**_load_fields(start), **at_start}, *steps]
    return Program(
        (image, start), tuple(layers), tuple(tuple(pack_descriptor(d)) for d in descriptors), tuple(beats), n
    )


@dataclass(frozen=True)
class TopRun:
    """An image on ``qv_top``: each step's record (the loads', then the layers'), the result port's
    values ``[tokens, rows]`` of the emitting step, and the cycles from ``run`` taken to ``done`` set."""

    loads: list[int]  # each load step's cycles
    layers: list[LinearRun]
    softmax_cycles: list[int]
    results: np.ndarray
    cycles: int


def run_program(shape: GemmShape, prog: Program, workdir: Path, ddr: Ddr = Ddr()) -> TopRun:
    """Runs ``prog`` on ``qv_top`` in Verilator, with ``ddr`` the DMA's DDR."""
    if len(prog.descriptors) > shape.steps_max:
        raise RtlError(f"{len(prog.descriptors)} steps do not fit the descriptor table ({shape.steps_max})")
    params = {**shape.top_params(), "BEATS_MAX": pow2_at_least(max(2, len(prog.beats)))}
    stim: list[int] = [len(prog.descriptors), descriptor_words(), ddr.latency, ddr.num, ddr.den, ddr.fifo]
    for words in prog.descriptors:
        stim += words
    stim.append(len(prog.beats))
    for b in prog.beats:
        stim += split_words(b, shape.WB // 32, 32)
    exe = sim.build("tb_qv_top", tb_sources("qv_top"), params)
    out = sim.run(exe, np.array(stim, dtype=object), workdir)
    loads, pos = [], 0
    for _ in prog.loads:
        if out[pos] != -1 or out[pos + 1] != 0:
            raise RtlError("a load step gave codes")
        loads.append(int(out[pos + 2]))
        pos += 4
    runs, pos = parse_steps(out, list(prog.layers), prog.n_tokens, pos)
    if out[pos] != -6:
        raise RtlError("the testbench's output lacks the softmax runs")
    n_sm = sum(lay.mode == MODE_SM for lay in prog.layers)
    sm = [int(v) for v in out[pos + 1 : pos + 1 + n_sm]]
    pos += 1 + n_sm
    if out[pos] != -7 or out[pos + 2] != -8:
        raise RtlError("the testbench's output lacks the image's cycles and results")
    cycles, n_res = int(out[pos + 1]), int(out[pos + 3])
    want = runs[-1].codes  # the emitting step's lanes, as the trace saw them
    if n_res != want.size:
        raise RtlError(f"the result port gave {n_res} values; the emitting step has {want.size}")
    results = np.zeros_like(want)
    for t, r, v in np.asarray(out[pos + 4 : pos + 4 + 3 * n_res], np.int64).reshape(-1, 3):
        results[t, r - prog.layers[-1].row_base] = v
    return TopRun(loads, runs, sm, results, cycles)


__all__ = [
    "MODE_LOAD",
    "Load",
    "word_beats",
    "code_word_bits",
    "residual_word_bits",
    "load_beats",
    "load_codes",
    "load_residual",
    "Program",
    "make_program",
    "TopRun",
    "run_program",
]
