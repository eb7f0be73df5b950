"""The fixed-size quantized ViT: what a subnet becomes after extraction.

``QuantViT`` is an ordinary ``nn.Module`` built from a :class:`SubnetConfig`; it holds only the
subnet's weights and quantizer steps.  The supernet (``quasar_vit.supernet``) is the same network
built at the largest size and run on leading slices.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from quasar_vit.config import NONLINEAR_MODES, QuantConfig
from quasar_vit.models.layers import Block, BlockDims, QuantLinear, elastic_layer_norm, patchify
from quasar_vit.quantization.lsq import ResidualQuantizer
from quasar_vit.space import SubnetConfig, ViTGeometry


class ViTBase(nn.Module):
    """Patch embedding, class token, position embedding, blocks, final norm and head."""

    def __init__(
        self,
        geometry: ViTGeometry,
        embed: int,
        blocks: Sequence[Block],
        quant: QuantConfig,
        nonlinear: str = "float",
    ) -> None:
        """Build the stem and head around ``blocks``.

        Args:
            geometry: input, patch and class sizes, and the bits of the patch embedding and head
                rows (8: all rows 8-bit, else none).
            embed: embedding width.
            blocks: the transformer blocks, in order (built with ``integer`` matching ``nonlinear``).
            quant: the quantization scheme.
            nonlinear: ``float`` or ``integer`` LayerNorm/softmax/GELU/residual arithmetic
                (``model.nonlinear``); ``integer`` adds the residual stream's quantizer ``res_q``.
        """
        super().__init__()
        if nonlinear not in NONLINEAR_MODES:
            raise ValueError(f"nonlinear must be one of {', '.join(NONLINEAR_MODES)}, got {nonlinear!r}")
        self.nonlinear = nonlinear
        if nonlinear == "integer":
            self.res_q = ResidualQuantizer(quant.residual_bits)
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

    @property
    def integer_active(self) -> bool:
        """Whether the forward runs the integer nonlinear ops (integer, calibrated, not calibrating)."""
        return self.nonlinear == "integer" and self.res_q.active

    def _forward(self, x: Tensor, embed: int | None, dims: Sequence[BlockDims | None]) -> Tensor:
        if self.integer_active:
            return self._forward_integer(x, embed, dims)
        res = self.res_q if self.nonlinear == "integer" else None  # records the stream in calibration
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
        if res is not None:
            res.observe(x)
        for blk, d in zip(self.blocks, dims):
            x = blk(x, d, res)
        x = elastic_layer_norm(self.norm, x)[:, 0]
        if embed is None:
            return self.head(x)
        return self.head(x, cols=embed)

    def _forward_integer(self, x: Tensor, embed: int | None, dims: Sequence[BlockDims | None]) -> Tensor:
        """The integer path (:mod:`quasar_vit.models.intpath`): same slices, integer values."""
        from quasar_vit.models.intpath import head_forward, stem_forward

        h = stem_forward(self, x, embed)
        for blk, d in zip(self.blocks, dims):
            h = blk(h, d, self.res_q)
        return head_forward(self, h, embed)


class QuantViT(ViTBase):
    """A standalone quantized ViT for one subnet (fixed sizes, fixed bit map)."""

    def __init__(
        self,
        subnet: SubnetConfig,
        quant: QuantConfig,
        layer_scale: bool = True,
        layer_scale_init: float = 0.1,
        blocks: Sequence[Block] | None = None,
        nonlinear: str = "float",
    ) -> None:
        """Build the model of ``subnet`` with freshly initialised weights.

        Args:
            subnet: the architecture and 8-bit shares.
            quant: the quantization scheme.
            layer_scale: whether the blocks scale their residual branches.
            layer_scale_init: initial value of those scales.
            blocks: ready blocks (from :meth:`Block.extract`, one per layer) instead of new ones.
            nonlinear: ``float`` or ``integer`` (``model.nonlinear``).
        """
        if blocks is None:
            e, hd = subnet.embed_dim, subnet.geometry.head_dim
            integer = nonlinear == "integer"
            blocks = [
                Block(
                    e,
                    n,
                    hd,
                    subnet.mlp_hidden(i),
                    quant,
                    layer_scale,
                    layer_scale_init,
                    0.0,
                    subnet.block_shares(i),
                    integer=integer,
                )
                for i, n in enumerate(subnet.num_heads)
            ]
        super().__init__(subnet.geometry, subnet.embed_dim, blocks, quant, nonlinear)
        self.subnet = subnet
        self.quant = quant
        self.layer_scale = layer_scale

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x, None, [None] * len(self.blocks))
