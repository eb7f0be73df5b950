"""Search space and subnet encoding: plain, torch-free data shared by every step.

A :class:`SubnetConfig` is the one object that flows between the steps of quasar-vit
(train -> search -> export -> deploy).  It is self-contained: besides the searched choices
(embed dim, depth, heads / MLP ratio / 8-bit-row share per layer) it carries the fixed geometry
(image and patch size, head dim, classes), so that the hardware model can cost a ``subnet.json``
without a supernet config or a checkpoint.

Row-wise mixed precision (paper, section 1): every output row of a linear layer is 4-bit or
8-bit.  The 8-bit rows are the *leading* rows of the active slice (``num_8bit_rows``), so that
the boundary between 8- and 4-bit rows moves inside one shared weight tensor (mixed-precision
weight entanglement).  ``linear_layers`` is the single definition of which GEMMs a subnet has and
how many 8-bit rows each holds; the quantizer, the hardware model and the exporter all use it.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

from quasar_vit.errors import ConfigError, SubnetError


def num_8bit_rows(rows: int, share: float) -> int:
    """Number of 8-bit rows of a (section of a) weight with ``rows`` output rows.

    Rounds half up so that the share 0.5 of 3 rows gives 2 (never 0 rows for a non-zero share
    of a non-empty layer).
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"8-bit share must be in [0, 1], got {share}")
    return min(rows, int(math.floor(share * rows + 0.5)))


@dataclass(frozen=True)
class LinearSpec:
    """One weight GEMM of a subnet: ``tokens x in_features`` times ``in_features x out_features``.

    ``n8_rows`` of the ``out_features`` rows are 8-bit, the rest ``w_bits_low``-bit.
    ``sections`` > 1 means the rows are ``sections`` equal blocks (q, k, v) and the 8-bit rows
    are the leading ``n8_rows // sections`` rows of each block.
    """

    name: str
    tokens: int
    in_features: int
    out_features: int
    n8_rows: int
    sections: int = 1

    @property
    def macs(self) -> int:
        return self.tokens * self.in_features * self.out_features

    @property
    def share_8bit(self) -> float:
        return self.n8_rows / self.out_features if self.out_features else 0.0


@dataclass(frozen=True)
class MatmulSpec:
    """An activation-activation matmul of attention (``Q K^T`` or ``A V``), per head."""

    name: str
    heads: int
    m: int
    k: int
    n: int

    @property
    def macs(self) -> int:
        return self.heads * self.m * self.k * self.n


@dataclass(frozen=True)
class SubnetConfig:
    """One architecture + precision choice: a point of the search space (serialisable as JSON).

    Per-layer tuples (``num_heads``, ``mlp_ratios``, ``w8_shares``) have ``depth`` entries.
    """

    embed_dim: int
    depth: int
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    w8_shares: tuple[float, ...]
    # fixed geometry (copied from the search space)
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    head_dim: int = 64
    patch_embed_bits: int = 8
    head_bits: int = 8

    def __post_init__(self) -> None:
        for name in ("embed_dim", "depth", "img_size", "patch_size", "in_chans", "num_classes", "head_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise SubnetError(f"subnet field '{name}' must be a positive integer, got {v!r}")
        for name in ("num_heads", "mlp_ratios", "w8_shares"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise SubnetError(f"subnet field '{name}' must be a list with one entry per layer")
        if any(isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in self.num_heads):
            raise SubnetError(f"subnet field 'num_heads' must hold positive integers, got {list(self.num_heads)}")
        if any(isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0 for r in self.mlp_ratios):
            raise SubnetError(f"subnet field 'mlp_ratios' must hold positive numbers, got {list(self.mlp_ratios)}")
        if any(isinstance(r, bool) or not isinstance(r, (int, float)) for r in self.w8_shares):
            raise SubnetError(f"subnet field 'w8_shares' must hold numbers in [0, 1], got {list(self.w8_shares)}")
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        object.__setattr__(self, "mlp_ratios", tuple(float(r) for r in self.mlp_ratios))
        object.__setattr__(self, "w8_shares", tuple(float(s) for s in self.w8_shares))
        for name in ("num_heads", "mlp_ratios", "w8_shares"):
            if len(getattr(self, name)) != self.depth:
                raise SubnetError(
                    f"subnet field '{name}' has {len(getattr(self, name))} entries, "
                    f"expected one per layer (depth={self.depth})"
                )
        if self.img_size % self.patch_size:
            raise SubnetError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        for s in self.w8_shares:
            if not 0.0 <= s <= 1.0:
                raise SubnetError(f"8-bit share {s} is outside [0, 1]")
        for b in (self.patch_embed_bits, self.head_bits):
            if b not in (4, 8):
                raise SubnetError(f"patch_embed_bits/head_bits must be 4 or 8, got {b}")

    # ---- derived geometry -------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Patches plus the class token."""
        return self.num_patches + 1

    def qkv_dim(self, layer: int) -> int:
        return self.num_heads[layer] * self.head_dim

    def mlp_hidden(self, layer: int) -> int:
        return int(self.embed_dim * self.mlp_ratios[layer])

    def linear_layers(self) -> list[LinearSpec]:
        """Every weight GEMM in execution order, with its 8-bit row count."""
        t, e = self.num_tokens, self.embed_dim
        pe = self.patch_size * self.patch_size * self.in_chans
        out = [LinearSpec("patch_embed", self.num_patches, pe, e, e if self.patch_embed_bits == 8 else 0)]
        for i in range(self.depth):
            s, q, h = self.w8_shares[i], self.qkv_dim(i), self.mlp_hidden(i)
            out += [
                LinearSpec(f"blocks.{i}.qkv", t, e, 3 * q, 3 * num_8bit_rows(q, s), sections=3),
                LinearSpec(f"blocks.{i}.proj", t, q, e, num_8bit_rows(e, s)),
                LinearSpec(f"blocks.{i}.fc1", t, e, h, num_8bit_rows(h, s)),
                LinearSpec(f"blocks.{i}.fc2", t, h, e, num_8bit_rows(e, s)),
            ]
        out.append(LinearSpec("head", 1, e, self.num_classes, self.num_classes if self.head_bits == 8 else 0))
        return out

    def attention_matmuls(self) -> list[MatmulSpec]:
        t, d = self.num_tokens, self.head_dim
        out = []
        for i in range(self.depth):
            out += [
                MatmulSpec(f"blocks.{i}.qk", self.num_heads[i], t, d, t),
                MatmulSpec(f"blocks.{i}.av", self.num_heads[i], t, t, d),
            ]
        return out

    def macs(self) -> int:
        return sum(l.macs for l in self.linear_layers()) + sum(m.macs for m in self.attention_matmuls())

    def num_params(self) -> int:
        """Weights and biases of the linear layers (embeddings, norms and scales excluded)."""
        return sum(l.in_features * l.out_features + l.out_features for l in self.linear_layers())

    def weight_bytes(self) -> float:
        """Packed weight size: 8-bit rows 1 byte per weight, 4-bit rows half a byte."""
        total = 0.0
        for l in self.linear_layers():
            total += l.in_features * (l.n8_rows * 1.0 + (l.out_features - l.n8_rows) * 0.5)
        return total

    def share_8bit(self) -> float:
        """Overall share of 8-bit rows over the searched (block) layers."""
        rows8 = rows = 0
        for l in self.linear_layers():
            if l.name.startswith("blocks."):
                rows8 += l.n8_rows
                rows += l.out_features
        return rows8 / rows if rows else 0.0

    # ---- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("num_heads", "mlp_ratios", "w8_shares"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SubnetConfig":
        if not isinstance(d, dict):
            raise SubnetError("a subnet must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SubnetError(f"unknown subnet key(s): {', '.join(unknown)}")
        missing = [k for k in ("embed_dim", "depth", "num_heads", "mlp_ratios", "w8_shares") if k not in d]
        if missing:
            raise SubnetError(f"subnet is missing key(s): {', '.join(missing)}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise SubnetError(f"malformed subnet: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> "SubnetConfig":
        from quasar_vit.utils.io import read_json

        data = read_json(path, SubnetError, "subnet file")
        # accept {"subnet": {...}} wrappers as written by search results
        if isinstance(data, dict) and "subnet" in data and isinstance(data["subnet"], dict):
            data = data["subnet"]
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        from quasar_vit.utils.io import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")

    def describe(self) -> str:
        return (
            f"embed={self.embed_dim} depth={self.depth} heads={list(self.num_heads)} "
            f"mlp={list(self.mlp_ratios)} w8={list(self.w8_shares)}"
        )


@dataclass(frozen=True)
class SearchSpace:
    """The elastic dimensions of a supernet and the choices a subnet may take."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    w8_shares: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    head_dim: int = 64
    patch_embed_bits: int = 8
    head_bits: int = 8

    def __post_init__(self) -> None:
        for name in ("img_size", "patch_size", "in_chans", "num_classes", "head_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"'{name}' must be positive, got {getattr(self, name)}")
        for name in ("embed_dims", "depths", "num_heads", "mlp_ratios", "w8_shares"):
            vals = tuple(sorted(getattr(self, name)))
            if not vals:
                raise ConfigError(f"search space '{name}' must list at least one choice")
            object.__setattr__(self, name, vals)
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if any(not 0.0 <= s <= 1.0 for s in self.w8_shares):
            raise ConfigError("search space 'w8_shares' must lie in [0, 1]")
        if any(v <= 0 for v in self.embed_dims + self.depths + self.num_heads) or any(r <= 0 for r in self.mlp_ratios):
            raise ConfigError("search space dimensions must be positive")

    # ---- extremes ---------------------------------------------------------------------------
    @property
    def max_embed(self) -> int:
        return self.embed_dims[-1]

    @property
    def max_depth(self) -> int:
        return self.depths[-1]

    @property
    def max_heads(self) -> int:
        return self.num_heads[-1]

    @property
    def max_mlp_hidden(self) -> int:
        return int(self.max_embed * self.mlp_ratios[-1])

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    def _fixed(self) -> dict[str, Any]:
        return dict(
            img_size=self.img_size,
            patch_size=self.patch_size,
            in_chans=self.in_chans,
            num_classes=self.num_classes,
            head_dim=self.head_dim,
            patch_embed_bits=self.patch_embed_bits,
            head_bits=self.head_bits,
        )

    def make(
        self,
        embed_dim: int,
        depth: int,
        num_heads: Sequence[int],
        mlp_ratios: Sequence[float],
        w8_shares: Sequence[float],
    ) -> SubnetConfig:
        return SubnetConfig(embed_dim, depth, tuple(num_heads), tuple(mlp_ratios), tuple(w8_shares), **self._fixed())

    def largest(self) -> SubnetConfig:
        """Widest, deepest subnet with every row 8-bit: the in-place distillation teacher."""
        d = self.max_depth
        return self.make(self.max_embed, d, [self.max_heads] * d, [self.mlp_ratios[-1]] * d, [self.w8_shares[-1]] * d)

    def smallest(self) -> SubnetConfig:
        d = self.depths[0]
        return self.make(
            self.embed_dims[0], d, [self.num_heads[0]] * d, [self.mlp_ratios[0]] * d, [self.w8_shares[0]] * d
        )

    def sample(self, rng: random.Random) -> SubnetConfig:
        """Uniformly random subnet (each choice independent, per-layer choices per layer)."""
        d = rng.choice(self.depths)
        return self.make(
            rng.choice(self.embed_dims),
            d,
            [rng.choice(self.num_heads) for _ in range(d)],
            [rng.choice(self.mlp_ratios) for _ in range(d)],
            [rng.choice(self.w8_shares) for _ in range(d)],
        )

    def validate(self, subnet: SubnetConfig) -> None:
        """Raise :class:`SubnetError` naming the first choice that is outside this space."""
        for k, v in self._fixed().items():
            if getattr(subnet, k) != v:
                raise SubnetError(f"subnet {k}={getattr(subnet, k)} does not match the supernet's {k}={v}")
        if subnet.embed_dim not in self.embed_dims:
            raise SubnetError(f"embed_dim {subnet.embed_dim} not in the space {list(self.embed_dims)}")
        if subnet.depth not in self.depths:
            raise SubnetError(f"depth {subnet.depth} not in the space {list(self.depths)}")
        for i in range(subnet.depth):
            if subnet.num_heads[i] not in self.num_heads:
                raise SubnetError(f"layer {i}: num_heads {subnet.num_heads[i]} not in {list(self.num_heads)}")
            if subnet.mlp_ratios[i] not in self.mlp_ratios:
                raise SubnetError(f"layer {i}: mlp_ratio {subnet.mlp_ratios[i]} not in {list(self.mlp_ratios)}")
            if subnet.w8_shares[i] not in self.w8_shares:
                raise SubnetError(f"layer {i}: w8_share {subnet.w8_shares[i]} not in {list(self.w8_shares)}")

    def contains(self, subnet: SubnetConfig) -> bool:
        try:
            self.validate(subnet)
        except SubnetError:
            return False
        return True

    def iter_layer_choices(self) -> Iterator[tuple[int, float, float]]:
        for h in self.num_heads:
            for r in self.mlp_ratios:
                for s in self.w8_shares:
                    yield h, r, s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("embed_dims", "depths", "num_heads", "mlp_ratios", "w8_shares"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpace":
        d = dict(d)
        for k in ("embed_dims", "depths", "num_heads", "mlp_ratios", "w8_shares"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def preset_subnet(name: str, resolution: int = 224, share_8bit: float = 1.0) -> SubnetConfig:
    """DeiT reference architectures as subnets (all layers at one 8-bit share)."""
    presets = {"deit-tiny": (192, 3), "deit-small": (384, 6), "deit-base": (768, 12)}
    if name not in presets:
        raise SubnetError(f"unknown preset '{name}'; choose one of {', '.join(presets)}")
    e, h = presets[name]
    return SubnetConfig(
        e,
        12,
        (h,) * 12,
        (4.0,) * 12,
        (share_8bit,) * 12,
        img_size=resolution,
        patch_size=16,
        in_chans=3,
        num_classes=1000,
        head_dim=64,
    )


__all__ = ["SubnetConfig", "SearchSpace", "LinearSpec", "MatmulSpec", "num_8bit_rows", "preset_subnet"]
