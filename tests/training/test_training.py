"""Supernet training: exact resume, run-directory safety, corrupt checkpoints, 2-process gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_overrides
from quasar_vit.cli.main import main
from quasar_vit.config import load_config
from quasar_vit.errors import CheckpointError, QuasarError
from quasar_vit.training.checkpoint import load_supernet, read_checkpoint
from quasar_vit.training.trainer import lr_at, sandwich_subnets, train_supernet


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_exactly(tmp_path, tiny_config):
    straight = tmp_path / "straight"
    train_supernet(tiny_config, straight, progress=False)
    broken = tmp_path / "broken"
    out = train_supernet(tiny_config, broken, progress=False, stop_at=4)
    assert out["stopped_early"] and read_checkpoint(broken / "last.pt")["step"] == 4
    assert not (broken / "supernet.pt").exists()
    train_supernet(tiny_config, broken, resume=True, progress=False)
    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(broken / "last.pt")
    assert a["step"] == b["step"] == tiny_config.train.steps
    assert _states_equal(a["model"], b["model"])
    assert (
        json.loads((straight / "final.json").read_text())["test_top1_largest"]
        == json.loads((broken / "final.json").read_text())["test_top1_largest"]
    )
    # the metrics log holds one record per logged step, none lost or doubled by the restart
    steps = [json.loads(l)["step"] for l in (broken / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8, 12]


def test_training_learns_something(tmp_path, fmnist_available):
    cfg = load_config("fmnist-tiny", tiny_overrides(steps=60) + ["train.lr=0.003"])
    summary = train_supernet(cfg, tmp_path / "run", progress=False)
    # 10 classes: chance is 10 %; 60 small steps already separate the easy classes
    assert summary["test_top1_largest"] > 30.0
    log = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["loss_largest"] < log[0]["loss_largest"] - 0.2


def test_existing_run_is_never_overwritten(tmp_path, tiny_config):
    train_supernet(tiny_config, tmp_path / "r", progress=False, stop_at=4)
    with pytest.raises(QuasarError, match="--resume"):
        train_supernet(tiny_config, tmp_path / "r", progress=False)
    other = load_config("fmnist-tiny", tiny_overrides() + ["train.lr=0.5"])
    with pytest.raises(CheckpointError, match="train.lr differ"):
        train_supernet(other, tmp_path / "r", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train_supernet(tiny_config, tmp_path / "empty", resume=True, progress=False)


def test_corrupt_checkpoint_gives_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_supernet(bad)
    code = main(["eval", "--checkpoint", str(bad), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "not a readable quasar-vit checkpoint" in err and "Traceback" not in err
    assert main(["eval", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a quasar-vit supernet"):
        read_checkpoint(tmp_path / "other.pt")


def test_resume_of_a_checkpoint_with_another_layout_is_one_clear_error(tmp_path, tiny_config):
    from quasar_vit.training.checkpoint import save_checkpoint

    train_supernet(tiny_config, tmp_path / "r", progress=False, stop_at=4)
    ck = read_checkpoint(tmp_path / "r" / "last.pt")
    ck["optimizer"]["param_groups"] = ck["optimizer"]["param_groups"][:2]  # an older two-group optimizer
    save_checkpoint(tmp_path / "r" / "last.pt", ck)
    with pytest.raises(CheckpointError, match="does not match this version"):
        train_supernet(tiny_config, tmp_path / "r", resume=True, progress=False)


def test_checkpoints_load_without_pickled_code(tmp_path, tiny_config):
    train_supernet(tiny_config, tmp_path / "r", progress=False, stop_at=4)
    # weights_only=True refuses anything but tensors and plain containers
    ckpt = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ckpt["step"] == 4 and "optimizer" in ckpt


def test_schedule_and_sandwich():
    cfg = load_config("fmnist-tiny", ["train.steps=100", "train.warmup_steps=10"])
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(cfg.train.lr)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] >= cfg.train.min_lr
    space = cfg.model.space()
    subs = sandwich_subnets(space, 0, 5, 2)
    assert subs[0] == space.largest() and subs[1] == space.smallest() and len(subs) == 4
    assert subs == sandwich_subnets(space, 0, 5, 2)
    assert subs[2:] != sandwich_subnets(space, 0, 6, 2)[2:]


def test_eval_cli(tmp_path, tiny_config, capsys):
    train_supernet(tiny_config, tmp_path / "r", progress=False)
    assert main(["eval", "--checkpoint", str(tmp_path / "r"), "--subnet", "smallest", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 256 and 0 <= out["top1"] <= 100
    assert main(["eval", "--checkpoint", str(tmp_path / "r"), "--subnet", str(tmp_path / "x.json")]) == 2


def test_two_process_gloo_keeps_ranks_identical(tmp_path, fmnist_available):
    """torchrun with 2 CPU processes (gloo): both ranks must end with identical weights."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "quasar_vit.cli.main",
        "train",
        "--config",
        "fmnist-tiny",
        "--out",
        str(out),
        "--no-progress",
        "--device",
        "cpu",
    ] + [a for o in tiny_overrides(steps=6) + ["data.test_limit=255"] for a in ("--set", o)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "final.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert read_checkpoint(out / "supernet.pt")["step"] == 6
    # the test top-1 was summed over the ranks' shards (255 images: uneven shards, so padding would
    # count an image twice): it must equal one process scoring all images
    from quasar_vit.data import BatchTransform, build_datasets
    from quasar_vit.training.evaluate import evaluate_subnet

    net, cfg, _ = load_supernet(out)
    g = cfg.model.geometry
    splits = build_datasets(cfg.data, g.img_size, g.in_chans, g.num_classes, cfg.train.seed)
    tf = BatchTransform.from_config(cfg.data, train=False)
    space = cfg.model.space()
    for name, sub in (("largest", space.largest()), ("smallest", space.smallest())):
        assert len(splits.test) == 255
        assert summary[f"test_top1_{name}"] == evaluate_subnet(net, sub, splits.test, tf, batch_size=100)


def test_only_subnet_trains_that_subnet_alone(tmp_path, tiny_config):
    space = tiny_config.model.space()
    sub = space.smallest()
    summary = train_supernet(tiny_config, tmp_path / "alone", progress=False, only_subnet=sub)
    assert "test_top1_only" in summary and "test_top1_largest" not in summary
    model, _, _ = load_supernet(tmp_path / "alone")
    torch.manual_seed(tiny_config.train.seed)
    from quasar_vit.supernet import build_supernet

    init = build_supernet(tiny_config.model, tiny_config.quant)
    # biases get no weight decay, so a block outside the subnet keeps its initial biases exactly,
    # while the subnet's own biases moved
    deep = space.max_depth - 1
    assert torch.equal(model.blocks[deep].fc1.bias, init.blocks[deep].fc1.bias)
    assert not torch.equal(model.blocks[0].fc1.bias[: sub.mlp_hidden(0)], init.blocks[0].fc1.bias[: sub.mlp_hidden(0)])


def test_resume_accepts_a_moved_data_root_and_logging_changes(tmp_path, tiny_config):
    train_supernet(tiny_config, tmp_path / "r", progress=False, stop_at=4)
    moved = load_config(
        "fmnist-tiny", tiny_overrides() + ["data.root=/usr/share/datasets/fashion-mnist/", "train.log_every=2"]
    )
    summary = train_supernet(moved, tmp_path / "r", resume=True, progress=False)
    assert summary["steps"] == tiny_config.train.steps
    steps = [json.loads(l)["step"] for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[0] == 4 and steps[-1] == 12


def test_quantizer_steps_follow_their_own_learning_rate(tmp_path, fmnist_available):
    """``train.quant_step_lr_scale=0`` freezes every weight step while the weights still learn."""
    from quasar_vit.supernet import build_supernet
    from quasar_vit.training.trainer import param_groups

    cfg = load_config("fmnist-tiny", tiny_overrides(steps=4) + ["train.quant_step_lr_scale=0"])
    torch.manual_seed(cfg.train.seed)
    init = build_supernet(cfg.model, cfg.quant)
    groups = param_groups(init, 0.05, 0.1)
    step_ids = {id(p) for n, p in init.named_parameters() if n.endswith(("step", "step_lo", "step_hi"))}
    assert {id(p) for p in groups[2]["params"]} == step_ids and groups[2]["lr_scale"] == 0.1
    assert not step_ids & {id(p) for g in groups[:2] for p in g["params"]}

    train_supernet(cfg, tmp_path / "run", progress=False)
    model, _, _ = load_supernet(tmp_path / "run")
    fc1, fc1_init = model.blocks[0].fc1, init.blocks[0].fc1
    assert torch.equal(fc1.step_lo, fc1_init.step_lo) and torch.equal(fc1.step_hi, fc1_init.step_hi)
    assert not torch.equal(fc1.weight, fc1_init.weight)


def test_config_rejects_a_negative_quantizer_step_lr_scale():
    from quasar_vit.errors import ConfigError

    with pytest.raises(ConfigError, match="quant_step_lr_scale"):
        load_config("fmnist-tiny", ["train.quant_step_lr_scale=-1"])


GLOO_TEARDOWN = r"""
import os, torch
from quasar_vit.training.distributed import cleanup, init_distributed
import torch.distributed as dist
init_distributed("cpu")
p = torch.nn.Parameter(torch.ones(4))
torch.optim.AdamW([p])        # imports torch._dynamo lazily, as the trainer does
t = torch.ones(1)
dist.all_reduce(t)
cleanup()

def gloo_threads():
    n = 0
    for i in os.listdir("/proc/self/task"):
        try:   # a thread may end between listing and reading
            n += open(f"/proc/self/task/{i}/comm").read().startswith(("gloo", "pt_gloo"))
        except OSError:
            pass
    return n

import time
for _ in range(40):   # threads that are already ending get 2 s; without the fix they live until exit
    if gloo_threads() == 0:
        break
    time.sleep(0.05)
with open(os.path.join(os.environ["OUT_DIR"], "rank" + os.environ["RANK"]), "w") as f:   # one file per rank
    f.write(str(gloo_threads()))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_cleanup_really_stops_gloo_threads(tmp_path):
    """After cleanup() no gloo thread may survive to be torn down during interpreter exit (the cause
    of a rank's SIGABRT 'terminate called without an active exception' at the end of training)."""
    script = tmp_path / "teardown.py"
    script.write_text(GLOO_TEARDOWN)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    proc = subprocess.run(
        cmd,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OUT_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = [int((tmp_path / f"rank{r}").read_text()) for r in (0, 1)]  # gloo threads alive after cleanup
    assert counts == [0, 0]


def test_resume_as_people_expect(tmp_path, capsys, fmnist_available):
    """--resume needs no --config; a finished run says so and exits at once; train.steps may grow
    (extending the run); any other changed key is refused by name; steps cannot shrink."""
    out = tmp_path / "run"
    sets = [a for o in tiny_overrides(steps=4) for a in ("--set", o)]
    assert main(["train", "--config", "fmnist-tiny", "--out", str(out), "--no-progress", *sets]) == 0
    final = (out / "final.json").read_bytes()
    capsys.readouterr()
    # finished, nothing to do: exit 0, final evaluation not re-run
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "final.json").read_bytes() == final
    # another changed key: refused by name
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "--set", "train.lr=0.1"]) == 2
    assert "train.lr" in capsys.readouterr().err
    # extend to 8 steps: continues from step 4 with the warm-down re-planned
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "--set", "train.steps=8"]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 8 and read_checkpoint(out / "supernet.pt")["step"] == 8
    steps = [json.loads(l)["step"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [4, 8]
    # shrinking is refused
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "--set", "train.steps=6"]) == 2
    assert "below the run's planned 8" in capsys.readouterr().err
    # no --config and no run: one clear error
    assert main(["train", "--out", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "--config is required" in capsys.readouterr().err


def test_watchable_training_without_a_terminal(tmp_path, fmnist_available):
    """train.eval_every scores the largest and smallest subnet on validation; metrics.csv and curves.png
    are written; with stderr not a terminal, plain log lines replace the bar; watching changes no weight."""
    runs = {}
    for name, extra in (("watched", ["train.eval_every=4"]), ("plain", [])):
        out = tmp_path / name
        sets = [a for o in tiny_overrides(steps=8) + extra for a in ("--set", o)]
        proc = subprocess.run(
            [sys.executable, "-m", "quasar_vit.cli.main", "train", "--config", "fmnist-tiny", "--out", str(out), *sets],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[name] = (out, proc.stderr)
    out, err = runs["watched"]
    assert "\r" not in err and "step 4/8" in err and "step 8/8" in err and "val largest" in err
    header, *rows = (out / "metrics.csv").read_text().splitlines()
    assert {"val_top1_largest", "val_top1_smallest", "loss_largest", "lr"} <= set(header.split(","))
    assert len(rows) == 2 and (out / "curves.png").stat().st_size > 1000
    a = read_checkpoint(out / "supernet.pt")["model"]
    b = read_checkpoint(runs["plain"][0] / "supernet.pt")["model"]
    assert _states_equal(a, b)
