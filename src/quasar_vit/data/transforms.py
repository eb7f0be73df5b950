"""Batch augmentation and normalisation on tensors.

Augmenting whole ``uint8 [B, C, H, W]`` batches (on the training device) is far cheaper than
per-image PIL transforms in loader workers: the random crop is two ``gather`` calls and the flip a
``torch.where``.  Randomness comes from an explicit ``torch.Generator`` so a resumed run can
reproduce its augmentation stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from quasar_vit.config import DataConfig
from quasar_vit.errors import DataError


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, then moved to ``device``."""
    gdev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gdev).to(device)


def _randint(
    high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    gdev = generator.device if generator is not None else device
    return torch.randint(0, high, shape, generator=generator, device=gdev).to(device)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random ``H x W`` crop of the zero-padded batch (as torchvision's RandomCrop(padding))."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    off = _randint(2 * padding + 1, (2, b), generator, x.device)
    rows = off[0][:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = off[1][:, None] + torch.arange(w, device=x.device)  # [B, W]
    padded = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return padded.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_hflip(x: torch.Tensor, prob: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each sample left-right with probability ``prob``."""
    if prob <= 0:
        return x
    mask = _rand((x.shape[0],), generator, x.device) < prob
    return torch.where(mask[:, None, None, None], x.flip(3), x)


class BatchTransform:
    """``uint8 [B, C, H, W]`` -> normalised float batch, optionally with crop/flip augmentation."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = False,
        crop_padding: int = 0,
        hflip: bool = False,
        flip_prob: float = 0.5,
    ) -> None:
        if len(mean) != len(std) or not mean:
            raise DataError("data.mean and data.std need the same, non-zero number of values")
        if any(s <= 0 for s in std):
            raise DataError("data.std values must be positive")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.augment = augment
        self.crop_padding = int(crop_padding) if augment else 0
        self.flip_prob = float(flip_prob) if (augment and hflip) else 0.0
        # (x/255 - mean)/std == x*scale - shift: one fused multiply-subtract per element
        self._scale = torch.tensor([1.0 / (255.0 * s) for s in self.std]).view(1, -1, 1, 1)
        self._shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)]).view(1, -1, 1, 1)

    @classmethod
    def from_config(cls, cfg: DataConfig, train: bool) -> "BatchTransform":
        """Training transform (augmentation as configured) or evaluation transform (normalise only)."""
        return cls(cfg.mean, cfg.std, augment=train and cfg.augment, crop_padding=cfg.crop_padding, hflip=cfg.hflip)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != len(self.mean):
            raise DataError(f"batch of shape {tuple(x.shape)} does not match {len(self.mean)} normalisation channels")
        if self.augment:
            x = random_crop(x, self.crop_padding, generator)
            x = random_hflip(x, self.flip_prob, generator)
        scale, shift = self._scale.to(x.device), self._shift.to(x.device)
        return x.to(torch.float32).mul_(scale).sub_(shift)

    def __repr__(self) -> str:
        return (
            f"BatchTransform(mean={self.mean}, std={self.std}, augment={self.augment}, "
            f"crop_padding={self.crop_padding}, flip_prob={self.flip_prob})"
        )


def train_transform(cfg: DataConfig) -> BatchTransform:
    return BatchTransform.from_config(cfg, train=True)


def eval_transform(cfg: DataConfig) -> BatchTransform:
    return BatchTransform.from_config(cfg, train=False)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, num_classes: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a float batch with a permutation of itself; returns ``(x_mixed, soft_targets [B, K])``.

    ``lam ~ Beta(alpha, alpha)`` is drawn from a numpy generator seeded by ``generator`` (torch has
    no seeded Beta sampler), so the result is reproducible.  ``alpha <= 0`` returns one-hot targets.
    """
    onehot = F.one_hot(y.to(torch.int64), num_classes).to(x.dtype)
    if alpha <= 0:
        return x, onehot
    seed = int(
        torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator is not None else None)
    )
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    gdev = generator.device if generator is not None else torch.device("cpu")
    perm = torch.randperm(x.shape[0], generator=generator, device=gdev).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]
