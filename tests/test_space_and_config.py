"""Subnet encoding, search-space validation and YAML config validation."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from quasar_vit.config import config_from_dict, load_config
from quasar_vit.errors import ConfigError, SubnetError
from quasar_vit.space import SearchSpace, SubnetConfig, ViTGeometry, preset_subnet


@pytest.fixture()
def space() -> SearchSpace:
    return load_config("fmnist-tiny").model.space()


def test_subnet_json_roundtrip(tmp_path, space):
    sub = space.sample(random.Random(3))
    path = tmp_path / "s.json"
    sub.save(path)
    assert SubnetConfig.load(path) == sub
    assert hash(SubnetConfig.load(path)) == hash(sub)


def test_samples_are_valid_and_reproducible(space):
    a = [space.sample(random.Random(7)) for _ in range(3)]
    b = [space.sample(random.Random(7)) for _ in range(3)]
    assert a == b
    rng = random.Random(0)
    for _ in range(50):
        space.validate(space.sample(rng))


def test_largest_and_smallest_bound_macs(space):
    rng = random.Random(1)
    big, small = space.largest().macs(), space.smallest().macs()
    for _ in range(30):
        assert small <= space.sample(rng).macs() <= big
    assert space.largest().share_8bit() == 1.0 and space.smallest().share_8bit() == 0.0


def test_validate_names_the_bad_choice(space):
    sub = space.largest()
    bad = SubnetConfig.from_dict({**sub.to_dict(), "embed_dim": 100})
    with pytest.raises(SubnetError, match="embed_dim 100"):
        space.validate(bad)
    bad = SubnetConfig.from_dict({**sub.to_dict(), "w8_shares": [0.3] * sub.depth})
    with pytest.raises(SubnetError, match="w8_share 0.3"):
        space.validate(bad)
    bad = SubnetConfig.from_dict({**sub.to_dict(), "geometry": {"img_size": 32, "patch_size": 4}})
    with pytest.raises(SubnetError, match="img_size"):
        space.validate(bad)


def test_malformed_subnet_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(SubnetError, match="not valid JSON"):
        SubnetConfig.load(p)
    p.write_text(json.dumps({"embed_dim": 64, "depth": 2, "num_heads": [2], "mlp_ratios": [2, 2], "w8_shares": [0, 0]}))
    with pytest.raises(SubnetError, match="num_heads"):
        SubnetConfig.load(p)
    p.write_text(
        json.dumps(
            {"embed_dim": 64, "depth": 1, "num_heads": [2], "mlp_ratios": [2], "w8_shares": [0], "colour": "red"}
        )
    )
    with pytest.raises(SubnetError, match="colour"):
        SubnetConfig.load(p)
    with pytest.raises(SubnetError, match="not found"):
        SubnetConfig.load(tmp_path / "missing.json")


def test_deit_presets_match_published_macs():
    assert abs(preset_subnet("deit-small").macs() / 1e9 - 4.6) < 0.1
    assert abs(preset_subnet("deit-tiny").macs() / 1e9 - 1.26) < 0.1


def test_linear_layers_count_8bit_rows_per_section():
    geometry = ViTGeometry(img_size=28, patch_size=4, in_chans=1, num_classes=10, head_dim=16)
    sub = SubnetConfig(64, 1, (2,), (2.0,), (0.5,), geometry)
    layers = {l.name: l for l in sub.linear_layers()}
    assert layers["blocks.0.qkv"].out_features == 96 and layers["blocks.0.qkv"].n8_rows == 48
    assert layers["blocks.0.fc1"].out_features == 128 and layers["blocks.0.fc1"].n8_rows == 64
    assert layers["patch_embed"].n8_rows == 64 and layers["head"].n8_rows == 10


def test_per_linear_shares_set_each_linears_8bit_rows():
    """At per-linear granularity qkv, proj, fc1 and fc2 of a block keep their own share."""
    geometry = ViTGeometry(img_size=28, patch_size=4, in_chans=1, num_classes=10, head_dim=16)
    sub = SubnetConfig(64, 2, (2, 2), (2.0, 2.0), (0.5, 0.0, 1.0, 0.25) + (0.5,) * 4, geometry)
    assert sub.share_granularity == "linear" and sub.block_shares(0) == (0.5, 0.0, 1.0, 0.25)
    rows = {l.name: l.n8_rows for l in sub.linear_layers()}
    assert (rows["blocks.0.qkv"], rows["blocks.0.proj"], rows["blocks.0.fc1"], rows["blocks.0.fc2"]) == (48, 0, 128, 16)
    assert rows["blocks.1.qkv"] == 48 and rows["blocks.1.fc2"] == 32
    assert SubnetConfig.from_dict(json.loads(sub.to_json())) == sub
    assert "w8=[0.5/0/1/0.25, 0.5/0.5/0.5/0.5]" in sub.describe()


def test_per_linear_form_of_equal_shares_is_the_per_block_subnet():
    """One network, one encoding: four equal shares per block are stored as the block's one share."""
    geometry = ViTGeometry(img_size=28, patch_size=4, in_chans=1, num_classes=10, head_dim=16)
    flat = SubnetConfig(64, 2, (2, 2), (2.0, 2.0), (0.25,) * 4 + (1.0,) * 4, geometry)
    block = SubnetConfig(64, 2, (2, 2), (2.0, 2.0), (0.25, 1.0), geometry)
    assert flat == block and hash(flat) == hash(block) and flat.w8_shares == (0.25, 1.0)
    assert flat.share_granularity == "block" and block.linear_shares() == (0.25,) * 4 + (1.0,) * 4
    with pytest.raises(
        SubnetError, match=r"w8_shares' has 3 entries, expected one per layer \(depth=2\) or one per linear"
    ):
        SubnetConfig(64, 2, (2, 2), (2.0, 2.0), (0.25, 1.0, 0.5), geometry)


def test_per_linear_space_samples_and_validates_each_linear(space):
    per_linear = dataclasses.replace(space, share_granularity="linear")
    rng = random.Random(0)
    subs = [per_linear.sample(rng) for _ in range(20)]
    assert all(len(s.w8_shares) == 4 * s.depth for s in subs)  # equal quadruples are rare at 5 shares
    for s in subs:
        space.validate(s)  # any supernet runs either form: each linear moves its own row boundary
    bad = list(subs[0].w8_shares)
    bad[5] = 0.3
    with pytest.raises(SubnetError, match=r"layer 1 proj: w8_share 0.3 not in"):
        space.validate(dataclasses.replace(subs[0], w8_shares=tuple(bad)))
    assert load_config("fmnist-tiny", ["model.share_granularity=linear"]).model.space() == per_linear


def test_bundled_configs_load():
    for name in ("fmnist-tiny", "imagenet-small", "imagenet-large"):
        cfg = load_config(name)
        assert cfg.name == name
        cfg.model.space().largest()
    large = load_config("imagenet-large").model.space()
    assert large.embed_dims == (320, 384, 448) and large.depths == (12, 13, 14)


@pytest.mark.parametrize(
    "text,match",
    [
        ("train:\n  lrr: 0.1\n", "train.lrr"),
        ("train:\n  lr: fast\n", "train.lr: expected a number"),
        ("model:\n  depths: 4\n", "model.depths: expected a list"),
        ("bogus: 1\n", "bogus"),
        ("train:\n  steps: -5\n", "train.steps"),
        ("data:\n  name: svhn\n", "svhn"),
        ("- a\n- b\n", "mapping"),
        ("train: [1, 2\n", r"c\.yaml:2:1: YAML syntax error"),
        ("model:\n  geometry:\n    img_size: 30\n    patch_size: 4\n", r"model\.geometry: img_size 30 .*multiple"),
        ("model:\n  geometry:\n    head_bits: 6\n", r"model\.geometry: .*4 or 8, got 6"),
        ("model:\n  geometry:\n    img_sz: 28\n", r"model\.geometry\.img_sz"),
        ("model:\n  geometry:\n    img_size: 28.0\n", r"model\.geometry\.img_size: expected an integer"),
        ("model:\n  img_size: 30\n  patch_size: 4\n", "multiple"),  # the flat form before ViTGeometry
        ("search:\n  tied_generations: -1\n", "search.tied_generations"),
        ("search:\n  share_mutation: creep\n", "search.share_mutation"),
        ("model:\n  share_granularity: row\n", "model.share_granularity: 'row' is not one of block, linear"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, match):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p)


def test_overrides_and_missing_config(tmp_path):
    cfg = load_config("fmnist-tiny", ["train.steps=7", "model.embed_dims=[32, 48]"])
    assert cfg.train.steps == 7 and cfg.model.embed_dims == [32, 48]
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("fmnist-tiny", ["train.steps"])


@pytest.mark.parametrize(
    "override,match",
    [
        ("train.stepz=3", r"^--set train\.stepz: section 'train' has no key 'stepz'; did you mean 'train\.steps'\?$"),
        ("trian.steps=3", r"^--set trian\.steps: the config has no key 'trian'; did you mean 'train'\?$"),
        ("model=3", r"^--set model: 'model' is a section"),
        ("train.steps.x=3", r"^--set train\.steps\.x: 'train\.steps' is a value"),
    ],
)
def test_bad_set_key_names_the_option_not_the_yaml_file(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("fmnist-tiny", [override])


def test_geometry_is_validated_once_and_hashable():
    g = ViTGeometry(img_size=28, patch_size=7, in_chans=1, num_classes=10, head_dim=16)
    assert (g.num_patches, g.num_tokens, g.patch_dim) == (16, 17, 49)
    assert hash(g) == hash(ViTGeometry(28, 7, 1, 10, 16)) and {g: 1}[ViTGeometry(28, 7, 1, 10, 16)] == 1
    with pytest.raises(SubnetError, match="multiple of patch_size"):
        ViTGeometry(img_size=30, patch_size=7)
    with pytest.raises(SubnetError, match="4 or 8"):
        ViTGeometry(head_bits=6)
    with pytest.raises(SubnetError, match="'in_chans' must be a positive integer"):
        ViTGeometry(in_chans=True)
    with pytest.raises(SubnetError, match="geometry"):
        SubnetConfig(64, 1, (2,), (2.0,), (0.5,), (28, 7))  # type: ignore[arg-type]


def test_subnet_json_nests_geometry_and_reads_the_old_flat_form(space):
    sub = space.largest()
    d = sub.to_dict()
    assert d["geometry"] == {
        "img_size": 28,
        "patch_size": 7,
        "in_chans": 1,
        "num_classes": 10,
        "head_dim": 16,
        "patch_embed_bits": 8,
        "head_bits": 8,
    }
    flat = {k: v for k, v in d.items() if k != "geometry"} | d["geometry"]
    assert SubnetConfig.from_dict(flat) == sub
    assert SubnetConfig.from_dict({k: v for k, v in d.items() if k != "geometry"}).geometry == ViTGeometry()
    with pytest.raises(SubnetError, match="unknown geometry key"):
        SubnetConfig.from_dict({**d, "geometry": {**d["geometry"], "colour": 1}})
    assert SearchSpace.from_dict(space.to_dict()) == space
    old = {k: v for k, v in space.to_dict().items() if k != "geometry"} | space.to_dict()["geometry"]
    assert SearchSpace.from_dict(old) == space


def test_old_flat_configs_and_overrides_still_load(tmp_path):
    cfg = load_config("fmnist-tiny")
    data = cfg.to_dict()
    assert "geometry" in data["model"] and "img_size" not in data["model"]
    old = dict(data, model={k: v for k, v in data["model"].items() if k != "geometry"} | data["model"]["geometry"])
    assert config_from_dict(old) == cfg
    p = tmp_path / "old.yaml"
    p.write_text("model:\n  img_size: 35\n  patch_size: 7\n")
    assert load_config(p).model.geometry.img_size == 35
    # a --set of either form wins over either form in the file
    assert load_config(p, ["model.geometry.img_size=42"]).model.geometry.img_size == 42
    assert load_config("fmnist-tiny", ["model.img_size=42"]).model.geometry.img_size == 42
    # keys a partial geometry leaves out keep the model config's defaults, not ViTGeometry's
    p.write_text("model:\n  geometry:\n    head_dim: 8\n")
    assert load_config(p).model.geometry == ViTGeometry(28, 7, 1, 10, 8)
    with pytest.raises(ConfigError, match=r"did you mean 'model\.geometry\.img_size'"):
        load_config("fmnist-tiny", ["model.geometry.img_sise=3"])
