"""Watching a training run: metrics as CSV beside the JSON lines, a curves plot, plain log lines
when stderr is not a terminal (SLURM, nohup), and TensorBoard when it is installed.

Everything here runs on rank 0 only and never touches the model or the random state, so a run
watched or not computes the same weights.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from quasar_vit.utils.io import atomic_write_text
from quasar_vit.utils.progress import stderr_is_terminal


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (empty when there is none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    """``metrics.csv``: one row per record, columns in first-seen order (blank where a record lacks one)."""
    cols: list[str] = []
    for r in records:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="")
    w.writeheader()
    w.writerows(records)
    atomic_write_text(path, buf.getvalue())


def plot_curves(records: list[dict[str, Any]], path: Path) -> Path | None:
    """``curves.png``: training losses, learning rate and validation top-1 against the step."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for k in ("loss_largest", "loss_smallest", "loss_random", "loss_only"):
        pts = [(r["step"], r[k]) for r in records if k in r]
        if pts:
            axes[0].plot(*zip(*pts), label=k.replace("loss_", ""))
    axes[0].set(title="training loss", xlabel="step")
    axes[0].legend()
    axes[1].plot(steps, [r.get("lr", float("nan")) for r in records])
    axes[1].set(title="learning rate", xlabel="step")
    for k in ("val_top1_largest", "val_top1_smallest"):
        pts = [(r["step"], r[k]) for r in records if k in r]
        if pts:
            axes[2].plot(*zip(*pts), marker="o", label=k.replace("val_top1_", ""))
    axes[2].set(title="validation top-1 %", xlabel="step")
    if any("val_top1_largest" in r for r in records):
        axes[2].legend()
    else:
        axes[2].text(
            0.5, 0.5, "no validation yet\n(train.eval_every)", ha="center", va="center", transform=axes[2].transAxes
        )
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
    return path


def log_line(rec: dict[str, Any], total: int) -> str:
    """One plain progress line for a log record (used instead of a bar when stderr is not a TTY)."""
    parts = [f"step {rec['step']}/{total}", f"epoch {rec.get('epoch', 0)}"]
    parts += [f"{k.replace('loss_', 'loss ')} {v:.4f}" for k, v in rec.items() if k.startswith("loss_")]
    parts += [f"lr {rec['lr']:.3e}", f"{rec.get('img_per_sec', 0):.0f} img/s"]
    parts += [f"val {k.replace('val_top1_', '')} {v:.2f} %" for k, v in rec.items() if k.startswith("val_top1_")]
    return "  ".join(parts)


class TensorBoard:
    """Scalars to ``DIR/tb`` when the ``tensorboard`` package is installed (optional extra), else nothing."""

    def __init__(self, root: Path) -> None:
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # noqa: BLE001 - tensorboard is optional
            return
        self.writer = SummaryWriter(str(root / "tb"))

    def add(self, rec: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in rec.items():
            if k != "step" and isinstance(v, (int, float)):
                self.writer.add_scalar(k, v, rec["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


__all__ = ["read_metrics", "write_csv", "plot_curves", "log_line", "stderr_is_terminal", "TensorBoard"]
