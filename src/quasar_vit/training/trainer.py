"""One-shot supernet training with sandwich sampling and in-place distillation.

Each step runs the largest subnet (all 8-bit, trained on the labels), the smallest (all 4-bit),
and ``train.sandwich_random`` uniformly random subnets; all but the largest learn from the
largest's soft predictions (in-place distillation).  The paper trains with knowledge distillation
but leaves the sampling rule and the teacher open; sandwich + in-place teacher is the documented
default (BigNAS/OFA practice) because it trains both ends of the latency range the search needs.

Reproducibility and exact resume: everything random in a step (subnet draws, augmentation,
stochastic depth) is seeded from ``(seed, step)``, and the data order from ``(seed, epoch)``, so
a run resumed from a checkpoint continues on the same batches, subnets and random numbers.

Targets may be soft: with Mixup/CutMix (``data.recipe: deit``) the largest subnet learns from the
mixed label distributions and the others from its predictions on the same mixed images, so the
in-place teacher sees exactly what its students see.  ``train.accum_steps`` splits a batch into
micro-batches (each with its own teacher pass) whose gradients add up to the whole batch's;
``train.amp`` runs the forward passes under autocast (:mod:`.amp`).
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quasar_vit.config import ExperimentConfig, save_config
from quasar_vit.errors import CheckpointError, QuasarError, TrainingError
from quasar_vit.quantization import calibrate
from quasar_vit.space import SearchSpace, SubnetConfig
from quasar_vit.supernet import SuperViT, build_supernet
from quasar_vit.training.amp import Precision, resolve_precision
from quasar_vit.training.checkpoint import checkpoint_config, read_checkpoint, save_checkpoint
from quasar_vit.training.watch import TensorBoard, log_line, plot_curves, read_metrics, stderr_is_terminal, write_csv
from quasar_vit.training.distributed import (
    DistInfo,
    all_reduce_gradients,
    barrier,
    broadcast_module,
    cleanup,
    init_distributed,
)
from quasar_vit.training.evaluate import evaluate_subnet
from quasar_vit.utils.io import append_jsonl, atomic_write_json
from quasar_vit.utils.lock import locks_output


def lr_at(step: int, cfg: ExperimentConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr`` at ``train.steps``."""
    t = cfg.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    return (seed * 1_000_003 + step * 7919 + salt * 104_729) % (2**63 - 1)


def sandwich_subnets(space: SearchSpace, seed: int, step: int, n_random: int) -> list[SubnetConfig]:
    """Largest, smallest and ``n_random`` random subnets; the same on every rank for a step."""
    rng = random.Random(step_seed(seed, step, 1))
    ends = [space.largest()] if space.largest() == space.smallest() else [space.largest(), space.smallest()]
    return ends + [space.sample(rng) for _ in range(n_random)]


def param_groups(model: nn.Module, weight_decay: float, step_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """Decayed weights; biases, norms, layer scales, embeddings without decay; quantizer steps
    without decay and with their own LR multiplier (``lr_scale``, see ``train.quant_step_lr_scale``)."""
    decay, no_decay, steps = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "step" in name.split(".")[-1]:
            steps.append(p)
        elif p.dim() < 2 or name.endswith(("pos_embed", "cls_token")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": steps, "weight_decay": 0.0, "lr_scale": step_lr_scale},
    ]


def distill_loss(student: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """Soft cross-entropy against the teacher's (temperature-softened) probabilities."""
    logp = F.log_softmax(student / temperature, dim=-1)
    return -(teacher_probs * logp).sum(dim=-1).mean() * temperature**2


def sandwich_backward(
    forward: Any,
    x: Tensor,
    targets: Tensor,
    subnets: list[SubnetConfig],
    cfg: ExperimentConfig,
    precision: Precision,
    distill: bool,
    where: str,
    hint: str = "",
) -> dict[str, float]:
    """Forward and backward of every subnet of a step; the gradients accumulate in ``.grad``.

    ``targets`` are class indices or soft ``[B, K]`` distributions (Mixup/CutMix); label smoothing
    applies to either, as timm's mixup targets do.  The batch is cut into ``train.accum_steps``
    equal micro-batches, each loss divided by their number: the summed gradient is the whole
    batch's (each micro-batch has its own teacher pass, and the teacher is per image anyway).
    A non-finite loss raises :class:`TrainingError` naming ``where`` and the subnet, followed by
    ``hint``; the losses are checked together after the last backward (one device-to-host copy per
    step instead of one per subnet), still before the optimizer could spread them into the weights.

    Args:
        forward: the model (or its compiled form), called as ``forward(x, subnet)``.
        x: the step's (augmented) input batch.
        targets: class indices ``[B]`` or soft targets ``[B, K]``.
        subnets: the step's subnets, the largest (the in-place teacher) first.
        cfg: the run's config (``train.*`` loss settings and ``accum_steps``).
        precision: autocast and loss scaling (:mod:`.amp`).
        distill: whether the subnets after the first learn from its predictions.
        where: where the step is, for the error message ("at step 12").
        hint: what to do about a non-finite loss, appended to the error message.

    Returns:
        The mean loss of the largest (``"largest"``), the smallest (``"smallest"``) and the random
        subnets (``"random"``), each present when such subnets ran.
    """
    t = cfg.train
    accum = t.accum_steps
    done: list[Tensor] = []
    for xc, tc in zip(x.chunk(accum), targets.chunk(accum)):
        teacher_probs = None
        for i, sub in enumerate(subnets):
            with precision.autocast():
                logits = forward(xc, sub)
            logits = logits.float()
            if i == 0 or not distill:
                loss = F.cross_entropy(logits, tc, label_smoothing=t.label_smoothing)
                if i == 0:
                    teacher_probs = F.softmax(logits.detach() / t.distill_temperature, dim=-1)
            else:
                assert teacher_probs is not None  # set by the first subnet (i == 0) of this chunk
                loss = distill_loss(logits, teacher_probs, t.distill_temperature)
            precision.backward(loss / accum if accum > 1 else loss)
            done.append(loss.detach())
    return _mean_losses(torch.stack(done).tolist(), subnets, accum, where, hint)


def _mean_losses(
    values: list[float], subnets: list[SubnetConfig], accum: int, where: str, hint: str
) -> dict[str, float]:
    """Per-kind mean of the losses in the order :func:`sandwich_backward` computed them (subnets
    within micro-batches); the first non-finite one raises :class:`TrainingError`."""
    losses: dict[str, float] = {}
    for j, value in enumerate(values):
        i = j % len(subnets)
        if not math.isfinite(value):  # stop before the optimizer spreads it into the weights
            raise TrainingError(f"non-finite loss ({value}) {where} for subnet {subnets[i].describe()}; {hint}")
        key = "largest" if i == 0 else "smallest" if i == 1 else "random"
        losses[key] = losses.get(key, 0.0) + value / (1 if i < 2 else len(subnets) - 2) / accum
    return losses


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    elapsed: float = 0.0


class RunDir:
    """Paths inside a training run's output directory."""

    def __init__(self, out: str | Path) -> None:
        self.root = Path(out)
        self.last = self.root / "last.pt"
        self.final = self.root / "supernet.pt"
        self.config = self.root / "config.yaml"
        self.metrics = self.root / "metrics.jsonl"
        self.summary = self.root / "final.json"


def calibrate_supernet(model: SuperViT, x: Tensor, space: SearchSpace) -> None:
    """Initialise every activation quantizer's step from one batch (LSQ init), largest subnet first;
    the smallest subnet's pass reaches any quantizer the largest one does not use."""
    calibrate(model, x, space.largest())
    calibrate(model, x, space.smallest())


@dataclass
class TrainJob:
    """Everything a training step reads, built once before the first step (:func:`_build_job`)."""

    cfg: ExperimentConfig
    info: DistInfo
    run: RunDir
    space: SearchSpace
    splits: Any
    model: SuperViT
    optimizer: torch.optim.Optimizer
    forward: Any
    precision: Precision
    transform: Any
    batches: Iterator[tuple[int, tuple[Tensor, Tensor]]]
    only_subnet: SubnetConfig | None = None

    @property
    def params(self) -> list[nn.Parameter]:
        """The trainable parameters, in model order (what is all-reduced and clipped)."""
        return [p for p in self.model.parameters() if p.requires_grad]


@dataclass
class StepResult:
    """What one optimizer step reports to the log."""

    losses: dict[str, float]
    lr: float
    epoch: int
    images: int  # this rank's images in the step


@locks_output("train", "out")
def train_supernet(
    cfg: ExperimentConfig,
    out: str | Path,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    stop_at: int | None = None,
    only_subnet: SubnetConfig | None = None,
) -> dict[str, Any]:
    """Train the supernet described by ``cfg`` into ``out``.

    ``out`` receives ``config.yaml``, ``metrics.jsonl`` (JSON lines), ``last.pt`` (atomic,
    every ``train.checkpoint_every`` steps), ``supernet.pt`` and ``final.json`` at the end.
    Only one process may write ``out`` at a time (``utils.lock``): a second one gets a
    :class:`BusyError`.

    Args:
        cfg: the experiment (model, quantization, data and training settings).
        out: the run directory.
        resume: continue the run in ``out`` exactly where its last checkpoint left it.
        device: ``cpu``, ``cuda``, ``cuda:N`` or None for the default (under torchrun, each
            rank's own GPU).
        progress: show a progress bar (log lines instead when stderr is not a terminal).
        stop_at: end this invocation after that many steps (with a checkpoint), as a kill would;
            ``resume=True`` then continues exactly.
        only_subnet: train that one subnet alone (no sandwich, no distillation) with the same
            schedule, data and code path: the "trained alone" baseline that shows what weight
            sharing costs.

    Returns:
        The final summary (steps, training time, test top-1 of the largest and smallest subnets,
        or of ``only_subnet``), also written to ``final.json``; ``{"steps": N, "stopped_early":
        True}`` when ``stop_at`` ended the invocation.
    """
    info = init_distributed(device)
    run = RunDir(out)
    ckpt = _open_checkpoint(cfg, run, resume, info)
    if ckpt is not None and _already_finished(ckpt, cfg, run, info):
        cleanup()
        return load_summary(run.root)
    state = _resumed_state(ckpt, info)
    job = _build_job(cfg, run, info, state, ckpt, only_subnet)
    _restore_or_init(job, ckpt)
    if _train_loop(job, state, progress, stop_at):
        return {"steps": state.step, "stopped_early": True}
    return _finish(job, state, progress)


def _open_checkpoint(cfg: ExperimentConfig, run: RunDir, resume: bool, info: DistInfo) -> dict[str, Any] | None:
    """The checkpoint a resumed run continues from, or None for a new run (refused over an old one)."""
    if resume and not run.last.is_file() and run.config.is_file() and not run.final.is_file():
        # killed before its first checkpoint: nothing to continue from, so the run starts over
        if info.is_main:
            print(f"{run.root}: no checkpoint yet; starting the run from step 0", file=sys.stderr)
            run.metrics.unlink(missing_ok=True)  # the killed attempt's lines would repeat its steps
        resume = False
    if not resume:
        if run.last.is_file() or run.final.is_file():
            raise QuasarError(
                f"{run.root} already holds a training run; pass --resume to continue it or choose another --out"
            )
        return None
    if not run.last.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {run.last}")
    ckpt = read_checkpoint(run.last, map_location="cpu")
    check_resumable(checkpoint_config(ckpt), cfg, run, int(ckpt["step"]))
    return ckpt


def _already_finished(ckpt: dict[str, Any], cfg: ExperimentConfig, run: RunDir, info: DistInfo) -> bool:
    """True (and says so) when a resumed run has nothing left to do."""
    if int(ckpt["step"]) >= cfg.train.steps and run.final.is_file() and run.summary.is_file():
        if info.is_main:
            print(
                f"{run.root}: the run already finished at step {ckpt['step']} (train.steps={cfg.train.steps}); "
                "nothing to do (raise train.steps with --set to extend it)"
            )
        return True
    return False


def _resumed_state(ckpt: dict[str, Any] | None, info: DistInfo) -> TrainState:
    """The step, epoch and time a run starts from; a resume must keep the number of processes."""
    if ckpt is None:
        return TrainState()
    saved_world = int(ckpt.get("world_size", info.world_size))
    if saved_world != info.world_size:
        raise CheckpointError(
            f"--resume: the run was trained on {saved_world} process(es), now "
            f"{info.world_size}; the global batch and data order would change"
        )
    return TrainState(int(ckpt["step"]), int(ckpt.get("epoch", 0)), float(ckpt.get("elapsed", 0.0)))


def _build_job(
    cfg: ExperimentConfig,
    run: RunDir,
    info: DistInfo,
    state: TrainState,
    ckpt: dict[str, Any] | None,
    only_subnet: SubnetConfig | None,
) -> TrainJob:
    """Data, model and optimizer of a run, positioned at ``state.step``; the order of the random
    draws here (data, then ``manual_seed`` and the weights) is part of what makes runs repeatable."""
    from quasar_vit.data import build_datasets
    from quasar_vit.data.augment import train_augmentation
    from quasar_vit.data.loaders import batches_per_epoch, infinite_batches
    from quasar_vit.training.init_weights import read_pretrained

    space = cfg.model.space()
    if only_subnet is not None:
        space.validate(only_subnet)
    g = cfg.model.geometry
    splits = build_datasets(cfg.data, g.img_size, g.in_chans, g.num_classes, seed=cfg.train.seed)
    pretrained = read_pretrained(cfg.train.init) if cfg.train.init and ckpt is None else None
    transform = train_augmentation(cfg.data, g.num_classes)
    precision, precision_note = resolve_precision(cfg.train.amp, info.device)
    if info.is_main:  # only once the inputs are known to be good: a failed start leaves nothing behind
        run.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.config)
        if ckpt is not None:
            _trim_metrics(run.metrics, state.step)
    loader = _train_loader(cfg, splits.train, info)
    bpe = batches_per_epoch(loader)
    model, optimizer = _build_model(cfg, run, info, pretrained)
    forward = torch.compile(model, dynamic=True) if cfg.train.compile else model
    if precision_note and info.is_main:
        print(f"warning: {precision_note}", file=sys.stderr)
    batches = infinite_batches(loader, start_epoch=state.step // bpe, start_batch=state.step % bpe)
    return TrainJob(
        cfg, info, run, space, splits, model, optimizer, forward, precision, transform, batches, only_subnet
    )


def _train_loader(cfg: ExperimentConfig, train: Any, info: DistInfo) -> Any:
    """The shuffled training loader (this rank's shard under data parallel training)."""
    from quasar_vit.data import make_loader

    return make_loader(
        train,
        cfg.train.batch_size,
        shuffle=True,
        seed=cfg.train.seed,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        distributed=info.enabled,
        rank=info.rank,
        world_size=info.world_size,
        pin_memory=info.device.type == "cuda",
    )


def _build_model(
    cfg: ExperimentConfig, run: RunDir, info: DistInfo, pretrained: Any
) -> tuple[SuperViT, torch.optim.Optimizer]:
    """The seeded initial supernet (with ``train.init``'s weights mapped in) and its optimizer."""
    torch.manual_seed(cfg.train.seed)
    model = build_supernet(cfg.model, cfg.quant).to(info.device)
    if pretrained is not None:
        _init_from(model, pretrained, run, info)
    # fused AdamW: one kernel for all parameters instead of several per tensor (CUDA only here)
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.train.weight_decay, cfg.train.quant_step_lr_scale),
        lr=cfg.train.lr,
        betas=(0.9, 0.999),
        **({"fused": True} if info.device.type == "cuda" else {}),
    )
    return model, optimizer


def _restore_or_init(job: TrainJob, ckpt: dict[str, Any] | None) -> None:
    """Load a resumed run's model, optimizer and loss-scaler state; or calibrate a new run's
    activation quantizers on its first training images and give every rank rank 0's weights."""
    from quasar_vit.data import BatchTransform

    if ckpt is None:
        cfg, train = job.cfg, job.splits.train
        x0 = torch.stack([train[i][0] for i in range(min(len(train), t_cfg_bs(cfg)))])
        calibrate_supernet(
            job.model, BatchTransform.from_config(cfg.data, train=False)(x0.to(job.info.device)), job.space
        )
        broadcast_module(job.model)
        return
    try:
        job.model.load_state_dict(ckpt["model"])
        job.optimizer.load_state_dict(ckpt["optimizer"])
        job.precision.load_state_dict(ckpt.get("scaler"))
    except (KeyError, RuntimeError, ValueError) as exc:  # e.g. a run saved by an older quasar-vit
        raise CheckpointError(
            f"--resume: {job.run.last} does not match this version's model or optimizer "
            f"layout ({str(exc).splitlines()[0]}); start a new --out"
        ) from None


def train_step(job: TrainJob, state: TrainState) -> StepResult:
    """One optimizer step: the step's batch, augmentation and subnets, their backward passes, the
    gradient all-reduce, clipping and the update; advances ``state.step`` and ``state.epoch``.

    Every random draw is seeded from ``(train.seed, step, rank)``, so the step computes the same
    whether the run got here in one go or by resuming.

    Args:
        job: the run (model, optimizer, data, config).
        state: the step to take; updated in place.

    Returns:
        The step's losses (see :func:`sandwich_backward`), learning rate, epoch and batch size.
    """
    cfg, t, info = job.cfg, job.cfg.train, job.info
    step = state.step
    lr = lr_at(step, cfg)
    for g in job.optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    epoch, (x, y) = next(job.batches)
    x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
    gen = torch.Generator(device=info.device)
    gen.manual_seed(step_seed(t.seed, step, 2 + info.rank))
    x, targets = job.transform(x, y, gen)
    torch.manual_seed(step_seed(t.seed, step, 1000 + info.rank))  # stochastic depth
    alone = job.only_subnet is not None
    subnets = (
        [job.only_subnet]
        if job.only_subnet is not None
        else sandwich_subnets(job.space, t.seed, step, t.sandwich_random)
    )
    hint = (
        f"the last good checkpoint is {job.run.last} (every train.checkpoint_every "
        "steps): lower train.lr or raise train.warmup_steps and --resume"
    )
    losses = sandwich_backward(
        job.forward, x, targets, subnets, cfg, job.precision, t.distill and not alone, f"at step {step + 1}", hint
    )
    params = job.params
    all_reduce_gradients(params, info.world_size)
    if t.grad_clip > 0:
        job.precision.unscale(job.optimizer)  # clip the true gradients, not the fp16-scaled ones
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
    job.precision.step(job.optimizer)
    job.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.epoch = epoch
    return StepResult(losses, lr, epoch, x.shape[0])


def _train_loop(job: TrainJob, state: TrainState, progress: bool, stop_at: int | None) -> bool:
    """Steps until ``train.steps`` (True: ``stop_at`` ended the invocation first)."""
    steps = job.cfg.train.steps
    monitor = Monitor(job, state, progress)
    job.model.train()
    try:
        while state.step < steps:
            log_and_checkpoint(job, state, train_step(job, state), monitor, stop_at)
            if stop_at is not None and state.step >= stop_at and state.step < steps:
                barrier()
                return True
    finally:
        monitor.close()
    return False


class Monitor:
    """The running log of a training invocation: the averaging window of ``metrics.jsonl``, the
    progress bar or log lines, TensorBoard, and the wall-clock time a checkpoint records."""

    def __init__(self, job: TrainJob, state: TrainState, progress: bool) -> None:
        from quasar_vit.data import BatchTransform

        info, steps = job.info, job.cfg.train.steps
        self.run, self.info, self.steps = job.run, info, steps
        self.plain_log = progress and info.is_main and not stderr_is_terminal()  # SLURM/nohup: lines, not a bar
        self.bar = None
        if progress and info.is_main and not self.plain_log:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=steps, initial=state.step, desc="train supernet", unit="step", dynamic_ncols=True)
        self.tboard = TensorBoard(job.run.root) if info.is_main else None
        self.val_tf = BatchTransform.from_config(job.cfg.data, train=False)
        self.t_last = self.t_window = time.time()
        self.window: dict[str, float] = {}
        self.n_window = 0

    def add(self, result: StepResult) -> None:
        """Count a step into the window and the progress bar."""
        for k, v in result.losses.items():
            self.window[k] = self.window.get(k, 0.0) + v
        self.n_window += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{result.losses['largest']:.3f}", lr=f"{result.lr:.2e}", epoch=result.epoch)

    def clock(self, state: TrainState) -> float:
        """Add the time since the last call to ``state.elapsed``; returns now."""
        now = time.time()
        state.elapsed += now - self.t_last
        self.t_last = now
        return now

    def log(self, state: TrainState, result: StepResult, val: dict[str, float]) -> None:
        """Write the window's averages (and ``val``) as one metrics record, then start a new window."""
        now = self.clock(state)
        dt, n = now - self.t_window, self.n_window
        self.t_window = now
        if self.info.is_main:
            rec = {
                "step": state.step,
                "epoch": result.epoch,
                "lr": result.lr,
                **{f"loss_{k}": v / n for k, v in self.window.items()},
                "sec_per_step": dt / n,
                "img_per_sec": n * result.images * self.info.world_size / max(dt, 1e-9),
                "elapsed": state.elapsed,
                **val,
            }
            append_jsonl(self.run.metrics, rec)
            write_csv(read_metrics(self.run.metrics), self.run.root / "metrics.csv")
            if self.tboard is not None:
                self.tboard.add(rec)
            if self.plain_log:
                print(log_line(rec, self.steps), file=sys.stderr, flush=True)
        self.window, self.n_window = {}, 0

    def close(self) -> None:
        """Close the bar and TensorBoard and plot the curves (after a failure too)."""
        if self.bar is not None:
            self.bar.close()
        if self.info.is_main:
            try:  # a failing plot must not hide the training error that brought us here
                plot_curves(read_metrics(self.run.metrics), self.run.root / "curves.png")
            except Exception as exc:  # noqa: BLE001
                print(f"warning: curves.png not written: {exc}", file=sys.stderr)
            if self.tboard is not None:
                self.tboard.close()


def log_and_checkpoint(
    job: TrainJob, state: TrainState, result: StepResult, monitor: Monitor, stop_at: int | None = None
) -> None:
    """After a step: log (every ``train.log_every`` steps, with validation every ``train.eval_every``)
    and checkpoint (every ``train.checkpoint_every`` steps, at the end and at ``stop_at``).

    Args:
        job: the run.
        state: the state after the step.
        result: what :func:`train_step` returned.
        monitor: the invocation's log window and displays.
        stop_at: the step this invocation stops at, if any (it checkpoints there).
    """
    t = job.cfg.train
    monitor.add(result)
    eval_now = t.eval_every > 0 and state.step % t.eval_every == 0 and len(job.splits.val) > 0
    if state.step % t.log_every == 0 or state.step == t.steps or eval_now:
        val = _validate(job.model, job.space, job.splits.val, monitor.val_tf, job.info) if eval_now else {}
        monitor.log(state, result, val)
    if state.step % t.checkpoint_every == 0 or state.step == t.steps or state.step == stop_at:
        monitor.clock(state)
        _save(job.run.last, job.model, job.optimizer, job.cfg, state, job.info, job.precision)


def _finish(job: TrainJob, state: TrainState, progress: bool) -> dict[str, Any]:
    """Check the ranks agree, score the test set, write ``supernet.pt`` and ``final.json``."""
    info = job.info
    summary: dict[str, Any] = {"steps": state.step, "train_seconds": state.elapsed, "world_size": info.world_size}
    if info.enabled:
        summary["ranks_in_sync"] = ranks_in_sync(job.model)
        if not summary["ranks_in_sync"]:
            raise RuntimeError("data-parallel ranks ended with different weights (a bug: please report it)")
    summary.update(_test_scores(job, progress and info.is_main and stderr_is_terminal()))
    if info.is_main:
        save_checkpoint(
            job.run.final,
            {
                "step": state.step,
                "config": job.cfg.to_dict(),
                "model": _cpu_state(job.model),
                "space": job.space.to_dict(),
                "summary": summary,
            },
        )
        atomic_write_json(job.run.summary, summary)
    barrier()
    cleanup()
    return summary


def _test_scores(job: TrainJob, progress: bool) -> dict[str, float]:
    """Test top-1 of the largest and smallest subnets (or of the one trained alone); every rank
    scores its shard of the test set (counts summed), so none waits in a barrier."""
    from quasar_vit.data import BatchTransform

    test_tf = BatchTransform.from_config(job.cfg.data, train=False)
    job.model.eval()
    space, only = job.space, job.only_subnet
    finals = (("only", only),) if only is not None else (("largest", space.largest()), ("smallest", space.smallest()))
    return {
        f"test_top1_{name}": evaluate_subnet(
            job.model,
            sub,
            job.splits.test,
            test_tf,
            job.info.device,
            batch_size=500,
            progress=progress,
            rank=job.info.rank,
            world_size=job.info.world_size,
        )
        for name, sub in finals
    }


def _validate(model: nn.Module, space: SearchSpace, val: Any, transform: Any, info: DistInfo) -> dict[str, float]:
    """Validation top-1 of the largest and the smallest subnet (train.eval_every); every rank scores a shard."""
    model.eval()
    out = {
        f"val_top1_{name}": evaluate_subnet(
            model, sub, val, transform, info.device, batch_size=500, rank=info.rank, world_size=info.world_size
        )
        for name, sub in (("largest", space.largest()), ("smallest", space.smallest()))
    }
    model.train()
    return out


def t_cfg_bs(cfg: ExperimentConfig) -> int:
    return min(cfg.train.batch_size, 256)


def ranks_in_sync(model: nn.Module) -> bool:
    """True when every rank holds bit-identical parameters (compared by per-tensor checksums)."""
    import torch.distributed as dist

    sums = []
    for p in model.parameters():
        v = p.detach().double().reshape(-1)
        w = torch.arange(1, v.numel() + 1, dtype=torch.float64, device=v.device)
        sums.append(torch.stack([v.sum(), v.abs().sum(), (v * w).sum()]))
    local = torch.stack(sums).cpu()
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _save(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: ExperimentConfig,
    state: TrainState,
    info: DistInfo,
    precision: Precision | None = None,
) -> None:
    if not info.is_main:
        return
    scaler = precision.state_dict() if precision is not None else None
    save_checkpoint(
        path,
        {
            "step": state.step,
            "epoch": state.epoch,
            "elapsed": state.elapsed,
            "world_size": info.world_size,
            "config": cfg.to_dict(),
            "model": _cpu_state(model),
            "optimizer": optimizer.state_dict(),
            **({"scaler": scaler} if scaler else {}),
        },
    )


def _init_from(model: SuperViT, pretrained: Any, run: "RunDir", info: DistInfo) -> None:
    """Map pretrained weights into a new supernet (train.init); the main rank reports what happened
    on stderr and in ``init.json``.  Every rank loads the same file, so the ranks agree."""
    from quasar_vit.training.init_weights import apply_pretrained

    report = apply_pretrained(model, pretrained)
    if info.is_main:
        print("\n".join(report.lines()), file=sys.stderr, flush=True)
        atomic_write_json(run.root / "init.json", report.to_dict())


#: config keys that may change between a run and its resume (they do not change what is computed)
RESUME_FREE = {
    "data": ("root", "num_workers"),
    "train": ("log_every", "checkpoint_every", "eval_every", "init", "compile", "accum_steps"),
}


def check_resumable(saved: ExperimentConfig, cfg: ExperimentConfig, run: "RunDir", step: int = 0) -> None:
    """Refuse a resume whose config would change the computation (paths and logging may change).

    ``train.steps`` may grow (to extend a run, finished or not): the cosine warm-down is then
    re-planned to end at the new total, so the learning rate from ``step`` on follows the longer
    schedule (the result differs from a run planned that long from the start).
    """
    import dataclasses

    if cfg.train.steps < saved.train.steps:
        raise CheckpointError(
            f"--resume: train.steps={cfg.train.steps} is below the run's planned "
            f"{saved.train.steps} (now at step {step}); a run can be extended, not shortened"
        )
    for section in ("model", "quant", "data", "train"):
        a = dataclasses.asdict(getattr(saved, section))
        b = dataclasses.asdict(getattr(cfg, section))
        for key in RESUME_FREE.get(section, ()) + (("steps",) if section == "train" else ()):
            a.pop(key, None)
            b.pop(key, None)
        diff = sorted(k for k in a if a[k] != b.get(k))
        if diff:
            raise CheckpointError(
                f"--resume: {', '.join(f'{section}.{k}' for k in diff)} differ(s) from the run's "
                f"config ({run.config}); resume with that config or start a new --out"
            )


def _trim_metrics(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint a resumed run restarts from (no doubled steps)."""
    if not path.is_file():
        return
    keep = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l).get("step", 0) <= step]
    from quasar_vit.utils.io import atomic_write_text

    atomic_write_text(path, "".join(l + "\n" for l in keep))


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "final.json").read_text())
