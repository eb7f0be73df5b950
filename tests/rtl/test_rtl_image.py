"""Whole images on the simulated accelerator: the subnet's program from its IR, logits bit-exact.

``rtl.image.image_steps`` makes the core's steps of an exported subnet: the patch embedding, every
block, the final LayerNorm and the head.  Each image runs on ``qv_top`` in Verilator as its
descriptor table's program: the loads of its patch codes and its starting residual from DDR, then
the steps, to the head's accumulators on the result port.  The accumulators, and so the logits the
engine's float rescale makes of them, must be the engine's exactly, and every step and the image
(from ``run`` to ``done``) must take the cycles the schedule model predicts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quasar_vit.rtl.image import image_steps, run_image
from quasar_vit.rtl.layout import GemmShape
from quasar_vit.rtl.verify import image_model

DEMO = GemmShape(R=16, T=4, KP=8, WB=64, tiles_max=8, ch_max=128, wch_max=64)


def test_exported_images_on_chip(exported_trace, tmp_path: Path) -> None:
    """100 test images of a trained export (about 0.4 s each): the head's input codes and the
    logits are the engine's, bit for bit, and each image's cycles are the model's, step by step."""
    ir, trace, images = exported_trace
    predicted = image_model(ir, DEMO)
    assert len(images) == 100
    for img in range(len(images)):
        run = run_image(DEMO, ir, images[img], tmp_path / f"img{img}")
        np.testing.assert_array_equal(run.logits, trace["logits"][img])
        np.testing.assert_array_equal(run.run.layers[-2].codes, trace["head.in"][img][None])
        np.testing.assert_array_equal(run.acc, run.run.layers[-1].codes[0])  # the result port: the head's lanes
        assert run.run.loads == predicted.loads
        assert [r.cycles for r in run.run.layers] == predicted.chain.steps
        assert run.run.softmax_cycles == predicted.chain.softmax
        assert run.cycles == predicted.total
        assert not any(r.overrun for r in run.run.layers)


def test_verify_rtl_command(rtl_export, capsys) -> None:
    """``quasar-vit verify DIR --rtl`` runs the images on the RTL, says so in one line and writes the
    verdict into verify.json."""
    import json

    from quasar_vit.cli.main import main

    assert main(["verify", str(rtl_export), "--rtl", "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert "rtl PASSED: 3/3 images with the engine's logits bit for bit" in out
    res = json.loads((rtl_export / "verify.json").read_text())
    assert res["rtl"]["passed"] and res["rtl"]["images"] == 3


def test_float_ops_subnet_is_refused(exported_trace) -> None:
    """The core runs integer nonlinear ops only: a float-ops IR gets one error line."""
    import dataclasses

    import pytest

    from quasar_vit.errors import RtlError

    ir = dataclasses.replace(exported_trace[0], nonlinear="float")
    with pytest.raises(RtlError, match="nonlinear: integer"):
        image_steps(ir, DEMO)


def test_the_model_prices_the_program_the_core_runs(rtl_export, exported_trace) -> None:
    """``rtl.model.image_cycles`` of the exported subnet (from its SubnetConfig: what the search and
    the DSE see) equals the schedule model of the very program ``run_image`` runs, which
    ``test_exported_images_on_chip`` holds equal to Verilator's cycles image by image."""
    import json

    from quasar_vit.rtl.model import image_cycles
    from quasar_vit.space import SubnetConfig

    ir = exported_trace[0]
    subnet = SubnetConfig.from_dict(json.loads((rtl_export / "subnet.json").read_text()))
    priced = image_cycles(subnet, DEMO)
    assert priced.total == image_model(ir, DEMO).total
    assert set(priced.by_kind) == {"load", "linear", "LayerNorm", "Q K^T", "softmax", "P V"}


@pytest.mark.parametrize("design", ['{"design": {"accelerator": "rtl-core", "R": 24}}', "{not json"])
def test_a_malformed_core_in_the_export_is_one_error_line(rtl_export, tmp_path, capsys, design) -> None:
    """``verify --rtl`` runs the core in the export's accelerator.json; a malformed one (or a file that
    is not JSON) ends in one error line and exit 2, not a traceback."""
    import shutil

    from quasar_vit.cli.main import main

    broken = tmp_path / "exp"
    shutil.copytree(rtl_export, broken)
    (broken / "accelerator.json").write_text(design)
    assert main(["verify", str(broken), "--rtl", "--limit", "1"]) == 2
    err = capsys.readouterr().err  # (after the engine's progress line)
    assert [line for line in err.splitlines() if "error" in line.lower()] == [err.strip().splitlines()[-1]]
    assert err.strip().splitlines()[-1].startswith("quasar-vit verify: error:") and "Traceback" not in err
