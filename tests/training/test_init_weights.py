"""Pretrained initialisation (``train --init``): timm/DeiT and AutoFormer key layouts, the mapping
into the supernet's largest dims, the report, and one clear error for anything else.

The state dicts are synthetic but carry the real key names (timm's VisionTransformer, AutoFormer's
Vision_TransformerSuper as published in microsoft/Cream) and, in the shape tests, the real shapes
of DeiT-Tiny and AutoFormer's supernet-T.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from quasar_vit.config import load_config
from quasar_vit.errors import CheckpointError
from quasar_vit.quantization.lsq import ActQuantizer, calibrate, init_weight_steps
from quasar_vit.supernet import build_supernet
from quasar_vit.space import SubnetConfig
from quasar_vit.training.init_weights import (
    AUTOFORMER,
    TIMM,
    apply_pretrained,
    fold_names,
    read_pretrained,
    resample_pos_embed,
)

# a small space: the source ViT (E=24, 3 heads of 8, hidden 48, depth 2) is one of its subnets
SPACE = [
    "model.geometry.img_size=32",
    "model.geometry.patch_size=8",
    "model.geometry.in_chans=3",
    "model.geometry.num_classes=10",
    "model.geometry.head_dim=8",
    "model.embed_dims=[24, 32]",
    "model.depths=[2, 3]",
    "model.num_heads=[2, 3]",
    "model.mlp_ratios=[2.0, 4.0]",
    "data.mean=[0.5, 0.5, 0.5]",
    "data.std=[0.5, 0.5, 0.5]",
]


def timm_vit(
    embed: int = 24,
    depth: int = 2,
    hidden: int = 48,
    classes: int = 10,
    grid: int = 4,
    patch: int = 8,
    in_chans: int = 3,
    seed: int = 0,
    layer_scale: bool = False,
) -> dict[str, torch.Tensor]:
    """A timm ``VisionTransformer`` state dict (DeiT's keys) with random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {
        "patch_embed.proj.weight": r(embed, in_chans, patch, patch),
        "patch_embed.proj.bias": r(embed),
        "cls_token": r(1, 1, embed),
        "pos_embed": r(1, grid * grid + 1, embed),
        "norm.weight": 1 + r(embed),
        "norm.bias": r(embed),
        "head.weight": r(classes, embed),
        "head.bias": r(classes),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": 1 + r(embed),
                b + "norm1.bias": r(embed),
                b + "attn.qkv.weight": r(3 * embed, embed),
                b + "attn.qkv.bias": r(3 * embed),
                b + "attn.proj.weight": r(embed, embed),
                b + "attn.proj.bias": r(embed),
                b + "norm2.weight": 1 + r(embed),
                b + "norm2.bias": r(embed),
                b + "mlp.fc1.weight": r(hidden, embed),
                b + "mlp.fc1.bias": r(hidden),
                b + "mlp.fc2.weight": r(embed, hidden),
                b + "mlp.fc2.bias": r(embed),
            }
        )
        if layer_scale:
            sd.update({b + "ls1.gamma": 0.5 + r(embed), b + "ls2.gamma": 0.5 + r(embed)})
    return sd


def autoformer_from_timm(sd: dict[str, torch.Tensor], max_rel: int = 14, head_dim: int = 8) -> dict[str, torch.Tensor]:
    """The same network in AutoFormer's supernet layout: renamed keys, interleaved qkv weight rows
    (``qkv_super.sample_weight`` reads row ``3j + s``), contiguous qkv bias, relative-position tables."""
    af = {
        "patch_embed_super.proj.weight": sd["patch_embed.proj.weight"],
        "patch_embed_super.proj.bias": sd["patch_embed.proj.bias"],
    }
    for k in ("cls_token", "pos_embed", "norm.weight", "norm.bias", "head.weight", "head.bias"):
        af[k] = sd[k]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        w = sd[b + "attn.qkv.weight"]
        q = w.shape[0] // 3
        af[b + "attn.qkv.weight"] = w.reshape(3, q, -1).transpose(0, 1).reshape(w.shape)
        af[b + "attn.qkv.bias"] = sd[b + "attn.qkv.bias"]
        for ours, theirs in (
            ("norm1", "attn_layer_norm"),
            ("norm2", "ffn_layer_norm"),
            ("mlp.fc1", "fc1"),
            ("mlp.fc2", "fc2"),
            ("attn.proj", "attn.proj"),
        ):
            for p in ("weight", "bias"):
                af[f"{b}{theirs}.{p}"] = sd[f"{b}{ours}.{p}"]
        for t in ("k", "v"):
            for hv in ("h", "v"):
                af[f"{b}attn.rel_pos_embed_{t}.embeddings_table_{hv}"] = torch.zeros(2 * max_rel + 2, head_dim)
    return af


def reference_vit(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, eps: float = 1e-5) -> torch.Tensor:
    """What the timm ViT computes with ``sd`` (pre-norm blocks, class-token head), in plain torch."""
    e = sd["cls_token"].shape[-1]
    pw = sd["patch_embed.proj.weight"]
    t = F.conv2d(x, pw, sd["patch_embed.proj.bias"], stride=pw.shape[-1]).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(len(x), -1, -1), t], 1) + sd["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        h = F.layer_norm(t, (e,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps)
        qkv = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"])
        bsz, n, _ = qkv.shape
        q, k, v = qkv.view(bsz, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1) @ v
        a = F.linear(a.transpose(1, 2).reshape(bsz, n, -1), sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        t = t + (sd[b + "ls1.gamma"] * a if b + "ls1.gamma" in sd else a)
        h = F.layer_norm(t, (e,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps)
        h = F.linear(
            F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])),
            sd[b + "mlp.fc2.weight"],
            sd[b + "mlp.fc2.bias"],
        )
        t = t + (sd[b + "ls2.gamma"] * h if b + "ls2.gamma" in sd else h)
    t = F.layer_norm(t, (e,), sd["norm.weight"], sd["norm.bias"], eps)
    return F.linear(t[:, 0], sd["head.weight"], sd["head.bias"])


def subnet(cfg, embed: int, depth: int, heads: int, ratio: float) -> SubnetConfig:
    return SubnetConfig(embed, depth, (heads,) * depth, (ratio,) * depth, (1.0,) * depth, cfg.model.geometry)


def float_supernet(extra: list[str] | None = None):
    """The supernet with quantization off (the pretrained network is a float network)."""
    cfg = load_config("fmnist-tiny", SPACE + ["quant.enabled=false"] + (extra or []))
    torch.manual_seed(0)
    return cfg, build_supernet(cfg.model, cfg.quant).eval()


@pytest.mark.parametrize("layout", ["timm", "autoformer"])
def test_the_subnet_at_the_files_dims_computes_the_pretrained_network(tmp_path: Path, layout: str) -> None:
    import argparse

    sd = timm_vit()
    path = tmp_path / "w.pth"
    if layout == "timm":
        torch.save({"model": sd}, path)
    else:  # AutoFormer's supernet_train.py saves its options and optimizer beside the weights
        torch.save(
            {
                "model": autoformer_from_timm(sd),
                "epoch": 499,
                "optimizer": {"state": {}, "param_groups": []},
                "args": argparse.Namespace(gp=True, change_qkv=True, lr=1e-3, data_path="/x"),
            },
            path,
        )
    cfg, model = float_supernet()
    pre = read_pretrained(path)
    assert pre.layout == (TIMM if layout == "timm" else AUTOFORMER) and pre.depth == 2
    report = apply_pretrained(model, pre)
    x = torch.randn(3, 3, 32, 32)
    want = reference_vit(sd, x, heads=3)
    with torch.no_grad():
        same_dims = model(x, subnet(cfg, 24, 2, 3, 2.0))
        # wider MLP and a third block: zero fc2 columns and zero proj/fc2 keep the function
        deeper_wider = model(x, subnet(cfg, 24, 3, 3, 4.0))
    torch.testing.assert_close(same_dims, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(deeper_wider, want, rtol=1e-4, atol=1e-4)
    if layout == "autoformer":
        assert all("rel_pos_embed" in k for k in report.unused) and len(report.unused) == 8
    assert any("layer scales set to 1" in n for n in report.notes)


def test_padding_leaves_no_unit_dead_and_steps_follow_the_loaded_weights(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(timm_vit(), path)
    cfg = load_config("fmnist-tiny", SPACE)
    torch.manual_seed(0)
    model = build_supernet(cfg.model, cfg.quant)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = apply_pretrained(model, read_pretrained(path))
    blk = model.blocks[0]
    # new hidden units (fc1 rows 48..) keep their random initial rows, their fc2 columns start at zero
    assert torch.equal(blk.fc1.weight[48:], before["blocks.0.fc1.weight"][48:])
    assert blk.fc2.weight[:, 48:].abs().max() == 0 and blk.fc2.weight[24:].abs().max() == 0
    # new stream channels: the columns that read them are zero
    assert blk.qkv.weight.view(3, 24, 32)[:, :, 24:].abs().max() == 0
    assert model.patch_embed.weight[24:].abs().max() == 0 and model.cls_token[..., 24:].abs().max() == 0
    # the third block starts as the identity; its input side keeps its initial values
    assert model.blocks[2].proj.weight.abs().max() == 0 and model.blocks[2].fc2.bias.abs().max() == 0
    assert torch.equal(model.blocks[2].qkv.weight, before["blocks.2.qkv.weight"])
    # LSQ steps from the loaded rows; all-zero rows take the layer's mean step instead of ~0
    pe = model.patch_embed
    torch.testing.assert_close(pe.step_lo[:24], init_weight_steps(pe.weight[:24], cfg.quant.w_bits_low))
    steps = pe.step_lo.detach()
    assert torch.allclose(steps[24:], steps[:24].mean()) and float(steps.min()) > 1e-3
    assert not any(bool(m.initialized) for m in model.modules() if isinstance(m, ActQuantizer))
    # a zero-padded row's weights can move: its codes sit inside the clamp, so LSQ passes gradients
    model.train()
    x = torch.randn(4, 3, 32, 32)
    with pytest.raises(RuntimeError, match="before calibration"):  # the loaded weights need new steps
        model(x, cfg.model.space().largest())
    calibrate(model, x, cfg.model.space().largest())
    model(x, cfg.model.space().largest()).logsumexp(-1).sum().backward()
    assert float(pe.weight.grad[24:].abs().sum()) > 0 and float(model.blocks[0].fc2.weight.grad[:, 48:].abs().sum()) > 0
    assert "blocks.2.qkv.weight" in report.initial and "blocks.2.proj.weight" not in report.initial
    assert any(r.startswith("patch_embed.weight [24, 192] -> [32, 192] (zero-padded)") for r in report.resized)


def test_real_shapes_deit_tiny_and_autoformer_supernet_t_into_imagenet_small(tmp_path: Path) -> None:
    """DeiT-Tiny (192 wide, 3 heads, 12 blocks) and AutoFormer's supernet-T (256 wide, 4 heads, MLP 1024,
    14 blocks) into imagenet-small's largest dims (240 wide, 4 heads of 64, MLP 960, 14 blocks)."""
    cfg = load_config("imagenet-small")
    model = build_supernet(cfg.model, cfg.quant)
    deit = timm_vit(embed=192, depth=12, hidden=768, classes=1000, grid=14, patch=16)
    torch.save({"model": deit}, tmp_path / "deit_tiny_patch16_224.pth")
    r = apply_pretrained(model, read_pretrained(tmp_path / "deit_tiny_patch16_224.pth"))
    assert "head.bias" in r.loaded and "head.weight [1000, 192] -> [1000, 240] (zero-padded)" in r.resized
    assert "blocks.0.qkv.weight [576, 192] -> [768, 240] (padded with initial values and zero-padded)" in r.resized
    assert any("blocks 12-13 keep their initial values" in n for n in r.notes)
    torch.testing.assert_close(model.blocks[11].fc1.weight[:768, :192], deit["blocks.11.mlp.fc1.weight"])
    torch.testing.assert_close(
        model.blocks[3].qkv.weight[256 : 256 + 192, :192], deit["blocks.3.attn.qkv.weight"][192:384]
    )

    sup_t = autoformer_from_timm(
        timm_vit(embed=256, depth=14, hidden=1024, classes=1000, grid=14, patch=16, seed=1), head_dim=64
    )
    torch.save({"model": sup_t}, tmp_path / "supernet-tiny.pth")
    model = build_supernet(cfg.model, cfg.quant)
    r = apply_pretrained(model, read_pretrained(tmp_path / "supernet-tiny.pth"))
    assert r.layout == AUTOFORMER and not any("blocks 14" in n for n in r.notes)
    assert "blocks.13.fc1.weight [1024, 256] -> [960, 240] (sliced)" in r.resized
    k_rows = sup_t["blocks.5.attn.qkv.weight"][1::3]  # AutoFormer's k rows are 1, 4, 7, ...
    torch.testing.assert_close(model.blocks[5].qkv.weight[256:512], k_rows[:, :240])
    assert len(r.unused) == 14 * 4 and fold_names(r.unused)[0].startswith("blocks.[0-13].attn.rel_pos_embed")


def test_safetensors_layer_scale_and_pos_embed_grid(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = timm_vit(layer_scale=True, grid=2)  # a 16 px model's 2x2 grid, DeiT-III-style layer scale
    save_file(sd, str(tmp_path / "w.safetensors"))
    cfg, model = float_supernet()
    report = apply_pretrained(model, read_pretrained(tmp_path / "w.safetensors"))
    assert any("patch grid 2x2 resampled to 4x4" in n for n in report.notes)
    torch.testing.assert_close(model.blocks[1].ls2[:24], sd["blocks.1.ls2.gamma"])
    assert model.pos_embed.shape == (1, 17, 32)
    torch.testing.assert_close(model.pos_embed[0, 0, :24], sd["pos_embed"][0, 0])  # the class position is kept
    # without layer scale in the model, the file's scales are folded into proj/fc2
    cfg2, plain = float_supernet(["model.layer_scale=false"])
    report = apply_pretrained(plain, read_pretrained(tmp_path / "w.safetensors"))
    assert any("folded" in n for n in report.notes)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            plain(x, subnet(cfg2, 24, 2, 3, 2.0)), model(x, subnet(cfg, 24, 2, 3, 2.0)), rtol=1e-4, atol=1e-4
        )


def test_pos_embed_resampling_keeps_a_smooth_field_and_the_class_position() -> None:
    e = 5
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 7), torch.linspace(0, 1, 7), indexing="ij")
    field = (2 * xx + yy).reshape(1, 49, 1).expand(1, 49, e)
    pos = torch.cat([torch.full((1, 1, e), 9.0), field], 1)
    out, note = resample_pos_embed(pos, 14, "f")
    assert out.shape == (1, 197, e) and "7x7 resampled to 14x14" in note and float(out[0, 0, 0]) == 9.0
    grid = out[0, 1:, 0].reshape(14, 14)
    assert float(grid[0, 0]) < float(grid[0, -1]) and float(grid[0, 0]) < float(grid[-1, 0])  # orientation kept
    with pytest.raises(CheckpointError, match="not a square patch grid"):
        resample_pos_embed(torch.zeros(1, 11, e), 4, "f")


def test_files_that_are_not_a_known_layout_give_one_clear_error(tmp_path: Path) -> None:
    torch.save({"model": {"encoder.layer.0.weight": torch.zeros(2, 2)}}, tmp_path / "bert.pth")
    with pytest.raises(
        CheckpointError,
        match=r"bert\.pth: matches neither a timm/DeiT ViT state dict .* nor an "
        r"AutoFormer supernet checkpoint",
    ):
        read_pretrained(tmp_path / "bert.pth")
    with pytest.raises(CheckpointError, match="no such file"):
        read_pretrained(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="cannot be read as a tensor checkpoint"):
        read_pretrained(tmp_path / "text.pth")

    class Payload:  # pickled code: weights_only refuses it, and so do we (without running it)
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    torch.save({"model": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        read_pretrained(tmp_path / "evil.pth")


def test_train_cli_init_reports_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmnist_available: bool
) -> None:
    """End to end on Fashion-MNIST: a timm-layout file for 1-channel 28x28 with 7x7 patches."""
    import json

    from conftest import tiny_overrides
    from quasar_vit.cli.main import main

    sd = timm_vit(embed=16, depth=1, hidden=16, classes=10, grid=4, patch=7, in_chans=1)
    torch.save(sd, tmp_path / "vit.pt")
    sets = [a for o in tiny_overrides(2) for a in ("--set", o)]
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--config",
                "fmnist-tiny",
                "--out",
                str(out),
                "--init",
                str(tmp_path / "vit.pt"),
                "--no-progress",
                *sets,
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "init: " in err and "timm/DeiT ViT layout" in err and "left at initial value: " in err
    saved = json.loads((out / "init.json").read_text())
    assert "head.bias" in saved["loaded"] and any(r.startswith("blocks.0.fc1.weight") for r in saved["resized"])

    torch.save({"model": {"conv1.weight": torch.zeros(1)}}, tmp_path / "resnet.pth")
    bad = tmp_path / "bad_run"
    assert (
        main(
            [
                "train",
                "--config",
                "fmnist-tiny",
                "--out",
                str(bad),
                "--init",
                str(tmp_path / "resnet.pth"),
                "--no-progress",
                *sets,
            ]
        )
        == 2
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quasar-vit train: error: --init ") and "neither" in lines[0]
    assert not bad.exists()  # a failed start leaves nothing behind
    assert main(["train", "--out", str(out), "--resume", "--init", str(tmp_path / "vit.pt")]) == 2
    assert "a resumed run continues from its own checkpoint" in capsys.readouterr().err
