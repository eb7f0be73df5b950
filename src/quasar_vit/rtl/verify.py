"""``verify --rtl``: an export's test images through the whole subnet on the simulated RTL core.

Each image runs in Verilator on the accelerator (``qv_top``: the descriptor table's program, the
image's loads from DDR, then the core's steps; :func:`quasar_vit.rtl.image.run_image`) with a core
sized for the subnet (:func:`core_for`).  Its logits must equal the NumPy engine's bit for bit, and
every step's measured cycles and the image's, from ``run`` to ``done``, must equal the schedule
model's.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from quasar_vit.errors import RtlError
from quasar_vit.export.ir import IntViT
from quasar_vit.rtl.image import image_steps, run_image
from quasar_vit.rtl.layout import GemmShape
from quasar_vit.rtl.model import size_core
from quasar_vit.rtl.program import load_beats
from quasar_vit.rtl.schedule import ProgramCycles, program_cycles


def core_for(ir: IntViT, r: int = 16, t: int = 4, kp: int = 8, wb: int = 64) -> GemmShape:
    """A core of ``r x t x kp`` units whose memories hold this subnet: every token, every matrix of a
    block side by side, its widest K and its widest residual or attention third; and a divider
    wide enough for its softmaxes' Qa (26 bits at least: Qa grows as the probability step shrinks)."""
    assert ir.ops is not None
    n, e = (int(v) for v in ir.ops.start.shape)
    return size_core(
        n,
        e,
        [(b.attn_dim, b.heads, b.fc1.out_features) for b in ir.blocks],
        [lin.in_features for b in ir.blocks for lin in b.linears()],
        ir.patch_embed.in_features,
        r,
        t,
        kp=kp,
        wb=wb,
        qa_w=max([26] + [int(np.max(b.ops.softmax.recip)).bit_length() for b in ir.blocks if b.ops is not None]),
    )


def verify_rtl(ir: IntViT, images: np.ndarray, engine_logits: np.ndarray, shape: GemmShape | None = None) -> dict:
    """Runs ``images`` on the RTL and compares them with the engine's logits; a JSON-able verdict."""
    shape = shape or core_for(ir)
    steps = image_steps(ir, shape)
    model = image_model(ir, shape)
    exact, off_model, cycles = 0, 0, 0
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, image in enumerate(images):
            run = run_image(shape, ir, image, Path(tmp) / str(i))
            diff = float(np.abs(run.logits - engine_logits[i]).max())
            worst = max(worst, diff)
            exact += int(diff == 0.0)
            measured = (run.run.loads, [r.cycles for r in run.run.layers], run.run.softmax_cycles, run.cycles)
            off_model += int(measured != (model.loads, model.chain.steps, model.chain.softmax, model.total))
            cycles = run.cycles
    by_kind: dict[str, int] = {"load": sum(model.loads)}
    for s, c in zip(steps, model.chain.steps):
        kind = s.kind
        by_kind[kind] = by_kind.get(kind, 0) + c
    return {
        "passed": bool(len(images) and exact == len(images) and off_model == 0),
        "images": len(images),
        "exact_logits": exact,
        "max_logit_diff": worst,
        "images_off_model": off_model,
        "cycles_per_image": cycles,
        "model_cycles_by_kind": by_kind,
        "core": shape.top_params(),
        "steps": len(steps) + len(model.loads),
    }


def image_model(ir: IntViT, shape: GemmShape) -> ProgramCycles:
    """The schedule model of an image of ``ir`` on ``qv_top`` with ``shape``'s core: its two loads and its steps."""
    steps = image_steps(ir, shape)  # (one error line for a float-ops IR)
    assert ir.ops is not None
    n, e = (int(v) for v in ir.ops.start.shape)
    k = -(-ir.patch_embed.in_features // shape.KP) * shape.KP  # the patch codes, K padded to a chunk (image_codes)
    return program_cycles(shape, load_beats(shape, n, k, e), steps, n)


def rtl_verdict(res: dict[str, Any]) -> str:
    """One line: the RTL's agreement with the engine and its cycles."""
    ok = "PASSED" if res["passed"] else "FAILED"
    return (
        f"rtl {ok}: {res['exact_logits']}/{res['images']} images with the engine's logits bit for bit "
        f"(max |diff| {res['max_logit_diff']:g}); {res['steps']} steps, {res['cycles_per_image']} cycles an "
        f"image, {res['images'] - res['images_off_model']}/{res['images']} images in the model's cycles"
    )


def export_core(directory: Path) -> GemmShape | None:
    """The RTL core in the export's ``accelerator.json`` (None when it holds another design: a
    float-ops export's HLS engine, or an export made before the core); one error line when the file
    or its core is malformed."""
    from quasar_vit.rtl.report import KIND, CoreDesign

    path = directory / "accelerator.json"
    if not path.is_file():
        return None
    try:
        design = json.loads(path.read_text()).get("design", {})
    except (json.JSONDecodeError, AttributeError) as exc:
        raise RtlError(f"{path} is not a valid accelerator description: {exc}") from None
    if not isinstance(design, dict) or design.get("accelerator") != KIND:
        return None
    return CoreDesign.from_dict(design).shape


def run_rtl(
    directory: str | Path, limit: int = 100, data_root: str | None = None, core: dict[str, int] | None = None
) -> dict[str, Any]:
    """:func:`verify_rtl` of the export in ``directory`` on its first ``limit`` test images, on
    :func:`core_for` of it with ``core``'s ``r``, ``t``, ``kp``, ``wb`` when given, else on the export's
    own core (``accelerator.json``: sized for these integers at export), else on :func:`core_for`'s
    defaults."""
    from quasar_vit.config import config_from_dict
    from quasar_vit.export.exporter import load_test_images
    from quasar_vit.export.ir import load_ir
    from quasar_vit.export.reference import IntegerViT

    d = Path(directory)
    ir = load_ir(d)
    if ir.nonlinear != "integer":
        raise RtlError(f"{d}: the RTL runs exports with nonlinear: integer; this one is {ir.nonlinear!r}")
    info = json.loads((d / "export.json").read_text())
    images = load_test_images(config_from_dict(info["config"]), data_root, limit)[0].numpy()
    logits = IntegerViT(ir).forward(images)
    logits = logits[0] if isinstance(logits, tuple) else logits
    shape = core_for(ir, **core) if core else export_core(d) or core_for(ir)
    return verify_rtl(ir, images, np.asarray(logits), shape)


__all__ = ["core_for", "export_core", "image_model", "verify_rtl", "run_rtl", "rtl_verdict"]
