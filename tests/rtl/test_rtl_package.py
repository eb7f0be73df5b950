"""An export's RTL folder (``quasar-vit rtl``): the files are the program ``verify --rtl`` runs.

The folder's descriptors and DDR image, with an image's codes placed where ``rtl.json`` says, are
run on ``qv_top`` (whose files the folder holds byte for byte), and give the engine's logits bit for bit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from quasar_vit.cli.main import main
from quasar_vit.rtl.image import image_program
from quasar_vit.rtl.modules import sources
from quasar_vit.rtl.package import read_program, write_rtl
from quasar_vit.rtl.program import run_program
from quasar_vit.rtl.verify import export_core


def test_the_rtl_folder_runs_as_written(rtl_export, exported_trace, tmp_path: Path, capsys) -> None:
    ir, trace, images = exported_trace
    out = tmp_path / "rtl"
    assert main(["rtl", str(rtl_export), "--out", str(out)]) == 0
    assert "RTL written to" in capsys.readouterr().out
    descriptors, subnet_beats, meta = read_program(out)
    shape = export_core(rtl_export)
    assert shape is not None and meta["params"] == shape.top_params()
    assert all((out / "hdl" / name).is_file() for name in sources("qv_top"))
    assert "ipx::package_project" in (out / "package_ip.tcl").read_text()
    img = 3
    made = image_program(ir, images[img], shape)
    image_beats = list(made.beats[meta["image"]["addr"] :])
    assert len(image_beats) == meta["image"]["beats"] and len(descriptors) == meta["steps"]
    from_files = dataclasses.replace(made, descriptors=tuple(descriptors), beats=tuple(subnet_beats + image_beats))
    run = run_program(shape, from_files, tmp_path / "sim")
    logits = run.results[0].astype(np.float32) * ir.head.scale + ir.head.bias
    np.testing.assert_array_equal(logits, trace["logits"][img])
    # deterministic: written again, every file is the same
    again = write_rtl(rtl_export, tmp_path / "again")
    for f in out.rglob("*"):
        if f.is_file():
            assert (again / f.relative_to(out)).read_bytes() == f.read_bytes(), f


def test_the_folder_is_built_from_its_own_hdl(rtl_export, tmp_path: Path) -> None:
    """The written HDL is the package's (what the tests simulate and Yosys synthesises)."""
    from quasar_vit.rtl.tools import hdl_file

    out = write_rtl(rtl_export, tmp_path / "rtl")
    for name in sources("qv_top"):
        assert (out / "hdl" / name).read_bytes() == hdl_file(name).read_bytes()
    assert (out / "hdl" / "rsqrt.hex").is_file()  # the ROM qv_ln_path loads


def test_bad_rtl_requests_are_one_error_line(rtl_export, tmp_path: Path, capsys) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["rtl", str(rtl_export), "--out", str(taken)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an earlier RTL folder" in err[0]
    assert (taken / "notes.txt").read_text() == "mine"
    assert main(["rtl", str(tmp_path / "missing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
