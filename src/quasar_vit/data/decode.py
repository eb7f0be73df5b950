"""Loader-worker decoding for the DeiT recipe: RandomResizedCrop for training, resize + centre crop
for evaluation, both with a chosen resize filter (bicubic, as DeiT).

Evaluation crops are :func:`quasar_vit.data.imagefolder.load_image` (resize, centre crop) with the
recipe's ``crop_pct`` and filter.  RandomResizedCrop must pick its box on the *decoded original* (a box of 8-100 % of the area, then
resized to ``img_size``), so the crop has to happen here, in the worker, before any resize; the rest
of the recipe (flip, RandAugment, erasing, Mixup/CutMix) runs batched on the device
(:mod:`quasar_vit.data.augment`).

Reproducibility: the crop box of item ``i`` in epoch ``e`` is drawn from a numpy generator seeded
with ``(seed, e, i)``.  :class:`~quasar_vit.data.loaders.EpochKeySampler` hands the worker
``(i, e)`` keys, so the crops do not depend on the number of workers or on which worker got which
batch, and a resumed run sees the crops the interrupted one would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from quasar_vit.data.imagefolder import (
    DECODE_ERRORS,
    RESAMPLE,
    ImageFolderDataset,
    decode_error,
    first_decodable,
    load_image,
    to_chw,
)
from quasar_vit.errors import DataError


def rrc_box(
    width: int, height: int, rng: np.random.Generator, scale: Sequence[float], ratio: Sequence[float]
) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of a RandomResizedCrop box: torchvision's rule (10 tries at a random area
    and log-uniform aspect ratio, then the centre crop at the nearest allowed aspect ratio)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def load_random_resized_crop(
    path: str,
    size: int,
    in_chans: int,
    rng: np.random.Generator,
    scale: Sequence[float],
    ratio: Sequence[float],
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Decode ``path``, cut a RandomResizedCrop box and resize it to ``size`` -> uint8 ``[C, size, size]``.

    The box is drawn on the header's size, before decoding, so a JPEG can be decoded at the largest
    DCT reduction that still leaves the box at least ``size`` pixels wide and high (``draft``):
    the same quality as a full decode for a fraction of the work when the box is small.
    """
    mode = "RGB" if in_chans == 3 else "L"
    try:
        with Image.open(path) as raw:
            width, height = raw.size
            left, top, w, h = rrc_box(width, height, rng, scale, ratio)
            if raw.format == "JPEG":
                raw.draft(mode, (math.ceil(width * size / w), math.ceil(height * size / h)))
            im = raw.convert(mode)
    except DECODE_ERRORS as exc:
        raise decode_error(path, exc) from None
    fx, fy = im.size[0] / width, im.size[1] / height  # draft's reduction, if any
    box = (left * fx, top * fy, (left + w) * fx, (top + h) * fy)
    return to_chw(im.resize((size, size), RESAMPLE[interpolation], box=box))


class FolderCrops(Dataset):
    """A subset of an :class:`ImageFolderDataset` decoded with the DeiT recipe's geometry.

    ``train=True``: RandomResizedCrop per item, keyed by ``(index, epoch)`` (plain ``index`` means
    epoch 0); ``train=False``: the deterministic resize + centre crop.  Items are
    ``(uint8 [C, size, size], label)`` like the parent's, so loaders and evaluation take either.
    """

    def __init__(
        self,
        folder: ImageFolderDataset,
        indices: torch.Tensor | Sequence[int],
        train: bool,
        size: int,
        seed: int = 0,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        interpolation: str = "bicubic",
        crop_pct: float = 0.875,
    ) -> None:
        if interpolation not in RESAMPLE:
            raise DataError(f"data.interpolation: '{interpolation}' is not one of {', '.join(RESAMPLE)}")
        idx = torch.as_tensor(indices, dtype=torch.int64).tolist()
        self.samples = [folder.samples[i] for i in idx]
        self.targets = [s[1] for s in self.samples]
        self.classes = folder.classes
        self.in_chans, self.size, self.train, self.seed = folder.in_chans, size, train, seed
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.interpolation, self.crop_pct = interpolation, crop_pct
        self.keyed_by_epoch = train  # training crops: make_loader hands ``(index, epoch)`` keys (EpochKeySampler)
        self.root = folder.root
        self.skip_corrupt: bool = getattr(folder, "skip_corrupt", False)
        self.skipped: set[str] = set()  # corrupt files met by this process (each loader worker has its own)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key if isinstance(key, tuple) else (int(key), 0)
        if not self.skip_corrupt:
            return self._load(self.samples[index], index, epoch)
        # data.skip_corrupt: the first decodable image from here on replaces a corrupt one, as
        # ImageFolderDataset does; the crop stays seeded by the requested (index, epoch)
        return first_decodable(self.samples, index, lambda s: self._load(s, index, epoch), self.skipped, self.root)

    def _load(self, sample: tuple[str, int], index: int, epoch: int) -> tuple[torch.Tensor, int]:
        path, label = sample
        if not self.train:
            return load_image(path, self.size, self.in_chans, self.crop_pct, self.interpolation), label
        rng = np.random.default_rng((self.seed, epoch, index))
        return load_random_resized_crop(
            path, self.size, self.in_chans, rng, self.scale, self.ratio, self.interpolation
        ), label
