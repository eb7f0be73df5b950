"""Faults a long run meets: a full disk while checkpointing, a non-finite loss.  Each must end with one
clear error and leave the last good checkpoint readable."""
from __future__ import annotations

import errno
import math

import pytest
import torch

from conftest import tiny_overrides
from quasar_vit.cli.main import main
from quasar_vit.config import load_config
from quasar_vit.errors import CheckpointError, TrainingError
from quasar_vit.training import checkpoint as ckpt_mod
from quasar_vit.training.checkpoint import read_checkpoint
from quasar_vit.training.trainer import train_supernet


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys,
                                                                     fmnist_available):
    real_save = torch.save
    calls = {"n": 0}

    def save_then_fill_the_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:   # the first checkpoint (step 4) is written, the second hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt_mod.torch, "save", save_then_fill_the_disk)
    out = tmp_path / "run"
    sets = [a for o in tiny_overrides(steps=12) for a in ("--set", o)]
    assert main(["train", "--config", "fmnist-tiny", "--out", str(out), "--no-progress", *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "previous one is kept" in err[0]
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert read_checkpoint(out / "last.pt")["step"] == 4             # the good checkpoint survived, readable
    assert not list(out.glob(".last.pt.*.tmp"))                      # no half-written file left behind


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                           fmnist_available):
    real_ce = torch.nn.functional.cross_entropy
    seen = {"n": 0}

    def nan_from_step_six(*a, **kw):
        seen["n"] += 1
        loss = real_ce(*a, **kw)
        return loss * math.nan if seen["n"] > 5 * 3 else loss   # 3 subnets per step: NaN from step 6 on

    cfg = load_config("fmnist-tiny", tiny_overrides(steps=12))
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_from_step_six)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 6 .*last\.pt"):
        train_supernet(cfg, tmp_path / "run", progress=False)
    last = read_checkpoint(tmp_path / "run" / "last.pt")
    assert last["step"] == 4 and all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())


def test_checkpoint_write_error_is_a_checkpoint_error(tmp_path, monkeypatch):
    def no_space(*a, **kw):
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(ckpt_mod.torch, "save", no_space)
    with pytest.raises(CheckpointError, match="could not write checkpoint"):
        ckpt_mod.save_checkpoint(tmp_path / "x.pt", {"step": 1})
    assert not (tmp_path / "x.pt").exists() and not list(tmp_path.iterdir())
