"""The RTL core priced for a subnet: an image's cycles, the core's resources, and the core chosen.

:func:`image_cycles` is the schedule model (:mod:`quasar_vit.rtl.schedule`, equal to Verilator's
cycles on every measured step) summed over an image's program: the patch embedding, every block
(its heads in :func:`~quasar_vit.rtl.image.head_order`, a P V waiting for its softmax), the final
LayerNorm and the head, with the testbench's edge between steps.  :func:`core_shape` sizes a core's
memories for a subnet (as :func:`~quasar_vit.rtl.verify.core_for` does for an export), and
:func:`explore` picks the array (R, T) that runs the subnet fastest within a board's caps by the
resource model (:mod:`quasar_vit.rtl.resources`, checked against Yosys).  No torch, no simulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from quasar_vit.errors import RtlError
from quasar_vit.hardware.engine import row_mask
from quasar_vit.rtl.gemm import MODE_CODES, MODE_GELU, MODE_RESIDUAL, Layer
from quasar_vit.rtl.image import head_order
from quasar_vit.rtl.layout import Ddr, GemmShape, pow2_at_least
from quasar_vit.rtl.resources import KINDS, estimate
from quasar_vit.rtl.schedule import STEP_GAP, chain_cycles, step_cycles
from quasar_vit.space import LinearSpec, SubnetConfig

#: the core's stream: two 128-bit HP ports at the clock, the first beat 64 cycles after a step starts
DDR = Ddr(latency=64, num=1, den=1)
KP = 8
WB = 256
ROWS = (16, 32, 64)  # the R the explorer tries (R / KP a power of two, at most 8)
T_MAX = 64


def size_core(
    n: int,
    e: int,
    blocks: list[tuple[int, int, int]],
    k_in: list[int],
    patch_in: int,
    r: int,
    t: int,
    **kw: int,
) -> GemmShape:
    """A core of ``r x t x kp`` units whose memories hold a subnet of ``n`` tokens and embedding ``e``:
    every matrix of a block side by side (``blocks``: each block's attention dim, heads and MLP
    width), its widest K (``k_in``: the blocks' linears' inputs) and the patch embedding's input.
    ``kw``: ``kp``, ``wb`` and further :class:`GemmShape` fields (``qa_w``)."""
    kp = kw.pop("kp", KP)
    nch = -(-n // kp)
    attn = [a for a, _, _ in blocks]
    hidden = [h for _, _, h in blocks]
    act = max((e + 3 * a) // kp + heads * nch + a // kp for a, heads, _ in blocks)  # a block's first half
    act = max(act, *((e + h) // kp for h in hidden), -(-patch_in // kp))
    k_max = max(nch, *(-(-k // kp) for k in k_in), -(-patch_in // kp))
    return GemmShape(
        R=r,
        T=t,
        KP=kp,
        WB=kw.pop("wb", WB),
        tiles_max=-(-n // t),
        ch_max=pow2_at_least(max(act, r // kp)),  # (a row tile's words at least)
        wch_max=pow2_at_least(k_max),
        rch_max=pow2_at_least(max(e, *attn, r) // kp),
        **kw,
    )


def core_shape(subnet: SubnetConfig, r: int, t: int) -> GemmShape:
    """:func:`size_core` for a subnet."""
    lin = subnet.linear_layers()
    blocks = [spec for spec in lin if spec.name.startswith("blocks.")]
    return size_core(
        subnet.geometry.num_tokens,
        subnet.embed_dim,
        [(subnet.qkv_dim(i), subnet.num_heads[i], subnet.mlp_hidden(i)) for i in range(subnet.depth)],
        [spec.in_features for spec in blocks],
        lin[0].in_features,
        r,
        t,
    )


@dataclass(frozen=True)
class ImageCycles:
    total: int
    by_kind: dict[str, int]

    def fps(self, clock_mhz: float) -> float:
        return clock_mhz * 1e6 / self.total


def _zero(m: int, k: int, is8: np.ndarray, **kw: object) -> Layer:
    z = np.zeros(m, np.int64)
    return Layer(np.zeros((m, k), np.int64), is8, z, z, z, (0, 0), **kw)  # type: ignore[arg-type]


@lru_cache(maxsize=4096)
def _linear(shape: GemmShape, ddr: Ddr, tokens: int, k: int, m: int, n8: int, sections: int, mode: int) -> int:
    lay = _zero(m, k, np.array(row_mask(m, n8, sections)), kv=sections == 3, mode=mode)
    return step_cycles(shape, lay, tokens, ddr) + STEP_GAP


def _as_run(spec: LinearSpec, n: int, kp: int) -> tuple[int, int, int]:
    """(tokens, K, mode) of a linear as the core runs it (:func:`~quasar_vit.rtl.image.image_steps`):
    the patch embedding on every token (the class token's row gives no output) with K padded to a
    chunk, fc1 with its GELU table at the head of its stream, proj and fc2 adding to the residual."""
    if spec.name == "patch_embed":
        return n, -(-spec.in_features // kp) * kp, MODE_RESIDUAL
    last = spec.name.rsplit(".", 1)[-1]
    mode = {"fc1": MODE_GELU, "proj": MODE_RESIDUAL, "fc2": MODE_RESIDUAL}.get(last, MODE_CODES)
    return spec.tokens, spec.in_features, mode


@lru_cache(maxsize=256)
def _layernorm(shape: GemmShape, ddr: Ddr, tokens: int, e: int) -> int:
    ln = Layer.layernorm(np.zeros(e), np.zeros(e), 0, 0, (-32, 31))
    return step_cycles(shape, ln, tokens, ddr) + STEP_GAP


@lru_cache(maxsize=256)
def _heads(shape: GemmShape, ddr: Ddr, n: int, hd: int, heads: int) -> tuple[tuple[str, int], ...]:
    make = {
        "qk": lambda h: Layer.scores(n, hd, h, heads),
        "sm": lambda h: Layer.softmax(n, h, heads, (1, 1, 1), 63),
        "pv": lambda h: Layer.attend(n, hd, h, heads, (1, 0, 0), (-32, 31)),
    }
    program = [make[kind](h) for kind, h in head_order(heads)]
    return tuple((s.kind, c + STEP_GAP) for s, c in zip(program, chain_cycles(shape, program, n, ddr).steps))


def image_cycles(subnet: SubnetConfig, shape: GemmShape, ddr: Ddr = DDR) -> ImageCycles:
    """Cycles of one image of ``subnet`` on the core, by step kind (a P V's include its wait for
    the softmax).  Memoised per layer shape, so a search can call it per candidate."""
    by_kind: dict[str, int] = {}

    def add(kind: str, cycles: int) -> None:
        by_kind[kind] = by_kind.get(kind, 0) + cycles

    n, e, hd = subnet.geometry.num_tokens, subnet.embed_dim, subnet.geometry.head_dim
    for spec in subnet.linear_layers():
        tokens, k, mode = _as_run(spec, n, shape.KP)
        add("linear", _linear(shape, ddr, tokens, k, spec.out_features, spec.n8_rows, spec.sections, mode))
    add("LayerNorm", 2 * subnet.depth * _layernorm(shape, ddr, n, e) + _layernorm(shape, ddr, 1, e))
    for heads in subnet.num_heads:
        for kind, c in _heads(shape, ddr, n, hd, heads):
            add(kind, c)
    return ImageCycles(sum(by_kind.values()) - STEP_GAP, by_kind)


@dataclass(frozen=True)
class CoreReport:
    """A core for a subnet: its shape, an image's cycles and FPS, and its resources by the model."""

    shape: GemmShape
    cycles: ImageCycles
    fps: float
    resources: dict[str, int]
    percent: dict[str, float]
    fits: bool


def evaluate(
    subnet: SubnetConfig, shape: GemmShape, platform: object, ddr: Ddr = DDR, res: dict[str, int] | None = None
) -> CoreReport:
    """``subnet`` on the core ``shape`` on ``platform`` (a :class:`~quasar_vit.hardware.Platform`);
    ``res``: the shape's modelled resources when already estimated."""
    res = res or _resources(shape)
    pct = {k: 100 * res[k] / platform.total(_BOARD[k]) for k in KINDS}  # type: ignore[attr-defined]
    cyc = image_cycles(subnet, shape, ddr)
    return CoreReport(shape, cyc, cyc.fps(platform.clock_mhz), res, pct, _fits(res, platform))  # type: ignore[attr-defined]


_BOARD = {"lut": "lut", "ff": "ff", "dsp": "dsp", "bram36": "bram"}  # the platform's name of each count


def _resources(shape: GemmShape) -> dict[str, int]:
    return {k: int(v) for k, v in estimate(shape).items() if k in KINDS}  # type: ignore[call-overload]


def _fits(res: dict, platform: object) -> bool:
    """Every count within the board's cap."""
    return all(res[k] <= platform.limit(_BOARD[k]) for k in KINDS)  # type: ignore[attr-defined]


def tile_options(n: int) -> list[int]:
    """Even T worth trying for ``n`` tokens: for each number of token tiles, the fewest tokens a
    tile that still covers ``n`` (more would add units, not speed), up to :data:`T_MAX`."""
    out = []
    for tiles in range(1, n + 1):
        t = -(-n // tiles)
        t += t % 2
        if t <= T_MAX and t not in out:
            out.append(t)
        if t <= 2:
            break
    return out


def explore(subnet: SubnetConfig, platform: object, ddr: Ddr = DDR) -> CoreReport:
    """The fastest core for ``subnet`` within ``platform``'s caps by the resource model (ties within
    0.5 % go to fewer LUTs)."""
    best: CoreReport | None = None
    for r in ROWS:
        for t in tile_options(subnet.geometry.num_tokens):
            try:
                shape = core_shape(subnet, r, t)
            except RtlError:
                continue
            res = _resources(shape)
            if not _fits(res, platform):
                continue
            rep = evaluate(subnet, shape, platform, ddr, res)
            if (
                best is None
                or rep.fps > best.fps * 1.005
                or (rep.fps >= best.fps * 0.995 and rep.resources["lut"] < best.resources["lut"])
            ):
                best = rep
    if best is None:
        raise RtlError(f"no core fits {getattr(platform, 'name', platform)} for this subnet")
    return best


__all__ = ["DDR", "size_core", "core_shape", "image_cycles", "ImageCycles", "CoreReport", "evaluate", "explore"]
