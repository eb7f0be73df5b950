"""Data-parallel plumbing for ``torchrun`` (NCCL on GPUs, gloo on CPU).

Why not ``DistributedDataParallel``: a sandwich step runs several different subnets, each with
its own backward, and depth-elastic subnets leave whole blocks unused.  DDP would all-reduce after
every backward and needs ``find_unused_parameters``.  Instead every rank accumulates the step's
gradients locally and :func:`all_reduce_gradients` averages them once per step in flat buckets:
one collective per step, the same result as DDP over the summed loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """``auto`` (default): the local GPU if there is one, else the CPU."""
    from quasar_vit.errors import QuasarError

    if requested in (None, "auto"):
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(requested)
    except (RuntimeError, ValueError):
        raise QuasarError(f"--device {requested}: not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise QuasarError("--device cuda requested but no CUDA device is available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dev.type == "cuda" and dev.index is not None and world > 1:
        raise QuasarError(
            f"--device {requested}: under torchrun each rank takes the GPU of its LOCAL_RANK; "
            "pass --device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1), else run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # Import torch.distributed.nn BEFORE joining the group.  Its functions declare
        # ``group=group.WORLD`` as a default argument, evaluated when the module is imported; imported
        # after init (building the optimizer pulls it in lazily: torch.optim -> torch._dynamo -> fsdp),
        # the defaults of its ten functions hold the live default group, so destroy_process_group()
        # in cleanup() cannot free it.  gloo's worker and I/O threads then survive until interpreter
        # finalization and are torn down inside Py_Finalize, racing the other rank's exit: a rank
        # could die with SIGABRT ("terminate called without an active exception") after training
        # succeeded.  Imported here, those defaults are None and cleanup() really joins the threads.
        # (``import torch.distributed.nn`` here would make ``torch`` a local name of this function and
        # break ``torch.cuda.set_device`` above on GPUs: bind a private alias instead)
        import torch.distributed.nn as _tdnn  # noqa: F401

        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, dev)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Make every rank hold rank ``src``'s parameters and buffers."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            if t.dtype == torch.bool:
                tmp = t.to(torch.uint8)
                dist.broadcast(tmp, src)
                t.copy_(tmp.bool())
            else:
                dist.broadcast(t.data, src)


def all_reduce_gradients(params: list[nn.Parameter], world_size: int, bucket_bytes: int = 25 * 2**20) -> None:
    """Average gradients over ranks in flat buckets (missing gradients count as zeros)."""
    if world_size <= 1:
        return
    grads = []
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads + [None]:
        if g is not None:
            bucket.append(g)
            size += g.numel() * g.element_size()
        if bucket and (g is None or size >= bucket_bytes):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat /= world_size
            offset = 0
            for b in bucket:
                n = b.numel()
                b.copy_(flat[offset : offset + n].view_as(b))
                offset += n
            bucket, size = [], 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
