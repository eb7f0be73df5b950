"""``verify_export``: the integer reference engine against the fake-quant model of an export.

Runs the test images through

* ``model.pt`` (TorchScript fake-quant model, float32), and
* :class:`~quasar_vit.export.reference.IntegerViT` on ``weights.npz`` (the accelerator's arithmetic),

and reports label agreement, logit errors, top-1 of both, and how many 6-bit activation codes
differ between the two (``flipped codes``): the fake-quant model sums float products in float32,
the engine sums exact integers and rescales once, so a value within float rounding of a ``.5``
quantisation boundary can land on the neighbouring code.  That is "within rounding"; a flip rate
far above ~1e-4 would indicate a real mismatch.  A flip can propagate (the quantizer is
discontinuous), so a few images may differ by more than float rounding downstream of it.
The nibble passes are also checked against a direct int64 GEMM on a few images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from quasar_vit.errors import ExportError
from quasar_vit.utils.io import read_json
from quasar_vit.utils.io import atomic_write_json

DEFAULT_MIN_AGREEMENT = 99.5


def _deploy_codes(deploy: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Logits and the integer codes of every fake-quant point of the (eager) DeployViT."""
    from quasar_vit.export.deploy import FakeQuant

    codes: dict[str, np.ndarray] = {}
    handles = []

    def key(name: str) -> str:
        if name.endswith(".aq"):
            return name[:-3] + ".in"
        head, _, last = name.rpartition(".")
        return f"{head}.{last[3:]}"          # blocks.0.aq_q -> blocks.0.q

    for name, mod in deploy.named_modules():
        if isinstance(mod, FakeQuant):
            def hook(m, _inp, out, k=key(name)):
                codes[k] = torch.round(out / m.step).to(torch.int32).numpy()
            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = deploy(x).numpy()
    finally:
        for h in handles:
            h.remove()
    return logits, codes


def read_export(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportError(f"export directory not found: {directory}")
    path = directory / "export.json"
    if not path.is_file():
        raise ExportError(f"{directory} is not a quasar-vit export (no export.json)")
    info = read_json(path, ExportError)
    if info.get("format") != "quasar-vit-export":
        raise ExportError(f"{path} is not a quasar-vit export description")
    return info


def verify_export(directory: str | Path, data_root: str | None = None, limit: int | None = None,
                  batch_size: int = 250, min_agreement: float = DEFAULT_MIN_AGREEMENT,
                  write: bool = True) -> dict[str, Any]:
    """Check the export in ``directory`` on its test split; writes and returns ``verify.json``'s dict."""
    from quasar_vit.config import config_from_dict
    from quasar_vit.export.deploy import DeployViT, load_torchscript
    from quasar_vit.export.exporter import load_test_images
    from quasar_vit.export.intweights import load_weights
    from quasar_vit.export.reference import IntegerViT

    directory = Path(directory)
    info = read_export(directory)
    arrays, manifest = load_weights(directory)
    if not (directory / "model.pt").is_file():
        raise ExportError(f"{directory} lacks model.pt")
    scripted = load_torchscript(directory / "model.pt")
    cfg = config_from_dict(info["config"])
    x, y = load_test_images(cfg, data_root, limit)
    if len(x) == 0:
        raise ExportError("no test images to verify on")
    engine = IntegerViT(arrays, manifest)
    deploy = DeployViT(arrays, manifest)

    ref_all, int_all = [], []
    flips = total = 0
    max_code_diff = 0
    per_point: dict[str, list[int]] = {}
    script_err = 0.0
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        with torch.no_grad():
            ref = scripted(xb).numpy()
        eager, fq_codes = _deploy_codes(deploy, xb)
        script_err = max(script_err, float(np.abs(eager - ref).max()))
        logits, codes = engine.forward(xb.numpy(), trace=True)
        for k, c in codes.items():
            d = np.abs(c.astype(np.int64) - fq_codes[k].reshape(c.shape))
            nf = int((d != 0).sum())
            flips += nf
            total += d.size
            max_code_diff = max(max_code_diff, int(d.max()) if d.size else 0)
            pp = per_point.setdefault(k, [0, 0])
            pp[0] += nf
            pp[1] += d.size
        ref_all.append(ref)
        int_all.append(logits)
    ref, integer = np.concatenate(ref_all), np.concatenate(int_all)

    # nibble passes == direct int64 GEMMs, on a few images
    checker = IntegerViT(arrays, manifest, exact=True, check_nibbles=True)
    nib_logits = checker.forward(x[:4].numpy())
    nibbles_ok = bool(np.array_equal(nib_logits, integer[:4]))

    agree = float(100.0 * np.mean(integer.argmax(1) == ref.argmax(1)))
    err = np.abs(integer - ref)
    worst = sorted(((v[0] / max(v[1], 1), k) for k, v in per_point.items()), reverse=True)[:5]
    result = {
        "export": str(directory), "images": int(len(x)), "split": "test",
        "data_set": cfg.data.name,
        "agreement_percent": agree,
        "min_agreement_percent": float(min_agreement),
        "max_abs_logit_error": float(err.max()),
        "mean_abs_logit_error": float(err.mean()),
        "images_within_1e-4_percent": float(100.0 * np.mean(err.max(1) < 1e-4)),
        "logit_scale": float(np.abs(ref).max()),
        "top1_fake_quant": float(100.0 * np.mean(ref.argmax(1) == y)),
        "top1_integer": float(100.0 * np.mean(integer.argmax(1) == y)),
        "activation_codes_compared": int(total),
        "flipped_codes": int(flips),
        "flipped_code_fraction": flips / total if total else 0.0,
        "max_code_difference": int(max_code_diff),
        "most_flips": [{"point": k, "fraction": f} for f, k in worst if f > 0],
        "nibble_passes_exact": nibbles_ok,
        "torchscript_vs_eager_max_abs": script_err,
    }
    # a code difference > 1 only arises when an earlier flip propagated (seen: 3, in 0.4 % of images);
    # it is reported, not failed on
    result["passed"] = bool(agree >= min_agreement and nibbles_ok)
    if write:
        atomic_write_json(directory / "verify.json", result)
    return result


__all__ = ["verify_export", "read_export", "DEFAULT_MIN_AGREEMENT"]
