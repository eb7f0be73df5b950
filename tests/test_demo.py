"""The end-to-end demo on a tiny budget: every stage runs, reruns skip, changed settings are refused."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from conftest import TINY_SPACE
from quasar_vit.demo import DemoSettings, run_demo
from quasar_vit.errors import QuasarError


def _tiny_config(tmp_path):
    import yaml

    from quasar_vit.config import load_config

    cfg = load_config(
        "fmnist-tiny",
        TINY_SPACE
        + [
            "train.batch_size=32",
            "train.warmup_steps=2",
            "train.checkpoint_every=4",
            "data.train_limit=512",
            "data.test_limit=200",
            "data.val_size=200",
            "train.sandwich_random=1",
        ],
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def test_demo_end_to_end_and_resume(tmp_path, fmnist_available):
    s = DemoSettings(
        config=_tiny_config(tmp_path),
        train_steps=8,
        search=replace(DemoSettings().search, population=4, generations=2, mutations=2, crossovers=2, val_images=200),
        verify_limit=100,
        csim_limit=20,
        csim=shutil.which("g++") is not None,
    )
    out = tmp_path / "demo"
    lines: list[str] = []
    summary = run_demo(out, s, progress=False, say=lines.append)
    for f in ("train/supernet.pt", "search/pareto.json", "export/export.json", "export/verify.json", "report.md"):
        assert (out / f).is_file(), f
    # integer nonlinear ops (the default): every code and logit of the engine equals the checkpoint's
    assert summary["verify"]["bit_exact"] and summary["verify"]["checkpoint"]["bit_exact"]
    assert summary["verify"]["agreement_percent"] == 100.0
    if s.csim:  # the HLS kernel implements float nonlinear ops only: skipped for an integer export,
        assert "integer" in summary["csim"]["skipped"]  # which runs on the RTL core instead
        rtl = summary["rtl"]
        assert "skipped" in rtl or (rtl["passed"] and rtl["images"] == 20 and rtl["exact_logits"] == 20)
    report = (out / "report.md").read_text()
    assert "## Chosen subnets" in report and "| met |" in report
    # a rerun skips every finished stage
    lines.clear()
    run_demo(out, s, progress=False, say=lines.append)
    assert sum("done before: skipped" in l for l in lines) == 4 + ("skipped" not in summary.get("rtl", {"skipped": 1}))
    # other settings on the same folder are refused, not silently mixed with the old results
    with pytest.raises(QuasarError, match="platform"):
        run_demo(out, replace(s, search=replace(s.search, platform="kv260")), progress=False, say=lines.append)
    assert json.loads((out / "demo.json").read_text())["settings"]["platform"] == "zcu102"
