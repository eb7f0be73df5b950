"""Supernet checkpoints: written atomically, read without unpickling code.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(..., weights_only=True)``.  It carries the full experiment config, so every later
step (eval, search, export) rebuilds the exact supernet from the file alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from quasar_vit.config import ExperimentConfig, config_from_dict
from quasar_vit.errors import CheckpointError, ConfigError
from quasar_vit.utils.io import atomic_path

FORMAT = "quasar-vit-supernet"
VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format tags) to ``path`` atomically."""
    payload = {"format": FORMAT, "version": VERSION, **payload}
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as exc:  # disk full, quota, I/O error (torch wraps some in RuntimeError)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        kept = " (the previous one is kept)" if Path(path).is_file() else ""
        raise CheckpointError(f"could not write checkpoint {path}: {reason}{kept}") from None


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a checkpoint; every failure becomes one :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        for name in ("supernet.pt", "last.pt"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"no checkpoint (supernet.pt or last.pt) in directory {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip failure means the same to a user
        # torch's own text suggests weights_only=False, which would execute pickled code: not forwarded
        kind = (
            "it holds objects other than tensors and plain containers"
            if "Weights only load failed" in str(exc)
            else "not a PyTorch checkpoint archive (corrupt or truncated?)"
        )
        raise CheckpointError(f"{path} is not a readable quasar-vit checkpoint: {kind}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a quasar-vit supernet checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')}, expected {VERSION}")
    for key in ("config", "model", "step"):
        if key not in ckpt:
            raise CheckpointError(f"{path} lacks '{key}'")
    return ckpt


def checkpoint_config(ckpt: dict[str, Any]) -> ExperimentConfig:
    try:
        return config_from_dict(ckpt["config"], stored=True)
    except ConfigError as exc:
        raise CheckpointError(f"the checkpoint's config is invalid: {exc}") from None


def load_supernet(path: str | Path, device: str | torch.device = "cpu"):  # -> tuple[SuperViT, ExperimentConfig, dict]
    """Rebuild the supernet stored at ``path`` (a file, or a run directory)."""
    from quasar_vit.supernet import build_supernet

    ckpt = read_checkpoint(path, map_location=device)
    cfg = checkpoint_config(ckpt)
    model = build_supernet(cfg.model, cfg.quant).to(device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not match its config: {str(exc).splitlines()[0]}") from None
    model.eval()
    return model, cfg, ckpt
