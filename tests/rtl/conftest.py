"""Fixtures of the RTL tests: a trained export and the engine's trace, shared by the core's tests."""

from __future__ import annotations

import pytest

IMAGES = 100  # test images the engine traces (the whole-image test runs them all on the RTL)


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
    """The export's IR, the engine's trace on ``IMAGES`` test images (with their logits) and the images."""
    import json

    from quasar_vit.config import config_from_dict
    from quasar_vit.export.exporter import load_test_images
    from quasar_vit.export.ir import load_ir
    from quasar_vit.export.reference import IntegerViT

    ir = load_ir(rtl_export)
    info = json.loads((rtl_export / "export.json").read_text())
    images = load_test_images(config_from_dict(info["config"]), None, IMAGES)[0]
    logits, trace = IntegerViT(ir).forward(images.numpy(), trace=True)
    trace["logits"] = logits
    return ir, trace, images.numpy()
