"""Shared fixtures: small real data (Fashion-MNIST subsets) and small real models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FMNIST = Path("/usr/share/datasets/fashion-mnist")

# two cores: keep intra-op threads low so parallel test workers and helpers do not thrash
os.environ.setdefault("OMP_NUM_THREADS", "2")


TINY_SPACE = [
    "model.embed_dims=[16, 32]",
    "model.depths=[1, 2]",
    "model.num_heads=[1, 2]",
    "model.mlp_ratios=[1.0, 2.0]",
    "model.geometry.head_dim=8",
    "model.geometry.patch_size=7",
]


def tiny_overrides(steps: int = 12) -> list[str]:
    """A CPU-seconds budget: a small real ViT space on a Fashion-MNIST subset, few steps."""
    return TINY_SPACE + [
        f"train.steps={steps}",
        "train.batch_size=32",
        "train.warmup_steps=2",
        "train.log_every=4",
        "train.checkpoint_every=4",
        "data.train_limit=512",
        "data.test_limit=256",
        "data.val_size=256",
        "train.sandwich_random=1",
    ]


@pytest.fixture(scope="session")
def fmnist_available() -> bool:
    if not (FMNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST is missing: run scripts/setup.sh (installs dataset-fashion-mnist)")
    return True


@pytest.fixture()
def tiny_config(fmnist_available):
    from quasar_vit.config import load_config

    return load_config("fmnist-tiny", tiny_overrides())


#: the export and HLS tests' supernet: the small space trained for a few hundred steps, so that the
#: activation ranges and steps are those of a model that has learnt something (about 70 % top-1 on the
#: test subset), not of an 8-step model near chance
TRAINED_OVERRIDES = TINY_SPACE + [
    "train.steps=300",
    "train.batch_size=32",
    "train.warmup_steps=20",
    "train.log_every=50",
    "train.checkpoint_every=300",
    "data.train_limit=4096",
    "data.test_limit=400",
    "data.val_size=256",
    "train.sandwich_random=1",
]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fmnist_available):
    """``(config, run directory)`` of the shared trained supernet (trained once per test session)."""
    from quasar_vit.config import load_config
    from quasar_vit.training.trainer import train_supernet

    cfg = load_config("fmnist-tiny", TRAINED_OVERRIDES)
    root = tmp_path_factory.mktemp("trained")
    train_supernet(cfg, root / "run", progress=False)
    return cfg, root / "run"


@pytest.fixture(scope="session")
def float_trained_run(tmp_path_factory, fmnist_available):
    """``(config, run directory)`` of the shared supernet trained with ``model.nonlinear=float`` (float
    LayerNorm/softmax/GELU): what the float-only paths (the HLS kernel, the float ONNX graphs) and the
    float checkpoints' compatibility are tested on."""
    from quasar_vit.config import load_config
    from quasar_vit.training.trainer import train_supernet

    cfg = load_config("fmnist-tiny", TRAINED_OVERRIDES + ["model.nonlinear=float"])
    root = tmp_path_factory.mktemp("trained-float")
    train_supernet(cfg, root / "run", progress=False)
    return cfg, root / "run"
