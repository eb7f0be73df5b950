"""DeiT/AutoFormer's training augmentation, batched on the training device.

The loader workers only decode and cut the RandomResizedCrop (:mod:`.decode`); everything else
runs here on whole ``[B, C, H, W]`` batches, on the GPU when training on one:

1. horizontal flip (p = 0.5);
2. RandAugment as timm's ``rand-m9-mstd0.5-inc1`` that DeiT and AutoFormer train with: per image,
   ``n`` operations drawn with replacement from timm's 15 "increasing" operations, each applied
   with probability ``randaug_prob`` at a magnitude ~ N(m, mstd) clipped to [0, 10]; or
   TrivialAugment (one operation, always applied, magnitude uniform in [0, 10], over the same
   operations: the paper's "TA (RA)" variant);
3. normalisation with ``data.mean`` / ``data.std``;
4. random erasing: with probability ``random_erasing`` one box of 2-33 % of the image, aspect
   ratio 0.3-3.3, filled with per-pixel N(0, 1) noise (timm's ``mode='pixel'``);
5. Mixup (alpha 0.8) or CutMix (alpha 1.0, area-corrected lambda), one of them per batch with
   ``mixup_switch_prob``, each image paired with the batch reversed (timm's ``mode='batch'``).
   The targets become soft ``[B, K]`` mixtures; label smoothing is applied by the loss.

Why not kornia's ``RandAugment``: it draws one pair of operations per *batch* and has no magnitude
noise, which is not the per-image policy DeiT was tuned with.  kornia supplies the two operations
that are fiddly to batch (histogram equalisation and PIL's sharpness kernel); the rest are a few
tensor lines each.  Every random number comes from the ``torch.Generator`` passed in (Beta draws
from numpy seeded by it), so a resumed run repeats its augmentation stream.
"""

from __future__ import annotations

import math
from types import ModuleType
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from quasar_vit.config import DataConfig
from quasar_vit.data.transforms import BatchTransform, _rand, _randint, random_hflip
from quasar_vit.errors import ConfigError

#: timm's _RAND_INCREASING_TRANSFORMS, in its order
RAND_OPS: tuple[str, ...] = (
    "auto_contrast",
    "equalize",
    "invert",
    "rotate",
    "posterize",
    "solarize",
    "solarize_add",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)


def _kornia_enhance() -> ModuleType:
    """``kornia.enhance``, imported when first needed (kornia is the optional 'imagenet' extra)."""
    try:
        import kornia.enhance as ke
    except ImportError:
        raise ConfigError(
            "data.auto_augment needs kornia (pip install 'quasar-vit[imagenet]'), or set data.auto_augment: none"
        ) from None
    return ke


def _gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma (PIL's ``convert('L')``), ``[B, 1, H, W]``; grey images are their own luma."""
    if x.shape[1] == 1:
        return x
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _col(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def _blend(degenerate: Tensor, x: Tensor, factor: Tensor) -> Tensor:
    """PIL ImageEnhance: ``degenerate + factor * (x - degenerate)``, clipped to [0, 1]."""
    return (degenerate + _col(factor) * (x - degenerate)).clamp_(0.0, 1.0)


def _warp(x: Tensor, m: Tensor, fill: Tensor) -> Tensor:
    """Affine warp with PIL's convention: ``m [b, 2, 3]`` maps an output pixel position (continuous
    coordinates, origin at the top-left corner) to the input position it samples; bicubic, and
    positions outside the image take the ``fill`` colour."""
    b, _, h, w = x.shape
    to_norm = x.new_tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]])
    from_norm = x.new_tensor([[w / 2.0, 0.0, w / 2.0], [0.0, h / 2.0, h / 2.0], [0.0, 0.0, 1.0]])
    m3 = torch.cat([m, x.new_tensor([0.0, 0.0, 1.0]).expand(b, 1, 3)], dim=1)
    theta = (to_norm @ m3 @ from_norm)[:, :2]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    return out.add_(fill).clamp_(0.0, 1.0)


def _affine(x: Tensor, a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor, fill: Tensor) -> Tensor:
    return _warp(x, torch.stack([torch.stack([a, b, c], 1), torch.stack([d, e, f], 1)], 1), fill)


def _geometric(name: str, x: Tensor, v: Tensor, sign: Tensor, fill: Tensor) -> Tensor:
    """Rotate (30 deg at level 10), ShearX/Y (0.3), TranslateX/YRel (45 % of the side), PIL-style."""
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    _, _, h, w = x.shape
    if name == "rotate":
        a = -torch.deg2rad(v * 30.0 * sign)
        cos, sin, cx, cy = torch.cos(a), torch.sin(a), w / 2.0, h / 2.0
        return _affine(x, cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy, fill)
    if name == "shear_x":
        return _affine(x, one, v * 0.3 * sign, zero, zero, one, zero, fill)
    if name == "shear_y":
        return _affine(x, one, zero, zero, v * 0.3 * sign, one, zero, fill)
    if name == "translate_x":
        return _affine(x, one, zero, v * 0.45 * sign * w, zero, one, zero, fill)
    return _affine(x, one, zero, zero, zero, one, v * 0.45 * sign * h, fill)  # translate_y


def _levels(x: Tensor) -> Tensor:
    return (x * 255.0).round_()


def _apply_op(name: str, x: Tensor, level: Tensor, sign: Tensor, fill: Tensor) -> Tensor:
    """One RandAugment operation on images ``x`` in [0, 1] at per-image ``level`` in [0, 10] (timm's
    level-to-argument rules for the 'increasing' variants; ``sign`` negates the symmetric ones)."""
    v = level / 10.0
    if name in ("rotate", "shear_x", "shear_y", "translate_x", "translate_y"):
        return _geometric(name, x, v, sign, fill)
    if name == "auto_contrast":
        lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        span = hi - lo
        return torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), x)
    if name == "equalize":
        return _kornia_enhance().equalize(x)
    if name == "invert":
        return 1.0 - x
    if name == "posterize":  # keep 4 - int(4 v) most significant bits
        drop = 2.0 ** (8 - (4 - torch.floor(v * 4.0)))
        return torch.floor(_levels(x) / _col(drop)) * _col(drop) / 255.0
    if name == "solarize":  # invert levels >= 256 - int(256 v)
        x8 = _levels(x)
        return torch.where(x8 >= _col(256.0 - torch.floor(v * 256.0)), 255.0 - x8, x8) / 255.0
    if name == "solarize_add":  # add int(110 v) to levels below 128
        x8 = _levels(x)
        return torch.where(x8 < 128, (x8 + _col(torch.floor(v * 110.0))).clamp_(max=255.0), x8) / 255.0
    factor = (1.0 + v * 0.9 * sign).clamp_(min=0.1)  # the 'increasing' enhance ops: 0.1 .. 1.9
    if name == "color":
        return _blend(_gray(x), x, factor)
    if name == "contrast":
        return _blend(_gray(x).mean(dim=(1, 2, 3), keepdim=True), x, factor)
    if name == "brightness":
        return _blend(torch.zeros_like(x), x, factor)
    return _kornia_enhance().sharpness(x, factor).clamp_(0.0, 1.0)  # sharpness


def rand_augment(
    x: Tensor,
    generator: torch.Generator | None,
    n: int,
    m: float,
    mstd: float,
    prob: float,
    fill: Tensor,
    uniform: bool = False,
) -> Tensor:
    """``n`` RandAugment layers on images in [0, 1]; ``uniform`` draws magnitudes in [0, 10]
    (TrivialAugment) instead of N(m, mstd).  Operations are applied to the images that drew them."""
    b, dev = x.shape[0], x.device
    x = x.clone()
    for _ in range(n):
        op = _randint(len(RAND_OPS), (b,), generator, dev)
        apply = _rand((b,), generator, dev) < prob
        if uniform:
            level = _rand((b,), generator, dev) * 10.0
        else:
            gdev = generator.device if generator is not None else dev
            noise = torch.randn((b,), generator=generator, device=gdev).to(dev)
            level = (m + mstd * noise).clamp_(0.0, 10.0)
        sign = torch.where(_rand((b,), generator, dev) < 0.5, -1.0, 1.0)
        for k, sel in _images_per_op(torch.where(apply, op, -1)).items():
            x[sel] = _apply_op(RAND_OPS[k], x[sel], level[sel], sign[sel], fill)
    return x


def _images_per_op(op: Tensor) -> dict[int, Tensor]:
    """Indices of the images that drew each operation (``-1``: none), in operation order.

    One device-to-host copy per RandAugment layer: a ``nonzero`` per operation would stall a GPU
    stream 15 times per layer."""
    ops = op.cpu()
    order = torch.argsort(ops, stable=True)
    kinds, counts = torch.unique_consecutive(ops[order], return_counts=True)
    groups = torch.split(order, counts.tolist())
    return {int(k): g.to(op.device) for k, g in zip(kinds.tolist(), groups) if k >= 0}


def random_erasing(
    x: Tensor,
    prob: float,
    generator: torch.Generator | None,
    area: tuple[float, float] = (0.02, 1 / 3),
    log_ratio: tuple[float, float] = (math.log(0.3), math.log(1 / 0.3)),
    attempts: int = 10,
) -> Tensor:
    """timm's RandomErasing(mode='pixel', max_count=1) on a normalised batch, one box per image at most:
    the first of ``attempts`` random boxes that fits, filled with N(0, 1) noise."""
    if prob <= 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    target = (area[0] + (area[1] - area[0]) * _rand((b, attempts), generator, dev)) * (h * w)
    aspect = torch.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * _rand((b, attempts), generator, dev))
    eh, ew = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
    fits = (eh < h) & (ew < w)
    first = fits.float().argmax(dim=1, keepdim=True)
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    top = torch.floor(_rand((b,), generator, dev) * (h - eh + 1))
    left = torch.floor(_rand((b,), generator, dev) * (w - ew + 1))
    erase = (_rand((b,), generator, dev) < prob) & fits.any(dim=1)
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)
    idx = erase.nonzero().squeeze(1)  # noise only for the images that erase (a quarter at p = 0.25)
    gdev = generator.device if generator is not None else dev
    noise = torch.randn((len(idx), *x.shape[1:]), generator=generator, device=gdev, dtype=x.dtype).to(dev)
    out = x.clone()
    out[idx] = torch.where(mask[idx], noise, x[idx])
    return out


def mixup_cutmix(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    prob: float,
    switch_prob: float,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """timm's Mixup in 'batch' mode: one lambda per batch, image ``i`` mixed with image ``B-1-i``.

    Returns the mixed batch and soft targets ``lam * onehot(y) + (1 - lam) * onehot(flip(y))``; CutMix
    pastes the partner's box and corrects ``lam`` to the pasted area actually kept.
    """
    seed = int(
        torch.randint(0, 2**62, (1,), generator=generator, device=generator.device if generator is not None else None)
    )
    rng = np.random.default_rng(seed)
    onehot = F.one_hot(y.to(torch.int64), num_classes).to(torch.float32)
    lam, use_cutmix = 1.0, False
    if (mixup_alpha > 0 or cutmix_alpha > 0) and rng.random() < prob:
        use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha) if use_cutmix else rng.beta(mixup_alpha, mixup_alpha))
    if lam >= 1.0:
        return x, onehot
    if use_cutmix:
        h, w = x.shape[-2:]
        cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        y0, y1 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
        x0, x1 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
        lam = 1.0 - float((y1 - y0) * (x1 - x0)) / (h * w)
    else:
        x = x * lam + x.flip(0) * (1.0 - lam)
    return x, lam * onehot + (1.0 - lam) * onehot.flip(0)


class DeitAugment:
    """uint8 ``[B, C, H, W]`` batch and labels -> normalised float batch and (soft) targets."""

    def __init__(self, cfg: DataConfig, num_classes: int) -> None:
        self.cfg, self.num_classes = cfg, num_classes
        self.normalise = BatchTransform(cfg.mean, cfg.std)  # checks mean/std
        self._fill = torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.mixing = cfg.mixup_prob > 0 and (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0)
        if cfg.auto_augment != "none" and cfg.randaug_n > 0:
            _kornia_enhance()  # fail at start-up, not at the first batch that draws equalize

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        c = self.cfg
        if c.hflip:
            x = random_hflip(x, 0.5, generator)
        if c.auto_augment != "none" and c.randaug_n > 0:
            trivial = c.auto_augment == "trivial"
            xf = rand_augment(
                x.to(torch.float32) / 255.0,
                generator,
                1 if trivial else c.randaug_n,
                c.randaug_m,
                c.randaug_mstd,
                1.0 if trivial else c.randaug_prob,
                self._fill_on(x.device),
                uniform=trivial,
            )
            x = (xf * 255.0).round_().to(torch.uint8)  # back to pixel levels, as PIL hands them to ToTensor
        x = self.normalise(x)
        x = random_erasing(x, c.random_erasing, generator)
        if not self.mixing:
            return x, y
        return mixup_cutmix(
            x, y, self.num_classes, c.mixup_alpha, c.cutmix_alpha, c.mixup_prob, c.mixup_switch_prob, generator
        )

    def _fill_on(self, device: torch.device) -> Tensor:
        """The geometric ops' fill colour (the mean), copied to ``device`` once, not per batch."""
        if self._fill.device != device:
            self._fill = self._fill.to(device)
        return self._fill

    def __repr__(self) -> str:
        c = self.cfg
        return (
            f"DeitAugment(hflip={c.hflip}, auto_augment={c.auto_augment}(n={c.randaug_n}, m={c.randaug_m}, "
            f"mstd={c.randaug_mstd}, p={c.randaug_prob}), random_erasing={c.random_erasing}, "
            f"mixup={c.mixup_alpha}, cutmix={c.cutmix_alpha}, mix_prob={c.mixup_prob}, "
            f"switch={c.mixup_switch_prob})"
        )


class SimpleAugment:
    """The simple recipe (or no augmentation): :class:`BatchTransform` on the images, labels as they are."""

    def __init__(self, cfg: DataConfig) -> None:
        self.transform = BatchTransform.from_config(cfg, train=True)

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(x, generator), y

    def __repr__(self) -> str:
        return f"SimpleAugment({self.transform!r})"


def train_augmentation(cfg: DataConfig, num_classes: int) -> DeitAugment | SimpleAugment:
    """The training batch transform of ``data.recipe``; its targets are class indices, or soft
    ``[B, K]`` mixtures when Mixup/CutMix are on."""
    if cfg.recipe == "deit" and cfg.augment:
        return DeitAugment(cfg, num_classes)
    return SimpleAugment(cfg)
