"""Subnet encoding, search-space validation and YAML config validation."""

from __future__ import annotations

import json
import random

import pytest

from quasar_vit.config import load_config
from quasar_vit.errors import ConfigError, SubnetError
from quasar_vit.space import SearchSpace, SubnetConfig, preset_subnet


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
    bad = SubnetConfig.from_dict({**sub.to_dict(), "img_size": 32, "patch_size": 4})
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
    sub = SubnetConfig(64, 1, (2,), (2.0,), (0.5,), img_size=28, patch_size=4, in_chans=1, num_classes=10, head_dim=16)
    layers = {l.name: l for l in sub.linear_layers()}
    assert layers["blocks.0.qkv"].out_features == 96 and layers["blocks.0.qkv"].n8_rows == 48
    assert layers["blocks.0.fc1"].out_features == 128 and layers["blocks.0.fc1"].n8_rows == 64
    assert layers["patch_embed"].n8_rows == 64 and layers["head"].n8_rows == 10


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
        ("model:\n  img_size: 30\n  patch_size: 4\n", "multiple"),
        ("search:\n  tied_generations: -1\n", "search.tied_generations"),
        ("search:\n  share_mutation: creep\n", "search.share_mutation"),
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
