"""``model.pt2``: the deploy model as a ``torch.export`` program (the successor of TorchScript).

``torch.export.export`` traces :class:`~quasar_vit.export.deploy.DeployViT` into an ATen graph with
its weights; ``torch.export.save`` writes it, and ``torch.export.load("model.pt2").module()`` runs
it in any process with torch alone (no quasar-vit import).  The batch dimension is dynamic.  The
traced ops are the eager model's (``linear``, ``layer_norm``, ``round``, ``clamp``, ``softmax``,
``gelu``) in the same order, so the logits are bit-identical to ``DeployViT`` (tested in a clean
process).  ``subnet`` and ``quant`` are stored as JSON extra files inside the archive.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch

from quasar_vit.errors import ExportError


def export_program(model: torch.nn.Module, example: torch.Tensor) -> "torch.export.ExportedProgram":
    """``torch.export`` of ``model`` with a dynamic batch dimension (``example`` gives the other dims)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds; one clear line for the user
        raise ExportError(f"torch.export failed on the deploy model: {type(exc).__name__}: {exc}") from None


def save_program(
    model: torch.nn.Module, example: torch.Tensor, path: str | Path, extra: Mapping[str, Any] | None = None
) -> None:
    """Export ``model`` and write it to ``path`` (``.pt2``); ``extra`` goes in as ``NAME.json`` files."""
    files = {f"{k}.json": json.dumps(v, indent=2) for k, v in (extra or {}).items()}
    torch.export.save(export_program(model, example), str(path), extra_files=files)


def load_program(path: str | Path) -> torch.nn.Module:
    """The runnable module of a saved ``model.pt2``."""
    return torch.export.load(str(path)).module()


__all__ = ["export_program", "save_program", "load_program"]
