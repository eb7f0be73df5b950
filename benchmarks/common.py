"""What several benchmark scripts share: the results folder, machine info, error and results output,
test batches and models built from a config, supernet training runs, step timing, hardware-model speed.

The scripts run as ``python benchmarks/NAME.py``, so Python puts this folder first on ``sys.path``
and ``import common`` (or a sibling script such as ``import search``) needs no path manipulation.
Every line that depends on the package's model or config API is here, so an API change is made
once for all benchmarks.  torch is imported lazily: the hardware-only scripts do not need it.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quasar_vit.utils.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    import torch

    from quasar_vit.config import ExperimentConfig as Config
    from quasar_vit.hardware.platforms import Platform
    from quasar_vit.space import SubnetConfig

#: where every benchmark writes its JSON (and Markdown) results
RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on (threads torch uses, OS, Python and torch versions)."""
    import torch

    return {
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }


def today() -> str:
    """The date stamped on results (YYYY-MM-DD)."""
    return time.strftime("%Y-%m-%d")


def argv_string(argv: Sequence[str] | None) -> str:
    """The arguments a script was called with, for the command line recorded beside its results.

    Args:
        argv: what ``main`` received; ``None`` means the process's own ``sys.argv``.

    Returns:
        The arguments joined by spaces.
    """
    return " ".join(sys.argv[1:] if argv is None else argv)


def user_error(script: str, exc: Exception) -> int:
    """Print a user error as one line naming the script, and return the exit status 2."""
    print(f"benchmarks/{script}: {exc}", file=sys.stderr)
    return 2


def write_results(path: str | Path, data: Any, markdown: str | None = None) -> None:
    """Write ``data`` as JSON to ``path`` (atomically) and, if given, ``markdown`` beside it as ``.md``."""
    path = Path(path)
    atomic_write_json(path, data)
    if markdown is not None:
        atomic_write_text(path.with_suffix(".md"), markdown)


# ---- models and data from a config ----------------------------------------------------------------
def random_batch(cfg: Config, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and labels of the config's geometry (from torch's global RNG), for timing."""
    import torch

    g = cfg.model.geometry
    x = torch.randn(batch, g.in_chans, g.img_size, g.img_size)
    y = torch.randint(0, g.num_classes, (batch,))
    return x, y


def fp32_model(cfg: Config, subnet: SubnetConfig) -> torch.nn.Module:
    """``subnet`` as a plain fixed FP32 model (no quantizers): the baseline the supernet is timed against."""
    from quasar_vit.config import QuantConfig
    from quasar_vit.models import QuantViT

    return QuantViT(subnet, QuantConfig(enabled=False), cfg.model.layer_scale)


def eval_splits(cfg: Config) -> Any:
    """The train/val/test splits of ``cfg``'s data set, split with its training seed (as training did)."""
    from quasar_vit.data import build_datasets

    g = cfg.model.geometry
    return build_datasets(cfg.data, g.img_size, g.in_chans, g.num_classes, cfg.train.seed)


def train_or_resume(cfg: Config, out: Path, only_subnet: SubnetConfig | None = None) -> dict[str, Any]:
    """Train the supernet of ``cfg`` in ``out`` (or ``only_subnet`` alone), resuming an interrupted run.

    Args:
        cfg: the experiment config.
        out: the run folder; a finished run there (``final.json``) is reused as it is.
        only_subnet: train this architecture alone instead of the supernet.

    Returns:
        The run's final summary (``final.json``).
    """
    from quasar_vit.training.trainer import train_supernet

    if (out / "final.json").is_file():
        return json.loads((out / "final.json").read_text())
    return train_supernet(cfg, out, resume=(out / "last.pt").is_file(), progress=True, only_subnet=only_subnet)


def time_steps(cfg: Config, reps: int, batch: int) -> dict[str, float]:
    """Median seconds of: supernet sandwich step, largest subnet pass in the supernet, FP32 step.

    The three are interleaved, so that load changes on a shared machine hit all of them alike.
    """
    import torch
    import torch.nn.functional as F

    from quasar_vit.supernet import build_supernet
    from quasar_vit.training.trainer import calibrate_supernet, sandwich_subnets

    torch.manual_seed(0)
    space = cfg.model.space()
    supernet = build_supernet(cfg.model, cfg.quant).train()
    fp32 = fp32_model(cfg, space.largest()).train()
    x, y = random_batch(cfg, batch)
    calibrate_supernet(supernet, x, space)

    def sandwich(step: int) -> None:
        for sub in sandwich_subnets(space, 0, step, cfg.train.sandwich_random):
            F.cross_entropy(supernet(x, sub), y).backward()

    def largest(_: int) -> None:
        F.cross_entropy(supernet(x, space.largest()), y).backward()

    def plain(_: int) -> None:
        F.cross_entropy(fp32(x), y).backward()

    fns = {"supernet_step": sandwich, "supernet_largest_pass": largest, "fp32_step": plain}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up
        fn(0)
    for r in range(reps):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(r + 1)
            times[name].append(time.perf_counter() - t)
            supernet.zero_grad(set_to_none=True)
            fp32.zero_grad(set_to_none=True)
    return {k: statistics.median(v) for k, v in times.items()}


# ---- hardware model --------------------------------------------------------------------------------
def hardware_model_speed(
    plat: Platform, evaluated: Sequence[SubnetConfig], explored: Sequence[SubnetConfig], design: Any
) -> dict[str, float]:
    """How fast the hardware model runs on this machine.

    Args:
        plat: the board.
        evaluated: subnets costed on the fixed ``design`` (``hardware.evaluate``).
        explored: subnets whose design space is explored (``hardware.explore``), one by one.
        design: the fixed design of the evaluations.

    Returns:
        ``evaluations_per_second``, and the median and maximum ``explore`` time in milliseconds.
    """
    from quasar_vit.hardware import evaluate, explore

    t = time.perf_counter()
    for s in evaluated:
        evaluate(s, plat, design)
    rate = len(evaluated) / (time.perf_counter() - t)
    times = []
    for s in explored:
        t = time.perf_counter()
        explore(s, plat)
        times.append(time.perf_counter() - t)
    return {
        "evaluations_per_second": rate,
        "explore_ms_median": 1e3 * statistics.median(times),
        "explore_ms_max": 1e3 * max(times),
    }
