"""The fixed-size quantized ViT: what a subnet becomes after extraction.

``QuantViT`` is an ordinary ``nn.Module`` built from a :class:`SubnetConfig`; it holds only the
subnet's weights and quantizer steps.  The supernet (``quasar_vit.supernet``) is the same network
built at the largest size and run on leading slices.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from quasar_vit.config import QuantConfig
from quasar_vit.models.layers import Block, BlockDims, QuantLinear, elastic_layer_norm, patchify
from quasar_vit.space import SubnetConfig, ViTGeometry


class ViTBase(nn.Module):
    """Patch embedding, class token, position embedding, blocks, final norm and head."""

    def __init__(
        self,
        geometry: ViTGeometry,
        embed: int,
        blocks: Sequence[Block],
        quant: QuantConfig,
    ) -> None:
        """Build the stem and head around ``blocks``.

        Args:
            geometry: input, patch and class sizes, and the bits of the patch embedding and head
                rows (8: all rows 8-bit, else none).
            embed: embedding width.
            blocks: the transformer blocks, in order.
            quant: the quantization scheme.
        """
        super().__init__()
        self.geometry = g = geometry
        # fixed precision: the 8-bit share is all rows or none, at every width
        self.patch_embed = QuantLinear(g.patch_dim, embed, quant, share=float(g.patch_embed_bits == 8))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed))
        self.pos_embed = nn.Parameter(torch.zeros(1, g.num_tokens, embed))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed)
        self.head = QuantLinear(embed, g.num_classes, quant, share=float(g.head_bits == 8))

    def _forward(self, x: Tensor, embed: int | None, dims: Sequence[BlockDims | None]) -> Tensor:
        p = patchify(x, self.geometry.patch_size)
        cls: Tensor  # the parameters themselves, or their leading ``embed`` channels
        pos: Tensor
        if embed is None:
            tok = self.patch_embed(p)
            cls, pos = self.cls_token, self.pos_embed
        else:
            tok = self.patch_embed(p, rows=embed)
            cls, pos = self.cls_token[..., :embed], self.pos_embed[..., :embed]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), tok], dim=1) + pos
        for blk, d in zip(self.blocks, dims):
            x = blk(x, d)
        x = elastic_layer_norm(self.norm, x)[:, 0]
        if embed is None:
            return self.head(x)
        return self.head(x, cols=embed)


class QuantViT(ViTBase):
    """A standalone quantized ViT for one subnet (fixed sizes, fixed bit map)."""

    def __init__(
        self,
        subnet: SubnetConfig,
        quant: QuantConfig,
        layer_scale: bool = True,
        layer_scale_init: float = 0.1,
        blocks: Sequence[Block] | None = None,
    ) -> None:
        """Build the model of ``subnet`` with freshly initialised weights.

        Args:
            subnet: the architecture and 8-bit shares.
            quant: the quantization scheme.
            layer_scale: whether the blocks scale their residual branches.
            layer_scale_init: initial value of those scales.
            blocks: ready blocks (from :meth:`Block.extract`, one per layer) instead of new ones.
        """
        if blocks is None:
            e, hd = subnet.embed_dim, subnet.geometry.head_dim
            blocks = [
                Block(e, n, hd, subnet.mlp_hidden(i), quant, layer_scale, layer_scale_init, 0.0, subnet.block_shares(i))
                for i, n in enumerate(subnet.num_heads)
            ]
        super().__init__(subnet.geometry, subnet.embed_dim, blocks, quant)
        self.subnet = subnet
        self.quant = quant
        self.layer_scale = layer_scale

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x, None, [None] * len(self.blocks))
