"""Latency model: cycles of every layer of a subnet on one accelerator design.

GEMMs (patch embedding, QKV, projection, MLP, head, and each head of the attention matmuls) run
on the fabric as calls of the generated dataflow engine; their cycles are the engine's loop nest
evaluated by :mod:`quasar_vit.hardware.engine` (the same trip counts the C simulation counts),
plus the host's launch of each call.  LayerNorm, Softmax and GELU run on the host (the ARM cores
on Zynq boards) at their own per-element cost, plus a per-call hand-off and the DDR round trip of
their data.  Fabric and host work are sequential: the generated host program waits for each
engine call (batch 1, each op depends on the previous), so no host time is hidden.

Speed matters (the search calls this thousands of times), so costs are memoised per design:
per GEMM shape, and per transformer block (embed, heads, MLP ratio, 8-bit share), whose costs
are taken from a one-block :class:`SubnetConfig` so that :meth:`SubnetConfig.linear_layers`
stays the single definition of a subnet's GEMMs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

from quasar_vit.hardware.design import AcceleratorDesign
from quasar_vit.hardware.engine import EngineTiming, GemmCycles, gemm_cycles, layer_row_tiles, stationary_row_tiles
from quasar_vit.hardware.platforms import Platform
from quasar_vit.space import LinearSpec, MatmulSpec, SubnetConfig, ViTGeometry

# passes of the W4A6 array per stationary operand row: an 8-bit weight row and a 6-bit
# activation row (attention matmuls) are both split into two nibbles
ACT_ACT_PASSES = 2


@dataclass(frozen=True)
class LayerCost:
    """Cost of one operation of the subnet."""

    name: str
    op: str  # linear | matmul | layernorm | softmax | gelu | attn_prep
    unit: str  # "fabric" (the array) or "host"
    macs: int  # true multiply-accumulates
    unit_passes: int  # MACs x nibble passes (the array's work)
    cycles: float  # fabric-clock cycles (host time converted at the design clock)
    compute_cycles: float
    ddr_bytes: float

    @property
    def bound(self) -> str:
        if self.unit == "host":
            return "host"
        return "compute" if self.compute_cycles >= 0.5 * self.cycles else "memory"


class CostContext:
    """Constants and memo tables of one (platform, design) pair."""

    def __init__(self, platform: Platform, design: AcceleratorDesign) -> None:
        p = platform.params
        self.platform, self.design, self.params = platform, design, p
        self.clock_mhz = design.clock_mhz
        self.timing = EngineTiming.of(design, p)
        self.R = design.pe_rows
        self.act_b, self.out_b = p.act_bytes, p.out_bytes
        self.cyc_per_ns = design.clock_mhz / 1000.0
        self.launch = p.gemm_launch_us * 1000.0 * self.cyc_per_ns
        # the board's DDR bytes per fabric cycle: a bound above the engine's own ports (ZCU102: 96 B
        # per cycle against 3 x 16 B of ports, so it binds only on a bandwidth-starved board)
        self.bpc = platform.ddr_gbps * platform.ddr_efficiency * 1e3 / design.clock_mhz
        self.host_ovh_ns = p.host_call_overhead_us * 1000.0
        self.host_bw = p.host_bw_gbps  # GB/s == bytes/ns
        self.host_ns = {
            "layernorm": p.host_layernorm_ns_per_elem,
            "softmax": p.host_softmax_ns_per_elem,
            "gelu": p.host_gelu_ns_per_elem,
            "attn_prep": p.host_attn_prep_ns_per_elem,
        }
        self.gemm_memo: dict[tuple, GemmCycles] = {}
        self.block_memo: dict[tuple, tuple[float, float, float, int, int, float]] = {}

    # ---- fabric GEMM --------------------------------------------------------------------------
    def engine_call(self, tokens: int, k: int, tiles: tuple, mode: str) -> GemmCycles:
        """Cycles of one engine call (memoised per shape)."""
        key = (tokens, k, tiles, mode)
        hit = self.gemm_memo.get(key)
        if hit is None:
            hit = self.gemm_memo[key] = gemm_cycles(self.design, self.timing, tokens, k, tiles, mode)
        return hit

    def _bytes(self, g: GemmCycles) -> float:
        return (g.read_beats + g.write_beats) * self.timing.axi_bytes

    def _fabric(self, g: GemmCycles) -> float:
        """An engine call's cycles: its loop nest, or the board's DDR bandwidth if that is lower."""
        ddr = self._bytes(g) / self.bpc
        return g.total if g.total >= ddr else ddr

    def linear(self, l: LinearSpec, mode: str) -> LayerCost:
        tiles = layer_row_tiles(l.out_features, l.n8_rows, l.sections, self.R)
        g = self.engine_call(l.tokens, l.in_features, tiles, mode)
        m_eff = l.out_features + l.n8_rows
        return LayerCost(
            l.name,
            "linear",
            "fabric",
            l.macs,
            l.tokens * l.in_features * m_eff,
            self._fabric(g) + self.launch,
            g.busy[2],
            self._bytes(g),
        )

    def matmul(self, m: MatmulSpec) -> LayerCost:
        """One engine call per head; the stationary operand (k rows, v columns) as nibble pairs."""
        tiles = stationary_row_tiles(m.n, self.R)
        mode = "scores" if m.name.endswith(".qk") else "requant"
        g = self.engine_call(m.m, m.k, tiles, mode)
        h = m.heads
        return LayerCost(
            m.name,
            "matmul",
            "fabric",
            m.macs,
            m.macs * ACT_ACT_PASSES,
            h * (self._fabric(g) + self.launch),
            h * g.busy[2],
            h * self._bytes(g),
        )

    # ---- host ops -----------------------------------------------------------------------------
    def host(self, name: str, op: str, elems: int) -> LayerCost:
        """Time of a host op: hand-off + max(compute, DDR round trip)."""
        byt = elems * (self.act_b + self.out_b)
        work = elems * self.host_ns[op]
        mem = byt / self.host_bw
        ns = self.host_ovh_ns + (work if work > mem else mem)
        return LayerCost(name, op, "host", 0, 0, ns * self.cyc_per_ns, 0.0, byt)

    # ---- whole subnet -------------------------------------------------------------------------
    def cost(self, op: tuple) -> LayerCost:
        kind = op[0]
        if kind == "linear":
            return self.linear(op[1], op[2])
        if kind == "matmul":
            return self.matmul(op[1])
        return self.host(op[1], op[2], op[3])

    def layers(self, subnet: SubnetConfig) -> list[LayerCost]:
        """Every operation of ``subnet`` in execution order."""
        return [self.cost(op) for op in subnet_ops(subnet, self.params.final_norm_cls_only)]

    def _summary(self, key: tuple, ops: tuple) -> tuple[float, float, float, int, int, float]:
        hit = self.block_memo.get(key)
        if hit is None:
            hit = self.block_memo[key] = _sum(self.cost(op) for op in ops)
        return hit

    def totals(self, subnet: SubnetConfig) -> tuple[float, float, float, int, int, float]:
        """(cycles, compute cycles, DDR bytes, MACs, unit passes, host cycles): the fast path."""
        s = subnet
        geom = s.geometry
        e = s.embed_dim
        memo = self.block_memo
        key = (geom, e)
        ends = memo.get(key)
        if ends is None:
            ends = self._summary(key, _end_ops(geom, e, self.params.final_norm_cls_only))
        cyc, comp, byt, macs, passes, host = ends
        for i, (h, r) in enumerate(zip(s.num_heads, s.mlp_ratios)):
            w = s.block_shares(i)
            block_key = (geom, e, h, r, w)
            b = memo.get(block_key)
            if b is None:
                b = self._summary(block_key, _block_ops(geom, e, h, r, w))
            cyc += b[0]
            comp += b[1]
            byt += b[2]
            macs += b[3]
            passes += b[4]
            host += b[5]
        return cyc, comp, byt, macs, passes, host


def subnet_ops(subnet: SubnetConfig, final_norm_cls_only: bool = True) -> list[tuple]:
    """The subnet's operations in execution order, from ``linear_layers``/``attention_matmuls``.

    GEMMs are ``("linear", LinearSpec, output mode)`` / ``("matmul", MatmulSpec)``; nonlinear ops
    are ``("host", name, op, elements)``: the ARM cores, in float.
    """
    lin = subnet.linear_layers()
    mm = subnet.attention_matmuls()
    t, e = subnet.geometry.num_tokens, subnet.embed_dim
    nl, codes_out = "host", "affine"
    out: list[tuple] = [("linear", lin[0], "affine")]
    for i in range(subnet.depth):
        qkv, proj, fc1, fc2 = lin[1 + 4 * i : 5 + 4 * i]
        qk, av = mm[2 * i : 2 * i + 2]
        p = f"blocks.{i}"
        out += [
            (nl, f"{p}.norm1", "layernorm", t * e),
            ("linear", qkv, codes_out),
            ("host", f"{p}.attn_prep", "attn_prep", qkv.tokens * qkv.out_features),
            ("matmul", qk),
            (nl, f"{p}.softmax", "softmax", qk.heads * qk.m * qk.n),
            ("matmul", av),
            ("linear", proj, "ls_residual"),
            (nl, f"{p}.norm2", "layernorm", t * e),
            ("linear", fc1, codes_out),
            (nl, f"{p}.gelu", "gelu", fc1.tokens * fc1.out_features),
            ("linear", fc2, "ls_residual"),
        ]
    out.append((nl, "norm", "layernorm", (1 if final_norm_cls_only else t) * e))
    out.append(("linear", lin[-1], "affine"))
    return out


def _op_name(op: tuple) -> str:
    return op[1] if op[0] == "host" else op[1].name


@lru_cache(maxsize=4096)
def _block_ops(geom: ViTGeometry, e: int, h: int, r: float, s: tuple[float, ...]) -> tuple:
    """Ops of one transformer block (``s``: its linears' shares), from a one-block subnet (design-free)."""
    one = SubnetConfig(e, 1, (h,), (r,), s, geom)
    return tuple(op for op in subnet_ops(one) if _op_name(op).startswith("blocks."))


@lru_cache(maxsize=256)
def _end_ops(geom: ViTGeometry, e: int, cls_only: bool) -> tuple:
    """Patch embedding, final norm and head of a subnet with embedding ``e``."""
    one = SubnetConfig(e, 1, (1,), (1.0,), (0.0,), geom)
    return tuple(op for op in subnet_ops(one, cls_only) if not _op_name(op).startswith("blocks."))


def _sum(costs: Iterable[LayerCost]) -> tuple[float, float, float, int, int, float]:
    cyc = comp = byt = host = 0.0
    macs = passes = 0
    for c in costs:
        cyc += c.cycles
        comp += c.compute_cycles
        byt += c.ddr_bytes
        macs += c.macs
        passes += c.unit_passes
        if c.unit == "host":
            host += c.cycles
    return cyc, comp, byt, macs, passes, host


@lru_cache(maxsize=512)
def context(platform: Platform, design: AcceleratorDesign) -> CostContext:
    """The memoised cost context of a (platform, design) pair."""
    return CostContext(platform, design)


__all__ = ["LayerCost", "CostContext", "context", "ACT_ACT_PASSES"]
