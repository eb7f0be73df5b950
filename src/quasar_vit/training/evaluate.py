"""Top-1 accuracy of a subnet, run on the supernet's shared weights (no extraction needed)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from quasar_vit.space import SubnetConfig


def iter_eval_batches(dataset: Dataset, batch_size: int):
    """Batches of ``(x_uint8, y)`` in dataset order (fast path for in-memory tensors)."""
    from quasar_vit.data.loaders import make_loader

    loader = make_loader(dataset, batch_size, shuffle=False, seed=0, drop_last=False)
    yield from loader


@torch.no_grad()
def evaluate_model(forward: Callable[[Tensor], Tensor], dataset: Dataset, transform: Callable[[Tensor], Tensor],
                   device: torch.device | str = "cpu", batch_size: int = 500, progress: bool = False,
                   desc: str = "eval") -> float:
    """Top-1 (in percent) of ``forward`` on ``dataset``."""
    correct = total = 0
    batches = iter_eval_batches(dataset, batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True)
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        pred = forward(transform(x)).argmax(dim=-1)
        correct += int((pred == y).sum())
        total += int(y.numel())
    return 100.0 * correct / max(total, 1)


def evaluate_subnet(supernet: nn.Module, subnet: SubnetConfig, dataset: Dataset,
                    transform: Callable[[Tensor], Tensor], device: torch.device | str = "cpu",
                    batch_size: int = 500, progress: bool = False) -> float:
    was_training = supernet.training
    supernet.eval()
    try:
        return evaluate_model(lambda x: supernet(x, subnet), dataset, transform, device, batch_size, progress,
                              desc=f"eval e{subnet.embed_dim}d{subnet.depth}")
    finally:
        supernet.train(was_training)
