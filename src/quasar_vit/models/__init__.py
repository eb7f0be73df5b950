"""Quantized ViT layers and the standalone fixed-size model."""

from quasar_vit.models.layers import Block, BlockDims, QuantLinear, patchify
from quasar_vit.models.vit import QuantViT

__all__ = ["Block", "BlockDims", "QuantLinear", "QuantViT", "patchify"]
