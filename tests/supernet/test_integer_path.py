"""The integer training forward (``model.nonlinear: integer``): calibration, gradients, drop path, and
checkpoints trained with float ops before the option existed."""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from quasar_vit.config import load_config
from quasar_vit.quantization import calibrate
from quasar_vit.quantization.lsq import ActQuantizer, ResidualQuantizer
from quasar_vit.supernet import build_supernet, extract


def _net(*overrides: str):
    torch.manual_seed(0)
    cfg = load_config("fmnist-tiny", list(overrides))
    return build_supernet(cfg.model, cfg.quant), cfg.model.space(), cfg


def test_integer_is_the_default_and_runs_only_once_calibrated():
    net, space, _ = _net()
    assert net.nonlinear == "integer" and not net.integer_active
    x = torch.randn(8, 1, 28, 28)
    calibrate(net, x, space.largest())
    assert net.integer_active and bool(net.res_q.initialized)
    # the residual step leaves the calibrated stream 4x headroom within its 20-bit codes
    assert 0 < float(net.res_q.step) * net.res_q.qp < 1e3


def test_every_parameter_and_quantizer_step_gets_a_gradient_on_the_integer_path():
    net, space, _ = _net()
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    calibrate(net, x, space.largest())
    net.train()
    big = space.largest()
    all4 = space.make(big.embed_dim, big.depth, big.num_heads, big.mlp_ratios, [0.0] * big.depth)
    for sub in (big, all4):  # the whole supernet, once with all 8-bit rows and once with all 4-bit rows
        F.cross_entropy(net(x, sub), y).backward()
    fixed = ("patch_embed.step_lo", "head.step_lo")  # 8-bit rows whatever the subnet
    no_grad = [
        n for n, p in net.named_parameters() if n not in fixed and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not no_grad, no_grad
    steps = [m.step.grad for m in net.modules() if isinstance(m, ActQuantizer)]
    assert all(g is not None and g.abs() > 0 for g in steps)  # the learned steps keep learning
    assert net.blocks[0].ls1.grad.abs().sum() > 0 and net.res_q.step.grad is None  # a calibrated buffer


def test_the_value_is_the_integer_engine_s_and_the_gradient_the_float_network_s():
    """The forward's value comes from the integer ops; its gradient equals the float network's
    wherever the two networks' quantization points agree, so the step sees the float surrogate."""
    net, space, _ = _net()
    x = torch.randn(8, 1, 28, 28, requires_grad=True)
    calibrate(net, x.detach(), space.largest())
    sub = space.largest()
    out_int = net(x, sub)
    g_int = torch.autograd.grad(out_int.sum(), x)[0]
    net.res_q.calibrating = True  # the float path of the same weights
    out_float = net(x, sub)
    g_float = torch.autograd.grad(out_float.sum(), x)[0]
    net.res_q.calibrating = False
    assert not torch.equal(out_int, out_float)  # different arithmetic ...
    cos = F.cosine_similarity(g_int.flatten(), g_float.flatten(), dim=0)
    assert cos > 0.9  # ... the same training signal, up to the points where a code differs


def test_stochastic_depth_drops_whole_branches_in_integers():
    net, space, _ = _net("model.drop_path=0.5")
    x = torch.randn(8, 1, 28, 28)
    calibrate(net, x, space.largest())
    net.train()
    torch.manual_seed(1)
    a = net(x, space.largest())
    torch.manual_seed(1)
    b = net(x, space.largest())
    assert torch.equal(a, b)  # seeded: the same branches dropped
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x, space.largest()), extract(net, space.largest()).eval()(x))


def test_a_checkpoint_config_without_the_key_is_a_float_model(tmp_path):
    """Checkpoints written before ``model.nonlinear`` were trained with float ops: they load as such."""
    from quasar_vit.training.checkpoint import FORMAT, VERSION, load_supernet

    net, space, cfg = _net("model.nonlinear=float")
    x = torch.randn(4, 1, 28, 28)
    calibrate(net, x, space.largest())
    assert not any(isinstance(m, ResidualQuantizer) for m in net.modules())
    data = cfg.to_dict()
    del data["model"]["nonlinear"]
    for key in ("residual_bits", "gelu_in_bits", "softmax_frac_bits"):
        del data["quant"][key]
    path = tmp_path / "supernet.pt"
    torch.save({"format": FORMAT, "version": VERSION, "config": data, "model": net.state_dict(), "step": 3}, path)
    loaded, lcfg, _ = load_supernet(path)
    assert lcfg.model.nonlinear == "float" and loaded.nonlinear == "float"
    sub = space.sample(random.Random(0))
    with torch.no_grad():
        assert torch.equal(loaded(x, sub), net.eval()(x, sub))
