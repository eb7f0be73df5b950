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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quasar_vit.config import ExperimentConfig, save_config
from quasar_vit.errors import CheckpointError, QuasarError, TrainingError
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
    Returns the mean loss of the largest, the smallest and the random subnets.  A non-finite loss
    raises :class:`TrainingError` naming ``where`` and the subnet, followed by ``hint``.
    """
    t = cfg.train
    accum = t.accum_steps
    losses: dict[str, float] = {}
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
                loss = distill_loss(logits, teacher_probs, t.distill_temperature)
            value = float(loss.detach())
            if not math.isfinite(value):  # stop before the optimizer spreads it into the weights
                raise TrainingError(f"non-finite loss ({value}) {where} for subnet {sub.describe()}; {hint}")
            precision.backward(loss / accum if accum > 1 else loss)
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


def _calibrate(model: SuperViT, x: Tensor, space: SearchSpace) -> None:
    """Initialise every activation quantizer's step from one batch (LSQ init), largest subnet first."""
    with torch.no_grad():
        model(x, space.largest())
        model(x, space.smallest())


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
    """Train the supernet described by ``cfg`` into ``out``; returns the final summary.

    ``out`` receives ``config.yaml``, ``metrics.jsonl`` (JSON lines), ``last.pt`` (atomic,
    every ``train.checkpoint_every`` steps), ``supernet.pt`` and ``final.json`` at the end.
    ``stop_at`` ends this invocation after that many steps (with a checkpoint), as a kill would;
    ``resume=True`` then continues exactly.  ``only_subnet`` trains that one subnet alone (no
    sandwich, no distillation) with the same schedule, data and code path: the "trained alone"
    baseline that shows what weight sharing costs.
    Only one process may write ``out`` at a time (``utils.lock``): a second one gets a
    :class:`BusyError`.
    """
    from quasar_vit.data import BatchTransform, build_datasets, make_loader
    from quasar_vit.data.augment import train_augmentation
    from quasar_vit.data.loaders import batches_per_epoch, infinite_batches
    from quasar_vit.training.init_weights import read_pretrained

    info = init_distributed(device)
    run = RunDir(out)
    state = TrainState()
    ckpt = None
    if resume and not run.last.is_file() and run.config.is_file() and not run.final.is_file():
        # killed before its first checkpoint: nothing to continue from, so the run starts over
        if info.is_main:
            print(f"{run.root}: no checkpoint yet; starting the run from step 0", file=sys.stderr)
            run.metrics.unlink(missing_ok=True)  # the killed attempt's lines would repeat its steps
        resume = False
    if resume:
        if not run.last.is_file():
            raise CheckpointError(f"--resume: no checkpoint at {run.last}")
        ckpt = read_checkpoint(run.last, map_location="cpu")
        check_resumable(checkpoint_config(ckpt), cfg, run, int(ckpt["step"]))
        if int(ckpt["step"]) >= cfg.train.steps and run.final.is_file() and run.summary.is_file():
            if info.is_main:
                print(
                    f"{run.root}: the run already finished at step {ckpt['step']} (train.steps={cfg.train.steps}); "
                    "nothing to do (raise train.steps with --set to extend it)"
                )
            cleanup()
            return load_summary(run.root)
        saved_world = int(ckpt.get("world_size", info.world_size))
        if saved_world != info.world_size:
            raise CheckpointError(
                f"--resume: the run was trained on {saved_world} process(es), now "
                f"{info.world_size}; the global batch and data order would change"
            )
        state = TrainState(int(ckpt["step"]), int(ckpt.get("epoch", 0)), float(ckpt.get("elapsed", 0.0)))
    elif run.last.is_file() or run.final.is_file():
        raise QuasarError(
            f"{run.root} already holds a training run; pass --resume to continue it or choose another --out"
        )
    space = cfg.model.space()
    if only_subnet is not None:
        space.validate(only_subnet)
    splits = build_datasets(
        cfg.data, cfg.model.img_size, cfg.model.in_chans, cfg.model.num_classes, seed=cfg.train.seed
    )
    pretrained = read_pretrained(cfg.train.init) if cfg.train.init and ckpt is None else None
    transform = train_augmentation(cfg.data, cfg.model.num_classes)
    precision, precision_note = resolve_precision(cfg.train.amp, info.device)
    if info.is_main:  # only once the inputs are known to be good: a failed start leaves nothing behind
        run.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run.config)
        if resume:
            _trim_metrics(run.metrics, state.step)
    loader = make_loader(
        splits.train,
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
    bpe = batches_per_epoch(loader)

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
    params = [p for p in model.parameters() if p.requires_grad]
    forward = torch.compile(model, dynamic=True) if cfg.train.compile else model
    if precision_note and info.is_main:
        print(f"warning: {precision_note}", file=sys.stderr)
    batches = infinite_batches(loader, start_epoch=state.step // bpe, start_batch=state.step % bpe)

    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            precision.load_state_dict(ckpt.get("scaler"))
        except (KeyError, RuntimeError, ValueError) as exc:  # e.g. a run saved by an older quasar-vit
            raise CheckpointError(
                f"--resume: {run.last} does not match this version's model or optimizer "
                f"layout ({str(exc).splitlines()[0]}); start a new --out"
            ) from None
    else:
        x0 = torch.stack([splits.train[i][0] for i in range(min(len(splits.train), t_cfg_bs(cfg)))])
        _calibrate(model, BatchTransform.from_config(cfg.data, train=False)(x0.to(info.device)), space)
        broadcast_module(model)

    t_cfg = cfg.train
    bar = None
    plain_log = progress and info.is_main and not stderr_is_terminal()  # SLURM/nohup: lines, not a bar
    if progress and info.is_main and not plain_log:
        from tqdm.auto import tqdm

        bar = tqdm(total=t_cfg.steps, initial=state.step, desc="train supernet", unit="step", dynamic_ncols=True)
    tboard = TensorBoard(run.root) if info.is_main else None
    val_tf = BatchTransform.from_config(cfg.data, train=False)
    model.train()
    t_last = t_window = time.time()
    window: dict[str, float] = {}
    n_window = 0
    try:
        while state.step < t_cfg.steps:
            step = state.step
            lr = lr_at(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            epoch, (x, y) = next(batches)
            x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
            gen = torch.Generator(device=info.device)
            gen.manual_seed(step_seed(t_cfg.seed, step, 2 + info.rank))
            x, targets = transform(x, y, gen)
            torch.manual_seed(step_seed(t_cfg.seed, step, 1000 + info.rank))  # stochastic depth

            subnets = (
                [only_subnet]
                if only_subnet is not None
                else sandwich_subnets(space, t_cfg.seed, step, t_cfg.sandwich_random)
            )
            losses = sandwich_backward(
                forward,
                x,
                targets,
                subnets,
                cfg,
                precision,
                t_cfg.distill and only_subnet is None,
                f"at step {step + 1}",
                f"the last good checkpoint is {run.last} (every train.checkpoint_every "
                "steps): lower train.lr or raise train.warmup_steps and --resume",
            )
            all_reduce_gradients(params, info.world_size)
            if t_cfg.grad_clip > 0:
                precision.unscale(optimizer)  # clip the true gradients, not the fp16-scaled ones
                torch.nn.utils.clip_grad_norm_(params, t_cfg.grad_clip)
            precision.step(optimizer)
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.epoch = epoch
            for k, v in losses.items():
                window[k] = window.get(k, 0.0) + v
            n_window += 1

            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses['largest']:.3f}", lr=f"{lr:.2e}", epoch=epoch)
            eval_now = t_cfg.eval_every > 0 and state.step % t_cfg.eval_every == 0 and len(splits.val) > 0
            if state.step % t_cfg.log_every == 0 or state.step == t_cfg.steps or eval_now:
                val = _validate(model, space, splits.val, val_tf, info) if eval_now else {}
                now = time.time()
                dt = now - t_window
                state.elapsed += now - t_last
                t_last = t_window = now
                if info.is_main:
                    rec = {
                        "step": state.step,
                        "epoch": epoch,
                        "lr": lr,
                        **{f"loss_{k}": v / n_window for k, v in window.items()},
                        "sec_per_step": dt / n_window,
                        "img_per_sec": n_window * x.shape[0] * info.world_size / max(dt, 1e-9),
                        "elapsed": state.elapsed,
                        **val,
                    }
                    append_jsonl(run.metrics, rec)
                    write_csv(read_metrics(run.metrics), run.root / "metrics.csv")
                    if tboard is not None:
                        tboard.add(rec)
                    if plain_log:
                        print(log_line(rec, t_cfg.steps), file=sys.stderr, flush=True)
                window, n_window = {}, 0
            if state.step % t_cfg.checkpoint_every == 0 or state.step == t_cfg.steps or state.step == stop_at:
                now = time.time()
                state.elapsed += now - t_last
                t_last = now
                _save(run.last, model, optimizer, cfg, state, info, precision)
            if stop_at is not None and state.step >= stop_at and state.step < t_cfg.steps:
                barrier()
                return {"steps": state.step, "stopped_early": True}
    finally:
        if bar is not None:
            bar.close()
        if info.is_main:
            try:  # a failing plot must not hide the training error that brought us here
                plot_curves(read_metrics(run.metrics), run.root / "curves.png")
            except Exception as exc:  # noqa: BLE001
                print(f"warning: curves.png not written: {exc}", file=sys.stderr)
            if tboard is not None:
                tboard.close()

    summary: dict[str, Any] = {"steps": state.step, "train_seconds": state.elapsed, "world_size": info.world_size}
    if info.enabled:
        summary["ranks_in_sync"] = ranks_in_sync(model)
        if not summary["ranks_in_sync"]:
            raise RuntimeError("data-parallel ranks ended with different weights (a bug: please report it)")
    # every rank scores its shard of the test set (counts summed), so none waits in a barrier
    test_tf = BatchTransform.from_config(cfg.data, train=False)
    model.eval()
    finals = (
        (("only", only_subnet),)
        if only_subnet is not None
        else (("largest", space.largest()), ("smallest", space.smallest()))
    )
    for name, sub in finals:
        summary[f"test_top1_{name}"] = evaluate_subnet(
            model,
            sub,
            splits.test,
            test_tf,
            info.device,
            batch_size=500,
            progress=progress and info.is_main and not plain_log,
            rank=info.rank,
            world_size=info.world_size,
        )
    if info.is_main:
        save_checkpoint(
            run.final,
            {
                "step": state.step,
                "config": cfg.to_dict(),
                "model": _cpu_state(model),
                "space": space.to_dict(),
                "summary": summary,
            },
        )
        atomic_write_json(run.summary, summary)
    barrier()
    cleanup()
    return summary


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
