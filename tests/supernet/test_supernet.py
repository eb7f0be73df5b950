"""Supernet slicing, mixed-precision weight entanglement, layer scaling and extraction."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch

from quasar_vit.config import load_config
from quasar_vit.errors import SubnetError
from quasar_vit.models import QuantLinear, QuantViT
from quasar_vit.quantization import calibrate
from quasar_vit.supernet import build_supernet, extract, set_active
from quasar_vit.supernet.supernet import block_dims
from quasar_vit.space import SubnetConfig


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = load_config("fmnist-tiny")
    net = build_supernet(cfg.model, cfg.quant)
    space = cfg.model.space()
    x = torch.randn(6, 1, 28, 28)
    calibrate(net, x, space.largest())  # initialise activation quantizers
    net.eval()
    return net, space, x


def _subnets(space, n=4):
    """The two ends, ``n`` per-block samples and two per-linear samples (each linear its own share)."""
    rng = random.Random(5)
    per_linear = replace(space, share_granularity="linear")
    subs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n)]
    subs += [per_linear.sample(rng) for _ in range(2)]
    assert all(s.share_granularity == "linear" for s in subs[-2:])
    return subs


def test_extracted_subnet_matches_supernet(setup):
    net, space, x = setup
    for sub in _subnets(space):
        with torch.no_grad():
            a = net(x, sub)
            model = extract(net, sub)
            b = model(x)
        assert isinstance(model, QuantViT)
        assert torch.allclose(a, b, atol=1e-5), sub.describe()
        n_params = sum(p.numel() for p in model.parameters())
        assert n_params < sum(p.numel() for p in net.parameters()) or sub == space.largest()


def test_extracted_model_holds_only_the_subnet_weights(setup):
    net, space, _ = setup
    sub = space.smallest()
    model = extract(net, sub)
    assert len(model.blocks) == sub.depth
    assert model.blocks[0].qkv.weight.shape == (3 * sub.qkv_dim(0), sub.embed_dim)
    assert model.blocks[0].fc1.weight.shape == (sub.mlp_hidden(0), sub.embed_dim)
    assert model.blocks[0].qkv.n8_rows == 0  # smallest subnet: all 4-bit rows


def test_active_subnet_wrapper_equals_explicit_call(setup):
    net, space, x = setup
    sub = _subnets(space)[3]
    with torch.no_grad():
        assert torch.equal(set_active(net, sub)(x), net(x, sub))
    bad = SubnetConfig.from_dict({**sub.to_dict(), "embed_dim": 50})
    with pytest.raises(SubnetError):
        set_active(net, bad)


def test_precision_choices_share_one_weight_tensor(setup):
    """4- and 8-bit versions of a layer come from the same float weights: changing the share only
    moves the row boundary, so gradients from both land in one parameter."""
    net, space, x = setup
    big = space.largest()
    all4 = SubnetConfig.from_dict({**big.to_dict(), "w8_shares": [0.0] * big.depth})
    net.zero_grad()
    net.train()
    net(x, all4).sum().backward()
    net.eval()
    fc1 = net.blocks[0].fc1
    assert fc1.weight.grad.abs().sum() > 0
    assert fc1.step_lo.grad.abs().sum() > 0
    assert fc1.step_hi.grad is None or fc1.step_hi.grad.abs().sum() == 0
    with torch.no_grad():
        out8, out4 = net(x, big), net(x, all4)
    assert not torch.allclose(out8, out4)
    net.zero_grad()


def test_slicing_uses_leading_rows_only(setup):
    net, space, x = setup
    small = space.smallest()
    net.zero_grad()
    net.train()
    net(x, small).sum().backward()
    net.eval()
    e, h = small.embed_dim, small.mlp_hidden(0)
    g = net.blocks[0].fc1.weight.grad
    assert g[:h, :e].abs().sum() > 0
    assert g[h:].abs().sum() == 0 and g[:, e:].abs().sum() == 0
    # blocks beyond the subnet's depth get no gradient at all
    assert net.blocks[space.max_depth - 1].fc1.weight.grad is None
    net.zero_grad()


def test_layer_scale_is_elastic_and_applied(setup):
    net, space, x = setup
    sub = space.smallest()
    with torch.no_grad():
        base = net(x, sub)
        ls = net.blocks[0].ls1
        saved = ls.clone()
        ls[sub.embed_dim :] = 123.0  # outside the slice: no effect
        assert torch.allclose(net(x, sub), base)
        ls[: sub.embed_dim] = 0.0  # inside: changes the output
        changed = net(x, sub)
        ls.copy_(saved)
    assert not torch.allclose(changed, base)


def test_quantization_can_be_disabled_for_fp32_baselines():
    cfg = load_config("fmnist-tiny", ["quant.enabled=false"])
    net = build_supernet(cfg.model, cfg.quant)
    x = torch.randn(2, 1, 28, 28)
    sub = cfg.model.space().largest()
    a = net(x, sub)
    # without quantizers the output is a continuous function of the weights
    with torch.no_grad():
        net.blocks[0].fc1.weight.add_(1e-6)
    assert not torch.equal(a, net(x, sub))


def test_layer_and_block_extraction_equal_their_slices(setup):
    """``QuantLinear.extract`` / ``Block.extract`` give standalone layers computing exactly the slice."""
    net, space, _ = setup
    sub = _subnets(space)[4]
    dims = block_dims(sub)[0]
    blk = net.blocks[0]
    t = torch.randn(3, 5, dims.embed)
    with torch.no_grad():
        alone = blk.extract(dims)
        assert torch.equal(alone(t), blk(t, dims))
        q, e = dims.heads * blk.head_dim, dims.embed
        qkv = blk.qkv.extract(q, e, dims.shares[0])
        assert torch.equal(qkv(t), blk.qkv(t, q, e, dims.shares[0]))
    assert qkv.weight.shape == (3 * q, e)
    assert alone.drop_path == 0.0 and alone.training == blk.training


def test_extracted_8bit_rows_match_the_subnet_description(setup):
    """The layers count their 8-bit rows with the same function as ``SubnetConfig.linear_layers``."""
    net, space, _ = setup
    for sub in _subnets(space):
        model = extract(net, sub)
        layers = {name: m for name, m in model.named_modules() if isinstance(m, QuantLinear)}
        assert {l.name: l.n8_rows for l in sub.linear_layers()} == {n: m.n8_rows for n, m in layers.items()}


def test_extraction_draws_the_random_numbers_building_the_model_draws(setup):
    """Extraction builds its modules in QuantViT's order, so the global RNG ends where it did before."""
    net, space, _ = setup
    sub = _subnets(space)[5]
    torch.manual_seed(3)
    QuantViT(sub, net.quant, net.layer_scale, net.layer_scale_init)
    after_build = torch.randn(4)
    torch.manual_seed(3)
    extract(net, sub)
    assert torch.equal(torch.randn(4), after_build)
