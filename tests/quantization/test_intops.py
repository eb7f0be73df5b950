"""The integer nonlinear ops (``quantization/intops.py``, ``intconst.py``): exact where the domain is
small, bounded against the float functions they replace (in output steps), and the same integers
from NumPy and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quasar_vit.quantization import intconst, intops

S6, U6 = (-32, 31), (0, 63)


def _erf_gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the C library's erf (independent of torch's, which the tables are built with)."""
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


# ---- the tables, exhaustively ---------------------------------------------------------------------
def test_rsqrt_table_is_the_rounded_reciprocal_square_root_at_every_index():
    t = np.arange(1, 2**intops.RSQRT_INDEX_BITS, dtype=np.float64)
    want = np.floor(2.0**intops.RSQRT_BITS / np.sqrt(t) + 0.5)
    assert np.array_equal(intops.rsqrt_table()[1:], want)
    assert intops.rsqrt_table()[0] == 2**intops.RSQRT_BITS


@pytest.mark.parametrize("frac", [4, 6, 8])
def test_exp_tables_are_exp2_at_every_argument(frac):
    f = np.arange(2**frac)
    assert np.array_equal(intops.exp2_table(frac), np.floor(2.0**intops.EXP_BITS * np.exp2(-f / 2**frac) + 0.5))
    u = np.arange(len(intops.exp_table(frac)))
    # the table with its shifter: within one unit of 2**16 * 2**(-u / 2**F), and monotone
    assert np.abs(intops.exp_table(frac) - 2.0**intops.EXP_BITS * np.exp2(-u / 2**frac)).max() <= 1.0
    assert (np.diff(intops.exp_table(frac)) <= 0).all() and intops.exp_table(frac)[-1] == 0


@pytest.mark.parametrize("s_out", [0.01, 0.05, 0.2, 0.8])
def test_gelu_table_is_the_rounded_gelu_at_every_index(s_out):
    table, s_g, zero = intconst.gelu_table(torch.tensor(s_out), 10, *S6)
    x = (np.arange(1024) - zero.item()) * s_g.item()
    want = np.clip(np.rint(_erf_gelu(x) / s_out), *S6)
    assert np.array_equal(table.numpy(), want)
    # the index range reaches GELU's flat negative tail and the saturated top
    assert x[0] <= -intops.GELU_RANGE + s_g.item() and _erf_gelu(np.array([x[-1]]))[0] >= (S6[1] + 0.5) * s_out


def test_the_layernorm_normaliser_is_exact_for_every_bit_length():
    rng = np.random.default_rng(0)
    v = np.concatenate(
        [np.arange(5000), (1 << np.arange(62)) - 1, 1 << np.arange(62), rng.integers(0, 2**62, 20000)]
    ).astype(np.int64)
    k = intops._even_normaliser(v)
    assert ((v >> (2 * k)) < 2**intops.RSQRT_INDEX_BITS).all()
    assert ((k == 0) | ((v >> (2 * (k - 1))) >= 2**intops.RSQRT_INDEX_BITS)).all()  # the smallest such k
    assert np.array_equal(intops._even_normaliser(torch.from_numpy(v)).numpy(), k)


# ---- the requantiser: exact rational rounding -----------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    acc=st.lists(st.integers(-(2**23), 2**23), min_size=1, max_size=8),
    m=st.floats(1e-6, 50.0),
    b=st.floats(-100.0, 100.0),
    neg=st.booleans(),
)
def test_requant_rounds_its_fixed_point_value_half_up(acc, m, b, neg):
    m = -m if neg else m
    mult, offset, shift = (t.item() for t in intconst.affine(torch.tensor(m, dtype=torch.float64), b))
    a = np.array(acc, np.float64)
    got = intops.requant(a, mult, offset, shift, -(2**40), 2**40)
    # the definition in exact integers: floor((acc * M + B) / 2**S)
    want = [(x * int(mult) + int(offset)) >> int(shift) for x in acc]
    assert got.tolist() == want
    # and it is the rounded real value up to the multiplier's 17 bits
    assert np.abs(got - (a * m + b)).max() <= 0.5 + np.abs(a * m).max() * 2.0**-16 + 2.0**-20


# ---- against the float functions, in output steps --------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    e=st.sampled_from([16, 48, 96, 384]),
    scale=st.floats(0.05, 20.0),
    s_r=st.sampled_from([1e-4, 1e-3]),
    s_out=st.floats(0.02, 0.3),
)
def test_layernorm_is_within_one_step_of_the_float_layernorm(seed, e, scale, s_r, s_out):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, e, generator=g, dtype=torch.float64) * scale + torch.randn(1, e, generator=g) * scale
    r = torch.clamp(torch.round(x / s_r), -(2**19), 2**19 - 1)
    gamma = 1 + 0.3 * torch.randn(e, generator=g)
    beta = 0.2 * torch.randn(e, generator=g)
    consts = intconst.layernorm_constants(gamma, beta, torch.tensor(s_out), torch.tensor(s_r), 1e-6)
    got = intops.layernorm(r, *consts, *S6)
    ref = torch.nn.functional.layer_norm(r * s_r, (e,), gamma.double(), beta.double(), 1e-6) / s_out
    assert (got - torch.clamp(ref, *S6)).abs().max() <= 0.5 + 0.1  # rsqrt table: < 0.1 % of |x_hat * gamma|
    assert torch.equal(torch.from_numpy(intops.layernorm(r.numpy(), *(c.numpy() for c in consts), *S6)), got)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), keys=st.sampled_from([5, 17, 197]), s_qk=st.floats(0.003, 0.05))
def test_softmax_is_within_one_step_of_the_float_softmax(seed, keys, s_qk):
    g = torch.Generator().manual_seed(seed)
    hd, s_attn = 16, 1 / 63
    q = torch.randint(-32, 32, (32, hd), generator=g).double()
    k = torch.randint(-32, 32, (keys, hd), generator=g).double()
    a = q @ k.T
    consts = intconst.softmax_constants(torch.tensor(s_qk), torch.tensor(s_qk), hd**-0.5, torch.tensor(s_attn), 6)
    got = intops.softmax(a, *consts, 6, U6[1])
    p = torch.softmax(a * s_qk * s_qk * hd**-0.5, -1) / s_attn
    # exp2 argument rounded to 1/64: each e within 0.55 %, so a code within 0.5 + 1.1 % of 63 steps
    assert (got - torch.clamp(p, *U6)).abs().max() <= 0.5 + 0.011 * 63
    assert torch.equal(torch.from_numpy(intops.softmax(a.numpy(), *(c.numpy() for c in consts), 6, U6[1])), got)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), s_out=st.floats(0.01, 0.5), s_acc=st.floats(1e-5, 1e-3))
def test_gelu_is_within_its_index_step_of_the_float_gelu(seed, s_out, s_acc):
    g = torch.Generator().manual_seed(seed)
    acc = torch.randint(-(2**17), 2**17, (64, 32), generator=g).double()
    bias = 0.3 * torch.randn(32, generator=g, dtype=torch.float64)
    table, s_g, zero = intconst.gelu_table(torch.tensor(s_out), 10, *S6)
    mult, offset, shift = intconst.affine(torch.full((32,), s_acc, dtype=torch.float64) / s_g, bias / s_g + zero)
    got = intops.gelu(acc, mult, offset, shift, table, 10)
    y = acc * s_acc + bias
    ref = torch.clamp(torch.nn.functional.gelu(y) / s_out, *S6)
    # the index rounds x to s_g (GELU's slope <= 1.13), the table rounds to the output step;
    # below the table's range GELU is within 1.3e-4 of 0
    bound = 0.5 + 0.57 * s_g.item() / s_out + 1.3e-4 / s_out
    assert (got - ref).abs().max() <= bound
    np_got = intops.gelu(acc.numpy(), mult.numpy(), offset.numpy(), shift.numpy(), table.numpy(), 10)
    assert torch.equal(torch.from_numpy(np_got), got)


def test_residual_add_saturates_at_the_residual_range():
    r = np.array([[2**19 - 3, -(2**19) + 2, 0]], np.float64)
    acc = np.array([[100.0, -100.0, 7.0]])
    out = intops.residual_add(r, acc, np.ones(3) * 2**16, np.full(3, 2**15), np.full(3, 16.0), -(2**19), 2**19 - 1)
    assert out.tolist() == [[2**19 - 1, -(2**19), 7]]
