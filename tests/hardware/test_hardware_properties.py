"""Property tests of the hardware model (fixed design): monotone in precision, depth and width."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings, strategies as st

from quasar_vit.hardware import AcceleratorDesign, evaluate, explore, load_platform
from quasar_vit.space import SubnetConfig, ViTGeometry

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
ZCU102 = load_platform("zcu102")
# a bandwidth-starved variant: exercises the memory-bound branch of the tile model
STARVED = dataclasses.replace(ZCU102, ddr_gbps=1.0)
DESIGNS = [
    AcceleratorDesign("zcu102", 150, 71, 96, 4, 8, 197, 1536),
    AcceleratorDesign("zcu102", 150, 40, 32, 3, 0, 50, 256),
    AcceleratorDesign("zcu102", 150, 16, 16, "lut", 16, 16, 64),
]


@st.composite
def subnets(draw, min_depth: int = 1, max_depth: int = 4):
    depth = draw(st.integers(min_depth, max_depth))
    embed = draw(st.sampled_from((64, 96, 128, 192, 240, 384)))
    heads = tuple(draw(st.lists(st.integers(1, 6), min_size=depth, max_size=depth)))
    mlps = tuple(draw(st.lists(st.sampled_from((1.0, 2.0, 3.5, 4.0)), min_size=depth, max_size=depth)))
    shares = tuple(draw(st.lists(st.sampled_from(SHARES), min_size=depth, max_size=depth)))
    img = draw(st.sampled_from((32, 64, 96)))
    return SubnetConfig(embed, depth, heads, mlps, shares, ViTGeometry(img_size=img, patch_size=16))


platforms = st.sampled_from((ZCU102, STARVED))
designs = st.sampled_from(DESIGNS)


@settings(max_examples=60, deadline=None)
@given(subnets(), st.data(), platforms, designs)
def test_more_4bit_rows_never_slower(sub, data, plat, design):
    i = data.draw(st.integers(0, sub.depth - 1))
    lower = data.draw(st.sampled_from([s for s in SHARES if s <= sub.w8_shares[i]]))
    shares = list(sub.w8_shares)
    shares[i] = lower
    fewer8 = dataclasses.replace(sub, w8_shares=tuple(shares))
    assert evaluate(fewer8, plat, design).cycles <= evaluate(sub, plat, design).cycles + 1e-6


@settings(max_examples=40, deadline=None)
@given(subnets(), st.data(), platforms, designs)
def test_fewer_8bit_rows_in_one_linear_never_slower(sub, data, plat, design):
    """Per-linear shares (``model.share_granularity: linear``): the model prices each linear's rows."""
    shares = list(sub.linear_shares())
    j = data.draw(st.integers(0, len(shares) - 1))
    shares[j] = data.draw(st.sampled_from([s for s in SHARES if s <= shares[j]]))
    fewer8 = dataclasses.replace(sub, w8_shares=tuple(shares))
    assert fewer8.linear_shares() == tuple(shares)
    assert evaluate(fewer8, plat, design).cycles <= evaluate(sub, plat, design).cycles + 1e-6


@settings(max_examples=60, deadline=None)
@given(subnets(max_depth=3), st.data(), platforms, designs)
def test_deeper_never_faster(sub, data, plat, design):
    h = data.draw(st.integers(1, 6))
    r = data.draw(st.sampled_from((1.0, 4.0)))
    s = data.draw(st.sampled_from(SHARES))
    deeper = dataclasses.replace(
        sub,
        depth=sub.depth + 1,
        num_heads=sub.num_heads + (h,),
        mlp_ratios=sub.mlp_ratios + (r,),
        w8_shares=sub.w8_shares + (s,),
    )
    assert evaluate(deeper, plat, design).cycles >= evaluate(sub, plat, design).cycles


@settings(max_examples=60, deadline=None)
@given(subnets(), st.data(), platforms, designs)
def test_wider_never_faster(sub, data, plat, design):
    kind = data.draw(st.sampled_from(("embed", "heads", "mlp", "tokens")))
    if kind == "embed":
        wider = dataclasses.replace(sub, embed_dim=sub.embed_dim + data.draw(st.integers(1, 128)))
    elif kind == "heads":
        i = data.draw(st.integers(0, sub.depth - 1))
        heads = list(sub.num_heads)
        heads[i] += data.draw(st.integers(1, 3))
        wider = dataclasses.replace(sub, num_heads=tuple(heads))
    elif kind == "mlp":
        i = data.draw(st.integers(0, sub.depth - 1))
        mlps = list(sub.mlp_ratios)
        mlps[i] += data.draw(st.sampled_from((0.5, 1.0, 2.0)))
        wider = dataclasses.replace(sub, mlp_ratios=tuple(mlps))
    else:
        g = sub.geometry
        wider = dataclasses.replace(sub, geometry=dataclasses.replace(g, img_size=g.img_size + 16))
    assert evaluate(wider, plat, design).cycles >= evaluate(sub, plat, design).cycles


@settings(max_examples=15, deadline=None)
@given(subnets(min_depth=2, max_depth=4))
def test_explore_never_exceeds_board_and_deeper_never_faster(sub):
    rep = explore(sub, ZCU102)
    assert rep.fits
    for r in ("lut", "ff", "dsp", "bram", "uram"):
        assert rep.resources.count(r) <= ZCU102.total(r) * ZCU102.cap(r)
    deeper = dataclasses.replace(
        sub,
        depth=sub.depth + 1,
        num_heads=sub.num_heads + (sub.num_heads[-1],),
        mlp_ratios=sub.mlp_ratios + (sub.mlp_ratios[-1],),
        w8_shares=sub.w8_shares + (sub.w8_shares[-1],),
    )
    # same candidate designs; the 0.5 % tie rule may pick a design up to 0.5 % off the optimum
    assert explore(deeper, ZCU102).latency_ms >= rep.latency_ms * (1 - 0.011)


def test_share_one_is_slower_than_share_zero():
    d = DESIGNS[0]
    mk = lambda s: SubnetConfig(384, 4, (6,) * 4, (4.0,) * 4, (s,) * 4)
    assert evaluate(mk(1.0), ZCU102, d).fps < evaluate(mk(0.0), ZCU102, d).fps
