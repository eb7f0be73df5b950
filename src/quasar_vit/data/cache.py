"""A decoded-crop cache for the fixed evaluation splits (issue 18, part 5).

Why: the search scores every candidate on the same validation crops (and the front on the same
test crops).  Decoding 10,000 JPEGs with a bicubic resize per candidate costs 50-80 s on one core
while the model waits; the crops never change, so they are decoded once into a uint8 array
``[N, C, S, S]`` stored as a memory-mapped ``.npy`` file, and every later candidate reads pixels.

The file name carries a key over everything that decides the pixels: the split name, the
evaluation geometry (size, crop fraction, filter, channels) and the file list (path, label, byte
size and modification time of every image).  Another file list, an edited image or another
geometry gives another key, hence a fresh decode; a stale file is never read.  The file is written
to a temporary name and moved into place (:func:`quasar_vit.utils.io.atomic_path`), so a crash
mid-decode leaves no half-written cache behind.

Where: ``$QUASAR_VIT_CACHE`` (``off`` disables caching), else ``~/.cache/quasar-vit/crops``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from quasar_vit.errors import DataError

CACHE_ENV = "QUASAR_VIT_CACHE"
FORMAT = 1


def default_cache_dir() -> Path | None:
    """The cache directory, or ``None`` when caching is switched off (``QUASAR_VIT_CACHE=off``)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() in ("off", "0", "none", "false"):
        return None
    return Path(env) if env else Path.home() / ".cache" / "quasar-vit" / "crops"


def crop_key(ds: Any, split: str) -> str:
    """Hex key over the split, the evaluation geometry and the file list (with sizes and mtimes)."""
    h = hashlib.sha256()
    geometry = {
        "format": FORMAT,
        "split": split,
        "size": ds.size,
        "crop_pct": ds.crop_pct,
        "interpolation": ds.interpolation,
        "in_chans": ds.in_chans,
    }
    h.update(json.dumps(geometry, sort_keys=True).encode())
    for path, label in ds.samples:
        try:
            st = os.stat(path)
        except OSError as exc:
            raise DataError(f"cannot read image {path}: {exc.strerror}") from None
        h.update(f"\n{path}\t{label}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


class CachedCrops(Dataset):
    """Items ``(uint8 [C, S, S], label)`` read from a memory-mapped array: the same items as the
    :class:`~quasar_vit.data.decode.FolderCrops` it was built from, without decoding."""

    def __init__(self, pixels: np.ndarray, targets: list[int], source: Any, path: Path) -> None:
        self.pixels, self.targets, self.path = pixels, list(targets), path
        self.classes = getattr(source, "classes", [])
        self.samples = getattr(source, "samples", [])
        self.root = getattr(source, "root", None)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.pixels[int(index)])), self.targets[int(index)]


def _decode_into(ds: Any, path: Path) -> None:
    """Decode every item of ``ds`` into a new ``.npy`` at ``path`` (written atomically)."""
    from quasar_vit.utils.io import atomic_path

    shape = (len(ds), ds.in_chans, ds.size, ds.size)
    with atomic_path(path) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i in range(len(ds)):
            x, _ = ds[i]
            arr[i] = x.numpy()
        arr.flush()
        del arr


def cached_eval_crops(ds: Any, split: str, cache_dir: Path | None = None) -> Any:
    """``ds`` backed by the crop cache when it is a deterministic evaluation split of decoded JPEGs
    (:class:`FolderCrops` with ``train=False``); anything else (in-memory tensors, random training
    crops, caching switched off) is returned unchanged."""
    from quasar_vit.data.decode import FolderCrops

    if not isinstance(ds, FolderCrops) or ds.train or len(ds) == 0 or ds.skip_corrupt:
        return ds
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    if cache_dir is None:
        return ds
    path = Path(cache_dir) / f"{split}-{ds.size}px-{crop_key(ds, split)}.npy"
    if not path.is_file():
        try:
            _decode_into(ds, path)
        except OSError as exc:
            raise DataError(f"cannot write the crop cache {path}: {exc.strerror or exc}") from None
    try:
        pixels = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"crop cache {path} is unreadable ({exc}); delete it to rebuild") from None
    if pixels.shape != (len(ds), ds.in_chans, ds.size, ds.size) or pixels.dtype != np.uint8:
        raise DataError(
            f"crop cache {path} has shape {pixels.shape}, expected "
            f"{(len(ds), ds.in_chans, ds.size, ds.size)}; delete it to rebuild"
        )
    return CachedCrops(pixels, ds.targets, ds, path)


__all__ = ["CACHE_ENV", "CachedCrops", "cached_eval_crops", "crop_key", "default_cache_dir"]
