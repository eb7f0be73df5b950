"""Mixed precision for the training step (``train.amp``): autocast, and a GradScaler for fp16.

bf16 has fp32's exponent range, so its gradients need no loss scaling; fp16 does (small gradients
underflow), which is what the GradScaler is for.  GPUs older than Ampere lack bf16, so ``bf16``
falls back to fp16 with a scaler there.  The quantizers keep their own arithmetic in fp32 under
either (:mod:`quasar_vit.quantization.lsq`), and the losses are computed from fp32 logits.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Precision:
    """What autocast runs in (``mode``: none, bf16 or fp16) on ``device_type``, and the fp16 scaler."""

    mode: str = "none"
    device_type: str = "cpu"
    scaler: torch.amp.GradScaler | None = None

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's context: autocast in ``dtype``, or nothing at all in fp32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring scaled gradients back to their true size (before clipping them)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Optimizer step; with a scaler it is skipped when a gradient overflowed, and the scale adapts."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def resolve_precision(amp: str, device: torch.device) -> tuple[Precision, str]:
    """The precision ``train.amp`` asks for on ``device``, and a note when it had to change."""
    if amp == "none":
        return Precision("none", device.type), ""
    note = ""
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        amp, note = (
            "fp16",
            f"train.amp=bf16: {torch.cuda.get_device_name(device)} has no bf16; using fp16 with a GradScaler",
        )
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return Precision(amp, device.type, scaler), note
