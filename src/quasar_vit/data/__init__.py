"""Data sets (Fashion-MNIST/MNIST IDX, CIFAR-10 batches, ImageFolder), batch transforms, loaders.

Images travel as ``uint8 [B, C, H, W]`` until the training loop applies a :class:`BatchTransform`
on its device; loaders yield batches in an order fixed by ``(seed, epoch)`` so runs resume exactly.
"""

from quasar_vit.data.build import DataSplits, build_datasets
from quasar_vit.data.cifar import SafeUnpickler, load_cifar10_split, safe_load_pickle
from quasar_vit.data.datasets import IndexedSubset, TensorImageDataset, resize_images, subset
from quasar_vit.data.idx import load_idx_split, parse_idx, read_idx, write_idx
from quasar_vit.data.imagefolder import ImageFolderDataset, load_image
from quasar_vit.data.loaders import (
    EpochSampler,
    TensorBatchLoader,
    batches_per_epoch,
    epoch_indices,
    infinite_batches,
    make_loader,
)
from quasar_vit.data.transforms import BatchTransform, eval_transform, mixup, train_transform

__all__ = [
    "BatchTransform",
    "DataSplits",
    "EpochSampler",
    "ImageFolderDataset",
    "IndexedSubset",
    "SafeUnpickler",
    "TensorBatchLoader",
    "TensorImageDataset",
    "batches_per_epoch",
    "build_datasets",
    "epoch_indices",
    "eval_transform",
    "infinite_batches",
    "load_cifar10_split",
    "load_idx_split",
    "load_image",
    "make_loader",
    "mixup",
    "parse_idx",
    "read_idx",
    "resize_images",
    "safe_load_pickle",
    "subset",
    "train_transform",
    "write_idx",
]
