"""The weight-sharing, mixed-precision ViT supernet and its explicit subnet operations."""

from quasar_vit.supernet.supernet import ActiveSubnet, SuperViT, build_supernet, extract, sample, set_active

__all__ = ["ActiveSubnet", "SuperViT", "build_supernet", "extract", "sample", "set_active"]
