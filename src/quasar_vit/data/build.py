"""``build_datasets``: config -> train / val / test data sets, checked against the model.

The validation split (used by the evolutionary search) is carved out of the *training* split with a
permutation seeded by ``seed``, so search never peeks at the test split and a given seed always
holds out the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from quasar_vit.config import DataConfig
from quasar_vit.data.cifar import class_names as cifar_class_names
from quasar_vit.data.cifar import find_batches_dir, load_cifar10_split
from quasar_vit.data.datasets import TensorImageDataset, resize_images, subset
from quasar_vit.data.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_idx_split
from quasar_vit.data.imagefolder import ImageFolderDataset
from quasar_vit.errors import DataError

TEST_SUBSET_SEED = 1234  # test_limit picks a fixed subset, the same for every training seed


@dataclass
class DataSplits:
    """The three splits plus class metadata (``num_classes`` as found in the data)."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    classes: list[str] = field(default_factory=list)
    name: str = ""


def _in_memory(images: np.ndarray, labels: np.ndarray, img_size: int) -> TensorImageDataset:
    x = resize_images(torch.from_numpy(images), img_size)
    return TensorImageDataset(x, torch.from_numpy(labels))


RawSplit = TensorImageDataset | ImageFolderDataset


def _load_raw(cfg: DataConfig, img_size: int, in_chans: int) -> tuple[RawSplit, RawSplit, list[str], int]:
    """Full train and test splits, the class names, and the data's native channel count."""
    if cfg.name in ("fashion-mnist", "mnist"):
        classes = FASHION_MNIST_CLASSES if cfg.name == "fashion-mnist" else MNIST_CLASSES
        train = _in_memory(*load_idx_split(cfg.root, train=True), img_size)
        test = _in_memory(*load_idx_split(cfg.root, train=False), img_size)
        return train, test, list(classes), 1
    if cfg.name == "cifar10":
        names = cifar_class_names(find_batches_dir(cfg.root))
        train = _in_memory(*load_cifar10_split(cfg.root, train=True), img_size)
        test = _in_memory(*load_cifar10_split(cfg.root, train=False), img_size)
        return train, test, names, 3
    if cfg.name == "imagefolder":
        from pathlib import Path

        root = Path(cfg.root)
        if not root.is_dir():
            raise DataError(f"data set root not found: {root}")
        train_ds = ImageFolderDataset(root / "train", img_size, in_chans, skip_corrupt=cfg.skip_corrupt)
        test_ds = ImageFolderDataset(
            root / "val", img_size, in_chans, classes=train_ds.classes, skip_corrupt=cfg.skip_corrupt
        )
        return train_ds, test_ds, train_ds.classes, in_chans
    raise DataError(f"data.name: unknown data set '{cfg.name}' (fashion-mnist, mnist, cifar10, imagefolder)")


def _seeded_perm(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.randperm(n, generator=g)


def build_datasets(cfg: DataConfig, img_size: int, in_chans: int, num_classes: int, seed: int = 0) -> DataSplits:
    """Load ``cfg.name`` from ``cfg.root`` and split it.

    * ``val``: ``cfg.val_size`` training images chosen by a permutation seeded with ``seed``;
    * ``train``: the rest, limited to ``cfg.train_limit`` random ones when > 0;
    * ``test``: the official test split (ImageFolder: ``val/``), limited to ``cfg.test_limit``.

    Index lists are sorted so lazily decoded sets read their files in directory order.
    """
    train_full, test_full, classes, native_chans = _load_raw(cfg, img_size, in_chans)
    if native_chans != in_chans:
        raise DataError(f"data set {cfg.name} has {native_chans} channel(s) but model.geometry.in_chans is {in_chans}")
    if len(classes) != num_classes:
        raise DataError(
            f"data set {cfg.name} at {cfg.root} has {len(classes)} classes "
            f"but model.geometry.num_classes is {num_classes}"
        )
    n = len(train_full)
    if cfg.val_size < 0 or cfg.train_limit < 0 or cfg.test_limit < 0:
        raise DataError("data.val_size, data.train_limit and data.test_limit must be >= 0")
    if cfg.val_size >= n:
        raise DataError(f"data.val_size={cfg.val_size} leaves no training images ({n} in the training split)")
    perm = _seeded_perm(n, seed)
    val_idx = perm[: cfg.val_size].sort().values
    train_idx = perm[cfg.val_size :]
    if cfg.train_limit:
        train_idx = train_idx[: cfg.train_limit]
    train_idx = train_idx.sort().values
    test_idx = torch.arange(len(test_full))
    if cfg.test_limit and cfg.test_limit < len(test_full):
        test_idx = _seeded_perm(len(test_full), TEST_SUBSET_SEED)[: cfg.test_limit].sort().values
    if (
        cfg.recipe == "deit"
        and isinstance(train_full, ImageFolderDataset)
        and isinstance(test_full, ImageFolderDataset)
    ):
        return _deit_splits(cfg, train_full, test_full, (train_idx, val_idx, test_idx), img_size, seed, classes)
    test = test_full if len(test_idx) == len(test_full) else subset(test_full, test_idx)
    return DataSplits(
        train=subset(train_full, train_idx),
        val=subset(train_full, val_idx),
        test=test,
        num_classes=len(classes),
        classes=list(classes),
        name=cfg.name,
    )


def _deit_splits(
    cfg: DataConfig,
    train_full: ImageFolderDataset,
    test_full: ImageFolderDataset,
    idx: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    img_size: int,
    seed: int,
    classes: list[str],
) -> DataSplits:
    """The DeiT recipe's geometry: RandomResizedCrop for training (when ``augment``), resize to
    ``img_size / eval_crop_pct`` and centre crop for validation and test (:mod:`.decode`)."""
    from quasar_vit.data.decode import FolderCrops

    common: dict[str, Any] = dict(
        size=img_size,
        seed=seed,
        scale=cfg.rrc_scale,
        ratio=cfg.rrc_ratio,
        interpolation=cfg.interpolation,
        crop_pct=cfg.eval_crop_pct,
    )
    train_idx, val_idx, test_idx = idx
    return DataSplits(
        train=FolderCrops(train_full, train_idx, train=cfg.augment, **common),
        val=FolderCrops(train_full, val_idx, train=False, **common),
        test=FolderCrops(test_full, test_idx, train=False, **common),
        num_classes=len(classes),
        classes=list(classes),
        name=cfg.name,
    )
