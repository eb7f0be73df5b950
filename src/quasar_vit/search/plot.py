"""``pareto.png``: validation accuracy vs FPS of the search and its baselines, targets marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLES = {
    "flexible": ("C0", "o"),
    "random": ("C7", "x"),
    "uniform8": ("C3", "s"),
    "uniform4": ("C2", "^"),
    "fixed": ("C1", "D"),
}


def _style(mode: str) -> tuple[str, str]:
    return STYLES.get(mode.split(":")[0], ("C4", "v"))


def _step(front: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    pts = sorted((f["fps"], f["val_top1"]) for f in front)
    xs, ys = [], []
    for i, (x, y) in enumerate(pts):
        if i:
            xs.append(pts[i - 1][0])
            ys.append(y)
        xs.append(x)
        ys.append(y)
    return xs, ys


def _mark_targets(ax: Any, targets: list[dict[str, Any]]) -> None:
    """A dotted line per target (red when not met), its name, and a ring around its winner."""
    for t in targets:
        met = t.get("status") == "met"
        ax.axvline(t["target_fps"], color="k" if met else "r", ls=":", lw=1, zorder=2)
        ax.annotate(
            t["name"] + ("" if met else " (not met)"),
            (t["target_fps"], 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
        )
        if met:
            ax.scatter([t["fps"]], [t["val_top1"]], s=90, facecolors="none", edgecolors="k", zorder=5)


def plot_pareto(result: dict[str, Any], path: str | Path) -> Path:
    """Draw the fronts of ``result`` (the ``pareto.json`` dict) into ``path`` (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    runs = [(result.get("mode", "flexible"), result)] + list(result.get("baselines", {}).items())
    for i, (mode, r) in enumerate(runs):
        color, marker = _style(mode)
        meas = r.get("measured") or []
        if meas and i == 0:
            ax.scatter(
                [m[1] for m in meas],
                [m[0] for m in meas],
                s=8,
                color="0.8",
                zorder=1,
                label=f"{mode}: all measured ({len(meas)})",
            )
        front = r.get("front") or []
        if not front:
            continue
        xs, ys = _step(front)
        hv = r.get("hypervolume_normalized")
        label = f"{mode} front" + (f" (HV {hv:.3f})" if hv is not None else "")
        ax.plot(xs, ys, color=color, lw=1.5 if i == 0 else 1.0, ls="-" if i == 0 else "--", zorder=3)
        ax.scatter(
            [f["fps"] for f in front],
            [f["val_top1"] for f in front],
            color=color,
            marker=marker,
            s=30 if i == 0 else 20,
            zorder=4,
            label=label,
        )
    _mark_targets(ax, result.get("targets", []))
    ax.set_xlabel(f"throughput on {result.get('platform', '?')} (FPS, batch 1)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title("accuracy / throughput Pareto fronts")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path = Path(path)
    from quasar_vit.utils.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


__all__ = ["plot_pareto"]
