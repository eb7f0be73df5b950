"""``verify_export``: the integer reference engine against the fake-quant models of an export.

Runs the test images through

* :class:`~quasar_vit.export.reference.IntegerViT` on ``weights.npz`` (the accelerator's arithmetic),
* the **source checkpoint's** fake-quant model, when the checkpoint is at hand: the supernet loaded
  with :func:`~quasar_vit.training.checkpoint.load_supernet` and run on the exported subnet,
  ``supernet(x, subnet)`` in eval mode, exactly as training and ``quasar-vit eval`` do.  It is
  independent of ``weights.npz``, so an export bug that corrupts the integer weights consistently
  (the engine and ``model.pt2`` still agree with each other) shows up here.  The checkpoint is the
  one recorded in ``export.json`` (``checkpoint``, relative paths are relative to the current
  directory), or the one given explicitly (``checkpoint=``, ``quasar-vit verify --checkpoint``);
* ``model.pt2`` (the ``torch.export`` program of the fake-quant ``DeployViT``, float32, rebuilt from
  ``weights.npz``),

and reports, for each fake-quant model, label agreement, logit errors, top-1 of both, and how many
6-bit activation codes differ from the engine's (``flipped codes``): the fake-quant model sums
float products in float32, the engine sums exact integers and rescales once, so a value within
float rounding of a ``.5`` quantisation boundary can land on the neighbouring code.  That is
"within rounding"; a flip rate far above ~1e-4 would indicate a real mismatch.  A flip can
propagate (the quantizer is discontinuous), so a few images may differ by more than float rounding
downstream of it.  The nibble passes are also checked against a direct int64 GEMM on a few images.

``passed`` requires label agreement >= ``min_agreement`` with ``model.pt2`` and exact nibble
passes, and, when the checkpoint comparison ran, label agreement >= ``min_agreement`` and a flipped
code fraction <= ``max_flip_fraction`` against the checkpoint's model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np
import torch

from quasar_vit.errors import CheckpointError, ExportError, QuasarError, SubnetError
from quasar_vit.utils.io import atomic_write_json, read_json

if TYPE_CHECKING:  # the back ends are imported when verify runs, not when this module loads
    from quasar_vit.export.ir import IntViT

Traced = tuple[np.ndarray, dict[str, np.ndarray]]  # logits, integer codes per quantisation point
Source = tuple[torch.nn.Module, Any, dict[str, Any]]  # supernet, subnet, checkpoint path/step/source
M = TypeVar("M", bound=torch.nn.Module)  # the kind of quantizer module whose codes are traced

DEFAULT_MIN_AGREEMENT = 99.5
# flipped 6-bit codes from float rounding alone: 1e-5..1e-3 (the 1200-step demo subnet: 1.0e-3, most of
# them at the projection inputs, where the engine requantises P v in integers and the model in float);
# a wrong weight or step flips a large share (a sign-flipped qkv: 0.34), so 5e-3 separates the two
DEFAULT_MAX_FLIP_FRACTION = 5e-3


def _code_key(name: str) -> str:
    """Module name of a quantizer -> the engine's trace key (``blocks.0.qkv.aq`` -> ``blocks.0.qkv.in``)."""
    if name.endswith(".aq"):
        return name[:-3] + ".in"
    head, _, last = name.rpartition(".")
    return f"{head}.{last[3:]}"  # blocks.0.aq_q -> blocks.0.q


def _traced(
    model: torch.nn.Module,
    run: Callable[[], torch.Tensor],
    kind: type[M],
    code: Callable[[M, tuple[Any, ...], torch.Tensor], torch.Tensor],
) -> Traced:
    """Logits of ``run()`` and the integer codes (``code(module, inputs, output)``) of every ``kind`` module."""
    codes: dict[str, np.ndarray] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, kind):

            def hook(m, inp, out, k=_code_key(name)):
                codes[k] = code(m, inp, out).to(torch.int32).numpy()

            handles.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = run().numpy()
    finally:
        for h in handles:
            h.remove()
    return logits, codes


def _deploy_codes(deploy: torch.nn.Module, x: torch.Tensor) -> Traced:
    """Logits and the integer codes of every quantisation point of the (eager) deploy model."""
    from quasar_vit.export.deploy import DeployIntViT, FakeQuant

    if isinstance(deploy, DeployIntViT):  # the integer path records its own codes
        codes: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            logits = deploy(x, codes)
        return logits.numpy(), {k: v.to(torch.int32).numpy() for k, v in codes.items()}
    return _traced(deploy, lambda: deploy(x), FakeQuant, lambda m, _inp, out: torch.round(out / m.step))


def _checkpoint_codes(supernet: torch.nn.Module, subnet: Any, x: torch.Tensor) -> Traced:
    """Logits of ``supernet(x, subnet)`` (eval mode) and the codes of every activation quantizer it ran.

    On the integer path a quantizer's output is its exact codes times its step (``forward(x, codes)``),
    so the codes are read back from the output; the residual quantizer runs once per residual point,
    named in call order (``stem.res``, then ``res1`` and ``res2`` of each block) as the engine names them.
    """
    from quasar_vit.quantization.lsq import ActQuantizer, ResidualQuantizer

    def code(m: ActQuantizer, inp: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
        return torch.round(out / m.step_value()) if len(inp) > 1 else m.integer(inp[0])

    res_codes: list[torch.Tensor] = []
    res_mods = [m for m in supernet.modules() if isinstance(m, ResidualQuantizer)]
    handles = [
        m.register_forward_hook(lambda m, _inp, out: res_codes.append(torch.round(out / m.step_value())))
        for m in res_mods
    ]
    try:
        logits, codes = _traced(supernet, lambda: supernet(x, subnet), ActQuantizer, code)
    finally:
        for h in handles:
            h.remove()
    names = ["stem.res"] + [f"blocks.{i}.res{j}" for i in range(subnet.depth) for j in (1, 2)]
    codes.update({n: c.to(torch.int32).numpy() for n, c in zip(names, res_codes)})
    return logits, codes


class _Comparison:
    """Running comparison of the engine's logits and codes with one fake-quant model."""

    def __init__(self) -> None:
        self.ref: list[np.ndarray] = []
        self.flips = self.total = self.max_code_diff = 0
        self.per_point: dict[str, list[int]] = {}

    def add(self, ref: np.ndarray, ref_codes: dict[str, np.ndarray], codes: dict[str, np.ndarray]) -> None:
        self.ref.append(ref)
        for k, c in codes.items():
            if k not in ref_codes:
                raise ExportError(f"the fake-quant model has no quantization point {k}")
            d = np.abs(c.astype(np.int64) - ref_codes[k].reshape(c.shape))
            nf = int((d != 0).sum())
            self.flips += nf
            self.total += d.size
            self.max_code_diff = max(self.max_code_diff, int(d.max()) if d.size else 0)
            pp = self.per_point.setdefault(k, [0, 0])
            pp[0] += nf
            pp[1] += d.size

    def result(self, integer: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """``(numbers, reference logits)``: the comparison's part of ``verify.json``, and the model's logits."""
        ref = np.concatenate(self.ref)
        err = np.abs(integer - ref)
        worst = sorted(((v[0] / max(v[1], 1), k) for k, v in self.per_point.items()), reverse=True)[:5]
        return {
            "agreement_percent": float(100.0 * np.mean(integer.argmax(1) == ref.argmax(1))),
            "max_abs_logit_error": float(err.max()),
            "mean_abs_logit_error": float(err.mean()),
            "images_within_1e-4_percent": float(100.0 * np.mean(err.max(1) < 1e-4)),
            "logit_scale": float(np.abs(ref).max()),
            "activation_codes_compared": int(self.total),
            "flipped_codes": int(self.flips),
            "flipped_code_fraction": self.flips / self.total if self.total else 0.0,
            "max_code_difference": int(self.max_code_diff),
            "most_flips": [{"point": k, "fraction": f} for f, k in worst if f > 0],
        }, ref


def _json_roundtrip(d: Any) -> Any:
    return json.loads(json.dumps(d))


def load_source_model(path: str | Path, info: dict[str, Any]) -> Source:
    """``(supernet, subnet, ckpt_meta)`` of the checkpoint at ``path``, checked to be the export's source.

    Raises :class:`CheckpointError` when it is missing, corrupt, or not the checkpoint the export was
    made from (another model/quant config, another training step, the subnet not in its space).
    """
    from quasar_vit.config import config_from_dict
    from quasar_vit.errors import ConfigError
    from quasar_vit.space import SubnetConfig
    from quasar_vit.training.checkpoint import load_supernet

    supernet, cfg, ckpt = load_supernet(path, "cpu")
    ours = _json_roundtrip(cfg.to_dict())
    try:  # read as its version wrote it (flat geometry, no nonlinear key, ...), defaults filled in
        theirs = _json_roundtrip(config_from_dict(info.get("config", {}), stored=True).to_dict())
    except ConfigError as exc:
        raise CheckpointError(f"export.json holds an invalid config: {exc}") from None
    for section in ("model", "quant"):
        if section in theirs and ours.get(section) != theirs[section]:
            raise CheckpointError(
                f"{path} is not the checkpoint this export was made from: its '{section}' "
                "config differs from the one in export.json"
            )
    step, want = int(ckpt.get("step", 0)), info.get("checkpoint_step")
    if want is not None and step != int(want):
        raise CheckpointError(
            f"{path} is at training step {step}, the export was made from step {want} "
            "(export.json checkpoint_step): not the export's source checkpoint"
        )
    try:
        sub = SubnetConfig.from_dict(info["subnet"])
        supernet.space.validate(sub)
    except SubnetError as exc:
        raise CheckpointError(f"the export's subnet is not in the search space of {path}: {exc}") from None
    supernet.eval()
    return supernet, sub, {"path": str(path), "step": step}


def _find_checkpoint(
    info: dict[str, Any], checkpoint: str | Path | None, use_recorded: bool = True
) -> tuple[Source | None, str | None]:
    """The source model and ``None``, or ``None`` and a one-line note saying why there is none."""
    if checkpoint is None and not use_recorded:
        return None, "checkpoint not used (use_checkpoint=False): compared with the deploy model only"
    if checkpoint is not None:  # given explicitly: every problem is an error
        model = load_source_model(checkpoint, info)
        model[2]["source"] = "--checkpoint"
        return model, None
    recorded = info.get("checkpoint")
    if not recorded:
        return None, "checkpoint not found (export.json records none): compared with the deploy model only"
    path = Path(recorded)
    if not path.exists():
        return None, f"checkpoint not found: {recorded} (recorded in export.json): compared with the deploy model only"
    try:
        model = load_source_model(path, info)
    except QuasarError as exc:
        return None, f"checkpoint not usable: {exc}: compared with the deploy model only"
    model[2]["source"] = "export.json"
    return model, None


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


def verify_export(
    directory: str | Path,
    data_root: str | None = None,
    limit: int | None = None,
    batch_size: int = 250,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    write: bool = True,
    checkpoint: str | Path | None = None,
    use_checkpoint: bool = True,
    max_flip_fraction: float = DEFAULT_MAX_FLIP_FRACTION,
    progress: bool = False,
) -> dict[str, Any]:
    """Check the export in ``directory`` on its test split: the integer engine against ``model.pt2``
    (the top-level numbers) and, when there is one, the source checkpoint's fake-quant model.

    Args:
        directory: the export directory.
        data_root, limit: override the data root of the export's config; the first ``limit`` test
            images (``None``: the config's test split).
        batch_size: images per engine call.
        min_agreement, max_flip_fraction: the label agreement (%) needed to pass; the fraction of
            flipped 6-bit codes the checkpoint comparison tolerates.
        write: write the result to ``directory/verify.json``.
        checkpoint, use_checkpoint: the source checkpoint (file or run directory); ``None`` uses the
            one recorded in ``export.json``, unless ``use_checkpoint`` is False.
        progress: a bar over the test images (the NumPy engine is slow on large splits).

    Returns:
        ``verify.json``'s dict (``result["checkpoint"]``: ``{"checked": False, "note": ...}`` if none).

    Raises:
        ExportError: not an export or no test images; CheckpointError: ``checkpoint`` is not the source.
    """
    from quasar_vit.config import config_from_dict
    from quasar_vit.export.exporter import load_test_images

    directory = Path(directory)
    info = read_export(directory)
    ir = _load_ir(directory)  # one typed description for every engine compared below
    source, note = _find_checkpoint(info, checkpoint, use_checkpoint)
    cfg = config_from_dict(info["config"], stored=True)
    x, y = load_test_images(cfg, data_root, limit)
    if len(x) == 0:
        raise ExportError("no test images to verify on")
    run = _run(directory, ir, source, x, batch_size, progress)
    result = _deploy_result(directory, cfg.data.name, run, y, source is not None, min_agreement)
    # float nonlinear ops: a code difference > 1 only arises when an earlier flip propagated (seen: 3,
    # in 0.4 % of images); it is reported, not failed on.  Integer ones: every code and logit is exact.
    passed = bool(result["agreement_percent"] >= min_agreement and run.nibbles_ok)
    if run.integer_ops:
        passed = passed and result["bit_exact"]
    if source is not None:
        result["checkpoint"] = _checkpoint_result(run, source, y, min_agreement, max_flip_fraction)
        passed = passed and result["checkpoint"]["passed"]
    else:
        result["checkpoint"] = {"checked": False, "note": note}
    result["passed"] = passed
    if write:
        atomic_write_json(directory / "verify.json", result)
    return result


def _load_ir(directory: Path) -> IntViT:
    """The export's IntViT, built from ``weights.npz`` (``model.pt2`` must be there too)."""
    from quasar_vit.export.intweights import load_weights
    from quasar_vit.export.ir import build_ir

    arrays, manifest = load_weights(directory)
    if not (directory / "model.pt2").is_file():
        raise ExportError(f"{directory} lacks model.pt2 (an export from an older quasar-vit? export it again)")
    return build_ir(arrays, manifest)


@dataclass
class _Run:
    """What one pass over the test images produced."""

    vs_deploy: _Comparison  # the engine against model.pt2
    vs_ckpt: _Comparison  # the engine against the checkpoint's model (empty without one)
    integer: np.ndarray  # the engine's logits
    eager: np.ndarray  # the eager DeployViT's logits
    script_err: float  # max |model.pt2 - eager DeployViT| logit difference
    nibbles_ok: bool  # nibble passes == direct int64 GEMMs on the first images
    integer_ops: bool  # the export's nonlinear ops are integers: every comparison must be exact


def _run(directory: Path, ir: IntViT, source: Source | None, x: torch.Tensor, batch_size: int, progress: bool) -> _Run:
    """Run the engine, ``model.pt2``, the eager deploy model and (if any) the checkpoint's model on ``x``."""
    from quasar_vit.export.deploy import deploy_model
    from quasar_vit.export.reference import IntegerViT
    from quasar_vit.export.torch_export import load_program
    from quasar_vit.utils.progress import progress as progress_bar

    scripted = load_program(directory / "model.pt2")
    engine, deploy = IntegerViT(ir), deploy_model(ir)
    vs_deploy, vs_ckpt = _Comparison(), _Comparison()
    int_all, eager_all = [], []
    script_err = 0.0
    bar = progress_bar(len(x), "verify", "img", enabled=progress)
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        with torch.no_grad():
            ref = scripted(xb).numpy()
        eager, fq_codes = _deploy_codes(deploy, xb)
        script_err = max(script_err, float(np.abs(eager - ref).max()))
        logits, codes = engine.forward(xb.numpy(), trace=True)
        vs_deploy.add(ref, fq_codes, codes)
        if source is not None:
            vs_ckpt.add(*_checkpoint_codes(source[0], source[1], xb), codes)
        int_all.append(logits)
        eager_all.append(eager)
        bar.update(len(xb))
    bar.close()
    integer = np.concatenate(int_all)
    # nibble passes == direct int64 GEMMs, on a few images
    nib_logits = IntegerViT(ir, exact=True, check_nibbles=True).forward(x[:4].numpy())
    nibbles_ok = bool(np.array_equal(nib_logits, integer[:4]))
    return _Run(
        vs_deploy, vs_ckpt, integer, np.concatenate(eager_all), script_err, nibbles_ok, ir.nonlinear == "integer"
    )


def _deploy_result(
    directory: Path, data_set: str, run: _Run, y: np.ndarray, with_checkpoint: bool, min_agreement: float
) -> dict[str, Any]:
    """The top-level numbers of ``verify.json``: the engine against ``model.pt2``."""
    dep, ref = run.vs_deploy.result(run.integer)
    return {
        "export": str(directory),
        "images": int(len(y)),
        "split": "test",
        "data_set": data_set,
        "compared_with": (
            "checkpoint fake-quant model and deploy model (model.pt2)"
            if with_checkpoint
            else "deploy model (model.pt2) only"
        ),
        "agreement_percent": dep["agreement_percent"],
        "min_agreement_percent": float(min_agreement),
        **{k: v for k, v in dep.items() if k != "agreement_percent"},
        "top1_fake_quant": float(100.0 * np.mean(ref.argmax(1) == y)),
        "top1_integer": float(100.0 * np.mean(run.integer.argmax(1) == y)),
        "nibble_passes_exact": run.nibbles_ok,
        "program_vs_eager_max_abs": run.script_err,
        "nonlinear": "integer" if run.integer_ops else "float",
        "bit_exact": _bit_exact(dep),
    }


def _bit_exact(r: dict[str, Any]) -> bool:
    """No code flipped and the logits equal: what an integer export must show against every model."""
    return bool(r["flipped_codes"] == 0 and r["max_abs_logit_error"] == 0.0)


def _checkpoint_result(
    run: _Run, source: Source, y: np.ndarray, min_agreement: float, max_flip_fraction: float
) -> dict[str, Any]:
    """``result["checkpoint"]``: the engine against the checkpoint's fake-quant model."""
    ck, ck_ref = run.vs_ckpt.result(run.integer)
    ck_ok = bool(ck["agreement_percent"] >= min_agreement and ck["flipped_code_fraction"] <= max_flip_fraction)
    if run.integer_ops:  # integer nonlinear ops: the checkpoint's model computes the same integers
        ck_ok = ck_ok and _bit_exact(ck)
    return {
        "checked": True,
        **source[2],
        "model": "supernet(x, subnet) in eval mode (fake-quant, from the checkpoint, not from weights.npz)",
        **ck,
        "min_agreement_percent": float(min_agreement),
        "max_flipped_code_fraction": float(max_flip_fraction),
        "top1_checkpoint": float(100.0 * np.mean(ck_ref.argmax(1) == y)),
        "deploy_vs_checkpoint_max_abs_logit": float(np.abs(run.eager - ck_ref).max()),
        "bit_exact": _bit_exact(ck),
        "passed": ck_ok,
    }


def verify_summary(res: dict[str, Any]) -> str:
    """One line saying exactly what was compared and how close it was (the CLI's verdict)."""

    def part(r: dict[str, Any]) -> str:
        return (
            f"{r['agreement_percent']:.2f} % labels agree, max |logit diff| {r['max_abs_logit_error']:.2e}, "
            f"{100 * r['flipped_code_fraction']:.4f} % flipped 6-bit activation codes"
        )

    n = res["images"]
    ck = res.get("checkpoint") or {}
    nib = "nibble passes == int64 GEMM" if res.get("nibble_passes_exact") else "nibble passes != int64 GEMM [FAILED]"
    deploy_ok = res["agreement_percent"] >= res["min_agreement_percent"]
    deploy = f"vs deploy model (model.pt2, rebuilt from weights.npz): {part(res)}{'' if deploy_ok else ' [FAILED]'}"
    if ck.get("checked"):
        head = (
            f"integer engine vs checkpoint fake-quant model ({ck['path']}, step {ck['step']}): {part(ck)}"
            f"{'' if ck['passed'] else ' [FAILED]'}"
        )
        return f"{head}; {deploy}; {nib}; {n} test images"
    return f"integer engine {deploy} (no checkpoint comparison); {nib}; {n} test images"


__all__ = [
    "verify_export",
    "verify_summary",
    "read_export",
    "load_source_model",
    "DEFAULT_MIN_AGREEMENT",
    "DEFAULT_MAX_FLIP_FRACTION",
]
