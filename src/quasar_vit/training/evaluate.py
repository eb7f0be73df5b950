"""Top-1 accuracy of a subnet, run on the supernet's shared weights (no extraction needed)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any, Callable, cast

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from quasar_vit.space import SubnetConfig


def iter_eval_batches(dataset: Dataset, batch_size: int):
    """Batches of ``(x_uint8, y)`` in dataset order (fast path for in-memory tensors)."""
    from quasar_vit.data.loaders import make_loader

    loader = make_loader(dataset, batch_size, shuffle=False, seed=0, drop_last=False)
    yield from loader


Forward = Callable[[Tensor], Tensor]  # images (transformed) -> logits; also the batch transform's type


def _hits(forward: Forward, batches: Iterable[Any], transform: Forward, device: torch.device | str) -> Iterator[Tensor]:
    """Per batch, which images ``forward`` classifies correctly (bool, on ``device``)."""
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        yield forward(transform(x)).argmax(dim=-1) == y


@torch.no_grad()
def correct_flags(
    forward: Forward, dataset: Dataset, transform: Forward, device: torch.device | str = "cpu", batch_size: int = 500
) -> Tensor:
    """Which images of ``dataset`` ``forward`` classifies correctly (bool, on the CPU, in dataset
    order; arguments as :func:`count_correct`): what a paired comparison of two subnets on the same
    images needs, beyond the count."""
    hits = [h.cpu() for h in _hits(forward, iter_eval_batches(dataset, batch_size), transform, device)]
    return torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)


@torch.no_grad()
def count_correct(
    forward: Callable[[Tensor], Tensor],
    dataset: Dataset,
    transform: Callable[[Tensor], Tensor],
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    progress: bool = False,
    desc: str = "eval",
) -> tuple[int, int]:
    """``(correct, total)`` of ``forward`` on ``dataset``: counts, so that ranks can sum them exactly."""
    correct = total = 0
    batches = iter_eval_batches(dataset, batch_size)
    from quasar_vit.utils.progress import progress as progress_bar

    # the bar counts images; a plain line (stderr not a terminal) carries the running top-1
    n_images = len(dataset) if hasattr(dataset, "__len__") else None
    bar = progress_bar(n_images, desc, "img", enabled=progress, leave=False)
    for hits in _hits(forward, batches, transform, device):
        correct += int(hits.sum())
        total += int(hits.numel())
        bar.update(int(hits.numel()))
        bar.set_postfix_str(f"top-1 {100.0 * correct / max(total, 1):.2f} %")
    bar.close()
    return correct, total


def evaluate_model(
    forward: Callable[[Tensor], Tensor],
    dataset: Dataset,
    transform: Callable[[Tensor], Tensor],
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    progress: bool = False,
    desc: str = "eval",
) -> float:
    """Top-1 (in percent) of ``forward`` on ``dataset``."""
    correct, total = count_correct(forward, dataset, transform, device, batch_size, progress, desc)
    return 100.0 * correct / max(total, 1)


def evaluate_subnet(
    supernet: nn.Module,
    subnet: SubnetConfig,
    dataset: Dataset,
    transform: Callable[[Tensor], Tensor],
    device: torch.device | str = "cpu",
    batch_size: int = 500,
    progress: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> float:
    """Top-1 (percent) of ``subnet`` on ``dataset``.

    With ``world_size > 1`` (inside an initialised process group) every rank scores every
    ``world_size``-th image from ``rank`` on and the counts are summed: the same figure as one
    process, in 1/world_size of the time, and no rank idles in a barrier long enough to hit the
    collective timeout on an ImageNet-sized test set.
    """
    if world_size > 1:
        from quasar_vit.data.datasets import IndexedSubset, TensorImageDataset

        # every dataset of the package has a length; torch's ``Dataset`` just does not declare one
        shard = range(rank, len(cast(Sized, dataset)), world_size)
        dataset = dataset.subset(shard) if isinstance(dataset, TensorImageDataset) else IndexedSubset(dataset, shard)
    was_training = supernet.training
    supernet.eval()
    try:
        correct, total = count_correct(
            lambda x: supernet(x, subnet),
            dataset,
            transform,
            device,
            batch_size,
            progress,
            desc=f"eval e{subnet.embed_dim}d{subnet.depth}",
        )
    finally:
        supernet.train(was_training)
    if world_size > 1:
        import torch.distributed as dist

        counts = torch.tensor([correct, total], dtype=torch.int64, device=device)
        dist.all_reduce(counts)
        correct, total = int(counts[0].item()), int(counts[1].item())
    return 100.0 * correct / max(total, 1)
