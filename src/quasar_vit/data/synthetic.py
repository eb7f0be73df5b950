"""A synthetic ImageFolder of JPEGs, for exercising the ImageNet path where ImageNet is absent.

Tests and ``benchmarks/imagenet_scale.py`` need JPEGs of varied, realistic sizes (300-500 px) whose
classes differ, so that decode, RandomResizedCrop, the 224 geometry and the whole pipeline run as
on ImageNet.  Each image is a class-dependent colour gradient plus noise; the content is seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_synthetic_imagefolder(root: str | Path, per_class: dict[str, int], classes: int = 4, seed: int = 0) -> Path:
    """Write ``root/SPLIT/classK/I.jpg`` with ``per_class[SPLIT]`` images per class; returns ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = (int(v) for v in rng.integers(300, 501, size=2))
                yy, xx = np.mgrid[0:h, 0:w]
                base = np.stack([(xx * (c + 1) * 255 // w) % 256, yy * 255 // h, np.full_like(xx, 60 * c)], -1)
                img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.jpg", quality=85)
    return root
