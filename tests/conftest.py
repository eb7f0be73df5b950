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


# ---- the RTL tests' trained export (tests/rtl) ----
RTL_IMAGES = 100  # test images the engine traces (the whole-image test runs them all on the RTL)


@pytest.fixture(scope="session")
def rtl_export(trained_run, tmp_path_factory):
    """The largest subnet of the session's trained supernet, exported (its directory)."""
    import json

    from quasar_vit.export import export_subnet

    cfg, run = trained_run
    root = tmp_path_factory.mktemp("rtl-export")
    sub = root / "subnet.json"
    sub.write_text(json.dumps({"subnet": cfg.model.space().largest().to_dict()}))
    return export_subnet(run / "supernet.pt", sub, "zcu102", root / "exp")


@pytest.fixture(scope="session")
def exported_trace(rtl_export):
    """The export's IR, the engine's trace on ``RTL_IMAGES`` test images (with their logits) and the images."""
    import json

    from quasar_vit.config import config_from_dict
    from quasar_vit.export.exporter import load_test_images
    from quasar_vit.export.ir import load_ir
    from quasar_vit.export.reference import IntegerViT

    ir = load_ir(rtl_export)
    info = json.loads((rtl_export / "export.json").read_text())
    images = load_test_images(config_from_dict(info["config"]), None, RTL_IMAGES)[0]
    logits, trace = IntegerViT(ir).forward(images.numpy(), trace=True)
    trace["logits"] = logits
    return ir, trace, images.numpy()
