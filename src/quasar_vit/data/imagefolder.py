"""ImageFolder data (ImageNet layout): ``root/train/<class>/*.jpg`` and ``root/val/<class>/*``.

Images are decoded lazily with PIL (an ImageNet tree does not fit in memory), resized so the shorter
side is ``img_size * 256 / 224`` (:func:`load_image`) and centre-cropped to ``img_size`` -- the usual ImageNet eval
geometry -- and returned as ``uint8 [C, H, W]``.  Random crop/flip happen later on whole batches
(:mod:`.transforms`), so every worker does the same cheap deterministic work per image.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from quasar_vit.errors import DataError

IMG_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
)


def find_classes(split_dir: Path) -> list[str]:
    """Sorted class-directory names (sorted so labels do not depend on the file system's order)."""
    if not split_dir.is_dir():
        raise DataError(f"image folder not found: {split_dir}")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {split_dir} has no class subdirectories")
    return classes


def scan_samples(split_dir: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """``(path, label)`` for every image file below each class directory, in sorted order."""
    samples: list[tuple[str, int]] = []
    for name in sorted(class_to_idx):
        cdir = split_dir / name
        if not cdir.is_dir():
            continue
        files: list[str] = []
        for dirpath, dirnames, filenames in os.walk(cdir, followlinks=True):
            dirnames.sort()
            files.extend(
                os.path.join(dirpath, f) for f in filenames if os.path.splitext(f)[1].lower() in IMG_EXTENSIONS
            )
        samples.extend((f, class_to_idx[name]) for f in sorted(files))
    return samples


#: PIL resize filters by the name used in ``data.interpolation``
RESAMPLE: dict[str, Image.Resampling] = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

#: decode failures that mean "this file is not a readable image" (a user's data problem)
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


def to_chw(im: Image.Image) -> torch.Tensor:
    """A decoded PIL image -> contiguous uint8 ``[C, H, W]``."""
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def decode_error(path: str, exc: Exception) -> DataError:
    """The one-line error for an undecodable image (``data.skip_corrupt`` catches it)."""
    return DataError(f"cannot decode image {path}: {exc}")


def load_image(
    path: str, img_size: int, in_chans: int, crop_pct: float = 0.875, interpolation: str = "bilinear"
) -> torch.Tensor:
    """Decode, resize the shorter side to ``floor(img_size / crop_pct)`` (256 for 224) and centre-crop
    ``img_size`` -> uint8 ``[C, img_size, img_size]``: the ImageNet evaluation geometry (timm's eval
    transform with ``interpolation``; the DeiT recipe uses bicubic, the simple recipe bilinear).

    JPEGs are decoded at a reduced scale when they are much larger than needed (PIL's ``draft``).
    """
    mode = "RGB" if in_chans == 3 else "L"
    short = max(img_size, math.floor(img_size / crop_pct))
    try:
        with Image.open(path) as raw:
            if raw.format == "JPEG":
                raw.draft(mode, (short, short))
            im = raw.convert(mode)
    except DECODE_ERRORS as exc:
        raise decode_error(path, exc) from None
    w, h = im.size
    nw, nh = (short, max(short, round(h * short / w))) if w <= h else (max(short, round(w * short / h)), short)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), RESAMPLE[interpolation])
    left, top = (nw - img_size) // 2, (nh - img_size) // 2
    return to_chw(im.crop((left, top, left + img_size, top + img_size)))


class ImageFolderDataset(Dataset):
    """One split of an ImageFolder tree; items are ``(uint8 [C, img, img], label)``."""

    def __init__(
        self,
        split_dir: str | Path,
        img_size: int,
        in_chans: int,
        classes: list[str] | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        if in_chans not in (1, 3):
            raise DataError(f"image folders need in_chans 1 or 3, got {in_chans}")
        self.root = Path(split_dir)
        own = find_classes(self.root)
        if classes is None:
            classes = own
        else:
            extra = sorted(set(own) - set(classes))
            if extra:
                raise DataError(
                    f"{self.root}: class directories not in the training split: "
                    f"{', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}"
                )
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = scan_samples(self.root, self.class_to_idx)
        if not self.samples:
            raise DataError(f"image folder {self.root} contains no images ({', '.join(sorted(IMG_EXTENSIONS))})")
        self.targets = [s[1] for s in self.samples]
        self.img_size = img_size
        self.in_chans = in_chans
        self.skip_corrupt = skip_corrupt
        self.skipped: set[str] = set()  # corrupt files met by this process (each loader worker has its own)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        if not self.skip_corrupt:
            return load_image(path, self.img_size, self.in_chans), label
        return self._load_skipping(index)

    def _load_skipping(self, index: int) -> tuple[torch.Tensor, int]:
        """The image at ``index``, or the first decodable one after it (data.skip_corrupt).

        The batch keeps its size (a replacement, not a hole), so training, resume and the data
        order of the other ranks are unchanged; each bad file is reported once per process.
        """
        return first_decodable(
            self.samples,
            index,
            lambda s: (load_image(s[0], self.img_size, self.in_chans), s[1]),
            self.skipped,
            self.root,
        )


def first_decodable(
    samples: list[tuple[str, int]],
    index: int,
    load: Callable[[tuple[str, int]], tuple[torch.Tensor, int]],
    skipped: set[str],
    root: Path,
) -> tuple[torch.Tensor, int]:
    """``load`` of ``samples[index]``, or of the first decodable sample after it (data.skip_corrupt);
    each corrupt file is added to ``skipped`` and reported once, with the running count."""
    for k in range(min(len(samples), 1000)):
        sample = samples[(index + k) % len(samples)]
        try:
            return load(sample)
        except DataError as exc:
            if sample[0] not in skipped:
                skipped.add(sample[0])
                print(
                    f"warning: {exc}; skipped (data.skip_corrupt), {len(skipped)} skipped so far in this process",
                    file=sys.stderr,
                    flush=True,
                )
    raise DataError(f"{root}: no decodable image among 1000 in a row from index {index}")
