"""Dataset containers: small data sets live in memory as one uint8 tensor.

Holding MNIST/Fashion-MNIST/CIFAR as ``uint8 [N, C, H, W]`` (47 MB for Fashion-MNIST) lets a loader
build a batch with one ``index_select`` instead of collating thousands of per-item tensors, and
keeps augmentation free to run batched on the training device (see :mod:`.transforms`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class TensorImageDataset(Dataset):
    """Images ``uint8 [N, C, H, W]`` and labels ``int64 [N]``; items are ``(image, label)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.dim() != 1 or len(labels) != len(images):
            raise ValueError("labels must be a 1-D tensor with one label per image")
        self.images = images
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "TensorImageDataset":
        """A new in-memory data set holding just ``indices`` (copied, so the parent can be freed)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return TensorImageDataset(self.images.index_select(0, idx), self.labels.index_select(0, idx))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.images.shape  # [N, C, H, W], checked in __init__
        return c, h, w


class IndexedSubset(Dataset):
    """A view of ``indices`` of a lazily decoded data set (ImageFolder), without copying images."""

    def __init__(self, dataset: Dataset, indices: torch.Tensor | Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = torch.as_tensor(indices, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):  # noqa: ANN204 - same item type as the parent
        return self.dataset[int(self.indices[index])]

    @property
    def targets(self) -> list[int]:
        parent = getattr(self.dataset, "targets")
        return [parent[i] for i in self.indices.tolist()]


def subset(dataset: Dataset, indices: torch.Tensor | Sequence[int]) -> Dataset:
    """In-memory data sets are copied (fast path stays available); others get an index view."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.subset(indices)
    return IndexedSubset(dataset, indices)


def resize_images(images: torch.Tensor, size: int, chunk: int = 8192) -> torch.Tensor:
    """Bilinear resize of ``uint8 [N, C, H, W]`` to ``size x size`` once at load time.

    Antialiased when shrinking; done in chunks so peak float memory stays small.
    """
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    antialias = size < min(h, w)
    for start in range(0, n, chunk):
        x = images[start : start + chunk].float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
        out[start : start + chunk] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out
