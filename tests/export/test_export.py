"""Export: integer weights, integer reference engine, TorchScript, ONNX, accelerator config, errors."""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import numpy as np
import pytest
import torch

FMNIST = Path("/usr/share/datasets/fashion-mnist")

SUBNET: dict = {}  # filled by the `trained` fixture from the config's search space


def _subnet_in(space) -> dict:
    """A mixed subnet of ``space``: second embed dim, largest depth, per-layer choices cycling."""
    d = space.depths[-1]
    cyc = lambda xs: [xs[i % len(xs)] for i in range(d)]  # noqa: E731
    shares = [0.0, 0.25, 0.5, 1.0]
    shares = [s for s in shares if s in space.w8_shares] or list(space.w8_shares)
    return space.make(
        space.embed_dims[min(1, len(space.embed_dims) - 1)], d, cyc(space.num_heads), cyc(space.mlp_ratios), cyc(shares)
    ).to_dict()


@pytest.fixture(scope="module")
def trained(trained_run, tmp_path_factory):
    """The session's trained tiny supernet (conftest.trained_run) and a mixed subnet of its space."""
    cfg, run = trained_run
    root = tmp_path_factory.mktemp("export")
    SUBNET.clear()
    SUBNET.update(_subnet_in(cfg.model.space()))
    sub = root / "subnet.json"
    sub.write_text(json.dumps({"subnet": SUBNET}))
    return root, run / "supernet.pt", sub


@pytest.fixture(scope="module")
def exported(trained):
    from quasar_vit.export import export_subnet

    root, ckpt, sub = trained
    out = export_subnet(ckpt, sub, "zcu102", root / "exp")
    return out


@pytest.fixture(scope="module")
def images(exported):
    from quasar_vit.config import config_from_dict
    from quasar_vit.export.exporter import load_test_images

    info = json.loads((exported / "export.json").read_text())
    return load_test_images(config_from_dict(info["config"]), None, 400)


def test_nibble_split_is_exact_for_every_int8():
    from quasar_vit.export.intweights import nibble_join, nibble_split
    from quasar_vit.export.reference import split_operand

    w = np.arange(-128, 128, dtype=np.int16).reshape(16, 16).astype(np.int8)
    hi, lo = nibble_split(w)
    assert hi.dtype == np.int8 and lo.dtype == np.uint8
    assert hi.min() == -8 and hi.max() == 7 and lo.min() == 0 and lo.max() == 15
    assert np.array_equal(nibble_join(hi, lo), w.astype(np.int32))
    # 6-bit activations (the stationary operand of the attention matmuls) split the same way
    a = np.arange(-32, 32)
    ahi, alo = split_operand(a)
    assert np.array_equal(16 * ahi + alo, a) and ahi.min() == -2 and ahi.max() == 1
    # two nibble passes == one 8-bit GEMM, on every code pair
    x = np.arange(-32, 32, dtype=np.int64)[:, None]
    assert np.array_equal(
        16 * (x @ hi.reshape(1, -1).astype(np.int64)) + x @ lo.reshape(1, -1).astype(np.int64),
        x @ w.reshape(1, -1).astype(np.int64),
    )
    with pytest.raises(ValueError):
        nibble_split(np.array([200]))


def test_export_writes_every_artifact(exported):
    for name in (
        "export.json",
        "subnet.json",
        "model.pt2",
        "model_state.pt",
        "weights.npz",
        "manifest.json",
        "model.onnx",
        "bitmap.json",
        "accelerator.json",
        "report.md",
    ):
        assert (exported / name).is_file(), name
    assert {p.name for p in (exported / "plots").iterdir()} >= {"bitmix.png", "latency.png", "time_breakdown.png"}
    leftovers = [p.name for p in exported.parent.iterdir() if p.name.startswith(".exp")]
    assert not leftovers
    info = json.loads((exported / "export.json").read_text())
    assert info["subnet"]["w8_shares"] == SUBNET["w8_shares"]
    ev = info["evaluation"]
    assert ev["images"] == 1000 and ev["agreement_integer"] >= 99.5 and ev["agreement_onnx"] >= 99.5
    report = (exported / "report.md").read_text()
    for section in (
        "## Architecture",
        "## Per-layer bit mix",
        "## Per-layer latency",
        "## Accelerator",
        "## Where the time goes",
        "plots/bitmix.png",
        f"blocks.{SUBNET['depth'] - 1}.fc2",
        "FPS",
    ):
        assert section in report


def test_weights_npz_layout(exported):
    from quasar_vit.export.intweights import load_weights
    from quasar_vit.space import SubnetConfig

    arrays, manifest = load_weights(exported)
    sub = SubnetConfig.from_dict(SUBNET)
    for spec in sub.linear_layers():
        g = lambda k: arrays[f"{spec.name}.{k}"]  # noqa: E731
        w, is8 = g("w_int"), g("is8")
        assert w.dtype == np.int8 and w.shape == (spec.out_features, spec.in_features)
        assert int(is8.sum()) == spec.n8_rows
        assert np.array_equal(g("bits"), np.where(is8, 8, 4))
        if (~is8).any():
            assert w[~is8].min() >= -8 and w[~is8].max() <= 7
        assert np.array_equal(g("w4"), w[g("rows4")])
        assert np.array_equal(16 * g("hi").astype(np.int32) + g("lo"), w[g("rows8")])
        assert g("step").dtype == np.float32 and (g("step") > 0).all() and g("act_step").shape == ()
        assert g("bias").shape == (spec.out_features,)
    assert spec.name == "head"
    e = sub.embed_dim
    assert arrays["blocks.0.ls1"].shape == (e,) and arrays["pos_embed"].shape == (sub.geometry.num_tokens, e)
    for n in ("aq_q", "aq_k", "aq_v", "aq_attn"):
        assert arrays[f"blocks.{sub.depth - 1}.{n}.step"].shape == ()
    assert set(manifest["arrays"]) == set(arrays)
    bm = json.loads((exported / "bitmap.json").read_text())["layers"]
    assert bm["blocks.1.qkv"]["bits"] == [8 if b else 4 for b in arrays["blocks.1.qkv.is8"]]


def test_integer_engine_matches_fake_quant(exported, images):
    from quasar_vit.export import IntegerViT, load_subnet_model

    x, y = images
    model = load_subnet_model(exported)  # the QuantViT itself (fake-quant, LSQ code path)
    with torch.no_grad():
        ref = model(x).numpy()
    engine = IntegerViT.from_dir(exported)
    logits, labels = engine.predict(x.numpy())
    agree = 100.0 * np.mean(labels == ref.argmax(1))
    err = np.abs(logits - ref)
    print(f"integer vs fake-quant: agreement {agree:.2f} %, max abs {err.max():.3g}, mean {err.mean():.3g}")
    assert agree >= 99.5
    # equal up to float rounding, except where a value sat on a .5 boundary of a 6-bit code and the
    # flipped code propagated (discontinuous quantizer): allow that for a few images only
    close = err.max(1) < 1e-4
    print(f"images with max |error| < 1e-4: {100 * close.mean():.2f} %")
    assert close.mean() >= 0.98
    # nibble passes == direct int64 GEMMs (asserted inside the engine on every layer)
    exact = IntegerViT.from_dir(exported, exact=True, check_nibbles=True).forward(x[:3].numpy())
    assert np.array_equal(exact, logits[:3])


def test_deploy_model_is_bitwise_the_quantvit(exported, images):
    from quasar_vit.export import load_subnet_model
    from quasar_vit.export.torch_export import load_program

    x, _ = images
    x = x[:64]
    with torch.no_grad():
        a = load_subnet_model(exported)(x)
        b = load_program(exported / "model.pt2")(x)
    assert torch.equal(a, b)
    state = torch.load(exported / "model_state.pt", weights_only=True)
    assert state["subnet"] == SUBNET


def test_onnx_matches_pytorch(exported, images):
    import onnx

    from quasar_vit.export.onnx_export import onnx_session, run_onnx
    from quasar_vit.export.torch_export import load_program

    x, _ = images
    model = onnx.load(str(exported / "model.onnx"))
    kinds = {t.data_type for t in model.graph.initializer}
    assert onnx.TensorProto.INT4 in kinds and onnx.TensorProto.INT8 in kinds  # 4-bit and 8-bit row groups
    ops = {n.op_type for n in model.graph.node}
    # an integer export: integer GEMMs, the nonlinear ops as integer arithmetic, no float LayerNorm/Erf/Softmax
    assert {"QuantizeLinear", "Clip", "MatMulInteger", "Floor"} <= ops
    assert not ops & {"LayerNormalization", "Erf", "Softmax"}
    with torch.no_grad():
        ref = load_program(exported / "model.pt2")(x).numpy()
    out = run_onnx(onnx_session(exported / "model.onnx"), x.numpy())
    assert np.array_equal(out, ref)  # onnxruntime computes model.pt2's integers, logits bit for bit


def test_accelerator_json(exported):
    acc = json.loads((exported / "accelerator.json").read_text())
    assert acc["platform"] == acc["board"]["name"] == "zcu102" and acc["fits"] is True
    d = acc["design"]
    assert d["accelerator"] == "rtl-core" and d["units"] == d["R"] * d["T"] * d["KP"]  # an integer model's core
    from quasar_vit.export.ir import load_ir
    from quasar_vit.rtl.verify import core_for

    sized = core_for(load_ir(exported), r=d["R"], t=d["T"], kp=d["KP"], wb=d["WB"])
    assert {k: d[k] for k in dataclasses.asdict(sized)} == dataclasses.asdict(sized)  # sized for its integers
    assert acc["total"]["fps"] > 0 and "lut" in acc["resources"]
    assert {l["name"] for l in acc["layers"]} >= {"patch_embed", f"blocks.{SUBNET['depth'] - 1}.fc2", "head"}


def test_verify_cli(exported, capsys):
    from quasar_vit.cli.main import main

    assert main(["verify", str(exported), "--limit", "200"]) == 0
    out = capsys.readouterr().out
    assert "verify PASSED" in out
    res = json.loads((exported / "verify.json").read_text())
    print({k: res[k] for k in ("agreement_percent", "max_abs_logit_error", "flipped_code_fraction")})
    assert res["images"] == 200 and res["agreement_percent"] >= 99.5 and res["nibble_passes_exact"]
    assert res["flipped_code_fraction"] < 1e-3
    assert res["images_within_1e-4_percent"] >= 98.0
    assert res["program_vs_eager_max_abs"] == 0.0
    # export.json records the source checkpoint: the engine is compared with it as well
    ck = res["checkpoint"]
    assert ck["checked"] and ck["source"] == "export.json" and ck["passed"]
    assert "integer engine vs checkpoint fake-quant model" in out and "vs deploy model" in out


def _copy_export(exported, dest):
    import shutil

    shutil.copytree(exported, dest)
    return dest


def _set_recorded_checkpoint(export_dir, path) -> None:
    info = json.loads((export_dir / "export.json").read_text())
    info["checkpoint"] = str(path)
    (export_dir / "export.json").write_text(json.dumps(info))


def test_verify_with_the_checkpoint(trained, exported, capsys):
    """The engine against the source checkpoint's own fake-quant model, supernet(x, subnet)."""
    from quasar_vit.cli.main import main

    _, ckpt, _ = trained
    assert main(["verify", str(exported), "--limit", "100", "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("verify PASSED: integer engine vs checkpoint fake-quant model (") and str(ckpt) in verdict
    assert "; vs deploy model (model.pt2" in verdict and "100 test images" in verdict
    res = json.loads((exported / "verify.json").read_text())
    ck = res["checkpoint"]
    print({k: ck[k] for k in ("agreement_percent", "max_abs_logit_error", "flipped_code_fraction")})
    assert ck["checked"] and ck["source"] == "--checkpoint" and ck["path"] == str(ckpt) and ck["passed"]
    assert ck["step"] == json.loads((exported / "export.json").read_text())["checkpoint_step"]
    assert ck["agreement_percent"] >= 99.5 and ck["flipped_code_fraction"] < 1e-3
    assert ck["activation_codes_compared"] == res["activation_codes_compared"] > 0
    assert ck["images_within_1e-4_percent"] >= 98.0
    # the supernet run on the subnet is the model weights.npz was made from: same logits as model.pt2
    assert ck["deploy_vs_checkpoint_max_abs_logit"] < 1e-5
    assert res["passed"]


def _corrupt_consistently(export_dir, layer: str) -> None:
    """An export bug: ``layer``'s integer weights sign-flipped in weights.npz and model.pt2 alike.

    The nibbles / 4-bit rows are rebuilt from the corrupted codes, so the integer engine and the
    deploy model still agree with each other; only the checkpoint can tell.
    """
    from quasar_vit.export.deploy import deploy_model
    from quasar_vit.export.torch_export import save_program
    from quasar_vit.export.intweights import load_weights, nibble_split, save_weights
    from quasar_vit.export.ir import build_ir

    arrays, manifest = load_weights(export_dir)
    w = np.clip(-arrays[f"{layer}.w_int"].astype(np.int16), -128, 127).astype(np.int8)
    assert not np.array_equal(w, arrays[f"{layer}.w_int"])
    arrays[f"{layer}.w_int"] = w
    arrays[f"{layer}.w4"] = w[arrays[f"{layer}.rows4"]]
    arrays[f"{layer}.hi"], arrays[f"{layer}.lo"] = nibble_split(w[arrays[f"{layer}.rows8"]])
    save_weights(export_dir, arrays, manifest)
    sub = manifest["subnet"]
    save_program(
        deploy_model(build_ir(arrays, manifest)),
        torch.zeros(2, sub["geometry"]["in_chans"], sub["geometry"]["img_size"], sub["geometry"]["img_size"]),
        export_dir / "model.pt2",
        {"subnet": sub, "quant": manifest["quant"]},
    )


def test_verify_catches_a_consistently_corrupted_export(exported, tmp_path, capsys):
    from quasar_vit.cli.main import main
    from quasar_vit.export.verify import verify_export

    bad = _copy_export(exported, tmp_path / "bad")
    _corrupt_consistently(bad, "blocks.0.qkv")
    # the deploy-only comparison (what verify checked before) cannot see it
    old = verify_export(bad, limit=100, use_checkpoint=False, write=False)
    assert old["passed"] and old["agreement_percent"] >= 99.5 and not old["checkpoint"]["checked"]
    # the checkpoint recorded in export.json can
    assert main(["verify", str(bad), "--limit", "100"]) == 1
    out = capsys.readouterr().out
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("verify FAILED: integer engine vs checkpoint fake-quant model")
    res = json.loads((bad / "verify.json").read_text())
    ck = res["checkpoint"]
    print({k: ck[k] for k in ("agreement_percent", "max_abs_logit_error", "flipped_code_fraction")})
    assert ck["checked"] and not ck["passed"] and not res["passed"]
    assert ck["agreement_percent"] < 99.5 and ck["flipped_code_fraction"] > 1e-2
    assert res["agreement_percent"] >= 99.5  # engine and model.pt2 still agree with each other


def test_verify_without_the_checkpoint(trained, exported, tmp_path, capsys):
    from quasar_vit.cli.main import main
    from quasar_vit.training.checkpoint import read_checkpoint, save_checkpoint

    _, ckpt, _ = trained
    moved = _copy_export(exported, tmp_path / "moved")
    _set_recorded_checkpoint(moved, tmp_path / "gone" / "supernet.pt")
    assert main(["verify", str(moved), "--limit", "50"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2] == (
        f"checkpoint not found: {tmp_path / 'gone' / 'supernet.pt'} (recorded in export.json): "
        "compared with the deploy model only"
    )
    assert lines[-1].startswith("verify PASSED: integer engine vs deploy model (model.pt2")
    assert "no checkpoint comparison" in lines[-1]
    res = json.loads((moved / "verify.json").read_text())
    assert res["checkpoint"] == {"checked": False, "note": lines[-2]} and res["passed"]

    # a checkpoint named explicitly must be usable: one error line, exit code 2
    argv = ["verify", str(moved), "--limit", "50", "--checkpoint"]
    assert "checkpoint not found" in _cli_error(capsys, argv + [str(tmp_path / "nope.pt")])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert "not a readable quasar-vit checkpoint" in _cli_error(capsys, argv + [str(junk)])
    c = read_checkpoint(ckpt)
    c["step"] = int(c["step"]) + 100
    later = tmp_path / "later.pt"
    save_checkpoint(later, {k: v for k, v in c.items() if k not in ("format", "version")})
    assert "training step" in _cli_error(capsys, argv + [str(later)])


def _cli_error(capsys, argv) -> str:
    from quasar_vit.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error:" in err, err
    return err


def test_bad_inputs_give_one_error_and_leave_nothing(trained, tmp_path, capsys):
    from quasar_vit.training.checkpoint import read_checkpoint, save_checkpoint

    root, ckpt, sub = trained
    out = tmp_path / "out"
    base = ["export", "--checkpoint", str(ckpt), "--out", str(out), "--no-eval"]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SUBNET, "embed_dim": 80}))
    assert "embed_dim 80" in _cli_error(capsys, base + ["--subnet", str(bad)])

    assert "unknown platform" in _cli_error(capsys, base + ["--subnet", str(sub), "--platform", "nosuchboard"])

    board = tmp_path / "tiny.yaml"
    board.write_text(
        "name: tiny\ndescription: too small\npart: none\nlut: 4000\nff: 8000\ndsp: 10\nbram: 4\n"
        "uram: 0\nclock_mhz: 100\nddr_gbps: 4.0\nddr_efficiency: 0.75\n"
        "util_cap: {lut: 0.7, ff: 0.7, dsp: 0.8, bram: 0.8, uram: 0.8}\n"
        "host: {kind: arm-cortex-a53, cores: 2, clock_mhz: 1000}\n"
    )
    assert "tiny" in _cli_error(capsys, base + ["--subnet", str(sub), "--platform", str(board)])

    # a checkpoint whose weights belong to another config
    c = read_checkpoint(ckpt)
    c["config"]["model"]["embed_dims"] = sorted(set(c["config"]["model"]["embed_dims"] + [SUBNET["embed_dim"] * 2]))
    other = tmp_path / "other.pt"
    save_checkpoint(other, {k: v for k, v in c.items() if k not in ("format", "version")})
    msg = _cli_error(capsys, ["export", "--checkpoint", str(other), "--subnet", str(sub), "--out", str(out)])
    assert "do not match" in msg

    # a subnet from another search space (other geometry)
    geo = tmp_path / "geo.json"
    geometry = SUBNET["geometry"]
    geo.write_text(json.dumps({**SUBNET, "geometry": {**geometry, "img_size": geometry["patch_size"] * 5}}))
    assert "img_size" in _cli_error(capsys, base + ["--subnet", str(geo)])

    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    # a non-empty directory that is not an export is never replaced
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    assert "not a quasar-vit export" in _cli_error(
        capsys, ["export", "--checkpoint", str(ckpt), "--subnet", str(sub), "--out", str(keep), "--no-eval"]
    )
    assert (keep / "precious.txt").read_text() == "x"

    assert "not a quasar-vit export" in _cli_error(capsys, ["verify", str(keep)])


def test_force_never_replaces_a_training_run(trained, tmp_path, capsys):
    """--force replaces foreign folders, but never the run that holds the checkpoint."""
    import shutil

    root, ckpt, sub = trained
    run = tmp_path / "runcopy"
    shutil.copytree(ckpt.parent, run)
    argv = ["export", "--checkpoint", str(run), "--subnet", str(sub), "--no-eval", "--force", "--out"]
    assert "contains the checkpoint" in _cli_error(capsys, argv + [str(run)])
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "last.pt").write_bytes(b"x")
    assert "holds training or search results" in _cli_error(capsys, argv + [str(other)])
    assert (run / "supernet.pt").is_file() and (other / "last.pt").is_file()


def test_explicit_missing_data_root_is_an_error(trained, tmp_path, capsys):
    root, ckpt, sub = trained
    err = _cli_error(
        capsys,
        [
            "export",
            "--checkpoint",
            str(ckpt),
            "--subnet",
            str(sub),
            "--out",
            str(tmp_path / "o"),
            "--data-root",
            str(tmp_path / "nowhere"),
        ],
    )
    assert "nowhere" in err and not (tmp_path / "o").exists()


def _searched(trained_run, tmp_path, **design_changes) -> tuple:
    """A search result file (subnet + board + design, as ``search`` writes it) for SUBNET on zcu102."""
    from quasar_vit.export.resolve import resolve_subnet
    from quasar_vit.hardware import explore
    from quasar_vit.space import SubnetConfig

    cfg, _ = trained_run
    design = {**explore(SubnetConfig.from_dict(SUBNET), "zcu102").design.to_dict(), **design_changes}
    path = tmp_path / "subnet_target.json"
    path.write_text(json.dumps({"platform": "zcu102", "subnet": SUBNET, "design": design}))
    return path, resolve_subnet(path, cfg.model.space())


def test_export_uses_the_searched_design(trained, trained_run, tmp_path):
    """The design stored with a searched subnet is the export's design; --re-explore redoes it."""
    from quasar_vit.export.exporter import _accelerator
    from quasar_vit.hardware import explore, load_platform

    path, ref = _searched(trained_run, tmp_path)
    assert ref.platform == "zcu102" and ref.searched
    stored = _accelerator(ref, None, False, "integer")  # no --platform: the board it was searched for
    assert stored.platform.name == "zcu102" and stored.notes == (f"the design chosen by the search ({path})",)
    fresh = _accelerator(ref, load_platform("zcu102"), True, "integer")
    assert fresh.design == stored.design == explore(ref.subnet, "zcu102").design
    assert "fitting RTL cores" in fresh.notes[0]
    assert _accelerator(ref, load_platform("kv260"), True, "integer").platform.name == "kv260"
    # the RTL core (integer ops) does not serve a float model
    from quasar_vit.errors import ExportError

    with pytest.raises(ExportError, match="re-explore"):
        _accelerator(ref, None, False, "float")


def test_searched_design_for_another_board_is_one_error(trained, trained_run, tmp_path, capsys):
    from quasar_vit.errors import HardwareError
    from quasar_vit.export.exporter import _accelerator
    from quasar_vit.hardware import load_platform

    _, ckpt, _ = trained
    path, _ = _searched(trained_run, tmp_path)
    out = tmp_path / "out"
    argv = ["export", "--checkpoint", str(ckpt), "--subnet", str(path), "--out", str(out), "--no-eval"]
    err = _cli_error(capsys, argv + ["--platform", "kv260"])
    assert "searched for platform 'zcu102'" in err and "--re-explore" in err and not out.exists()

    _, too_big = _searched(trained_run, tmp_path, T=64)  # 64 tokens a tile: over the DSP cap
    with pytest.raises(HardwareError, match="no longer fits"):
        _accelerator(too_big, load_platform("zcu102"), False, "integer")
