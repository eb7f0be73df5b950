"""Experiment configuration: YAML files mapped onto typed dataclasses.

Configs are data.  ``load_config`` rejects unknown keys and values of the wrong type with a
message that names the offending key (``train.lr: expected a number, got 'fast'``).  A config name
without a path (``fmnist-tiny``) resolves to the file bundled in ``configs/``.

Choices the paper (Quasar-ViT, ICS 2024) leaves open are fields here, with the defaults
documented in docs/design.md.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quasar_vit.errors import ConfigError, SubnetError
from quasar_vit.space import SearchSpace, ViTGeometry, nest_geometry

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class QuantConfig:
    """Quantization scheme (paper section 1)."""

    enabled: bool = True
    w_bits_low: int = 4  # bits of a "4-bit" row
    w_bits_high: int = 8  # bits of an "8-bit" row
    act_bits: int = 6  # activations feeding every linear layer and both attention matmuls
    # open: LSQ step init; per-row step = 2*mean|w|/sqrt(Qp) as in the LSQ paper
    lsq_grad_scale: bool = True  # scale step gradients by 1/sqrt(numel*Qp) (LSQ)
    # model.nonlinear: integer only (docs/design.md, "Integer nonlinear ops"):
    residual_bits: int = 20  # the residual stream's codes (one calibrated step for the network)
    gelu_in_bits: int = 10  # GELU table index: 2**10 entries, fused with fc1's requantisation
    softmax_frac_bits: int = 6  # fraction bits of softmax's exp2 argument: a 2**6-entry table


@dataclass
class ModelConfig:
    """The supernet's search space and fixed geometry.

    In YAML the geometry is the mapping ``model.geometry`` (keys of :class:`ViTGeometry`); keys it
    leaves out keep the defaults below (Fashion-MNIST's), not :class:`ViTGeometry`'s.
    """

    geometry: ViTGeometry = ViTGeometry(img_size=28, patch_size=7, in_chans=1, num_classes=10, head_dim=16)
    embed_dims: list[int] = field(default_factory=lambda: [48, 64, 96])
    depths: list[int] = field(default_factory=lambda: [4, 5, 6])
    num_heads: list[int] = field(default_factory=lambda: [2, 3, 4])
    mlp_ratios: list[float] = field(default_factory=lambda: [2.0, 3.0, 4.0])
    w8_shares: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    # open in the paper (row-wise shares "per layer"): one share per transformer block, used by its
    # qkv, proj, fc1 and fc2, or one per linear; it sets how training and search draw subnets
    share_granularity: str = "block"
    # LayerNorm, softmax, GELU, residual adds and layer scaling: "integer" (the accelerator's
    # arithmetic, trained bit-exactly; quasar_vit/quantization/intops.py) or "float" (float ops, as
    # checkpoints before integer ops were trained; a stored config without the key is "float")
    nonlinear: str = "integer"  # one of NONLINEAR_MODES
    layer_scale: bool = True  # supernet layer scaling (paper section 2)
    layer_scale_init: float = 0.1  # open: CaiT uses 0.1 for depth <= 18
    drop_path: float = 0.0

    def space(self) -> SearchSpace:
        return SearchSpace(
            embed_dims=tuple(self.embed_dims),
            depths=tuple(self.depths),
            num_heads=tuple(self.num_heads),
            mlp_ratios=tuple(self.mlp_ratios),
            w8_shares=tuple(self.w8_shares),
            geometry=self.geometry,
            share_granularity=self.share_granularity,
        )


@dataclass
class DataConfig:
    """Where the images come from.  ``name``: fashion-mnist | mnist | cifar10 | imagefolder."""

    name: str = "fashion-mnist"
    root: str = "/usr/share/datasets/fashion-mnist"
    # training images held out (never trained on) as the validation split the search scores on; the
    # search uses its first search.val_images of them (never the test split)
    val_size: int = 5000
    train_limit: int = 0  # 0 = all training images (after removing the validation split)
    test_limit: int = 0
    augment: bool = True  # training augmentation on/off (what it is: ``recipe``)
    # simple: padded random crop + horizontal flip on uint8 batches (the small in-memory data sets);
    # deit: DeiT/AutoFormer's ImageNet recipe (imagefolder only): RandomResizedCrop in the loader
    # workers, then flip, RandAugment, normalisation, random erasing and Mixup/CutMix batched on the
    # training device (quasar_vit.data.augment); evaluation resizes to img_size/eval_crop_pct and
    # centre-crops.  The defaults of the keys below are DeiT's (Touvron et al. 2021, Table 9; timm's
    # rand-m9-mstd0.5-inc1), which AutoFormer's supernet training reuses unchanged.
    recipe: str = "simple"  # one of RECIPES
    crop_padding: int = 2  # simple recipe only
    hflip: bool = True
    rrc_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    rrc_ratio: list[float] = field(default_factory=lambda: [0.75, 1.3333333333333333])  # its aspect range
    interpolation: str = "bicubic"  # resize filter of the deit recipe's crops (train and eval); INTERPOLATIONS
    eval_crop_pct: float = 0.875  # deit eval: resize the shorter side to img_size/0.875 (256), centre crop
    auto_augment: str = "rand"  # rand (RandAugment), trivial (TrivialAugment) or none; AUTO_AUGMENTS
    randaug_n: int = 2  # RandAugment: operations per image
    randaug_m: float = 9.0  # RandAugment: magnitude on timm's 0-10 scale
    randaug_mstd: float = 0.5  # RandAugment: std-dev of the per-operation magnitude noise
    randaug_prob: float = 0.5  # RandAugment: probability that a drawn operation is applied (timm)
    mixup_alpha: float = 0.8  # Beta(alpha, alpha) of Mixup; 0 = off
    cutmix_alpha: float = 1.0  # Beta(alpha, alpha) of CutMix; 0 = off
    mixup_prob: float = 1.0  # probability that a batch is mixed at all
    mixup_switch_prob: float = 0.5  # with both on: probability of CutMix instead of Mixup for a batch
    random_erasing: float = 0.25  # probability of erasing one random box per image (per-pixel noise)
    mean: list[float] = field(default_factory=lambda: [0.2860])
    std: list[float] = field(default_factory=lambda: [0.3530])
    num_workers: int = 0
    # imagefolder: an image that cannot be decoded stops the run with its path (False), or is replaced
    # by the next image and counted in a warning line (True) -- for a large crawl with a few bad files
    skip_corrupt: bool = False


@dataclass
class TrainConfig:
    """One-shot supernet training (paper section 2; sampling rule and teacher are open)."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_steps: int = 100
    grad_clip: float = 5.0
    sandwich_random: int = 2  # random subnets per step besides the largest and the smallest
    distill: bool = True  # in-place distillation from the largest subnet
    distill_temperature: float = 1.0
    label_smoothing: float = 0.1
    # LR multiplier for the quantizer steps.  AdamW moves every parameter by about ``lr`` per step
    # whatever its gradient's size (LSQ's gradient scale does not change that), so small steps
    # (8-bit weights, ~0.01) move by a large fraction of themselves.  Measured: 0.05 kept the 8-bit
    # steps fine but cost the all-4-bit subnet 1 point, so the default is 1 (docs/design.md).
    quant_step_lr_scale: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 20
    eval_every: int = 0  # 0 = only at the end
    seed: int = 0
    # mixed precision: none (fp32), bf16 (autocast; falls back to fp16 on GPUs without bf16) or fp16
    # (autocast with a GradScaler).  Quantizer scale and rounding arithmetic stays fp32 either way.
    amp: str = "none"  # one of AMP_MODES
    compile: bool = False  # torch.compile the supernet's forward (GPU runs; see docs/imagenet.md)
    # split each batch of ``batch_size`` into accum_steps equal micro-batches whose gradients add up
    # to the whole batch's: same optimisation, 1/accum_steps of the activation memory
    accum_steps: int = 1
    init: str | None = None  # pretrained weights to start from (timm/DeiT ViT or AutoFormer supernet)


#: model.nonlinear: how LayerNorm, softmax, GELU and the residual adds compute
NONLINEAR_MODES = ("integer", "float")
#: training recipes (data.recipe), resize filters (data.interpolation), auto-augment policies
#: (data.auto_augment) and mixed-precision modes (train.amp)
RECIPES = ("simple", "deit")
INTERPOLATIONS = ("bilinear", "bicubic")
AUTO_AUGMENTS = ("rand", "trivial", "none")
AMP_MODES = ("none", "bf16", "fp16")

#: how a mutated per-layer 8-bit share changes (search.share_mutation; quasar_vit.search.encoding)
SHARE_MUTATIONS = ("uniform", "step", "shift")
#: how racing judges a screen score (search.race_error, docs/search.md)
RACE_ERRORS = ("paired", "binomial")
#: what a raced search picks its parents by (search.select_on, docs/search.md)
SELECT_ON = ("full", "screen")


@dataclass
class SearchConfig:
    """Evolutionary search (paper section 3; population sizes are open: AutoFormer's defaults)."""

    platform: str = "zcu102"
    fps_targets: list[float] = field(default_factory=list)
    population: int = 50
    generations: int = 20
    parents: int = 10
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.2
    # share of fresh flexible samples with one 8-bit share for all layers (the rest: one per layer);
    # per-layer draws alone almost never reach the all-4-bit or all-8-bit ends (docs/search.md)
    tied_share_prob: float = 0.0
    # coarse-to-fine: the first tied_generations generations of a flexible search keep one 8-bit
    # share for all layers (the fixed-ratio subspace), later ones search it per layer (docs/search.md)
    tied_generations: int = 0
    # how a mutated per-layer 8-bit share changes: "uniform" (redrawn), "step" (one share up/down)
    # or "shift" (uniform, plus a move of the whole share vector one step; docs/experiments/search.md)
    share_mutation: str = "uniform"  # one of SHARE_MUTATIONS
    # flexible search: raise a drawn child's per-layer 8-bit shares, one step at a time in a random
    # gene order, while it still meets the tightest target it met as drawn (a repair: the latency
    # slack below that target is spent on 8-bit rows; docs/search.md)
    fill_slack: bool = False
    max_retries: int = 50
    # validation images each candidate is scored on: the first val_images of the data.val_size images
    # held out at training time (fewer if data.val_size is smaller); pareto.json's val_images
    val_images: int = 5000
    # racing (docs/search.md): every candidate is first scored on the first screen_size validation
    # images; only those that could still enter some target's top-`parents` are scored on all
    # val_images (0 = off).  "paired": its screen score + race_z paired standard errors reaches the
    # screen score of that target's parents-th best (the error from the images on which the two
    # disagree); "binomial": screen score + race_z binomial standard errors reaches its full score.
    screen_size: int = 1000
    race_z: float = 2.0
    race_error: str = "paired"  # one of RACE_ERRORS
    # "screen": parents are each target's top-`parents` by screen score, and that top is scored in
    # full as the search goes, so that winners and the front are still picked on all val_images (the
    # race_* keys then play no part); 2.8x faster at the default budget, same test top-1 within
    # noise over 3 seeds (docs/experiments/search.md).  "full": by full score (racing promotes the
    # candidates that could enter it)
    select_on: str = "screen"  # one of SELECT_ON
    eval_batch_size: int = 500
    seed: int = 0

    #: keys of earlier versions -> their name now (search.val_size read like data.val_size, the size
    #: of the held-out split, but is how many of its images a candidate is scored on)
    RENAMED: typing.ClassVar[dict[str, str]] = {"val_size": "val_images"}

    #: defaults that changed, key -> the earlier default.  A checkpoint keeps the config it was
    #: trained with, so one trained before the change still searches with the earlier value.
    EARLIER_DEFAULTS: typing.ClassVar[dict[str, Any]] = {"select_on": "full"}

    def earlier_defaults_in_use(self) -> dict[str, tuple[Any, Any]]:
        """``key -> (value, current default)`` for the keys set to a default that has since changed."""
        now = type(self)()
        return {
            k: (getattr(self, k), getattr(now, k))
            for k, old in self.EARLIER_DEFAULTS.items()
            if getattr(self, k) == old != getattr(now, k)
        }

    @classmethod
    def migrate(cls, section: dict[str, Any]) -> dict[str, Any]:
        """The ``search`` mapping with the :attr:`RENAMED` keys under their current name.

        Args:
            section: a ``search`` mapping of a config file, checkpoint or override.

        Returns:
            ``section`` itself when it holds no old key, else a renamed copy.
        """
        old = [k for k in cls.RENAMED if k in section]
        if not old:
            return section
        out = dict(section)
        for k in old:
            new = cls.RENAMED[k]
            if new in out:
                raise ConfigError(f"search.{k} is the old name of search.{new}: give only search.{new}")
            out[new] = out.pop(k)
        return out

    @property
    def budget(self) -> int:
        """Most accuracy evaluations one search mode makes (every slot of every generation filled)."""
        return self.population + (self.generations - 1) * (self.mutations + self.crossovers)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first out-of-range ``search.*`` key.

        Here rather than in :meth:`ExperimentConfig.validate` so that an evolution built straight
        from a ``SearchConfig`` (tests, library use) is checked by the same rules as a config file.
        """
        for key in ("population", "generations", "parents", "eval_batch_size", "val_images", "max_retries"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"search.{key}: must be positive, got {getattr(self, key)}")
        if not 0.0 <= self.tied_share_prob <= 1.0:
            raise ConfigError(f"search.tied_share_prob: must lie in [0, 1], got {self.tied_share_prob}")
        if self.mutations < 0 or self.crossovers < 0:
            raise ConfigError("search.mutations/search.crossovers: must be >= 0")
        if self.tied_generations < 0:
            raise ConfigError(f"search.tied_generations: must be >= 0, got {self.tied_generations}")
        if self.share_mutation not in SHARE_MUTATIONS:
            choices = ", ".join(SHARE_MUTATIONS)
            raise ConfigError(f"search.share_mutation: '{self.share_mutation}' is not one of {choices}")
        if self.parents > self.population:
            raise ConfigError("search.parents: must not exceed search.population")
        if not 0 <= self.mutation_prob <= 1:
            raise ConfigError("search.mutation_prob: must lie in [0, 1]")
        if self.select_on not in SELECT_ON:
            raise ConfigError(f"search.select_on: '{self.select_on}' is not one of {', '.join(SELECT_ON)}")
        if self.race_error not in RACE_ERRORS:
            raise ConfigError(f"search.race_error: '{self.race_error}' is not one of {', '.join(RACE_ERRORS)}")
        if self.screen_size < 0 or self.race_z < 0:
            raise ConfigError("search.screen_size and search.race_z: must be >= 0 (screen_size 0 = no racing)")
        if any(f <= 0 for f in self.fps_targets):
            raise ConfigError("search.fps_targets: targets must be positive")


@dataclass
class ExperimentConfig:
    name: str = "fmnist-tiny"
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        q = self.quant
        if q.w_bits_low not in (2, 3, 4) or q.w_bits_high not in (8,):
            raise ConfigError(
                "quant.w_bits_low must be 2..4 and quant.w_bits_high must be 8 "
                "(8-bit rows are two 4-bit nibble passes on the W4A6 array)"
            )
        if not 2 <= q.act_bits <= 8:
            raise ConfigError(f"quant.act_bits: expected 2..8, got {q.act_bits}")
        if self.model.nonlinear not in NONLINEAR_MODES:
            raise ConfigError(
                f"model.nonlinear: expected one of {', '.join(NONLINEAR_MODES)}, got {self.model.nonlinear!r}"
            )
        for key, lo, hi in (("residual_bits", 8, 20), ("gelu_in_bits", 6, 14), ("softmax_frac_bits", 2, 10)):
            if not lo <= getattr(q, key) <= hi:
                raise ConfigError(f"quant.{key}: expected {lo}..{hi}, got {getattr(q, key)}")
        if self.data.name not in ("fashion-mnist", "mnist", "cifar10", "imagefolder"):
            raise ConfigError(
                f"data.name: unknown data set '{self.data.name}' (fashion-mnist, mnist, cifar10, imagefolder)"
            )
        self._validate_recipe()
        t = self.train
        for key in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(t, key) <= 0:
                raise ConfigError(f"train.{key}: must be positive, got {getattr(t, key)}")
        if t.lr <= 0:
            raise ConfigError(f"train.lr: must be positive, got {t.lr}")
        if t.quant_step_lr_scale < 0:
            raise ConfigError(f"train.quant_step_lr_scale: must be >= 0, got {t.quant_step_lr_scale}")
        if t.sandwich_random < 0:
            raise ConfigError("train.sandwich_random: must be >= 0")
        self.search.validate()
        chans = self.model.geometry.in_chans
        if len(self.data.mean) != chans or len(self.data.std) != chans:
            raise ConfigError("data.mean/data.std: need one value per input channel (model.geometry.in_chans)")
        try:
            self.model.space()
        except ConfigError as exc:
            raise ConfigError(f"model: {exc}") from None

    def _validate_recipe(self) -> None:
        """The augmentation and precision keys: names from their lists, probabilities in [0, 1]."""
        d, t = self.data, self.train
        for key, value, allowed in (
            ("data.recipe", d.recipe, RECIPES),
            ("data.interpolation", d.interpolation, INTERPOLATIONS),
            ("data.auto_augment", d.auto_augment, AUTO_AUGMENTS),
            ("train.amp", t.amp, AMP_MODES),
        ):
            if value not in allowed:
                raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")
        if d.recipe == "deit" and d.name != "imagefolder":
            raise ConfigError(
                f"data.recipe: deit crops in the loader workers and needs data.name: imagefolder "
                f"(got {d.name}); use recipe: simple for in-memory data sets"
            )
        for key in ("randaug_prob", "mixup_prob", "mixup_switch_prob", "random_erasing"):
            if not 0.0 <= getattr(d, key) <= 1.0:
                raise ConfigError(f"data.{key}: must lie in [0, 1], got {getattr(d, key)}")
        for key in ("mixup_alpha", "cutmix_alpha", "randaug_mstd", "randaug_n"):
            if getattr(d, key) < 0:
                raise ConfigError(f"data.{key}: must be >= 0, got {getattr(d, key)}")
        if not 0.0 <= d.randaug_m <= 10.0:
            raise ConfigError(f"data.randaug_m: must lie in [0, 10] (timm's magnitude scale), got {d.randaug_m}")
        if len(d.rrc_scale) != 2 or not 0 < d.rrc_scale[0] <= d.rrc_scale[1] <= 1:
            raise ConfigError(f"data.rrc_scale: expected [min, max] with 0 < min <= max <= 1, got {d.rrc_scale}")
        if len(d.rrc_ratio) != 2 or not 0 < d.rrc_ratio[0] <= d.rrc_ratio[1]:
            raise ConfigError(f"data.rrc_ratio: expected [min, max] with 0 < min <= max, got {d.rrc_ratio}")
        if not 0 < d.eval_crop_pct <= 1:
            raise ConfigError(f"data.eval_crop_pct: must lie in (0, 1], got {d.eval_crop_pct}")
        if t.accum_steps < 1 or t.batch_size % t.accum_steps:
            raise ConfigError(
                f"train.accum_steps: must be >= 1 and divide train.batch_size={t.batch_size}, got {t.accum_steps}"
            )


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):  # an annotation: a class, never an instance
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, tuple):
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: value {value!r} does not match {tp}")
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key(s): {', '.join(where + u for u in unknown)} (allowed: {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(_over_default(cls, k, v), hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except SubnetError as exc:  # a value that validates itself (ViTGeometry): name the config key
        raise ConfigError(f"{prefix}: {exc}" if prefix else str(exc)) from None


def _over_default(cls: type, name: str, value: Any) -> Any:
    """A partial mapping for a field whose default is a dataclass value fills in that value's fields.

    ``model.geometry: {img_size: 32}`` keeps the other geometry keys of ``ModelConfig``'s default,
    as the flat ``model.img_size: 32`` did, rather than :class:`ViTGeometry`'s own defaults.
    """
    default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
    if not isinstance(value, dict) or not dataclasses.is_dataclass(default) or isinstance(default, type):
        return value
    return {**{f.name: getattr(default, f.name) for f in dataclasses.fields(default)}, **value}


def migrate_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a config mapping of an older version to the current form (the mapping is not changed).

    Configs, checkpoints and ``export.json`` files written before :class:`ViTGeometry` hold the
    geometry flat (``model.img_size``); it moves under ``model.geometry``.

    Args:
        data: a config mapping as read from YAML or stored in a checkpoint.

    Returns:
        The mapping in the current form (``data`` itself when nothing changed).
    """
    search = data.get("search")
    if isinstance(search, dict) and SearchConfig.migrate(search) is not search:  # renamed search keys
        data = {**data, "search": SearchConfig.migrate(search)}
    model = data.get("model")
    if isinstance(model, dict):
        nested = nest_geometry(model)
        if nested is not model:
            return {**data, "model": nested}
    return data


def stored_config_dict(data: dict[str, Any]) -> dict[str, Any]:
    """A config that quasar-vit *wrote* (a checkpoint's, ``export.json``'s, a run's ``config.yaml``), read
    with the defaults of the version that wrote it.

    Such a config lists every key of its version.  One written before ``model.nonlinear`` existed was
    trained with float LayerNorm/softmax/GELU, so a missing key means ``float`` (today's default,
    ``integer``, would build a model its weights do not fit).

    Args:
        data: the stored mapping (not changed).

    Returns:
        The mapping with the keys its version implied filled in.
    """
    model = data.get("model")
    if isinstance(model, dict) and "nonlinear" not in model:
        return {**data, "model": {**model, "nonlinear": "float"}}
    return data


def config_from_dict(data: dict[str, Any], stored: bool = False) -> ExperimentConfig:
    """The validated config of a mapping (a YAML file's, or one stored in a checkpoint).

    Args:
        data: the mapping, in the current or an older form (see :func:`migrate_config_dict`).
        stored: ``data`` was written by quasar-vit (see :func:`stored_config_dict`).

    Returns:
        The config; any unknown key or invalid value raises :class:`ConfigError`.
    """
    if not isinstance(data, dict):
        raise ConfigError("a config must be a YAML mapping at the top level")
    if stored:
        data = stored_config_dict(data)
    cfg = _build(ExperimentConfig, migrate_config_dict(data))
    cfg.validate()
    return cfg


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A file path, or the name of a bundled config (``fmnist-tiny``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = CONFIG_DIR / f"{p.name if p.suffix else p.name + '.yaml'}"
    if not p.suffix and bundled.is_file():
        return bundled
    if p.suffix and not p.exists() and (CONFIG_DIR / p.name).is_file() and p.parent.name == "configs":
        return CONFIG_DIR / p.name
    names = sorted(f.stem for f in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config not found: {name_or_path} (bundled configs: {', '.join(names)})")


def load_config(name_or_path: str | Path, overrides: list[str] | None = None, stored: bool = False) -> ExperimentConfig:
    """Load a YAML config; ``overrides`` are ``section.key=value`` strings (value parsed as YAML).

    ``stored``: the file is a run's own ``config.yaml`` (see :func:`stored_config_dict`).
    """
    path = resolve_config_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping at the top level")
    if stored:
        data = stored_config_dict(data)
    for item in overrides or []:
        apply_override(data, item)
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _check_override_key(key: str) -> None:
    """A ``--set`` key must name a config field: else one error naming the option, with a suggestion."""
    import difflib

    cls: Any = ExperimentConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[:i])}' is a value, not a section")
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            where = f"section '{'.'.join(parts[:i])}'" if i else "the config"
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean '{'.'.join(parts[:i] + close)}'?" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"--set {key}: {where} has no key '{part}'{hint}")
        cls = typing.get_type_hints(cls)[part]
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        raise ConfigError(f"--set {key}: '{key}' is a section; set one of its keys (section.key=value)")


def _override_path(key: str) -> list[str]:
    """The field path of a ``--set`` key; a flat geometry key (``model.img_size``, the form before
    :class:`ViTGeometry`) names its field under ``model.geometry``."""
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "model":
        probe = {parts[1]: None}
        if nest_geometry(probe) is not probe:
            parts.insert(1, "geometry")
    if len(parts) == 2 and parts[0] == "search":  # an old key name (search.val_size)
        parts[1] = SearchConfig.RENAMED.get(parts[1], parts[1])
    return parts


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set one ``section.key=value`` override (value parsed as YAML) in the config mapping ``data``.

    ``data`` is first brought to the current form (:func:`migrate_config_dict`), so that an override
    of a nested key is not undone by an older flat key of the file.

    Args:
        data: the config mapping, changed in place.
        item: the override, as given to ``--set``.
    """
    if "=" not in item:
        raise ConfigError(f"--set {item}: an override must look like section.key=value")
    key, raw = item.split("=", 1)
    parts = _override_path(key.strip())
    _check_override_key(".".join(parts))
    data.update(migrate_config_dict(data))
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{item}': '{p}' is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': bad value: {exc}") from None


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    from quasar_vit.utils.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
