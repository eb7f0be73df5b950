"""``export_subnet``: checkpoint + subnet + platform -> a deployable export directory.

Everything is checked before anything is written (platform, checkpoint, subnet in the space,
a design that fits), and the directory is assembled in a temporary sibling and renamed into
place at the end (``utils.io.atomic_dir``): a failed export never leaves a half-written folder.
"""

from __future__ import annotations

import dataclasses

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sized

import numpy as np
import torch

from quasar_vit.errors import ExportError, HardwareError
from quasar_vit.export.resolve import ResolvedSubnet, resolve_subnet
from quasar_vit.space import SubnetConfig
from quasar_vit.utils.io import atomic_dir
from quasar_vit.utils.lock import locks_output

if TYPE_CHECKING:
    from quasar_vit.hardware import Platform

EXPORT_FORMAT = "quasar-vit-export"
EXPORT_VERSION = 1
NOT_EVALUATED = "accuracy not measured (--no-eval)"
DEFAULT_PLATFORM = "zcu102"  # the board of a subnet that was not searched (largest, smallest, a bare file)

FILES = {
    "export.json": "what was exported, from which checkpoint and config, and the evaluation numbers",
    "subnet.json": "the subnet (SubnetConfig JSON)",
    "model_state.pt": "QuantViT state_dict + subnet + quant config (torch.load(weights_only=True))",
    "weights.npz": "integer weights per layer (int4/int8 codes, per-row steps, bit map, nibbles, scales)",
    "manifest.json": "key layout and semantics of weights.npz",
    "model.pt2": "torch.export program of the deploy model: torch.export.load('model.pt2').module() runs it",
    "model.onnx": "ONNX (opset 21): INT4/INT8 row groups; integer exports: MatMulInteger GEMMs and the integer "
    "nonlinear ops (bit-exact with the engine), float exports: 6-bit QDQ activations",
    "model.int8.onnx": "ONNX for onnxruntime: int8 weights, 6-bit codes in uint8, every matmul an integer kernel",
    "model.qonnx.onnx": "QONNX (FINN/hls4ml/qonnx): Quant nodes with explicit 4/6/8-bit widths, integer codes",
    "bitmap.json": "per-row bit map of every layer (side file of model.onnx)",
    "accelerator.json": "the accelerator design chosen for this subnet on this board, predicted FPS/resources",
    "report.md": "architecture, bit mix, per-layer latency and resources, accuracy, time breakdown",
    "plots/": "figures linked from report.md",
}


PROTECTED = ("supernet.pt", "last.pt", "search_state.json", "pareto.json", "metrics.jsonl")


def _check_out(out: Path, force: bool, checkpoint: Path | None = None) -> None:
    """Refuse an ``out`` whose replacement would destroy work (even with ``force``)."""
    if checkpoint is not None:
        ck = checkpoint.resolve()
        if ck == out.resolve() or out.resolve() in ck.parents:
            raise ExportError(f"--out {out} contains the checkpoint {checkpoint}; export into another directory")
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"--out {out} exists and is not a directory")
        kept = [n for n in PROTECTED if (out / n).exists()]
        if kept:
            raise ExportError(
                f"--out {out} holds training or search results ({', '.join(kept)}); export into another directory"
            )
        if any(out.iterdir()) and not (out / "export.json").is_file() and not force:
            raise ExportError(
                f"--out {out} is a non-empty directory that is not a quasar-vit export; "
                "choose another directory (or pass --force to replace it)"
            )


def load_test_images(cfg: Any, data_root: str | None, limit: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """Normalised test images and labels of the config's data set.

    ``limit=None``: the config's test split (``data.test_limit`` applies); ``limit=N``: the first N
    images of the whole test split.
    """
    import copy

    from quasar_vit.data import BatchTransform, TensorImageDataset, build_datasets

    cfg = copy.deepcopy(cfg)
    if data_root:
        cfg.data.root = data_root
    if limit:
        cfg.data.test_limit = 0
    g = cfg.model.geometry
    splits = build_datasets(cfg.data, g.img_size, g.in_chans, g.num_classes, seed=cfg.train.seed)
    ds = splits.test
    assert isinstance(ds, Sized), "every data set build_datasets returns has a length"
    n = len(ds) if not limit else min(int(limit), len(ds))
    if isinstance(ds, TensorImageDataset):  # in memory (the only data set with .images): slice it
        imgs, labels = ds.images[:n], ds.labels[:n]
    else:
        items = [ds[i] for i in range(n)]
        imgs = torch.stack([it[0] for it in items])
        labels = torch.as_tensor([int(it[1]) for it in items])
    x = BatchTransform.from_config(cfg.data, train=False)(imgs)
    return x, labels.numpy()


def torch_logits(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    with torch.no_grad():
        return (
            torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()
            if len(x)
            else np.zeros((0, 0), np.float32)
        )


def _evaluate(tmp: Path, cfg: Any, net: _Integerised, data_root: str | None, eval_limit: int | None) -> dict[str, Any]:
    """Top-1 of the fake-quant model, the integer engine and ``model.onnx`` on the test images."""
    from quasar_vit.errors import DataError
    from quasar_vit.export.onnx_export import onnx_session, run_onnx
    from quasar_vit.export.reference import IntegerViT

    try:
        x, y = load_test_images(cfg, data_root, eval_limit)
    except DataError as exc:
        if data_root is not None:  # a root the user named explicitly must exist: an error, not a note
            raise
        return {"note": f"accuracy not measured: {exc}"}
    ref = torch_logits(net.deploy, x)
    integer, _ = IntegerViT(net.ir).predict(x.numpy())
    n_onnx = min(len(x), 512)
    onx = run_onnx(onnx_session(tmp / "model.onnx"), x[:n_onnx].numpy())
    pct = lambda a: float(100.0 * np.mean(a)) if len(a) else None  # noqa: E731
    return {
        "split": "test",
        "images": int(len(x)),
        "top1_fake_quant": pct(ref.argmax(1) == y),
        "top1_integer": pct(integer.argmax(1) == y),
        "agreement_integer": pct(integer.argmax(1) == ref.argmax(1)),
        "max_abs_logit_error_integer": float(np.abs(integer - ref).max()) if len(x) else None,
        "onnx_images": int(n_onnx),
        "agreement_onnx": pct(onx.argmax(1) == ref[:n_onnx].argmax(1)),
        "max_abs_logit_error_onnx": float(np.abs(onx - ref[:n_onnx]).max()) if n_onnx else None,
    }


@locks_output("export", "out_dir", sibling=True)
def export_subnet(
    checkpoint: str | Path,
    subnet: SubnetConfig | str | Path,
    platform: str | Path | Platform | None,
    out_dir: str | Path,
    *,
    re_explore: bool = False,
    data_root: str | None = None,
    eval_limit: int | None = 1000,
    evaluate: bool = True,
    force: bool = False,
    device: str = "cpu",
) -> Path:
    """Export ``subnet`` of the supernet at ``checkpoint`` for ``platform`` into ``out_dir``.

    Args:
        checkpoint: ``supernet.pt`` / ``last.pt`` or a training run directory.
        subnet: a :class:`SubnetConfig`, ``largest``, ``smallest`` or a subnet JSON file; a search
            result (``subnet_*.json``) brings the accelerator design the search chose.
        platform: board preset, platform YAML or :class:`Platform`; ``None``: the board the subnet
            was searched for (``zcu102`` if it was not searched).
        out_dir: the export directory (replaced atomically).
        re_explore: explore a new design even if the subnet file holds one (e.g. for another board).
        data_root, eval_limit, evaluate: the accuracy evaluation's data root override, its test
            images (``None``: the config's test split), and whether it runs at all.
        force: replace ``out_dir`` even if it is not an earlier export.
        device: where the checkpoint is loaded.

    Returns:
        ``out_dir`` as a :class:`Path`.

    Raises:
        QuasarError: HardwareError, CheckpointError, SubnetError or ExportError (e.g. a searched design
            for another board); ``out_dir`` is then left as it was.
    """
    from quasar_vit.export.report import write_report
    from quasar_vit.hardware import load_platform
    from quasar_vit.supernet.supernet import extract
    from quasar_vit.training.checkpoint import load_supernet

    out = Path(out_dir)
    _check_out(out, force, Path(checkpoint))
    plat = load_platform(platform) if platform is not None else None  # a bad board fails before the checkpoint loads
    supernet, cfg, ckpt = load_supernet(checkpoint, device)
    ref = resolve_subnet(subnet, cfg.model.space())
    report = _accelerator(ref, plat, re_explore, cfg.model.nonlinear)
    net = _Integerised.of(extract(supernet, ref.subnet).eval().cpu())
    report = _sized_for(report, net.ir)
    sub, hw = ref.subnet, report.to_dict()
    del supernet
    meta = dict(name=cfg.name, checkpoint=str(checkpoint), step=int(ckpt.get("step", 0)), config_name=cfg.name)
    with atomic_dir(out) as tmp:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an export is meant to be shared
        _write_model(tmp, sub, cfg, net)
        _write_graphs(tmp, sub, net)
        _write_accelerator(tmp, hw, report.platform)
        evaluation = _evaluate(tmp, cfg, net, data_root, eval_limit) if evaluate else {"note": NOT_EVALUATED}
        write_report(tmp, sub, hw, evaluation, {**meta, "files": FILES})
        info = _export_info(checkpoint, meta["step"], cfg, sub, report.platform.name, hw, evaluation)
        (tmp / "export.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def _accelerator(ref: ResolvedSubnet, plat: Platform | None, re_explore: bool, nonlinear: str) -> Any:
    """The export's accelerator report: the design the search chose for this subnet, or a fresh
    exploration (asked for, or the subnet carries no design). The searched design is only valid on
    its board, and for the model's nonlinear ops (``nonlinear``: the model's ``model.nonlinear``):
    the RTL core for integer ones, the HLS engine for float ones."""
    from quasar_vit.hardware import design_from_dict, evaluate, explore, load_platform

    if plat is None:
        plat = load_platform(ref.platform or DEFAULT_PLATFORM)
    if re_explore or ref.design is None:
        return explore(ref.subnet, plat, nonlinear=nonlinear)
    design = design_from_dict(ref.design)
    if design.nonlinear != ("fabric" if nonlinear == "integer" else "host"):  # the RTL core / the HLS engine
        raise ExportError(
            f"{ref.source} holds a design with its nonlinear ops on the {design.nonlinear}, but this model's "
            f"are {nonlinear} (model.nonlinear): pass --re-explore to design an accelerator for it"
        )
    searched_for = ref.platform or design.platform
    if searched_for != plat.name or design.platform != plat.name:
        raise ExportError(
            f"{ref.source} was searched for platform '{searched_for}', not '{plat.name}': "
            f"export it with --platform {searched_for}, or pass --re-explore to design an accelerator for {plat.name}"
        )
    report = evaluate(ref.subnet, plat, design, notes=(f"the design chosen by the search ({ref.source})",))
    if not report.fits:
        raise HardwareError(
            f"the design stored in {ref.source} no longer fits {plat.name} under its caps; "
            "pass --re-explore to design a new one"
        )
    return report


def _sized_for(report: Any, ir: Any) -> Any:
    """The RTL core of ``report`` with its memories and softmax divider sized for the exported
    integers (:func:`~quasar_vit.rtl.verify.core_for`: the trained softmax's Qa may need a wider
    divider than the search's core assumed); the HLS engine's report as it is."""
    from quasar_vit.rtl.report import CoreDesign

    design = report.design
    if not isinstance(design, CoreDesign):
        return report
    from quasar_vit.hardware import evaluate
    from quasar_vit.rtl.verify import core_for

    s = design.shape
    shape = core_for(ir, r=s.R, t=s.T, kp=s.KP, wb=s.WB)
    if shape == s:
        return report
    changed = ", ".join(
        f"{f.name} {getattr(s, f.name)} -> {getattr(shape, f.name)}"
        for f in dataclasses.fields(shape)
        if getattr(s, f.name) != getattr(shape, f.name)
    )
    note = f"the core re-sized for the exported integers ({changed})"
    return evaluate(
        report.subnet, report.platform, CoreDesign(design.platform, design.clock_mhz, shape), report.notes + (note,)
    )


@dataclass(frozen=True)
class _Integerised:
    """The extracted subnet model and the integer forms every exported file is written from."""

    model: torch.nn.Module  # the fake-quant QuantViT of the subnet
    arrays: dict[str, np.ndarray]  # integer weights (weights.npz)
    manifest: dict[str, Any]  # their layout (manifest.json)
    ir: Any  # the IntViT read by the ONNX/QONNX builders and the integer engine
    deploy: torch.nn.Module  # the deploy model traced into model.pt2 (DeployIntViT or DeployViT)

    @classmethod
    def of(cls, model: torch.nn.Module) -> "_Integerised":
        from quasar_vit.export.deploy import deploy_model
        from quasar_vit.export.intweights import integer_weights
        from quasar_vit.export.ir import build_ir

        arrays, manifest = integer_weights(model)
        ir = build_ir(arrays, manifest)
        return cls(model, arrays, manifest, ir, deploy_model(ir))


def _write_model(tmp: Path, sub: SubnetConfig, cfg: Any, net: _Integerised) -> None:
    """``subnet.json``, ``model_state.pt``, ``weights.npz`` + ``manifest.json`` and ``bitmap.json``."""
    from quasar_vit.export.intweights import bitmap, save_weights

    (tmp / "subnet.json").write_text(sub.to_json() + "\n")
    torch.save(
        {
            "format": "quasar-vit-subnet",
            "version": 1,
            "subnet": sub.to_dict(),
            "quant": cfg.to_dict()["quant"],
            "layer_scale": bool(net.model.layer_scale),
            "nonlinear": str(net.model.nonlinear),
            "state_dict": {k: v.detach().cpu() for k, v in net.model.state_dict().items()},
        },
        tmp / "model_state.pt",
    )
    save_weights(tmp, net.arrays, net.manifest)
    (tmp / "bitmap.json").write_text(json.dumps(bitmap(net.arrays, net.manifest)) + "\n")


def _write_graphs(tmp: Path, sub: SubnetConfig, net: _Integerised) -> None:
    """The model graphs: ``model.onnx``, ``model.int8.onnx``, ``model.qonnx.onnx`` and ``model.pt2``."""
    from quasar_vit.export.onnx_export import save_onnx
    from quasar_vit.export.qonnx_export import save_qonnx
    from quasar_vit.export.torch_export import save_program

    ir = net.ir
    save_onnx(ir, tmp / "model.onnx")
    save_onnx(ir, tmp / "model.int8.onnx", variant="int8")
    save_qonnx(ir, tmp / "model.qonnx.onnx")
    save_program(
        net.deploy,
        torch.zeros(2, sub.geometry.in_chans, sub.geometry.img_size, sub.geometry.img_size),
        tmp / "model.pt2",
        {"subnet": sub.to_dict(), "quant": net.manifest["quant"]},
    )


def _write_accelerator(tmp: Path, hw: dict[str, Any], plat: Platform) -> None:
    """``accelerator.json``: the hardware report of the design and the board it is for."""
    accel = {"format": "quasar-vit-accelerator", "version": 1, **hw, "board": plat.to_dict()}
    (tmp / "accelerator.json").write_text(json.dumps(accel, indent=2) + "\n")


def _export_info(
    checkpoint: str | Path, step: int, cfg: Any, sub: SubnetConfig, platform: str, hw: dict, evaluation: dict
) -> dict[str, Any]:
    """The content of ``export.json`` (``hw``: the accelerator report's dict)."""
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_step": step,
        "config": cfg.to_dict(),
        "subnet": sub.to_dict(),
        "platform": platform,
        "predicted": {"fps": hw["total"]["fps"], "latency_ms": hw["total"]["latency_ms"]},
        "evaluation": evaluation,
        "files": FILES,
    }


def load_subnet_model(directory: str | Path):
    """Rebuild the :class:`QuantViT` of an export from ``model_state.pt`` (needs quasar-vit)."""
    from quasar_vit.config import QuantConfig
    from quasar_vit.models.vit import QuantViT

    d = torch.load(Path(directory) / "model_state.pt", map_location="cpu", weights_only=True)
    known = {f.name for f in dataclasses.fields(QuantConfig)}
    spec = QuantConfig(**{k: v for k, v in d["quant"].items() if k in known})
    nonlinear = str(d.get("nonlinear", "float"))  # exports before integer ops: float
    model = QuantViT(SubnetConfig.from_dict(d["subnet"]), spec, d["layer_scale"], nonlinear=nonlinear)
    model.load_state_dict(d["state_dict"])
    return model.eval()


__all__ = ["export_subnet", "load_subnet_model", "load_test_images", "torch_logits", "FILES"]
