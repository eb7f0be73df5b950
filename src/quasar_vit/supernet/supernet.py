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
from typing import cast

import torch
from torch import Tensor, nn

from quasar_vit.config import ModelConfig, QuantConfig
from quasar_vit.models.layers import Block, BlockDims
from quasar_vit.models.vit import QuantViT, ViTBase
from quasar_vit.space import SearchSpace, SubnetConfig


class SuperViT(ViTBase):
    """The supernet: a ViT at the largest size of ``space``, run on slices."""

    def __init__(
        self,
        space: SearchSpace,
        quant: QuantConfig,
        layer_scale: bool = True,
        layer_scale_init: float = 0.1,
        drop_path: float = 0.0,
        nonlinear: str = "float",
    ) -> None:
        """Build the supernet at the largest size of ``space``.

        Args:
            space: the search space (its largest choices set the parameter shapes).
            quant: the quantization scheme.
            layer_scale: whether the blocks scale their residual branches (paper section 2).
            layer_scale_init: initial value of those scales.
            drop_path: stochastic depth of the last block (linearly less in earlier blocks).
            nonlinear: ``float`` or ``integer`` nonlinear ops (``model.nonlinear``).
        """
        e, d = space.max_embed, space.max_depth
        blocks = [
            Block(
                e,
                space.max_heads,
                space.geometry.head_dim,
                space.max_mlp_hidden,
                quant,
                layer_scale,
                layer_scale_init,
                drop_path * i / max(d - 1, 1),
                integer=nonlinear == "integer",
            )
            for i in range(d)
        ]
        super().__init__(space.geometry, e, blocks, quant, nonlinear)
        self.space, self.quant = space, quant
        self.layer_scale, self.layer_scale_init = layer_scale, layer_scale_init

    def forward(self, x: Tensor, subnet: SubnetConfig) -> Tensor:
        """Run ``subnet`` on the leading slices of the shared weights.

        Args:
            x: images ``[batch, in_chans, img_size, img_size]``.
            subnet: the subnet to run (not validated here; see :func:`set_active`).

        Returns:
            Logits ``[batch, num_classes]``.
        """
        return self._forward(x, subnet.embed_dim, block_dims(subnet))


def block_dims(subnet: SubnetConfig) -> list[BlockDims]:
    """The active dimensions of each of ``subnet``'s blocks.

    Args:
        subnet: the subnet.

    Returns:
        One :class:`BlockDims` per layer, in order.
    """
    return [
        BlockDims(subnet.embed_dim, subnet.num_heads[i], subnet.mlp_hidden(i), subnet.block_shares(i))
        for i in range(subnet.depth)
    ]


def build_supernet(model_cfg: ModelConfig, quant_cfg: QuantConfig) -> SuperViT:
    """Supernet from the ``model`` and ``quant`` sections of an :class:`ExperimentConfig`.

    Args:
        model_cfg: the search space and supernet options.
        quant_cfg: the quantization scheme (held by the supernet's layers as it is).

    Returns:
        A freshly initialised supernet.
    """
    return SuperViT(
        model_cfg.space(),
        quant_cfg,
        model_cfg.layer_scale,
        model_cfg.layer_scale_init,
        model_cfg.drop_path,
        model_cfg.nonlinear if quant_cfg.enabled else "float",  # no codes, nothing integer
    )


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
    """Bind ``subnet`` to ``supernet``; weights stay shared (an explicit handle, no hidden state).

    Args:
        supernet: the weight-sharing model.
        subnet: a point of ``supernet.space``; validated against it.

    Returns:
        A module whose ``forward(x)`` runs ``supernet(x, subnet)``.
    """
    return ActiveSubnet(supernet, subnet)


@torch.no_grad()
def extract(supernet: SuperViT, subnet: SubnetConfig) -> QuantViT:
    """A standalone :class:`QuantViT` holding only ``subnet``'s weights and quantizers.

    Its outputs equal ``supernet(x, subnet)`` (same slices, same quantizer steps, same code path).
    Each block extracts itself (:meth:`Block.extract`); the patch embedding, tokens, final norm
    and head are copied into the new model's own.  Modules are built in the order
    :class:`QuantViT` builds them, so extraction draws the same random numbers as building one.

    Args:
        supernet: the trained supernet.
        subnet: the subnet to extract (validated against ``supernet.space``).

    Returns:
        The model, on the supernet's device and in its train/eval mode.
    """
    supernet.space.validate(subnet)
    e = subnet.embed_dim
    # ``blocks`` is an nn.ModuleList built from Blocks; its items are typed as plain Modules
    blocks = [cast(Block, blk).extract(d) for blk, d in zip(supernet.blocks, block_dims(subnet))]
    model = QuantViT(
        subnet, supernet.quant, supernet.layer_scale, supernet.layer_scale_init, blocks, supernet.nonlinear
    )
    model.to(next(supernet.parameters()).device)
    if supernet.nonlinear == "integer":
        model.res_q.load_state_dict(supernet.res_q.state_dict())
    model.patch_embed.load_slice(supernet.patch_embed, rows=e)
    model.cls_token.copy_(supernet.cls_token[..., :e])
    model.pos_embed.copy_(supernet.pos_embed[..., :e])
    model.norm.weight.copy_(supernet.norm.weight[:e])
    model.norm.bias.copy_(supernet.norm.bias[:e])
    model.head.load_slice(supernet.head, cols=e)
    return model.train(supernet.training)
