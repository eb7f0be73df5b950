"""The RTL core priced for a subnet: an image's cycles, the core's resources, and the core chosen.

:func:`image_cycles` is the schedule model (:mod:`quasar_vit.rtl.schedule`, equal to Verilator's
cycles on every measured step and image) summed over an image's program on ``qv_top``: the loads
of the patch codes and of the residual, the patch embedding, every block (its heads in
:func:`~quasar_vit.rtl.image.head_order`, a P V waiting for its softmax), the final LayerNorm and
the head, each step from its launch to the next one's, after the sequencer's lead.  :func:`core_shape` sizes a core's
memories for a subnet (as :func:`~quasar_vit.rtl.verify.core_for` does for an export), and
:func:`explore` picks the array (R, T) that runs the subnet fastest within a board's caps by the
resource model (:mod:`quasar_vit.rtl.resources`, checked against Yosys).  No torch, no simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction
from functools import lru_cache

import numpy as np

from quasar_vit.errors import HardwareError, RtlError
from quasar_vit.hardware.engine import row_mask
from quasar_vit.rtl.gemm import MODE_CODES, MODE_GELU, MODE_RESIDUAL, Layer
from quasar_vit.rtl.image import head_order
from quasar_vit.rtl.layout import Ddr, GemmShape, pow2_at_least
from quasar_vit.hardware.platforms import Platform
from quasar_vit.rtl.report import CoreDesign, CoreReport, StepCost, core_resources, steps_total
from quasar_vit.rtl.resources import estimate
from quasar_vit.rtl.program import load_beats
from quasar_vit.rtl.schedule import chain_cycles, load_cycles, step_cycles
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
    width), its widest K (``k_in``: the blocks' linears' inputs) and the patch embedding's input, and
    whose descriptor table holds the image's steps.
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
        tiles_max=max(2, -(-n // t)),  # (a one-bit tile index at least)
        ch_max=pow2_at_least(max(act, r // kp)),  # (a row tile's words at least)
        wch_max=pow2_at_least(k_max),
        rch_max=pow2_at_least(max(e, *attn, r) // kp),
        steps_max=kw.pop("steps_max", pow2_at_least(program_steps(blocks))),
        **kw,
    )


def program_steps(blocks: list[tuple[int, int, int]]) -> int:
    """The steps of an image on ``qv_top`` (its descriptors): the two loads, the patch embedding, each
    block's LayerNorms, qkv, proj, fc1, fc2 and three steps a head, the final LayerNorm and the head."""
    return 2 + 1 + sum(6 + 3 * heads for _, heads, _ in blocks) + 2


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


def _passes(step: Layer, tokens: int) -> int:
    """W4A6 unit passes of a step as the core runs it on ``tokens`` tokens: K terms a token for each
    row slot it fills (an 8-bit row, or a 6-bit key or value, takes two); none for a LayerNorm or a
    softmax."""
    if step.kind in ("LayerNorm", "softmax"):
        return 0
    m, k = step.w_int.shape
    return tokens * k * (m + int(np.count_nonzero(step.is8)))


@lru_cache(maxsize=1 << 16)
def _linear(
    shape: GemmShape, ddr: Ddr, tokens: int, k: int, m: int, n8: int, sections: int, mode: int
) -> tuple[int, int]:
    """(cycles, unit passes) of a linear step."""
    lay = _zero(m, k, np.array(row_mask(m, n8, sections)), kv=sections == 3, mode=mode)
    return step_cycles(shape, lay, tokens, ddr), _passes(lay, tokens)


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
    return step_cycles(shape, ln, tokens, ddr)


@lru_cache(maxsize=256)
def _heads(shape: GemmShape, ddr: Ddr, n: int, hd: int, heads: int) -> tuple[tuple[str, str, int, int, int], ...]:
    """(name, kind, cycles, MACs, passes) of a block's head steps in :func:`head_order`."""
    make = {
        "qk": lambda h: Layer.scores(n, hd, h, heads),
        "sm": lambda h: Layer.softmax(n, h, heads, (1, 1, 1), 63),
        "pv": lambda h: Layer.attend(n, hd, h, heads, (1, 0, 0), (-32, 31)),
    }
    order = head_order(heads)
    program = [make[kind](h) for kind, h in order]
    cycles = chain_cycles(shape, program, n, ddr, gap=0).steps  # (qv_top: no gap between steps)
    return tuple(
        (f"{kind}{h}", s.kind, c, 0 if kind == "sm" else n * n * hd, _passes(s, n))
        for (kind, h), s, c in zip(order, program, cycles)
    )


def image_steps(subnet: SubnetConfig, shape: GemmShape, ddr: Ddr = DDR) -> tuple[StepCost, ...]:
    """Every step of an image of ``subnet`` on the accelerator, in the order ``qv_top`` runs them: the
    loads of the patch codes and of the residual the tokens start from, then the core's steps
    (:func:`~quasar_vit.rtl.image.image_steps`), a P V's cycles including its wait for the softmax.
    Memoised per layer shape, so a search can call it per candidate."""
    n, e, hd = subnet.geometry.num_tokens, subnet.embed_dim, subnet.geometry.head_dim
    lin = {spec.name: spec for spec in subnet.linear_layers()}

    def linear(name: str) -> StepCost:
        spec = lin[name]
        tokens, k, mode = _as_run(spec, n, shape.KP)
        cycles, passes = _linear(shape, ddr, tokens, k, spec.out_features, spec.n8_rows, spec.sections, mode)
        return StepCost(name, "linear", cycles, spec.macs, passes)

    def norm(name: str, tokens: int) -> StepCost:
        return StepCost(name, "LayerNorm", _layernorm(shape, ddr, tokens, e), 0, 0)

    codes, residual = load_beats(shape, n, _as_run(lin["patch_embed"], n, shape.KP)[1], e)
    steps = [StepCost("load.image", "load", load_cycles(codes, ddr), 0, 0)]
    steps += [StepCost("load.residual", "load", load_cycles(residual, ddr), 0, 0), linear("patch_embed")]
    for i, heads in enumerate(subnet.num_heads):
        b = f"blocks.{i}"
        steps += [norm(f"{b}.norm1", n), linear(f"{b}.qkv")]
        steps += [StepCost(f"{b}.attn.{name}", kind, *work) for name, kind, *work in _heads(shape, ddr, n, hd, heads)]
        steps += [linear(f"{b}.proj"), norm(f"{b}.norm2", n), linear(f"{b}.fc1"), linear(f"{b}.fc2")]
    return (*steps, norm("norm", 1), linear("head"))


def image_cycles(subnet: SubnetConfig, shape: GemmShape, ddr: Ddr = DDR) -> ImageCycles:
    """Cycles of one image of ``subnet`` on the core, by step kind (:func:`image_steps` summed)."""
    return ImageCycles(*steps_total(image_steps(subnet, shape, ddr)))


def platform_ddr(platform: Platform, wb: int = WB) -> Ddr:
    """The core's stream on ``platform``: a ``wb``-bit beat a cycle at the board's clock, slowed to
    the board's usable DDR bandwidth when that is lower (beats a cycle as a fraction)."""
    share = Fraction(min(1.0, platform.bytes_per_cycle / (wb // 8))).limit_denominator(64)
    return replace(DDR, num=max(1, share.numerator), den=max(1, share.denominator))


@lru_cache(maxsize=1 << 12)
def _counts(shape: GemmShape) -> dict[str, object]:
    return estimate(shape)


def evaluate(subnet: SubnetConfig, design: CoreDesign, platform: Platform, notes: tuple[str, ...] = ()) -> CoreReport:
    """``subnet`` on the core ``design`` on ``platform``: its steps' cycles (the schedule model, the
    stream at the board's DDR bandwidth) and the core's resources (the resource model).  It does not
    raise if the core is over the board's caps: check ``report.fits``."""
    if design.platform != platform.name:
        raise HardwareError(f"the design was made for platform '{design.platform}', not '{platform.name}'")
    steps = image_steps(subnet, design.shape, platform_ddr(platform, design.shape.WB))
    return CoreReport(subnet, platform, design, steps, core_resources(_counts(design.shape), platform), notes)


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


def explore(subnet: SubnetConfig, platform: Platform) -> CoreReport:
    """The fastest core for ``subnet`` within ``platform``'s caps by the resource model: each R of
    :data:`ROWS` with each T of :func:`tile_options`, memories sized for the subnet (ties within
    0.5 % go to fewer LUTs).  Raises :class:`HardwareError` (one line) when none fits."""
    best: CoreReport | None = None
    tried = 0
    for r in ROWS:
        for t in tile_options(subnet.geometry.num_tokens):
            try:
                shape = core_shape(subnet, r, t)
            except RtlError:
                continue
            if not core_resources(_counts(shape), platform).fits:
                continue
            rep = evaluate(subnet, CoreDesign(platform.name, platform.clock_mhz, shape), platform)
            tried += 1
            if (
                best is None
                or rep.fps > best.fps * 1.005
                or (rep.fps >= best.fps * 0.995 and rep.resources.lut < best.resources.lut)
            ):
                best = rep
    if best is None:
        raise HardwareError(
            f"no RTL core fits {platform.name} under its caps for this subnet: {_why_none(subnet, platform)}"
        )
    return best.with_notes(f"the fastest of {tried} fitting RTL cores (R x T) by the resource model")


def _why_none(subnet: SubnetConfig, platform: Platform) -> str:
    """What the smallest core (R = 16, the fewest tokens a tile) is over."""
    shape = core_shape(subnet, ROWS[0], tile_options(subnet.geometry.num_tokens)[-1])
    over = "; ".join(core_resources(_counts(shape), platform).violations())
    return (
        f"even the smallest (R={shape.R}, T={shape.T}) is over {over} (the core holds a block's activations "
        "and the residual stream on chip, in block RAM: it uses no URAM)"
    )


__all__ = [
    "DDR",
    "size_core",
    "program_steps",
    "core_shape",
    "image_steps",
    "image_cycles",
    "ImageCycles",
    "platform_ddr",
    "evaluate",
    "explore",
    "tile_options",
]
