"""Row-wise LSQ quantizer: rounding, clipping, gradients, 4/8-bit row split."""

from __future__ import annotations

import math

import pytest
import torch

from quasar_vit.quantization.lsq import (
    ActQuantizer,
    calibrate,
    calibration,
    effective_step,
    integer_weight_rows,
    lsq_fake_quant,
    lsq_fake_quant_reference,
    quantize_weight_rows,
    qrange,
    row_bit_mask,
)
from quasar_vit.space import num_8bit_rows


def test_qrange():
    assert qrange(4, True) == (-8, 7)
    assert qrange(8, True) == (-128, 127)
    assert qrange(6, True) == (-32, 31)
    assert qrange(6, False) == (0, 63)


def test_rounding_is_half_to_even_and_clipped():
    s = torch.tensor(1.0)
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, 6.4, 7.6, 100.0, -100.0])
    y = lsq_fake_quant(x, s, -8, 7, 1.0)
    assert y.tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, 6.0, 7.0, 7.0, -8.0]


def test_values_lie_on_the_grid():
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    slo = torch.full((16,), 0.2)
    shi = torch.full((16,), 0.01)
    q = quantize_weight_rows(w, slo, shi, n8=6)
    codes_lo = q[6:] / effective_step(slo[6:]).unsqueeze(1)
    codes_hi = q[:6] / effective_step(shi[:6]).unsqueeze(1)
    assert torch.allclose(codes_lo, codes_lo.round(), atol=1e-4)
    assert codes_lo.min() >= -8 and codes_lo.max() <= 7
    assert codes_hi.min() >= -128 and codes_hi.max() <= 127
    # 8-bit rows are finer: their error is smaller than that of the same rows at 4 bits
    q4 = quantize_weight_rows(w, slo, shi, n8=0)
    assert (q[:6] - w[:6]).abs().mean() < (q4[:6] - w[:6]).abs().mean()


def test_row_split_sections_put_8bit_rows_first_in_each_section():
    mask = row_bit_mask(12, 6, 3, torch.device("cpu")).squeeze(1).tolist()
    assert mask == [True, True, False, False] * 3
    w = torch.randn(12, 5)
    _, _, is8 = integer_weight_rows(w, torch.ones(12) * 0.1, torch.ones(12) * 0.01, n8=6, sections=3)
    assert is8.tolist() == mask


@pytest.mark.parametrize("rows,share,expected", [(8, 0.0, 0), (8, 1.0, 8), (8, 0.25, 2), (3, 0.5, 2), (10, 0.75, 8)])
def test_num_8bit_rows(rows, share, expected):
    assert num_8bit_rows(rows, share) == expected


def test_num_8bit_rows_counts_each_section():
    """q, k and v (3 sections of 3 rows) each get round(0.5 * 3) = 2 rows, not round(0.5 * 9)."""
    assert num_8bit_rows(9, 0.5, sections=3) == 6
    assert num_8bit_rows(9, 0.5) == 5
    with pytest.raises(ValueError):
        num_8bit_rows(9, 1.5, sections=3)


def test_fused_gradients_match_unfused_reference():
    torch.manual_seed(1)
    x = torch.randn(4, 7, 9) * 2
    w = torch.randn(4, 7, 9)
    for qn, qp, g in ((-32, 31, 0.1), (0, 63, 0.05)):
        s1 = torch.tensor(0.07, requires_grad=True)
        s2 = torch.tensor(0.07, requires_grad=True)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        (lsq_fake_quant(x1, s1, qn, qp, g) * w).sum().backward()
        (lsq_fake_quant_reference(x2, s2, qn, qp, g) * w).sum().backward()
        assert torch.allclose(x1.grad, x2.grad)
        assert torch.allclose(s1.grad, s2.grad, rtol=1e-4, atol=1e-5)


def test_straight_through_gradient_is_zero_outside_the_clip_range():
    s = torch.tensor(1.0, requires_grad=True)
    x = torch.tensor([0.3, 5.0, -20.0, 20.0], requires_grad=True)
    lsq_fake_quant(x, s, -8, 7, 1.0).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    # LSQ step gradient: round(x/s) - x/s inside, qn / qp when clipped
    assert math.isclose(float(s.grad), (0 - 0.3) + 0.0 + (-8) + 7, rel_tol=1e-5)


def test_weight_steps_get_gradients_only_from_their_precision():
    torch.manual_seed(2)
    w = torch.randn(8, 16, requires_grad=True)
    slo = torch.full((8,), 0.3, requires_grad=True)
    shi = torch.full((8,), 0.02, requires_grad=True)
    quantize_weight_rows(w, slo, shi, n8=3).pow(2).sum().backward()
    assert (shi.grad[:3] != 0).all() and (shi.grad[3:] == 0).all()
    assert (slo.grad[:3] == 0).all() and (slo.grad[3:] != 0).all()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_integer_codes_reproduce_fake_quant_exactly():
    torch.manual_seed(3)
    w = torch.randn(10, 6)
    slo, shi = torch.rand(10) * 0.3 + 0.05, torch.rand(10) * 0.02 + 0.005
    fq = quantize_weight_rows(w, slo, shi, n8=4)
    w_int, step, is8 = integer_weight_rows(w, slo, shi, n8=4)
    assert torch.equal(fq, w_int.float() * step.unsqueeze(1))
    assert is8.sum() == 4


def test_act_quantizer_is_calibrated_from_a_batch_and_is_idempotent():
    q = ActQuantizer(bits=6, signed=True)
    x = torch.randn(32, 10)
    assert calibrate(q, x) == 1 and bool(q.initialized) and not q.calibrating
    assert float(q.step.detach()) == float((2.0 * x.abs().mean() / math.sqrt(31)).clamp_min(1e-6))  # LSQ rule
    y = q(x)
    assert torch.allclose(q(y), y)  # quantizing a quantized tensor changes nothing
    codes = q.integer(x)
    assert codes.min() >= -32 and codes.max() <= 31
    assert torch.allclose(codes.float() * q.scale(), y)
    assert calibrate(q, 10 * x) == 0 and torch.equal(q(x), y)  # a calibrated quantizer keeps its step
    u = ActQuantizer(bits=6, signed=False)
    calibrate(u, torch.rand(5, 5))
    assert u(torch.rand(5, 5)).min() >= 0


def test_uncalibrated_act_quantizer_refuses_to_run_and_a_loaded_state_needs_no_calibration():
    q = ActQuantizer(bits=6)
    with pytest.raises(RuntimeError, match="before calibration"):
        q(torch.randn(4, 4))
    assert not bool(q.initialized) and float(q.step.detach()) == 1.0  # nothing was set on the way
    calibrate(q, torch.randn(8, 4))
    fresh = ActQuantizer(bits=6)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(3, 4)
    assert torch.equal(fresh(x), q(x))


def test_calibration_reaches_every_quantizer_a_pass_uses_in_order():
    """Each quantizer is initialised from what it sees in the calibration pass: the quantized output
    of the quantizers before it, as a first training batch would have done it."""
    first, second = ActQuantizer(bits=4), ActQuantizer(bits=6, signed=False)
    seq = torch.nn.Sequential(first, torch.nn.ReLU(), second)
    x = torch.randn(16, 8)
    assert calibrate(seq, x) == 2
    ref = ActQuantizer(bits=6, signed=False)
    ref.init_step(torch.relu(first(x)))
    assert torch.equal(second.step.detach(), ref.step.detach())
    with pytest.raises(ZeroDivisionError), calibration(seq):  # the mode ends even on an error
        raise ZeroDivisionError
    assert not first.calibrating and not second.calibrating


def test_disabled_quantizer_is_identity():
    q = ActQuantizer(bits=6, enabled=False)
    x = torch.randn(4, 4)
    assert torch.equal(q(x), x)
