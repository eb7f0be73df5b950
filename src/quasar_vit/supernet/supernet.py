"""Weight-sharing ViT supernet with row-wise mixed precision (paper section 2).

Every candidate (architecture AND precision) is a leading slice of the one set of largest
weights: embed dim, heads, MLP width and depth are prefixes (AutoFormer weight entanglement), and
the 8-bit share of a layer only moves the boundary between the leading 8-bit rows and the 4-bit
rows of the same slice (mixed-precision weight entanglement).  Training memory is that of one
network.

The subnet is always passed explicitly: ``supernet(x, subnet)``.  ``set_active`` binds a subnet
to the supernet in a small wrapper module (no global "current subnet" state), and ``extract``
copies a subnet's slices into a standalone :class:`QuantViT`.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor, nn

from quasar_vit.errors import SubnetError
from quasar_vit.models.layers import Block, BlockDims, QuantLinear, QuantSpec
from quasar_vit.models.vit import QuantViT, ViTBase
from quasar_vit.space import SearchSpace, SubnetConfig


class SuperViT(ViTBase):
    """The supernet: a ViT at the largest size of ``space``, run on slices."""

    def __init__(
        self,
        space: SearchSpace,
        quant: QuantSpec,
        layer_scale: bool = True,
        layer_scale_init: float = 0.1,
        drop_path: float = 0.0,
    ) -> None:
        e, d = space.max_embed, space.max_depth
        blocks = [
            Block(
                e,
                space.max_heads,
                space.head_dim,
                space.max_mlp_hidden,
                quant,
                layer_scale,
                layer_scale_init,
                drop_path * i / max(d - 1, 1),
            )
            for i in range(d)
        ]
        super().__init__(
            space.img_size,
            space.patch_size,
            space.in_chans,
            space.num_classes,
            e,
            blocks,
            quant,
            space.patch_embed_bits,
            space.head_bits,
        )
        self.space, self.quant = space, quant
        self.layer_scale, self.layer_scale_init = layer_scale, layer_scale_init

    def forward(self, x: Tensor, subnet: SubnetConfig) -> Tensor:
        dims = [
            BlockDims(subnet.embed_dim, subnet.num_heads[i], subnet.mlp_hidden(i), subnet.w8_shares[i])
            for i in range(subnet.depth)
        ]
        return self._forward(x, subnet.embed_dim, dims)


def build_supernet(model_cfg: object, quant_cfg: object) -> SuperViT:
    """Supernet from the ``model`` and ``quant`` sections of an :class:`ExperimentConfig`."""
    return SuperViT(
        model_cfg.space(),
        QuantSpec.from_config(quant_cfg),  # type: ignore[attr-defined]
        model_cfg.layer_scale,
        model_cfg.layer_scale_init,
        model_cfg.drop_path,
    )  # type: ignore[attr-defined]


def sample(space: SearchSpace, rng: random.Random) -> SubnetConfig:
    """A uniformly random subnet of ``space`` (explicit RNG: reproducible, rank-consistent)."""
    return space.sample(rng)


class ActiveSubnet(nn.Module):
    """A supernet bound to one subnet: ``forward(x)`` runs that subnet on the shared weights."""

    def __init__(self, supernet: SuperViT, subnet: SubnetConfig) -> None:
        super().__init__()
        supernet.space.validate(subnet)
        self.supernet, self.subnet = supernet, subnet

    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x, self.subnet)


def set_active(supernet: SuperViT, subnet: SubnetConfig) -> ActiveSubnet:
    """Bind ``subnet`` to ``supernet`` (validated against its space); weights stay shared."""
    return ActiveSubnet(supernet, subnet)


def _copy_linear(dst: QuantLinear, src: QuantLinear, rows: int | None, cols: int | None) -> None:
    w, b, slo, shi = src.sliced(rows, cols)
    for p, v in ((dst.weight, w), (dst.bias, b), (dst.step_lo, slo), (dst.step_hi, shi)):
        if p.shape != v.shape:
            raise SubnetError(f"shape mismatch while extracting: {tuple(p.shape)} vs {tuple(v.shape)}")
        p.copy_(v)
    dst.aq.load_state_dict(src.aq.state_dict())


@torch.no_grad()
def extract(supernet: SuperViT, subnet: SubnetConfig) -> QuantViT:
    """A standalone :class:`QuantViT` holding only ``subnet``'s weights and quantizers.

    Its outputs equal ``supernet(x, subnet)`` (same slices, same quantizer steps, same code path).
    """
    supernet.space.validate(subnet)
    e = subnet.embed_dim
    model = QuantViT(subnet, supernet.quant, supernet.layer_scale, supernet.layer_scale_init)
    model.to(next(supernet.parameters()).device)
    _copy_linear(model.patch_embed, supernet.patch_embed, e, None)
    model.cls_token.copy_(supernet.cls_token[..., :e])
    model.pos_embed.copy_(supernet.pos_embed[..., :e])
    for i in range(subnet.depth):
        src, dst = supernet.blocks[i], model.blocks[i]
        q, h = subnet.qkv_dim(i), subnet.mlp_hidden(i)
        for n in ("norm1", "norm2"):
            getattr(dst, n).weight.copy_(getattr(src, n).weight[:e])
            getattr(dst, n).bias.copy_(getattr(src, n).bias[:e])
        _copy_linear(dst.qkv, src.qkv, q, e)
        _copy_linear(dst.proj, src.proj, e, q)
        _copy_linear(dst.fc1, src.fc1, h, e)
        _copy_linear(dst.fc2, src.fc2, e, h)
        for n in ("aq_q", "aq_k", "aq_v", "aq_attn"):
            getattr(dst, n).load_state_dict(getattr(src, n).state_dict())
        if supernet.layer_scale:
            dst.ls1.copy_(src.ls1[:e])
            dst.ls2.copy_(src.ls2[:e])
    model.norm.weight.copy_(supernet.norm.weight[:e])
    model.norm.bias.copy_(supernet.norm.bias[:e])
    _copy_linear(model.head, supernet.head, None, e)
    model.train(supernet.training)
    return model
