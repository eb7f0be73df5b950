"""The bits the RTL reads: a linear layer's weight stream, activation and residual words, descriptors.

:func:`weight_stream` lays out a layer for ``qv_weight_buf``: per row tile of ``R`` nibble-row
slots (:func:`slot_program`), the ``R`` slot constants, then the tile's offset weights ``w'``
chunk by chunk.  :func:`activation_words` packs a layer input's codes for ``qv_act_mem``,
:func:`residual_words` / :func:`residual_codes` the residual for and from ``qv_res_mem``.  They
return integers that the testbenches read; the bit positions are the ones the HDL headers give.
:func:`pack_descriptor` packs a step's descriptor for ``qv_top``'s table, in the format ``qv_top.v``
declares (:func:`descriptor_fields` reads it from the HDL).  :class:`GemmShape` is the core's
parameters, checked against the limits the HDL assumes, and :class:`Ddr` the testbench's DDR model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from quasar_vit.errors import RtlError
from quasar_vit.hardware.engine import nibble_split
from quasar_vit.hardware.engine import ROW_4BIT, ROW_HI, ROW_LO, ROW_PAD
from quasar_vit.rtl.packing import A_OFFSET, W_OFFSET
from quasar_vit.rtl.tools import hdl_file

CONST_BITS = 96  # a slot constant: mult 18, offset 48, shift 6, is8, out_en, out_row 12, out_pos 6, tile_words 4


@dataclass(frozen=True)
class GemmShape:
    """The array and its buffers as ``qv_gemm_core`` is built: ``R`` slots x ``T`` tokens x ``KP``
    lanes, ``WB``-bit stream beats, at most ``T * tiles_max`` tokens, ``KP * wch_max`` terms a
    layer, and ``KP * ch_max`` channels in the activation memory (every matrix side by side)."""

    R: int
    T: int
    KP: int
    WB: int
    tiles_max: int
    ch_max: int
    wch_max: int
    rch_max: int = 16  # chunks of the residual memory: embed dim <= KP * rch_max
    res_w: int = 20  # residual code width (the IR's residual_bits)
    out_w: int = 21  # the lanes' value width (a residual update, a code, a GELU index)
    qa_w: int = 26  # the softmax's Qa bits (Qa = 2**16 / s_attn): above 27 its e * inv takes two DSPs a lane
    steps_max: int = 512  # qv_top's descriptor table: the steps of an image it holds (a power of two)

    def __post_init__(self) -> None:
        pow2 = {
            "ch_max": self.ch_max,
            "wch_max": self.wch_max,
            "rch_max": self.rch_max,
            "R/KP": self.R // self.KP,
            "steps_max": self.steps_max,
        }
        problems = [f"{k} must be a power of two" for k, v in pow2.items() if v < 1 or v & (v - 1)]
        checks = [
            (self.R % (2 * self.KP) == 0, "R must be a multiple of 2*KP (a tile of 8-bit rows holds R/2 rows)"),
            (self.T % 2 == 0, "T must be even (packing 4 pairs tokens)"),
            ((self.R * self.KP * 4) % self.WB == 0 and self.WB % 32 == 0, "R*KP*4 must be a multiple of WB, WB of 32"),
            (self.R // self.KP <= 8, "R/KP must be at most 8 (the 4-bit tile_words field)"),
            (self.R <= 64, "R must be at most 64 (the 6-bit out_pos field)"),
            (self.tiles_max >= 2, "tiles_max must be at least 2 (the token-tile index is at least one bit)"),
            (self.KP * self.wch_max <= 4096, "K may reach at most 4096 (the accumulator widths)"),
            (min(self.ch_max, self.rch_max) >= self.R // self.KP, "ch_max and rch_max must be at least R/KP"),
            (self.out_w > self.res_w, "out_w must exceed res_w"),
            (1 <= self.qa_w <= 46, "qa_w must be in [1, 46] (at_offset's bits below the maxima flag)"),
            # qv_top's descriptor fields (qv_top.v) hold the core's counts: 12-bit token and chunk fields,
            # 8-bit token tiles, 32-bit code bounds
            (self.T * self.tiles_max < 4096 and self.tiles_max < 256, "T*tiles_max must be below 4096, tiles_max 256"),
            (max(self.ch_max, self.wch_max, self.rch_max) < 4096, "ch_max, wch_max and rch_max must be below 4096"),
            (self.out_w <= 32, "out_w must be at most 32 (the descriptor's lo/hi)"),
        ]
        problems += [msg for ok, msg in checks if not ok]
        if problems:
            raise RtlError(f"core shape {self}: {'; '.join(problems)}")

    @property
    def units(self) -> int:
        """W4A6 multiply units of the array: R x T x KP."""
        return self.R * self.T * self.KP

    @property
    def const_beats(self) -> int:
        """Stream beats of one slot constant."""
        return -(-CONST_BITS // self.WB)

    @property
    def chunk_beats(self) -> int:
        """Stream beats of one k-chunk of a row tile's weights."""
        return self.R * self.KP * 4 // self.WB

    def params(self) -> dict[str, int]:
        """The HDL parameters of ``qv_gemm_core`` (and its testbench)."""
        return {
            "R": self.R,
            "T": self.T,
            "KP": self.KP,
            "WB": self.WB,
            "TILES_MAX": self.tiles_max,
            "CH_MAX": self.ch_max,
            "WCH_MAX": self.wch_max,
            "RCH_MAX": self.rch_max,
            "RES_W": self.res_w,
            "OUT_W": self.out_w,
            "SCH_MAX": self.sch_max,
            "QA_W": self.qa_w,
        }

    def top_params(self) -> dict[str, int]:
        """The HDL parameters of ``qv_top``: the core's and the descriptor table's depth."""
        return {**self.params(), "STEPS_MAX": self.steps_max}

    @property
    def sch_max(self) -> int:
        """Key chunks of the score memory: every token's, a power of two, at least ``R / KP``."""
        return pow2_at_least(max(-(-self.T * self.tiles_max // self.KP), self.R // self.KP))

    @property
    def res_parts(self) -> int:
        """32-bit parts of a residual word (KP codes) in the testbench's files."""
        return -(-self.KP * self.res_w // 32)


def pow2_at_least(n: int) -> int:
    """The smallest power of two >= ``n`` (the memories' chunk counts)."""
    return 1 << max(0, n - 1).bit_length()


@dataclass(frozen=True)
class Ddr:
    """DDR as the testbench models it: the first beat ``latency`` cycles after start, then at most
    ``num / den`` beats a cycle while the core takes them.  The DDR runs ahead of the core by at
    most ``fifo`` beats (a credit capped at ``fifo`` beats' worth): after a stall the stream
    catches up at one beat a cycle for at most that many beats."""

    latency: int = 64
    num: int = 1
    den: int = 1
    fifo: int = 64

    def __post_init__(self) -> None:
        if min(self.num, self.den, self.fifo) < 1 or self.latency < 0:
            raise RtlError(f"{self}: num, den and fifo must be positive, latency not negative")


@dataclass(frozen=True)
class RowTile:
    """One row tile: ``R`` slots ``(kind, row)`` (``ROW_4BIT``, ``ROW_HI``/``ROW_LO`` of an 8-bit row,
    ``ROW_PAD`` with row -1) whose outputs are the rows ``first .. first + count - 1``."""

    slots: tuple[tuple[int, int], ...]
    first: int
    count: int


def slot_program(is8: "np.ndarray | list[bool]", r: int, kp: int, section: int = 0) -> list[RowTile]:
    """A layer's rows as row tiles of ``r`` nibble-row slots, each tile's outputs a whole number of
    ``kp``-channel words (but the layer's last tile).  With ``section`` (a multiple of ``kp``), no
    tile crosses a multiple of ``section`` rows: the qkv layer's q, k and v thirds then leave the
    lanes in tiles of their own, and the core can send the k and v tiles to their memories.

    Rows go in order: a 4-bit row takes one slot, an 8-bit row two (its signed high nibble, then its
    unsigned low nibble, so a pair never straddles two tiles).  A tile ends where the next row would
    not fit, and then gives back its last rows until it holds a multiple of ``kp`` rows: the output
    lanes then write whole words of the next layer's input buffer.  The 8-bit rows of a layer are
    the leading rows of each section (``models/layers.py``), so only a tile where 8-bit rows give
    way to 4-bit ones gives slots back.
    """
    if r % (2 * kp):
        raise RtlError(f"R={r} must be a multiple of 2*KP={2 * kp} (a tile of 8-bit rows holds R/2 rows)")
    rows = [bool(b) for b in is8]
    tiles: list[RowTile] = []
    i = 0
    while i < len(rows):
        end = min(len(rows), (i // section + 1) * section) if section else len(rows)
        j, used = i, 0
        while j < end and used + (2 if rows[j] else 1) <= r:
            used += 2 if rows[j] else 1
            j += 1
        if j < end:
            j = i + (j - i) // kp * kp  # a whole number of words (R/2 >= kp rows always fit)
        slots: list[tuple[int, int]] = []
        for o in range(i, j):
            slots += [(ROW_HI, o), (ROW_LO, o)] if rows[o] else [(ROW_4BIT, o)]
        slots += [(ROW_PAD, -1)] * (r - len(slots))
        tiles.append(RowTile(tuple(slots), i, j - i))
        i = j
    return tiles


def _field(value: int, bits: int, signed: bool = False) -> int:
    """``value`` as a ``bits``-bit field: two's complement if ``signed``, else unsigned."""
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    if not lo <= value < hi:
        kind = "signed" if signed else "unsigned"
        raise RtlError(f"{value} does not fit the core's {bits}-bit {kind} field")
    return value & ((1 << bits) - 1)


def slot_constant(
    mult: int, offset: int, shift: int, is8: bool, out_en: bool, row: int, pos: int = 0, words: int = 0
) -> int:
    """One slot constant (the layout in ``qv_weight_buf.v``)."""
    return (
        _field(mult, 18, signed=True)
        | _field(offset, 48, signed=True) << 18
        | _field(shift, 6) << 66
        | int(is8) << 72
        | int(out_en) << 73
        | _field(row, 12) << 74
        | _field(pos, 6) << 86
        | _field(words, 4) << 92
    )


def weight_stream(
    w_int: np.ndarray,
    is8: np.ndarray,
    mult: np.ndarray,
    offset: np.ndarray,
    shift: np.ndarray,
    shape: GemmShape,
    section: int = 0,
) -> list[int]:
    """The beats (``shape.WB``-bit integers) of a linear layer's weights and requantisers.

    Args:
        w_int: ``[M, K]`` weight codes (4-bit rows in [-8, 7], 8-bit rows in [-128, 127]).
        is8: ``[M]`` which rows are 8-bit.
        mult, offset, shift: ``[M]`` the requantiser of each output row.
        shape: the array (``K`` must be a multiple of ``KP``).
        section: row tiles do not cross multiples of it (:func:`slot_program`).
    """
    m, k = w_int.shape
    if k % shape.KP:
        raise RtlError(f"K={k} is not a multiple of the core's KP={shape.KP}")
    w = np.asarray(w_int, np.int64)
    hi, lo = (np.asarray(v, np.int64) for v in nibble_split(w))  # 8-bit rows' nibbles (4-bit rows use w)
    beats: list[int] = []
    for tile in slot_program(is8, shape.R, shape.KP, section):
        rows = np.zeros((shape.R, k), np.int64)  # the offset nibbles w' of each slot
        for s, (kind, o) in enumerate(tile.slots):
            if kind == ROW_PAD:
                beats += split_words(0, shape.const_beats, shape.WB)
                continue
            rows[s] = {ROW_HI: hi[o] + W_OFFSET, ROW_LO: lo[o]}.get(kind, w[o] + W_OFFSET)
            out = kind != ROW_LO
            pos, words = o - tile.first, -(-tile.count // shape.KP)
            const = slot_constant(int(mult[o]), int(offset[o]), int(shift[o]), kind == ROW_HI, out, o, pos, words)
            beats += split_words(const, shape.const_beats, shape.WB)
        for c in range(k // shape.KP):
            nib = rows[:, c * shape.KP : (c + 1) * shape.KP].ravel()  # w'[slot][lane] at nibble slot*KP + lane
            word = int.from_bytes((nib[0::2] | nib[1::2] << 4).astype(np.uint8).tobytes(), "little")
            beats += split_words(word, shape.chunk_beats, shape.WB)
    return beats


GELU_ENTRIES = 1024  # the core's GELU tables (a 10-bit index: quant.gelu_in_bits = 10)


def table_beats(table: np.ndarray, wb: int) -> list[int]:
    """A GELU layer's table as the stream's head: ``wb / 8`` entries a beat, 8 bits each (the
    6-bit code, two's complement, in the low bits)."""
    t = np.asarray(table, np.int64).ravel()
    if t.size != GELU_ENTRIES:
        raise RtlError(f"the core's GELU tables have {GELU_ENTRIES} entries (gelu_in_bits 10), got {t.size}")
    per = wb // 8
    return [sum((int(t[b * per + e]) & 63) << (8 * e) for e in range(per)) for b in range(1024 // per)]


def split_words(value: int, n: int, bits: int) -> list[int]:
    """``value`` as ``n`` beats of ``bits`` bits, the low beat first."""
    return [(value >> (b * bits)) & ((1 << bits) - 1) for b in range(n)]


def row_tiles(is8: np.ndarray, shape: GemmShape, section: int = 0) -> int:
    """The number of row tiles of a layer with these 8-bit rows."""
    return len(slot_program(is8, shape.R, shape.KP, section))


def tile_beats(k: int, shape: GemmShape) -> int:
    """Stream beats of one row tile of a layer with ``k`` terms (its slot constants, then its chunks)."""
    return shape.R * shape.const_beats + (k // shape.KP) * shape.chunk_beats


def activation_words(codes: np.ndarray, signed: bool, kp: int) -> list[tuple[int, int, int]]:
    """``(token, chunk, word)`` of a layer input ``[N, K]`` for ``qv_act_mem`` (codes offset to unsigned)."""
    a = np.asarray(codes, np.int64) + (A_OFFSET if signed else 0)
    if a.size and (a.min() < 0 or a.max() > 63):
        raise RtlError("activation codes out of the 6-bit range")
    out = []
    for t in range(a.shape[0]):
        for c in range(a.shape[1] // kp):
            word = sum(int(a[t, c * kp + lane]) << (6 * lane) for lane in range(kp))
            out.append((t, c, word))
    return out


def activation_codes(words: np.ndarray, n: int, m: int, shape: GemmShape, signed: bool) -> np.ndarray:
    """The ``[n, m]`` codes of activation-memory words read a (tile, chunk) at a time (T words each)."""
    n_words = -(-m // shape.KP)
    mem = np.zeros((-(-n // shape.T) * shape.T, n_words * shape.KP), np.int64)
    for i, row in enumerate(np.asarray(words).reshape(-1, shape.T)):
        tile, chunk = divmod(i, n_words)
        for b, word in enumerate(row):
            for lane in range(shape.KP):
                mem[tile * shape.T + b, chunk * shape.KP + lane] = (int(word) >> (6 * lane)) & 63
    return mem[:n, :m] - (A_OFFSET if signed else 0)


def residual_words(res: np.ndarray, shape: GemmShape) -> list[list[int]]:
    """``[token, chunk, part...]`` of a residual ``[N, E]`` for ``qv_res_mem`` (KP codes a word, in
    ``shape.res_parts`` 32-bit parts)."""
    mask = (1 << shape.res_w) - 1
    out = []
    for t in range(res.shape[0]):
        for c in range(res.shape[1] // shape.KP):
            codes = res[t, c * shape.KP : (c + 1) * shape.KP]
            word = sum((int(v) & mask) << (shape.res_w * i) for i, v in enumerate(codes))
            out.append([t, c, *split_words(word, shape.res_parts, 32)])
    return out


def residual_codes(parts: np.ndarray, n: int, e: int, shape: GemmShape) -> np.ndarray:
    """The ``[n, e]`` residual codes of words read back a (token, chunk) at a time."""
    p = np.asarray(parts).reshape(n, e // shape.KP, shape.res_parts)
    res = np.zeros((n, e), np.int64)
    top = 1 << (shape.res_w - 1)
    for t in range(n):
        for c in range(e // shape.KP):
            word = sum(int(v) << (32 * j) for j, v in enumerate(p[t, c]))
            for i in range(shape.KP):
                v = (word >> (shape.res_w * i)) & ((1 << shape.res_w) - 1)
                res[t, c * shape.KP + i] = v - 2 * top if v >= top else v
    return res


# ---- qv_top's step descriptor

TOP_FIELDS = ("emit", "dst", "addr", "beats")  # the descriptor's fields of qv_top itself (the rest: the core's)
_DECL = re.compile(r"localparam O_(\w+) = ([^,;]+),\s*B_\1 = (\d+);")


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    bits: int


@lru_cache(maxsize=None)
def descriptor_fields() -> tuple[Field, ...]:
    """The descriptor's fields as ``qv_top.v`` declares them (``localparam O_X = ..., B_X = bits;``,
    packed from bit 0 in that order)."""
    text = hdl_file("qv_top.v").read_text()
    fields, offset, prev = [], 0, None
    for name, expr, bits in _DECL.findall(text):
        want = "0" if prev is None else f"O_{prev} + B_{prev}"
        if expr.strip() != want:  # each field right after the one before: packed with no gap
            raise RtlError(f"qv_top.v: field {name} is at {expr.strip()}, not {want}")
        fields.append(Field(name.lower(), offset, int(bits)))
        offset, prev = offset + int(bits), name
    if not fields:
        raise RtlError("qv_top.v declares no descriptor fields")
    return tuple(fields)


def descriptor_words() -> int:
    """32-bit words a descriptor takes."""
    last = descriptor_fields()[-1]
    return -(-(last.offset + last.bits) // 32)


def pack_descriptor(values: dict[str, int]) -> list[int]:
    """One descriptor's 32-bit words (low word first); every field must be given and fit its width
    (signed values in two's complement)."""
    fields = descriptor_fields()
    missing = sorted({f.name for f in fields} - set(values))
    extra = sorted(set(values) - {f.name for f in fields})
    if missing or extra:
        raise RtlError(f"descriptor: missing fields {missing}, unknown fields {extra}")
    word = 0
    for f in fields:
        v = int(values[f.name])
        if not -(1 << (f.bits - 1)) <= v < 1 << f.bits:
            raise RtlError(f"descriptor field {f.name} = {v} does not fit {f.bits} bits")
        word |= (v & ((1 << f.bits) - 1)) << f.offset
    return split_words(word, descriptor_words(), 32)


def unpack_descriptor(words: "tuple[int, ...] | list[int]") -> dict[str, int]:
    """A descriptor's fields from its 32-bit words (unsigned: as the HDL slices them)."""
    word = sum(int(w) << (32 * i) for i, w in enumerate(words))
    return {f.name: (word >> f.offset) & ((1 << f.bits) - 1) for f in descriptor_fields()}
