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
    TOP_FIELDS,
    Ddr,
    GemmShape,
    activation_codes,
    activation_words,
    descriptor_fields,
    residual_codes,
    residual_words,
    row_tiles,
    split_words,
    table_beats,
    weight_stream,
)
from quasar_vit.rtl.modules import tb_sources

BEATS_MAX = 1 << 18  # the testbench's DDR model holds this many beats (one build for every layer)
MODE_CODES, MODE_RESIDUAL, MODE_GELU, MODE_LN, MODE_QK, MODE_PV, MODE_SM = range(7)  # qv_gemm_core's modes
ATTENTION = (MODE_QK, MODE_SM, MODE_PV)  # the steps of a head: no weight stream, after a kv layer
STEP_KINDS = {MODE_LN: "LayerNorm", MODE_QK: "Q K^T", MODE_SM: "softmax", MODE_PV: "P V"}  # else "linear"
_MISSING = np.iinfo(np.int64).min  # an output the lanes never gave
SM_FRAC_BITS = 6  # qv_sm_path's exp2 table: 2**6 entries
SCORE_BITS = 20  # the score memory's words (res_w bits): a score of K terms is below 1024 * K

__all__ = ["Ddr", "Layer", "LinearRun", "ChainRun", "run_layers", "run_linear"]


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
    scores: np.ndarray  # the score memory at the end [N, N] (the last Q K^T step's)
    inv: np.ndarray  # the last softmax step's per-row reciprocal [N] (its one division)
    softmax_cycles: list[int]  # each softmax step's run in the background: its start to its end


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
    kv: bool = False  # a qkv layer: its k and v thirds also go to the K and V^T memories
    tokens: int = 0  # the step's tokens: the first ones (0: all; the final LayerNorm and the head: 1)
    skip_first: bool = False  # token 0 gives no output (the patch embedding leaves the class token)
    values_out: bool = False  # the lanes' values leave the core as they are (the head's accumulators)
    maxima: bool = False  # a softmax whose row maxima its head's Q K^T found (no pass of its own)
    head: int = 0  # an attention matmul's head
    heads: int = 0  # ... of how many

    @classmethod
    def scores(cls, n_keys: int, head_dim: int, head: int, heads: int) -> "Layer":
        """Q K^T of ``head``: the scores ``[N, n_keys]`` into the score memory, from the q third
        of the last kv layer's output and the K memory (an identity requantiser)."""
        top = 1 << (SCORE_BITS - 1)
        one = np.ones(n_keys, np.int64)
        w = np.zeros((n_keys, head_dim), np.int64)
        return cls(w, one.astype(bool), one, 0 * one, 0 * one, (-top, top - 1), MODE_QK, head=head, heads=heads)

    @classmethod
    def softmax(
        cls,
        n_keys: int,
        head: int,
        heads: int,
        rq: tuple[int, int, int],
        hi: int,
        frac_bits: int = SM_FRAC_BITS,
        after_scores: bool = True,
    ) -> "Layer":
        """The softmax of ``head``'s scores (the score memory) into its P codes ``[0, hi]``, with
        :func:`~quasar_vit.quantization.intops.softmax`'s ``rq = (M, S, Qa)``.  ``after_scores``: it
        follows its head's Q K^T, which found the row maxima as it wrote the scores; otherwise (scores
        loaded into the memory) the step finds them in a pass of its own."""
        if frac_bits != SM_FRAC_BITS:
            raise RtlError(
                f"the core's softmax has a {2**SM_FRAC_BITS}-entry exp2 table (softmax_frac_bits {SM_FRAC_BITS})"
            )
        one = np.ones(n_keys, np.int64)
        mult, shift, recip = (v * one for v in rq)
        w = np.zeros((n_keys, 0), np.int64)
        return cls(
            w, 0 * one.astype(bool), mult, recip, shift, (0, hi), MODE_SM, head=head, heads=heads, maxima=after_scores
        )

    @classmethod
    def attend(
        cls, n_keys: int, head_dim: int, head: int, heads: int, rq: tuple[int, int, int], out_range: tuple[int, int]
    ) -> "Layer":
        """P V of ``head``: its ``head_dim`` output codes (requantiser ``rq``: mult, offset, shift) into
        the projection's input, from the head's P (unsigned codes over ``n_keys`` keys, padded to KP)
        and the V^T memory."""
        one = np.ones(head_dim, np.int64)
        w = np.zeros((head_dim, n_keys), np.int64)
        mult, offset, shift = (v * one for v in rq)
        return cls(w, one.astype(bool), mult, offset, shift, out_range, MODE_PV, head=head, heads=heads)

    @classmethod
    def from_ir(
        cls,
        lin: IntLinear,
        rq: Requant,
        out_range: tuple[int, int],
        mode: int = MODE_CODES,
        table: np.ndarray | None = None,
        out_signed: bool | None = None,
        kv: bool = False,
    ) -> "Layer":
        """An exported linear layer (the IR's weights and its integer requantiser) as a step."""
        mult, offset, shift = (np.asarray(v).astype(np.int64) for v in (rq.mult, rq.offset, rq.shift))
        tab = None if table is None else np.asarray(table).astype(np.int64)
        return cls(lin.w_int, lin.is8, mult, offset, shift, out_range, mode, tab, out_signed, kv=kv)

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
    def kind(self) -> str:
        """What the step is, for tables: linear, LayerNorm, Q K^T, softmax or P V."""
        return STEP_KINDS.get(self.mode, "linear")

    @property
    def bank(self) -> int:
        """The score memory's bank of a Q K^T or softmax step: the head's parity, so that Q K^T of the
        next head writes one bank while the softmax reads the other."""
        return self.head % 2 if self.mode in (MODE_QK, MODE_SM) else 0

    @property
    def section(self) -> int:
        """Row tiles break at multiples of this (a kv layer's thirds)."""
        return self.w_int.shape[0] // 3 if self.kv else 0

    @property
    def row_base(self) -> int:
        """The first output row the lanes report (P V: the head's first channel of proj's input)."""
        return self.head * self.w_int.shape[0] if self.mode == MODE_PV else 0

    @property
    def out_signed(self) -> bool:
        """Whether the codes this layer writes are signed (the next layer's input)."""
        if self.out_signed_codes is not None:
            return self.out_signed_codes
        return self.out_range[0] < 0


def terms(lay: Layer, shape: GemmShape) -> int:
    """K of a step on the core: P V's keys are padded to a whole chunk (P is 0 there)."""
    k = lay.w_int.shape[1]
    return -(-k // shape.KP) * shape.KP if lay.mode == MODE_PV else k


def _check(i: int, lay: Layer, k_in: int, e: int, n: int, kv: tuple[int, int] | None, shape: GemmShape) -> None:
    """One line for each way a step would not run as asked on this core (the HDL does not check).

    ``kv``: the channels and the output base of the last kv layer (``None`` before one)."""
    m, k = lay.w_int.shape[0], terms(lay, shape)
    lo, hi = lay.out_range
    problems = []
    if lay.mode == MODE_LN:
        if m != e or e == 0 or e % shape.R:
            problems.append(f"a LayerNorm of {m} channels needs the residual's {e} channels, a multiple of R={shape.R}")
    elif lay.mode in ATTENTION:
        keys = lay.w_int.shape[1 if lay.mode == MODE_PV else 0]
        hd = {MODE_QK: lay.w_int.shape[1], MODE_PV: lay.w_int.shape[0]}.get(lay.mode, 0)
        if not 0 <= lay.head < lay.heads:
            problems.append(f"head {lay.head} of {lay.heads}")
        if kv is None:
            if lay.mode != MODE_SM:  # (a softmax may read preloaded scores)
                problems.append("an attention step needs a kv layer before it")
        elif kv[0] % (3 * max(lay.heads, 1)) or (hd and hd * lay.heads * 3 != kv[0]):
            problems.append(f"{lay.heads} heads (dim {hd}) do not fit the kv layer's {kv[0]} channels")
        if lay.mode == MODE_SM and not 0 < int(lay.offset[0]) < 1 << shape.qa_w:
            problems.append(
                f"the softmax's Qa={int(lay.offset[0])} must be in (0, 2**{shape.qa_w}): a core with qa_w larger"
            )
        if keys != n:
            problems.append(f"takes {keys} keys; there are {n} tokens")
    elif k != k_in:
        problems.append(f"takes K={k} but its input has {k_in} channels")
    if k % shape.KP or k // shape.KP > shape.wch_max:
        problems.append(f"K={k} must be a multiple of KP={shape.KP} and at most {shape.KP * shape.wch_max}")
    if lay.kv and (m % 3 or (m // 3) % shape.KP or m // 3 > shape.KP * shape.rch_max or lay.mode != MODE_CODES):
        problems.append(f"a kv layer writes codes in thirds of a multiple of KP, at most {shape.KP * shape.rch_max}")
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
    elif lay.mode == MODE_QK:
        if shape.res_w < SCORE_BITS or k * 32 * 32 >= 1 << (SCORE_BITS - 1):
            problems.append(f"scores of K={k} need {SCORE_BITS}-bit score memory words (res_w={shape.res_w})")
    elif lay.values_out:
        if lay.mode != MODE_CODES or not -(1 << (shape.out_w - 1)) <= lo <= hi < 1 << (shape.out_w - 1):
            problems.append(f"values out need mode {MODE_CODES} and a range within {shape.out_w} bits")
    elif not (-32 <= lo <= hi <= 31 or 0 <= lo <= hi <= 63):
        problems.append(f"its code range {lay.out_range} is not 6-bit")
    if lay.tokens and (lay.tokens > n or lay.mode in ATTENTION):
        problems.append(f"{lay.tokens} tokens of {n}: only a linear or LayerNorm step takes the first ones")
    if problems:
        raise RtlError(f"step {i}: {'; '.join(problems)}")


@dataclass(frozen=True)
class _Place:
    """Where a step reads and writes in the activation memory, and its attention fields."""

    a_base: int
    o_base: int
    a_signed: bool
    kv: tuple[int, int, int, int] = (0, 0, 0, 0)  # kv_en, k_lo, v_lo, kv_ch
    src: int = 0
    n_rows: int = 0


def run_layers(
    shape: GemmShape,
    layers: list[Layer],
    codes: np.ndarray,
    a_signed: bool,
    workdir: Path,
    ddr: Ddr = Ddr(),
    residual: np.ndarray | None = None,
    scores: np.ndarray | None = None,
) -> ChainRun:
    """Runs ``layers`` one after the other on the core, each reading the codes the previous one
    wrote into the on-chip activation memory (the first reads ``codes`` ``[N, K]``).  The matrices
    lie side by side in the memory: the input from chunk 0, each layer's output after its input;
    a LayerNorm (which reads the residual memory) writes from chunk 0: it starts a new chain.

    A kv layer (the qkv layer) also fills the K and V^T memories.  After it, a head's steps
    (:meth:`Layer.scores`, :meth:`Layer.softmax`, :meth:`Layer.attend`) read its q third and those
    memories: the scores go to the score memory, the softmax writes the head's P after the kv
    layer's output (the heads' side by side), and P V writes the projection's input after them.

    ``residual`` (``[N, E]`` codes) is loaded into the residual memory first; residual-mode layers
    add to it, LayerNorm steps read it.  ``scores`` (``[N, N]``) is loaded into the score memory: a
    softmax step with no kv layer before it reads them and writes P after the input.

    Returns per step its :class:`LinearRun`, the last code-writing step's output as read back from
    the activation memory, and at the end the residual, the scores and the last softmax's
    reciprocals.
    """
    n = codes.shape[0]
    n_tt = -(-n // shape.T)
    if n_tt > shape.tiles_max:
        raise RtlError(f"{n} tokens do not fit the core ({shape})")
    res = np.zeros((n, 0), np.int64) if residual is None else np.asarray(residual, np.int64)
    e = res.shape[1]
    if e % shape.KP or e // shape.KP > shape.rch_max:
        raise RtlError(f"a residual of {e} channels does not fit the core ({shape})")
    places, dump = place_steps(shape, layers, codes.shape[1], a_signed, e, n)
    stim: list[int] = [len(layers), ddr.latency, ddr.num, ddr.den, ddr.fifo]
    words = activation_words(codes, a_signed, shape.KP)
    stim.append(len(words))
    for w in words:
        stim += list(w)
    for rwords in (residual_words(res, shape), [] if scores is None else _score_words(scores, n, shape)):
        stim.append(len(rwords))
        for rw in rwords:
            stim += rw
    for i, (lay, pl) in enumerate(zip(layers, places)):
        fields, beats = step_fields(lay, pl, shape, n), step_stream(i, lay, shape)
        stim += [fields[name] for name in core_fields()]
        stim.append(len(beats))
        for b in beats:
            stim += split_words(b, shape.WB // 32, 32)
    dump_base, dump_m, dump_signed = dump
    last_qk = [lay for lay in layers if lay.mode == MODE_QK][-1:]
    stim += [dump_base, n_tt, -(-dump_m // shape.KP), last_qk[0].bank if last_qk else 0]
    stim += [n, e // shape.KP, n, -(-n // shape.KP), n]
    exe = sim.build("tb_qv_gemm_core", tb_sources("qv_gemm_core"), {**shape.params(), "BEATS_MAX": BEATS_MAX})
    out = sim.run(exe, np.array(stim, dtype=object), workdir)
    return _parse(out, layers, n, shape, dump_m, dump_signed, e)


def core_fields() -> tuple[str, ...]:
    """The core's configuration fields of a step, in the descriptor's order (``qv_top.v``, which
    ``tb_qv_gemm_core`` reads a step in too)."""
    return tuple(f.name for f in descriptor_fields() if f.name not in TOP_FIELDS)


def step_fields(lay: Layer, pl: "_Place", shape: GemmShape, n: int) -> dict[str, int]:
    """The core's configuration of step ``lay`` placed at ``pl`` on ``n`` tokens, by field name."""
    m, k = lay.w_int.shape[0], terms(lay, shape)
    att = lay.mode in ATTENTION
    n_s = lay.tokens or n
    lo, hi = lay.out_range
    flag = int(lay.maxima) << 47  # (at_offset[47]: the softmax's maxima are known)
    kv_en, k_lo, v_lo, kv_ch = pl.kv
    return {
        "n_tok": n_s,
        "n_tt": -(-n_s // shape.T),
        "n_ch": k // shape.KP,
        "n_rt": row_tiles(lay.is8, shape, lay.section),
        "k": k,
        "a_signed": int(pl.a_signed),
        "o_signed": int(lay.out_signed),
        "mode": lay.mode,
        "a_base": pl.a_base,
        "o_base": pl.o_base,
        "r_base": 0,
        "e_len": m,
        "eps": lay.eps,
        "lo": lo,
        "hi": hi,
        "skip_first": int(lay.skip_first),
        "kv_en": kv_en,
        "k_lo": k_lo,
        "v_lo": v_lo,
        "kv_ch": kv_ch,
        "src": pl.src,
        "n_rows": pl.n_rows,
        "row_base": lay.row_base,
        "at_mult": int(lay.mult[0]) if att else 0,
        "at_offset": int(lay.offset[0]) | flag if att else 0,
        "at_shift": int(lay.shift[0]) if att else 0,
        "sc_bank": lay.bank,
    }


def step_stream(i: int, lay: Layer, shape: GemmShape) -> list[int]:
    """Step ``i``'s stream beats: a linear layer's weights and constants (a GELU layer's table first),
    a LayerNorm's constants; none for a head's steps (their operands are on chip)."""
    if lay.mode in ATTENTION:
        return []
    beats = weight_stream(lay.w_int, lay.is8, lay.mult, lay.offset, lay.shift, shape, lay.section)
    if lay.mode == MODE_GELU:
        beats = table_beats(lay.table, shape.WB) + beats  # type: ignore[arg-type]
    if len(beats) > BEATS_MAX:
        raise RtlError(f"step {i}: {len(beats)} stream beats exceed the testbench's DDR model ({BEATS_MAX})")
    return beats


def place_steps(
    shape: GemmShape, layers: list[Layer], k0: int, a_signed: bool, e: int, n: int
) -> tuple[list[_Place], tuple[int, int, bool]]:
    """Each step's :class:`_Place` (checked), and the dump: the last code-writing step's output
    (its first chunk, channels and signedness)."""
    places = []
    signed, base, k_in = a_signed, 0, k0
    dump = (0, k0, a_signed)
    kv: tuple[int, int] | None = None  # the last kv layer's channels and output base
    nch = -(-n // shape.KP)  # a P's chunks
    for i, lay in enumerate(layers):
        _check_order(i, lay, layers[:i])
        _check(i, lay, k_in, e, n, kv, shape)
        m = lay.w_int.shape[0]
        if lay.mode == MODE_SM and kv is None:  # preloaded scores: P after the input
            p_at = base + -(-k_in // shape.KP)
            if p_at + nch > shape.ch_max:
                raise RtlError(f"step {i}: P does not fit the activation memory ({shape})")
            places.append(_Place(0, p_at, False))
            dump = (p_at, n, False)
            continue
        if lay.mode in ATTENTION:
            assert kv is not None
            third, q_base = kv[0] // 3, kv[1]
            hd = third // lay.heads
            p_at = q_base + 3 * third // shape.KP + lay.head * nch  # the head's P
            o_base = q_base + 3 * third // shape.KP + lay.heads * nch
            if o_base + third // shape.KP > shape.ch_max:
                raise RtlError(f"step {i}: the heads' P and their output do not fit the activation memory ({shape})")
            if lay.mode == MODE_QK:
                q_at = lay.head * hd // shape.KP
                places.append(_Place(q_base + q_at, 0, True, src=q_at, n_rows=n))
            elif lay.mode == MODE_SM:
                places.append(_Place(0, p_at, False))
                dump = (p_at, n, False)
            else:  # P V: the heads' outputs side by side are the next layer's input (proj's)
                places.append(_Place(p_at, o_base, False, src=lay.head * hd, n_rows=hd))
                signed, base, k_in = lay.out_signed, o_base, third
                dump = (o_base, third, lay.out_signed)
            continue
        out_base = 0 if lay.mode == MODE_LN else base + terms(lay, shape) // shape.KP  # a LayerNorm starts afresh
        if out_base + -(-m // shape.KP) > shape.ch_max:
            raise RtlError(f"step {i}: its output does not fit the activation memory ({shape})")
        kv_fields = (0, 0, 0, 0)
        if lay.kv:
            third = m // 3 // shape.KP
            kv_fields, kv = (1, out_base + third, out_base + 2 * third, third), (m, out_base)
        places.append(_Place(base, out_base, signed, kv_fields))
        if lay.mode != MODE_RESIDUAL:  # the next layer reads what this one wrote
            signed, base, k_in = lay.out_signed, out_base, m
            dump = (out_base, m, signed)
    return places, dump


def _check_order(i: int, lay: Layer, before: list[Layer]) -> None:
    """One line if step ``i`` would race the softmax, which runs in the background (``qv_gemm_core``):
    only Q K^T steps, into the other bank of the score memory, may run beside it, and then its head's
    P V waits for it.  A softmax that takes its maxima from Q K^T needs its head's to be the last
    one into its bank."""
    last_qk = {lay.bank: lay for lay in before if lay.mode == MODE_QK}
    running = None  # the softmax no later step has waited for
    for b in before:
        running = b if b.mode == MODE_SM else running if b.mode == MODE_QK else None
    if lay.mode == MODE_SM and lay.maxima and (lay.bank not in last_qk or last_qk[lay.bank].head != lay.head):
        raise RtlError(
            f"step {i}: a softmax that takes its row maxima from Q K^T must come after its head's Q K^T, "
            "with no other into its bank between"
        )
    if running is None:
        return
    if lay.mode == MODE_QK and not running.maxima:
        raise RtlError(f"step {i}: a softmax that finds its own row maxima runs alone: no Q K^T beside it")
    if lay.mode == MODE_QK and lay.bank == running.bank:
        raise RtlError(
            f"step {i}: Q K^T of head {lay.head} would overwrite the scores the softmax of head {running.head} "
            "still reads: its P V must come between"
        )
    if lay.mode not in (MODE_QK, MODE_PV):
        raise RtlError(f"step {i}: only Q K^T and P V steps may follow a softmax (this is a {lay.kind} step)")


def parse_steps(out: np.ndarray, layers: list[Layer], n: int, pos: int) -> tuple[list[LinearRun], int]:
    """Each step's record in a testbench's output from ``pos`` (per code "token row code", then
    "-1 codes cycles overrun"), and the position after them."""
    runs = []
    for lay in layers:
        m = lay.w_int.shape[0]
        result = np.full((lay.tokens or n, m), _MISSING, np.int64)
        while out[pos] != -1:
            t, r, c = (int(v) for v in out[pos : pos + 3])
            r -= lay.row_base
            if result[t, r] != _MISSING:
                raise RtlError(f"output ({t}, {r}) written twice")
            result[t, r] = c
            pos += 3
        n_codes, cycles, overrun = (int(v) for v in out[pos + 1 : pos + 4])
        pos += 4
        if n_codes != int((result != _MISSING).sum()):
            raise RtlError(f"the testbench reported {n_codes} codes and wrote another number")
        runs.append(LinearRun(result, cycles, bool(overrun)))
    return runs, pos


def _parse(
    out: np.ndarray, layers: list[Layer], n: int, shape: GemmShape, m_dump: int, signed: bool, e: int
) -> ChainRun:
    runs, pos = parse_steps(out, layers, n, 0)
    if out[pos] != -6:
        raise RtlError("the testbench's output lacks the softmax runs")
    n_sm = sum(lay.mode == MODE_SM for lay in layers)
    sm_cycles = [int(v) for v in out[pos + 1 : pos + 1 + n_sm]]
    pos += 1 + n_sm
    if out[pos] != -2:
        raise RtlError("the testbench's output lacks the activation dump")
    end = pos + 1 + -(-n // shape.T) * -(-m_dump // shape.KP) * shape.T
    act = activation_codes(out[pos + 1 : end], n, m_dump, shape, signed)
    if out[end] != -3:
        raise RtlError("the testbench's output lacks the residual dump")
    s_at = end + 1 + n * (e // shape.KP) * shape.res_parts
    if out[s_at] != -4:
        raise RtlError("the testbench's output lacks the score dump")
    keys = -(-n // shape.KP) * shape.KP
    i_at = s_at + 1 + n * (keys // shape.KP) * shape.res_parts
    if out[i_at] != -5:
        raise RtlError("the testbench's output lacks the inv dump")
    scores = residual_codes(out[s_at + 1 : i_at], n, keys, shape)[:, :n]
    inv = np.asarray(out[i_at + 1 : i_at + 1 + n], np.int64)
    return ChainRun(runs, act, residual_codes(out[end + 1 : s_at], n, e, shape), scores, inv, sm_cycles)


def _score_words(scores: np.ndarray, n: int, shape: GemmShape) -> list[list[int]]:
    """A preloaded score matrix ``[N, N]`` as the score memory's words (keys padded to a word)."""
    s = np.asarray(scores, np.int64)
    if s.shape != (n, n) or np.abs(s).max(initial=0) >= 1 << (SCORE_BITS - 1):
        raise RtlError(f"scores must be [{n}, {n}] and below 2**{SCORE_BITS - 1} in magnitude")
    padded = np.zeros((n, -(-n // shape.KP) * shape.KP), np.int64)
    padded[:, :n] = s
    return residual_words(padded, shape)


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
