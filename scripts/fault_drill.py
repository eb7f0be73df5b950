#!/usr/bin/env python
"""Kill quasar-vit with SIGKILL at random moments and check that nothing is lost.

Three drills, each against an uninterrupted reference run of the same command:

* ``train``  -- kill ``train`` K times at random points, ``--resume`` after each; the final weights
  (``supernet.pt``) must be bitwise equal to the reference, and ``metrics.jsonl`` must log the same
  steps with the same losses.
* ``search`` -- kill ``search`` K times, re-run the same command (a search resumes its own state);
  ``pareto.json`` must equal the reference's, wall-clock fields aside.
* ``export`` -- kill ``export`` K times; after each kill the folder must be absent or a complete
  export (every file of ``export.json`` present), and a later export must still succeed.

Kill points: a training or search run is killed once its progress on disk (logged step, finished
generation) reaches a random point, after a random extra delay of up to 0.5 s, so kills land in steps,
evaluations and checkpoint or state writes alike; an export is killed at a random time.  The tests run each drill small (tests/test_faults.py);
run it larger by hand, e.g.::

    python scripts/fault_drill.py train --kills 10 --work /tmp/drill -- --config fmnist-tiny \\
        --set train.steps=600 --set train.checkpoint_every=50

Prints one line per kill and ``drill passed`` / ``drill FAILED: ...``; exit 0 only when it passed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

CLI = [sys.executable, "-m", "quasar_vit"]


def run_cli(args: list[str]) -> float:
    """Run ``quasar-vit ARGS`` to the end; returns its wall time.  A failure ends the drill."""
    t0 = time.monotonic()
    proc = subprocess.run(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"drill FAILED: quasar-vit {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
        )
    return time.monotonic() - t0


def run_and_kill(args: list[str], ready: Callable[[], bool], delay: float) -> bool:
    """Start ``quasar-vit ARGS``; once ``ready()`` holds, wait ``delay`` s and SIGKILL it.

    Returns False when the job ended before the kill (a failure then ends the drill).
    """
    proc = subprocess.Popen(CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        if ready():
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
        time.sleep(0.02)
    if proc.returncode != 0:
        raise SystemExit(
            f"drill FAILED: quasar-vit {' '.join(args)} exited {proc.returncode}: "
            f"{proc.stderr.read().strip()[-500:] if proc.stderr else ''}"
        )
    return False


def kill_loop(
    args: list[str],
    resume_args: list[str],
    progress: Callable[[], int],
    points: list[int],
    rng: random.Random,
    after_kill: Callable[[int], None] = lambda i: None,
) -> None:
    """Run ``args``; kill it once ``progress()`` reaches each of ``points`` (plus a random delay of up to
    0.5 s, so kills also land inside checkpoint and state writes), re-running ``resume_args`` after each
    kill; then run ``resume_args`` to the end."""
    for i, point in enumerate(points):
        delay = rng.uniform(0.0, 0.5)
        at_launch = progress()  # each run must make progress of its own before its kill: not a kill at import
        killed = run_and_kill(args if i == 0 else resume_args, lambda: progress() >= max(point, at_launch + 1), delay)
        print(
            f"kill {i + 1}/{len(points)}: at progress {point} + {delay:.2f} s -> "
            f"{'killed' if killed else 'had already finished'} (progress on disk now {progress()})",
            flush=True,
        )
        after_kill(i)
    run_cli(resume_args if points else args)


def kill_points(rng: random.Random, total: int, kills: int) -> list[int]:
    """``kills`` increasing progress values in 1 .. total-1 (with repeats when total is small)."""
    return sorted(rng.randrange(1, max(total, 2)) for _ in range(kills))


def tensors_equal(a: Path, b: Path) -> list[str]:
    """Names of the model tensors that differ between two checkpoints (bitwise)."""
    import torch

    ma = torch.load(a, map_location="cpu", weights_only=True)["model"]
    mb = torch.load(b, map_location="cpu", weights_only=True)["model"]
    if ma.keys() != mb.keys():
        return ["<different keys>"]
    return [k for k in ma if not torch.equal(ma[k], mb[k])]


def loss_log(run: Path) -> list[tuple[Any, ...]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], *sorted((k, v) for k, v in r.items() if k.startswith(("loss_", "val_")))) for r in rows]


def logged_step(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return int(json.loads(lines[-1])["step"]) if lines else 0
    except (OSError, ValueError, KeyError):  # not written yet, or a line being written
        return 0


def drill_train(work: Path, cli_args: list[str], kills: int, rng: random.Random) -> list[str]:
    ref, run = work / "reference", work / "killed"
    run_cli(["train", "--out", str(ref), "--no-progress", *cli_args])
    points = kill_points(rng, logged_step(ref), kills)
    kill_loop(
        ["train", "--out", str(run), "--no-progress", *cli_args],
        ["train", "--out", str(run), "--resume", "--no-progress"],
        lambda: logged_step(run),
        points,
        rng,
    )
    problems = [
        f"weights differ: {', '.join(d[:5])}" for d in [tensors_equal(ref / "supernet.pt", run / "supernet.pt")] if d
    ]
    if loss_log(ref) != loss_log(run):
        problems.append("metrics.jsonl differs from the uninterrupted run's")
    leftovers = sorted(p.name for p in run.glob(".*.tmp"))
    if leftovers:
        problems.append(f"temporary files left behind: {leftovers}")
    return problems


def without_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if "seconds" not in k and k != "elapsed_s"}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def generations_done(out: Path) -> int:
    try:
        return int(json.loads((out / "search_state.json").read_text())["generation"])
    except (OSError, ValueError, KeyError):
        return 0


def drill_search(work: Path, cli_args: list[str], kills: int, rng: random.Random) -> list[str]:
    ref, run = work / "reference", work / "killed"
    run_cli(["search", "--out", str(ref), "--no-progress", "--no-plot", *cli_args])
    args = ["search", "--out", str(run), "--no-progress", "--no-plot", *cli_args]
    kill_loop(args, args, lambda: generations_done(run), kill_points(rng, generations_done(ref), kills), rng)
    a, b = (without_timing(json.loads((d / "pareto.json").read_text().replace(str(d), "OUT"))) for d in (ref, run))
    return [] if a == b else ["pareto.json differs from the uninterrupted search's"]


def export_state(out: Path) -> str:
    """'absent', 'complete' or a description of what is wrong."""
    if not out.exists():
        return "absent"
    info = out / "export.json"
    if not info.is_file():
        return f"incomplete: no export.json (holds {sorted(p.name for p in out.iterdir())})"
    missing = [f for f in json.loads(info.read_text())["files"] if not (out / f).exists()]
    return f"incomplete: missing {missing}" if missing else "complete"


def drill_export(work: Path, cli_args: list[str], kills: int, rng: random.Random) -> list[str]:
    """Kill points are times (an export has no progress file): uniform over the reference's duration.

    The first kill hits a first export (the folder must then be absent or complete); the others hit
    ``--force`` re-exports over a complete one (which must stay complete: the old or the new)."""
    out = work / "killed"
    duration = run_cli(["export", "--out", str(work / "reference"), *cli_args])
    problems: list[str] = []

    def check(i: int) -> None:
        state = export_state(out)
        print(f"  after kill {i + 1}: {out.name} is {state}", flush=True)
        if state not in ("absent", "complete"):
            problems.append(f"after kill {i + 1}: {state}")

    args = ["export", "--out", str(out), "--force", *cli_args]
    times = sorted(rng.uniform(0.05, 0.95) * duration for _ in range(kills))
    for i, when in enumerate(times):
        start = time.monotonic()
        killed = run_and_kill(args, lambda: time.monotonic() - start >= when, 0.0)
        print(f"kill {i + 1}/{kills}: at {when:.2f} s -> {'killed' if killed else 'had already finished'}", flush=True)
        check(i)
        if i == 0:
            run_cli(args)  # later kills hit a re-export over a complete one, which must survive them
    run_cli(args)
    if export_state(out) != "complete":
        problems.append(f"the final export is {export_state(out)}")
    leftovers = sorted(p.name for p in out.parent.glob(f".{out.name}.*") if not p.name.endswith(".lock"))
    if leftovers:
        problems.append(f"temporaries left behind: {leftovers}")
    return problems


DRILLS = {"train": drill_train, "search": drill_search, "export": drill_export}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s {train,search,export} [--kills K] --work DIR -- QUASAR_VIT_ARGS",
    )
    ap.add_argument("drill", choices=sorted(DRILLS))
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    ap.add_argument("--work", required=True, help="scratch directory (emptied first)")
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    a = ap.parse_args(argv[:cut])
    cli_args = argv[cut + 1 :]  # after --: the quasar-vit arguments of the job, without --out
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ.setdefault("OMP_NUM_THREADS", "2")  # same threads in every run: same float reductions
    problems = DRILLS[a.drill](work, cli_args, a.kills, random.Random(a.seed))
    print("drill passed" if not problems else "drill FAILED: " + "; ".join(problems), flush=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
