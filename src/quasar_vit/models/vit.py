"""The fixed-size quantized ViT: what a subnet becomes after extraction.

``QuantViT`` is an ordinary ``nn.Module`` built from a :class:`SubnetConfig`; it holds only the
subnet's weights and quantizer steps.  The supernet (``quasar_vit.supernet``) is the same network
built at the largest size and run on leading slices.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from quasar_vit.models.layers import Block, BlockDims, QuantLinear, QuantSpec, elastic_layer_norm, patchify
from quasar_vit.space import SubnetConfig, num_8bit_rows


class ViTBase(nn.Module):
    """Patch embedding, class token, position embedding, blocks, final norm and head."""

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        in_chans: int,
        num_classes: int,
        embed: int,
        blocks: Sequence[Block],
        quant: QuantSpec,
        patch_embed_bits: int,
        head_bits: int,
    ) -> None:
        super().__init__()
        self.img_size, self.patch_size, self.in_chans, self.num_classes = img_size, patch_size, in_chans, num_classes
        num_patches = (img_size // patch_size) ** 2
        pe_in = in_chans * patch_size * patch_size
        self.patch_embed = QuantLinear(pe_in, embed, quant, n8_rows=embed if patch_embed_bits == 8 else 0)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed)
        self.head = QuantLinear(embed, num_classes, quant, n8_rows=num_classes if head_bits == 8 else 0)
        self.patch_embed_bits, self.head_bits = patch_embed_bits, head_bits

    def _forward(self, x: Tensor, embed: int | None, dims: Sequence[BlockDims | None]) -> Tensor:
        p = patchify(x, self.patch_size)
        if embed is None:
            tok = self.patch_embed(p)
            cls, pos = self.cls_token, self.pos_embed
        else:
            n8 = embed if self.patch_embed_bits == 8 else 0
            tok = self.patch_embed(p, rows=embed, n8=n8)
            cls, pos = self.cls_token[..., :embed], self.pos_embed[..., :embed]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), tok], dim=1) + pos
        for blk, d in zip(self.blocks, dims):
            x = blk(x, d)
        x = elastic_layer_norm(self.norm, x)[:, 0]
        if embed is None:
            return self.head(x)
        n8 = self.num_classes if self.head_bits == 8 else 0
        return self.head(x, cols=embed, n8=n8)


class QuantViT(ViTBase):
    """A standalone quantized ViT for one subnet (fixed sizes, fixed bit map)."""

    def __init__(
        self, subnet: SubnetConfig, quant: QuantSpec, layer_scale: bool = True, layer_scale_init: float = 0.1
    ) -> None:
        blocks = []
        for i in range(subnet.depth):
            q, h, e, s = subnet.qkv_dim(i), subnet.mlp_hidden(i), subnet.embed_dim, subnet.w8_shares[i]
            n8 = (3 * num_8bit_rows(q, s), num_8bit_rows(e, s), num_8bit_rows(h, s), num_8bit_rows(e, s))
            blocks.append(
                Block(e, subnet.num_heads[i], subnet.head_dim, h, quant, layer_scale, layer_scale_init, 0.0, n8=n8)
            )
        super().__init__(
            subnet.img_size,
            subnet.patch_size,
            subnet.in_chans,
            subnet.num_classes,
            subnet.embed_dim,
            blocks,
            quant,
            subnet.patch_embed_bits,
            subnet.head_bits,
        )
        self.subnet = subnet
        self.quant = quant
        self.layer_scale = layer_scale

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x, None, [None] * len(self.blocks))
