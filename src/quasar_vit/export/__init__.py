"""Deployment export of a searched subnet: integer weights, torch.export, ONNX, QONNX, accelerator config,
report, and the NumPy integer reference engine that checks the accelerator's arithmetic.

    from quasar_vit.export import export_subnet, verify_export, IntegerViT
    export_subnet("runs/fmnist/supernet.pt", "subnet.json", "zcu102", "exports/s")
    print(verify_export("exports/s")["agreement_percent"])

See ``docs/export.md``.  Heavy modules (torch, onnx) are imported lazily.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "export_subnet": "quasar_vit.export.exporter",
    "load_subnet_model": "quasar_vit.export.exporter",
    "verify_export": "quasar_vit.export.verify",
    "IntegerViT": "quasar_vit.export.reference",
    "integer_weights": "quasar_vit.export.intweights",
    "load_weights": "quasar_vit.export.intweights",
    "nibble_split": "quasar_vit.export.intweights",
    "DeployViT": "quasar_vit.export.deploy",
    "build_onnx": "quasar_vit.export.onnx_export",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'quasar_vit.export' has no attribute {name!r}")


__all__ = list(_LAZY)
