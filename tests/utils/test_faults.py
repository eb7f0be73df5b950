"""Faults a long run meets: kill -9 at random points of training, search and export; a full disk while
checkpointing; a non-finite loss; a second process writing the same --out; a corrupt JPEG.  Each must
end with one clear error (or resume exactly) and never lose finished work."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_SPACE, tiny_overrides
from quasar_vit.cli.main import main
from quasar_vit.config import load_config, save_config
from quasar_vit.errors import CheckpointError, TrainingError
from quasar_vit.training import checkpoint as ckpt_mod
from quasar_vit.training.checkpoint import read_checkpoint
from quasar_vit.training.trainer import train_supernet
from quasar_vit.utils.io import atomic_dir, atomic_write_text
from quasar_vit.utils.lock import output_lock


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys, fmnist_available):
    real_save = torch.save
    calls = {"n": 0}

    def save_then_fill_the_disk(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] >= 2:  # the first checkpoint (step 4) is written, the second hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ckpt_mod.torch, "save", save_then_fill_the_disk)
    out = tmp_path / "run"
    sets = [a for o in tiny_overrides(steps=12) for a in ("--set", o)]
    assert main(["train", "--config", "fmnist-tiny", "--out", str(out), "--no-progress", *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "previous one is kept" in err[0]
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert read_checkpoint(out / "last.pt")["step"] == 4  # the good checkpoint survived, readable
    assert not list(out.glob(".last.pt.*.tmp"))  # no half-written file left behind


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, fmnist_available):
    real_ce = torch.nn.functional.cross_entropy
    seen = {"n": 0}

    def nan_from_step_six(*a, **kw):
        seen["n"] += 1
        loss = real_ce(*a, **kw)
        return loss * math.nan if seen["n"] > 5 * 3 else loss  # 3 subnets per step: NaN from step 6 on

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


# ---- kill -9 at random points (scripts/fault_drill.py runs the job as a user would, in subprocesses) ----

ROOT = Path(__file__).resolve().parents[2]
DRILL_TRAIN = [
    a
    for o in TINY_SPACE
    + [
        "train.steps=24",
        "train.batch_size=32",
        "train.warmup_steps=2",
        "train.log_every=2",
        "train.checkpoint_every=2",
        "train.eval_every=8",
        "data.train_limit=512",
        "data.test_limit=256",
        "data.val_size=256",
        "train.sandwich_random=1",
    ]
    for a in ("--set", o)
]


def drill(kind: str, work: Path, *cli_args: str, kills: int = 3, seed: int = 0) -> str:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "fault_drill.py"),
            kind,
            "--kills",
            str(kills),
            "--seed",
            str(seed),
            "--work",
            str(work),
            "--",
            *cli_args,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=work.parent,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("drill passed"), proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def drilled_run(tmp_path_factory, fmnist_available) -> Path:
    """Train kill-9 drill: killed three times, resumed, bitwise equal to the uninterrupted run."""
    work = tmp_path_factory.mktemp("drill") / "train"
    out = drill("train", work, "--config", "fmnist-tiny", *DRILL_TRAIN)
    assert out.count("-> killed") >= 2, out  # the kills landed while the run was going (not after it ended)
    return work / "reference"


@pytest.mark.slow
def test_kill_9_during_training_then_resume_gives_bitwise_the_same_weights(drilled_run):
    assert (drilled_run / "supernet.pt").is_file()


@pytest.mark.slow
def test_kill_9_during_search_then_rerun_gives_the_same_pareto_json(drilled_run, tmp_path):
    out = drill(
        "search",
        tmp_path / "search",
        "--checkpoint",
        str(drilled_run / "supernet.pt"),
        "--population",
        "6",
        "--generations",
        "6",
        "--val-size",
        "100",
        "--set",
        "search.parents=3",
        "--set",
        "search.mutations=3",
        "--set",
        "search.crossovers=3",
        "--set",
        "search.eval_batch_size=100",
        kills=2,
    )
    assert "-> killed" in out, out


@pytest.mark.slow
def test_kill_9_during_export_leaves_it_complete_or_absent(drilled_run, tmp_path):
    out = drill(
        "export",
        tmp_path / "export",
        "--checkpoint",
        str(drilled_run / "supernet.pt"),
        "--subnet",
        "largest",
        "--eval-limit",
        "100",
        kills=2,
        seed=1,
    )
    assert "is complete" in out and "-> killed" in out, out  # a kill hit a re-export over a complete one


def test_a_killed_writers_temporaries_are_removed_and_a_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # has exited: its pid is free (reuse within this test is vanishingly unlikely)
    target = tmp_path / "last.pt"
    stale_file = tmp_path / f".last.pt.{dead_pid}.abc.tmp"
    stale_file.write_bytes(b"half a checkpoint")
    live_file = tmp_path / f".last.pt.{os.getpid()}.xyz.tmp"  # a writer still running (here: this process)
    live_file.write_bytes(b"being written")
    other = tmp_path / ".notes.1.tmp"
    other.write_text("not ours")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and not stale_file.exists() and live_file.exists() and other.exists()

    export = tmp_path / "exp"
    stale_dir = tmp_path / f".exp.{dead_pid}.q.tmp"
    stale_dir.mkdir()
    (stale_dir / "weights.npz").write_bytes(b"x")
    with atomic_dir(export) as tmp:
        (tmp / "export.json").write_text("{}")
    assert (export / "export.json").is_file() and not stale_dir.exists()


def test_an_export_moved_aside_by_a_killed_writer_is_restored(tmp_path):
    """A kill between atomic_dir's two renames leaves only '.NAME.old': the next writer puts it back,
    so a failing re-export leaves the old, complete folder."""
    old = tmp_path / ".exp.old"
    old.mkdir()
    (old / "export.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "exp"):
            raise RuntimeError("the new export fails")
    assert (tmp_path / "exp" / "export.json").is_file() and not old.exists()


# ---- one writer per --out ------------------------------------------------------------------------

HOLD = (
    "import sys, time\nfrom quasar_vit.utils.lock import output_lock\n"
    "with output_lock(sys.argv[1], 'train'):\n    print('locked', flush=True)\n    time.sleep(120)\n"
)


def test_a_second_writer_of_the_same_out_refuses_and_a_killed_owner_leaves_no_stale_lock(
    tmp_path, capsys, fmnist_available
):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        sets = [a for o in tiny_overrides(steps=4) for a in ("--set", o)]
        for argv in (
            ["train", "--config", "fmnist-tiny", "--out", str(out), "--no-progress", *sets],
            ["search", "--checkpoint", str(out), "--out", str(out), "--no-progress"],
        ):
            assert main(argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"in use by train pid {holder.pid}" in err[0], err
        assert not (out / "last.pt").exists() and not (out / "config.yaml").exists()  # nothing was touched
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: no cleanup code runs, the .lock file stays
        holder.wait()
    assert (out / ".lock").is_file()
    with output_lock(out, "train"):  # the kernel released the dead owner's lock
        pass


def test_other_torchrun_ranks_do_not_take_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with output_lock(tmp_path / "run", "train"):
        with output_lock(tmp_path / "run", "train"):  # would refuse if rank 1 locked as well
            pass
    assert not (tmp_path / "run").exists()


def test_resume_after_a_kill_before_the_first_checkpoint_starts_over(tmp_path, capsys, fmnist_available):
    out = tmp_path / "run"
    sets = [a for o in tiny_overrides(steps=4) for a in ("--set", o)]
    out.mkdir()
    save_config(load_config("fmnist-tiny", tiny_overrides(steps=4)), out / "config.yaml")  # what a kill leaves
    (out / "metrics.jsonl").write_text('{"step": 2, "loss_largest": 9.0}\n')
    assert main(["train", "--out", str(out), "--resume", "--no-progress", *sets]) == 0
    assert "no checkpoint yet; starting the run from step 0" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4 and read_checkpoint(out / "supernet.pt")["step"] == 4


# ---- corrupt images ----------------------------------------------------------------------------------


def _image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.jpg", quality=90)
    good = (root / "train" / "dog" / "1.jpg").read_bytes()
    (root / "train" / "dog" / "1.jpg").write_bytes(good[: len(good) // 3])  # truncated, as a failed copy leaves
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_jpeg_is_one_error_naming_the_file(tmp_path, capsys, workers):
    root = _image_folder(tmp_path / "imgs")
    sets = [
        a
        for o in TINY_SPACE
        + [
            f"data.root={root}",
            "data.name=imagefolder",
            "model.geometry.img_size=28",
            "model.geometry.in_chans=3",
            "model.geometry.num_classes=2",
            "data.val_size=2",
            "data.mean=[0.5,0.5,0.5]",
            "data.std=[0.25,0.25,0.25]",
            "train.steps=3",
            "train.batch_size=6",
            f"data.num_workers={workers}",
        ]
        for a in ("--set", o)
    ]
    assert main(["train", "--config", "fmnist-tiny", "--out", str(tmp_path / "run"), "--no-progress", *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot decode image" in err[0] and str(root / "train" / "dog" / "1.jpg") in err[0], err


def test_skip_corrupt_replaces_and_counts_a_corrupt_image(tmp_path, capsys):
    from quasar_vit.data.imagefolder import ImageFolderDataset

    root = _image_folder(tmp_path / "imgs")
    ds = ImageFolderDataset(root / "train", 32, 3, skip_corrupt=True)
    bad = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("dog/1.jpg")][0]
    images = [ds[i][0] for i in range(len(ds))] + [ds[bad][0]]
    assert torch.equal(images[bad], images[bad + 1]) and torch.equal(images[-1], images[bad + 1])
    warnings = [l for l in capsys.readouterr().err.splitlines() if "skipped (data.skip_corrupt)" in l]
    assert len(warnings) == 1 and "dog/1.jpg" in warnings[0] and "1 skipped so far" in warnings[0]
    assert ds.skipped == {ds.samples[bad][0]}
