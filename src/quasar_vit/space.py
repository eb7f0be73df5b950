"""Search space and subnet encoding: plain, torch-free data shared by every step.

A :class:`SubnetConfig` is the one object that flows between the steps of quasar-vit
(train -> search -> export -> deploy).  It is self-contained: besides the searched choices
(embed dim, depth, heads / MLP ratio / 8-bit-row share per layer) it carries the fixed
:class:`ViTGeometry` (image and patch size, head dim, classes), so that the hardware model can
cost a ``subnet.json`` without a supernet config or a checkpoint.

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
from typing import Any, Sequence

from quasar_vit.errors import ConfigError, SubnetError

#: A transformer block's weight GEMMs, in execution order: the one list of them.
BLOCK_LINEARS = ("qkv", "proj", "fc1", "fc2")

#: ``model.share_granularity``: one 8-bit share per block (used by its four linears) or one per linear.
SHARE_GRANULARITIES = ("block", "linear")


def num_8bit_rows(rows: int, share: float, sections: int = 1) -> int:
    """Number of 8-bit rows of a linear layer: the one place this count is made.

    ``SubnetConfig.linear_layers`` (hardware model, export) and the layers themselves (supernet
    slices and extracted models) all call this, so they always agree.  Each of the ``sections``
    equal row blocks (q, k, v) gets the same count.  Rounds half up so that the share 0.5 of 3
    rows gives 2 (never 0 rows for a non-zero share of a non-empty layer).  A fixed-precision
    layer (patch embedding, head) is share 1.0 (8-bit) or 0.0.

    Args:
        rows: output rows of the (active slice of the) layer, all sections together.
        share: fraction of each section's rows that are 8-bit, in [0, 1].
        sections: number of equal row blocks that are sliced independently.

    Returns:
        The number of 8-bit rows, all sections together.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"8-bit share must be in [0, 1], got {share}")
    per = rows // sections
    return sections * min(per, int(math.floor(share * per + 0.5)))


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


def _is_positive_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int) and v > 0


@dataclass(frozen=True)
class ViTGeometry:
    """The fixed (not searched) shape of a ViT: input, patches, classes, head width, end-layer bits.

    One value shared by the model config, the search space and every subnet of it, so that these
    fields are declared and validated in one place.  Frozen, hence hashable: the latency model keys
    its memo tables on it.  Invalid values raise :class:`SubnetError` (a config that holds one turns
    it into a :class:`ConfigError` naming the config key).
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    head_dim: int = 64
    patch_embed_bits: int = 8  # bits of every patch-embedding row (4 or 8)
    head_bits: int = 8  # bits of every classifier-head row (4 or 8)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not _is_positive_int(v):
                raise SubnetError(f"geometry field '{f.name}' must be a positive integer, got {v!r}")
        if self.img_size % self.patch_size:
            raise SubnetError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        for b in (self.patch_embed_bits, self.head_bits):
            if b not in (4, 8):
                raise SubnetError(f"patch_embed_bits/head_bits must be 4 or 8, got {b}")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Patches plus the class token."""
        return self.num_patches + 1

    @property
    def patch_dim(self) -> int:
        """Inputs of the patch embedding: one flattened ``patch_size x patch_size x in_chans`` patch."""
        return self.patch_size * self.patch_size * self.in_chans

    @classmethod
    def from_dict(cls, d: Any) -> "ViTGeometry":
        """The geometry of a JSON/YAML mapping; a malformed one raises :class:`SubnetError`.

        Args:
            d: a mapping of (some of) the field names; missing ones keep their defaults.

        Returns:
            The validated geometry.
        """
        if not isinstance(d, dict):
            raise SubnetError(f"'geometry' must be a mapping, got {d!r}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise SubnetError(f"unknown geometry key(s): {', '.join(unknown)}")
        return cls(**d)


def nest_geometry(d: dict[str, Any]) -> dict[str, Any]:
    """Move flat geometry keys (``img_size``, ...) of ``d`` under ``d["geometry"]``.

    Configs, checkpoints and ``subnet.json`` files written before :class:`ViTGeometry` existed hold
    the geometry fields at the top level of the model/space/subnet mapping; this is the one
    migration of that form.  A flat key wins over the same key already under ``geometry``.

    Args:
        d: a model config, search space or subnet mapping, in the old flat or the nested form.

    Returns:
        A new mapping in the nested form (``d`` itself when it holds no flat geometry key).
    """
    names = {f.name for f in fields(ViTGeometry)}
    flat = {k: v for k, v in d.items() if k in names}
    if not flat:
        return d
    out = {k: v for k, v in d.items() if k not in names}
    nested = out.get("geometry")
    out["geometry"] = {**nested, **flat} if isinstance(nested, dict) else flat
    return out


@dataclass(frozen=True)
class SubnetConfig:
    """One architecture + precision choice: a point of the search space (serialisable as JSON).

    ``num_heads`` and ``mlp_ratios`` have ``depth`` entries.  ``w8_shares`` has one entry per block
    (used by all four of its linears) or, at per-linear granularity, four per block in the order of
    :data:`BLOCK_LINEARS` (block ``i``'s at ``4 i .. 4 i + 3``).  A per-linear vector whose four
    shares agree in every block is stored in the per-block form: one network, one encoding (so a
    search never scores the same subnet under two keys, and such a ``subnet.json`` reads as before).
    Read shares through :meth:`block_shares`, which answers for either form.
    """

    embed_dim: int
    depth: int
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    w8_shares: tuple[float, ...]
    geometry: ViTGeometry = ViTGeometry()  # fixed, the search space's

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, ViTGeometry):
            raise SubnetError(f"subnet field 'geometry' must be a ViTGeometry, got {self.geometry!r}")
        for name in ("embed_dim", "depth"):
            v = getattr(self, name)
            if not _is_positive_int(v):
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
        for name in ("num_heads", "mlp_ratios"):
            if len(getattr(self, name)) != self.depth:
                raise SubnetError(
                    f"subnet field '{name}' has {len(getattr(self, name))} entries, "
                    f"expected one per layer (depth={self.depth})"
                )
        n, k = len(self.w8_shares), len(BLOCK_LINEARS)
        if n not in (self.depth, k * self.depth):
            raise SubnetError(
                f"subnet field 'w8_shares' has {n} entries, expected one per layer (depth={self.depth}) "
                f"or one per linear ({k} x depth = {k * self.depth})"
            )
        for s in self.w8_shares:
            if not 0.0 <= s <= 1.0:
                raise SubnetError(f"8-bit share {s} is outside [0, 1]")
        if n != self.depth:
            groups = [self.w8_shares[k * i : k * (i + 1)] for i in range(self.depth)]
            if all(len(set(g)) == 1 for g in groups):
                object.__setattr__(self, "w8_shares", tuple(g[0] for g in groups))

    # ---- 8-bit shares -----------------------------------------------------------------------
    @property
    def share_granularity(self) -> str:
        """``'block'`` (one share per block) or ``'linear'`` (one per linear): the stored form."""
        return "block" if len(self.w8_shares) == self.depth else "linear"

    def block_shares(self, layer: int) -> tuple[float, ...]:
        """The 8-bit shares of block ``layer``'s linears, in :data:`BLOCK_LINEARS` order."""
        k = len(BLOCK_LINEARS)
        if self.share_granularity == "block":
            return (self.w8_shares[layer],) * k
        return self.w8_shares[k * layer : k * (layer + 1)]

    def linear_shares(self) -> tuple[float, ...]:
        """Every block linear's share (``4 x depth`` entries): the per-linear form of ``w8_shares``."""
        return tuple(s for i in range(self.depth) for s in self.block_shares(i))

    # ---- derived geometry -------------------------------------------------------------------
    def qkv_dim(self, layer: int) -> int:
        return self.num_heads[layer] * self.geometry.head_dim

    def mlp_hidden(self, layer: int) -> int:
        return int(self.embed_dim * self.mlp_ratios[layer])

    def linear_layers(self) -> list[LinearSpec]:
        """Every weight GEMM in execution order, with its 8-bit row count."""
        g, e = self.geometry, self.embed_dim
        t = g.num_tokens
        pe8, head8 = float(g.patch_embed_bits == 8), float(g.head_bits == 8)  # fixed: all rows or none
        out = [LinearSpec("patch_embed", g.num_patches, g.patch_dim, e, num_8bit_rows(e, pe8))]
        for i in range(self.depth):
            (s_qkv, s_proj, s_fc1, s_fc2), q, h = self.block_shares(i), self.qkv_dim(i), self.mlp_hidden(i)
            out += [
                LinearSpec(f"blocks.{i}.qkv", t, e, 3 * q, num_8bit_rows(3 * q, s_qkv, 3), sections=3),
                LinearSpec(f"blocks.{i}.proj", t, q, e, num_8bit_rows(e, s_proj)),
                LinearSpec(f"blocks.{i}.fc1", t, e, h, num_8bit_rows(h, s_fc1)),
                LinearSpec(f"blocks.{i}.fc2", t, h, e, num_8bit_rows(e, s_fc2)),
            ]
        out.append(LinearSpec("head", 1, e, g.num_classes, num_8bit_rows(g.num_classes, head8)))
        return out

    def attention_matmuls(self) -> list[MatmulSpec]:
        t, d = self.geometry.num_tokens, self.geometry.head_dim
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
        """The subnet of a JSON mapping, nested (``geometry: {...}``) or flat as written before it.

        Args:
            d: the mapping ``to_dict`` writes; a missing ``geometry`` means the default one.

        Returns:
            The validated subnet; anything malformed raises :class:`SubnetError`.
        """
        if not isinstance(d, dict):
            raise SubnetError("a subnet must be a JSON object")
        d = nest_geometry(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SubnetError(f"unknown subnet key(s): {', '.join(unknown)}")
        missing = [k for k in ("embed_dim", "depth", "num_heads", "mlp_ratios", "w8_shares") if k not in d]
        if missing:
            raise SubnetError(f"subnet is missing key(s): {', '.join(missing)}")
        try:
            if "geometry" in d:
                d = {**d, "geometry": ViTGeometry.from_dict(d["geometry"])}
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
            f"mlp={list(self.mlp_ratios)} w8={self._describe_shares()}"
        )

    def _describe_shares(self) -> str:
        if self.share_granularity == "block":
            return str(list(self.w8_shares))
        return "[" + ", ".join("/".join(f"{s:g}" for s in self.block_shares(i)) for i in range(self.depth)) + "]"


@dataclass(frozen=True)
class SearchSpace:
    """The elastic dimensions of a supernet and the choices a subnet may take."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    mlp_ratios: tuple[float, ...]
    w8_shares: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    geometry: ViTGeometry = ViTGeometry()  # fixed: every subnet of the space has it
    # how finely sampled subnets choose their 8-bit shares (training and search); a subnet of either
    # form runs on any supernet, since every linear moves its own 8-/4-bit row boundary
    share_granularity: str = "block"

    def __post_init__(self) -> None:
        if not isinstance(self.geometry, ViTGeometry):
            raise ConfigError(f"search space 'geometry' must be a ViTGeometry, got {self.geometry!r}")
        if self.share_granularity not in SHARE_GRANULARITIES:
            raise ConfigError(
                f"model.share_granularity: '{self.share_granularity}' is not one of {', '.join(SHARE_GRANULARITIES)}"
            )
        for name in ("embed_dims", "depths", "num_heads", "mlp_ratios", "w8_shares"):
            vals = tuple(sorted(getattr(self, name)))
            if not vals:
                raise ConfigError(f"search space '{name}' must list at least one choice")
            object.__setattr__(self, name, vals)
        if any(not 0.0 <= s <= 1.0 for s in self.w8_shares):
            raise ConfigError("search space 'w8_shares' must lie in [0, 1]")
        if any(v <= 0 for v in self.embed_dims + self.depths + self.num_heads) or any(r <= 0 for r in self.mlp_ratios):
            raise ConfigError("search space dimensions must be positive")

    # ---- extremes ---------------------------------------------------------------------------
    @property
    def shares_per_block(self) -> int:
        """Share genes per block of a sampled subnet: 1 per block, or one per linear."""
        return 1 if self.share_granularity == "block" else len(BLOCK_LINEARS)

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

    def make(
        self,
        embed_dim: int,
        depth: int,
        num_heads: Sequence[int],
        mlp_ratios: Sequence[float],
        w8_shares: Sequence[float],
    ) -> SubnetConfig:
        return SubnetConfig(embed_dim, depth, tuple(num_heads), tuple(mlp_ratios), tuple(w8_shares), self.geometry)

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
        """Uniformly random subnet (each choice independent: per layer, and shares per block or linear)."""
        d = rng.choice(self.depths)
        return self.make(
            rng.choice(self.embed_dims),
            d,
            [rng.choice(self.num_heads) for _ in range(d)],
            [rng.choice(self.mlp_ratios) for _ in range(d)],
            [rng.choice(self.w8_shares) for _ in range(d * self.shares_per_block)],
        )

    def validate(self, subnet: SubnetConfig) -> None:
        """Raise :class:`SubnetError` naming the first choice that is outside this space."""
        for f in fields(ViTGeometry):
            mine, theirs = getattr(self.geometry, f.name), getattr(subnet.geometry, f.name)
            if theirs != mine:
                k = f.name
                raise SubnetError(f"subnet {k}={theirs} does not match the supernet's {k}={mine}")
        if subnet.embed_dim not in self.embed_dims:
            raise SubnetError(f"embed_dim {subnet.embed_dim} not in the space {list(self.embed_dims)}")
        if subnet.depth not in self.depths:
            raise SubnetError(f"depth {subnet.depth} not in the space {list(self.depths)}")
        for i in range(subnet.depth):
            if subnet.num_heads[i] not in self.num_heads:
                raise SubnetError(f"layer {i}: num_heads {subnet.num_heads[i]} not in {list(self.num_heads)}")
            if subnet.mlp_ratios[i] not in self.mlp_ratios:
                raise SubnetError(f"layer {i}: mlp_ratio {subnet.mlp_ratios[i]} not in {list(self.mlp_ratios)}")
            for name, s in zip(BLOCK_LINEARS, subnet.block_shares(i)):
                if s not in self.w8_shares:
                    raise SubnetError(f"layer {i} {name}: w8_share {s} not in {list(self.w8_shares)}")

    def contains(self, subnet: SubnetConfig) -> bool:
        try:
            self.validate(subnet)
        except SubnetError:
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("embed_dims", "depths", "num_heads", "mlp_ratios", "w8_shares"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchSpace":
        """The space of a ``to_dict`` mapping (or the flat form written before :class:`ViTGeometry`).

        Args:
            d: the mapping; a missing ``geometry`` means the default one.

        Returns:
            The validated space; a malformed geometry raises :class:`ConfigError`.
        """
        d = dict(nest_geometry(d))
        for k in ("embed_dims", "depths", "num_heads", "mlp_ratios", "w8_shares"):
            if k in d:
                d[k] = tuple(d[k])
        if "geometry" in d:
            try:
                d["geometry"] = ViTGeometry.from_dict(d["geometry"])
            except SubnetError as exc:
                raise ConfigError(f"search space: {exc}") from None
        return cls(**d)


def preset_subnet(name: str, resolution: int = 224, share_8bit: float = 1.0) -> SubnetConfig:
    """DeiT reference architectures as subnets (all layers at one 8-bit share)."""
    presets = {"deit-tiny": (192, 3), "deit-small": (384, 6), "deit-base": (768, 12)}
    if name not in presets:
        raise SubnetError(f"unknown preset '{name}'; choose one of {', '.join(presets)}")
    e, h = presets[name]
    geometry = ViTGeometry(img_size=resolution, patch_size=16, in_chans=3, num_classes=1000, head_dim=64)
    return SubnetConfig(e, 12, (h,) * 12, (4.0,) * 12, (share_8bit,) * 12, geometry)


__all__ = [
    "BLOCK_LINEARS",
    "SHARE_GRANULARITIES",
    "ViTGeometry",
    "SubnetConfig",
    "SearchSpace",
    "LinearSpec",
    "MatmulSpec",
    "nest_geometry",
    "num_8bit_rows",
    "preset_subnet",
]
