"""The exports other tools read: QONNX (qonnx/FINN/hls4ml), torch.export (model.pt2), the onnxruntime integer graph."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
HAS_QONNX = importlib.util.find_spec("qonnx") is not None
needs_qonnx = pytest.mark.skipif(
    not HAS_QONNX, reason="the qonnx package is not installed (pip install quasar-vit[qonnx])"
)


def _export_mixed(cfg, run: Path, out: Path, **kw) -> Path:
    """An export of a subnet of ``run``'s supernet whose blocks mix 4- and 8-bit rows."""
    from quasar_vit.export import export_subnet

    space = cfg.model.space()
    d = space.depths[-1]
    shares = [space.w8_shares[(i + 1) % len(space.w8_shares)] for i in range(d)]  # 0.25, 0.5: both row groups
    sub = space.make(space.embed_dims[-1], d, [space.num_heads[-1]] * d, [space.mlp_ratios[-1]] * d, shares)
    return export_subnet(run / "supernet.pt", sub, "zcu102", out, **kw)


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """An integer export (``model.nonlinear: integer``, the default) of the session's trained supernet,
    evaluated on 64 test images (so ``export.json`` scores ``model.onnx``)."""
    cfg, run = trained_run
    assert cfg.model.nonlinear == "integer"
    return _export_mixed(cfg, run, tmp_path_factory.mktemp("interop") / "exp", eval_limit=64)


@pytest.fixture(scope="module")
def float_exported(float_trained_run, tmp_path_factory):
    """A float export (``model.nonlinear=float``) of the session's float supernet (conftest.float_trained_run).

    The float graphs (float LayerNorm/softmax/GELU between the integer GEMMs) are written for such
    exports only; the session's main supernet is integer.
    """
    cfg, run = float_trained_run
    root = tmp_path_factory.mktemp("interop-float")
    return _export_mixed(cfg, run, root / "exp", evaluate=False)


@pytest.fixture(scope="module")
def images(exported):
    from quasar_vit.config import config_from_dict
    from quasar_vit.export.exporter import load_test_images

    info = json.loads((exported / "export.json").read_text())
    x, _ = load_test_images(config_from_dict(info["config"]), None, 200)
    return x.numpy()


@pytest.fixture(scope="module")
def reference(exported, images):
    """Logits of the NumPy integer reference engine on the integer export (``integer_forward``)."""
    from quasar_vit.export import IntegerViT

    return IntegerViT.from_dir(exported).forward(images)


@pytest.fixture(scope="module")
def float_reference(float_exported, images):
    """Logits of the NumPy integer reference engine on the float export (the accelerator's arithmetic)."""
    from quasar_vit.export import IntegerViT

    return IntegerViT.from_dir(float_exported).forward(images)


@pytest.mark.parametrize("which", ["exported", "float_exported"])
def test_export_lists_the_interop_files(which, request):
    exported = request.getfixturevalue(which)
    info = json.loads((exported / "export.json").read_text())
    for name in ("model.onnx", "model.pt2", "model.int8.onnx", "model.qonnx.onnx"):
        assert (exported / name).is_file() and name in info["files"], name


# ---- QONNX (float exports) ----------------------------------------------------------------------
def test_qonnx_graph_has_explicit_bit_widths(float_exported):
    """Quant nodes carry 4/8-bit weights and 6-bit activations; no INT4 tensor (qonnx cannot read one)."""
    exported = float_exported
    import onnx
    from onnx import numpy_helper

    from quasar_vit.export.ir import load_ir
    from quasar_vit.export.qonnx_export import QONNX_DOMAIN

    model = onnx.load(str(exported / "model.qonnx.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quants = [n for n in model.graph.node if n.op_type == "Quant"]
    assert quants and all(n.domain == QONNX_DOMAIN for n in quants)
    bits = {(int(inits[n.input[3]]), n.output[0].split(".")[-2]) for n in quants}
    assert {(4, "w4"), (8, "w8"), (6, "in")} <= bits
    assert {t.data_type for t in model.graph.initializer} <= {
        onnx.TensorProto.FLOAT,
        onnx.TensorProto.INT64,
        onnx.TensorProto.DOUBLE,
    }
    ops = {n.op_type for n in model.graph.node}
    assert {"LayerNormalization", "Softmax", "Erf"} <= ops  # the float ops stay float
    ir = load_ir(exported)
    mixed = [lin for lin in ir.linears() if len(lin.rows4) and len(lin.rows8)]
    assert mixed, "the fixture subnet should have layers with both row groups"
    for lin in mixed:  # one Quant per row group, joined by Concat + a fixed permutation
        w = [n for n in quants if n.output[0].startswith(f"{lin.name}.w")]
        assert sorted(int(inits[n.input[3]]) for n in w) == [4, 8]
        gather = next(n for n in model.graph.node if n.output[0].startswith(f"{lin.name}.w_") and n.op_type == "Gather")
        order = inits[gather.input[1]]
        assert np.array_equal(np.concatenate([lin.rows8, lin.rows4])[order], np.arange(lin.out_features))


@needs_qonnx
def test_qonnx_executes_like_the_integer_reference(float_exported, images, float_reference):
    from quasar_vit.export.qonnx_export import qonnx_run

    exported, reference = float_exported, float_reference
    n = 4
    logits, kinds = qonnx_run(exported / "model.qonnx.onnx", images[:n])
    err = np.abs(logits - reference[:n])
    print(f"qonnx execute_onnx vs integer reference: max |diff| {err.max():.3g}; datatypes {sorted(kinds.items())}")
    assert np.array_equal(logits.argmax(1), reference[:n].argmax(1))
    assert err.max() < 1e-4
    # qonnx's InferDataTypes sees the integer tensors as such
    assert {("Quant", "INT4"), ("Quant", "INT8"), ("Quant", "INT6"), ("Quant", "UINT6"), ("MatMul", "INT32")} <= set(
        kinds
    )
    assert ("MatMul", "FLOAT32") not in kinds


@needs_qonnx
def test_qonnx_wide_accumulators_run_in_float64(float_exported, images, float_reference, monkeypatch):
    """A layer whose partial sums could pass 2**24 accumulates in float64: same logits."""
    from quasar_vit.export import qonnx_export
    from quasar_vit.export.ir import load_ir

    exported, reference = float_exported, float_reference
    monkeypatch.setattr(qonnx_export, "EXACT_F32", 0)  # every linear takes the float64 path
    model = qonnx_export.build_qonnx(load_ir(exported))
    assert sum(n.op_type == "Cast" for n in model.graph.node) > 3 * sum(1 for _ in load_ir(exported).linears())
    logits, kinds = qonnx_export.qonnx_run(model, images[:1])
    assert np.abs(logits - reference[:1]).max() < 1e-4


@needs_qonnx
def test_qonnx_datatypes_per_role(float_exported):
    from quasar_vit.export.qonnx_export import qonnx_datatypes

    dts = qonnx_datatypes(str(float_exported / "model.qonnx.onnx"))
    want = {
        "Quant L.in.quant": ["INT6"],
        "Quant L.w4.quant": ["INT4"],
        "Quant L.w8.quant": ["INT8"],
        "Gather L.w": ["INT8"],
        "MatMul L.acc": ["INT32"],
        "MatMul blocks.i.qk": ["INT32"],
        "MatMul blocks.i.av": ["INT32"],
        "Quant blocks.i.aq_attn.quant": ["UINT6"],
        "Mul L.rescale": ["FLOAT32"],
        "LayerNormalization blocks.i.norm1": ["FLOAT32"],
    }
    assert {k: dts.get(k) for k in want} == want


def test_qonnx_rejects_a_range_quant_cannot_express():
    from quasar_vit.errors import ExportError
    from quasar_vit.export.qonnx_export import _bits

    assert _bits(-32, 31) == (6, True) and _bits(0, 63) == (6, False) and _bits(-8, 7) == (4, True)
    with pytest.raises(ExportError, match="not a full"):
        _bits(-31, 31)  # a narrow range


# ---- torch.export --------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["exported", "float_exported"])
def test_model_pt2_is_bit_identical_in_a_clean_process(which, request, images, tmp_path):
    """torch.export.load in a fresh interpreter (no quasar_vit import) gives the deploy model's logits bit for bit."""
    from quasar_vit.export.deploy import deploy_model
    from quasar_vit.export.ir import load_ir

    exported = request.getfixturevalue(which)
    x = torch.from_numpy(images[:33])
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, json, torch\n"
        "files = {'subnet.json': ''}\n"
        f"m = torch.export.load({str(exported / 'model.pt2')!r}, extra_files=files).module()\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "with torch.no_grad():\n"
        f"    torch.save((m(x), m(x[:1])), {str(tmp_path / 'y.pt')!r})\n"
        "assert not any(k.startswith('quasar_vit') for k in sys.modules)\n"
        "print(json.loads(files['subnet.json'])['embed_dim'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    deploy = deploy_model(load_ir(exported))  # DeployIntViT for the integer export, DeployViT for the float one
    with torch.no_grad():
        want, want1 = deploy(x), deploy(x[:1])  # (float sums depend on the batch size: compare like with like)
    y, y1 = torch.load(tmp_path / "y.pt")
    assert torch.equal(y, want) and torch.equal(y1, want1)  # dynamic batch, bit-identical
    assert res.stdout.strip() == str(json.loads((exported / "subnet.json").read_text())["embed_dim"])


# ---- onnxruntime integer graph (float exports) ---------------------------------------------------
def test_int8_onnx_fuses_every_matmul(float_exported):
    from quasar_vit.export.ir import load_ir
    from quasar_vit.export.onnx_export import INTEGER_MATMULS, matmul_count, optimized_op_counts

    exported = float_exported
    ops = optimized_op_counts(exported / "model.int8.onnx")
    fused = sum(ops[k] for k in INTEGER_MATMULS)
    print(dict(ops))
    assert fused == matmul_count(load_ir(exported))
    assert not {"MatMul", "FusedMatMul", "Gemm", "DequantizeLinear"} & set(ops)  # no float matmul left
    # the QDQ graph, by contrast, keeps most matmuls in float
    qdq = optimized_op_counts(exported / "model.onnx")
    assert sum(qdq[k] for k in INTEGER_MATMULS) < fused


def test_int8_onnx_agrees_with_the_integer_reference(float_exported, images, float_reference):
    from quasar_vit.export.onnx_export import onnx_session, run_onnx

    exported, reference = float_exported, float_reference
    out = run_onnx(onnx_session(exported / "model.int8.onnx"), images)
    err = np.abs(out - reference)
    close = err.max(1) < 1e-4
    print(
        f"int8 onnxruntime vs integer reference: agreement {100 * np.mean(out.argmax(1) == reference.argmax(1)):.2f} %, "
        f"max |diff| {err.max():.3g}, images within 1e-4: {100 * close.mean():.2f} %"
    )
    assert np.mean(out.argmax(1) == reference.argmax(1)) >= 0.995
    # integer accumulators like the engine; only float rounding in LayerNorm/softmax/GELU (float32 here,
    # float64 there) and the P v requantisation (float here, fixed point there) can flip a 6-bit code
    assert close.mean() >= 0.98 and np.median(err) < 1e-5


def test_unknown_onnx_variant_is_an_error(exported):
    from quasar_vit.errors import ExportError
    from quasar_vit.export.ir import load_ir
    from quasar_vit.export.onnx_export import build_onnx

    with pytest.raises(ExportError, match="unknown ONNX variant 'int4'"):
        build_onnx(load_ir(exported), variant="int4")


def test_onnx_runtime_benchmark_runs(float_exported, tmp_path):
    exported = float_exported
    out = tmp_path / "ort.json"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "onnx_runtime.py"),
            "--export",
            str(exported),
            "--batches",
            "1",
            "4",
            "--seconds",
            "0.05",
            "--images",
            "16",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    (row,) = data["exports"]
    assert row["graphs"]["int8"]["integer_matmuls"] == row["matmuls"]
    assert row["graphs"]["fp32"]["integer_matmuls"] == 0
    assert row["images"] == 16 and 0 <= row["int8_flipped_codes"]["fraction"] < 1e-2
    for g in ("fp32", "qdq", "int8"):
        assert set(row["graphs"][g]["ms_per_image"]) == {"1", "4"}
    assert "int8" in res.stdout and "fp32" in res.stdout


# ---- integer exports (model.nonlinear: integer): the graphs compute integer_forward's integers ------
INTEGER_ONLY_OPS = {"MatMulInteger", "BitShift", "GreaterOrEqual", "ReduceMax", "Floor"}
FLOAT_NONLINEAR_OPS = {"LayerNormalization", "Softmax", "Erf", "MatMul", "DequantizeLinear"}


def test_integer_onnx_graphs_are_bit_exact(exported, images, reference):
    """model.onnx and model.int8.onnx (onnxruntime) give the integer engine's logits bit for bit."""
    import onnx

    from quasar_vit.export.onnx_export import onnx_session, run_onnx

    assert len(images) >= 64
    for name in ("model.onnx", "model.int8.onnx"):
        out = run_onnx(onnx_session(exported / name), images)
        print(f"{name} vs IntegerViT: max |diff| {np.abs(out - reference).max():.3g} on {len(images)} images")
        assert out.dtype == reference.dtype and np.array_equal(out, reference), name
        ops = {n.op_type for n in onnx.load(str(exported / name)).graph.node}
        assert INTEGER_ONLY_OPS <= ops and not FLOAT_NONLINEAR_OPS & ops, name


def test_integer_onnx_graph_layout(exported):
    """Every matmul is a MatMulInteger (also after onnxruntime's optimisations); model.onnx keeps INT4 + INT8
    row groups, model.int8.onnx one int8 tensor per linear."""
    import onnx

    from quasar_vit.export.ir import load_ir
    from quasar_vit.export.onnx_export import INTEGER_MATMULS, matmul_count, optimized_op_counts

    ir = load_ir(exported)
    n = matmul_count(ir)
    for name in ("model.onnx", "model.int8.onnx"):
        model = onnx.load(str(exported / name))
        ops = [node.op_type for node in model.graph.node]
        assert ops.count("MatMulInteger") == n, name
        opt = optimized_op_counts(exported / name)
        assert sum(opt[k] for k in INTEGER_MATMULS) == n and not {"MatMul", "FusedMatMul", "Gemm"} & set(opt), name
    kinds = {t.data_type for t in onnx.load(str(exported / "model.onnx")).graph.initializer}
    assert {onnx.TensorProto.INT4, onnx.TensorProto.INT8} <= kinds
    int8 = onnx.load(str(exported / "model.int8.onnx"))
    weights = [t for t in int8.graph.initializer if t.name.rsplit("_", 1)[0].endswith(".w")]
    assert len(weights) == sum(1 for _ in ir.linears())
    assert all(t.data_type == onnx.TensorProto.INT8 for t in weights)
    assert onnx.TensorProto.INT4 not in {t.data_type for t in int8.graph.initializer}


def test_integer_export_scores_model_onnx(exported):
    """export.json's evaluation runs model.onnx again; it equals the deploy model (model.pt2's module) exactly."""
    ev = json.loads((exported / "export.json").read_text())["evaluation"]
    assert ev["onnx_images"] == ev["images"] == 64
    assert ev["agreement_onnx"] == 100.0 and ev["max_abs_logit_error_onnx"] == 0.0


@needs_qonnx
def test_integer_qonnx_is_bit_exact(exported, images, reference):
    """qonnx's execute_onnx on model.qonnx.onnx gives the integer engine's logits bit for bit; its datatype
    inference sees the 6-bit codes, the 4/8-bit weights and the accumulators as integers."""
    from quasar_vit.export.qonnx_export import qonnx_run

    n = 128  # in batches of 64 (the file's batch dimension 1 set to 64)
    logits, kinds = qonnx_run(exported / "model.qonnx.onnx", images[:n], batch=64)
    assert np.array_equal(logits, reference[:n])
    assert {("Quant", "INT4"), ("Quant", "INT8"), ("Quant", "INT6"), ("Quant", "UINT6"), ("MatMul", "INT32")} <= set(
        kinds
    )
    assert ("MatMul", "FLOAT32") not in kinds and not {k for k, _ in kinds} & {"LayerNormalization", "Softmax", "Erf"}
    one, _ = qonnx_run(exported / "model.qonnx.onnx", images[:2])  # the file as it is (batch 1)
    assert np.array_equal(one, reference[:2])


@needs_qonnx
def test_integer_qonnx_datatypes_per_role(exported):
    from quasar_vit.export.qonnx_export import qonnx_datatypes

    dts = qonnx_datatypes(str(exported / "model.qonnx.onnx"))
    want = {
        "Quant L.in.quant": ["INT6"],  # every linear's input codes (patches, LayerNorm outputs, P v, GELU)
        "Quant L.w4.quant": ["INT4"],
        "Quant L.w8.quant": ["INT8"],
        "Gather L.w": ["INT8"],
        "MatMul L.acc": ["INT32"],
        "Quant blocks.i.aq_q.quant": ["INT6"],
        "Quant blocks.i.aq_k.quant": ["INT6"],
        "Quant blocks.i.aq_v.quant": ["INT6"],
        "Quant blocks.i.aq_attn.quant": ["UINT6"],
        "MatMul blocks.i.qk": ["INT32"],
        "MatMul blocks.i.av": ["INT32"],
        "Mul L.rescale": ["FLOAT32"],  # the head's logits
    }
    assert {k: dts.get(k) for k in want} == want


@needs_qonnx
def test_integer_qonnx_wide_accumulators_run_in_float64(exported, images, reference, monkeypatch):
    """GEMMs whose partial sums could pass 2**24 run as double MatMuls: the same logits, bit for bit."""
    from quasar_vit.export import qonnx_export
    from quasar_vit.export.ir import load_ir

    monkeypatch.setattr(qonnx_export, "EXACT_F32", 0)  # every GEMM takes the double path
    ir = load_ir(exported)
    model = qonnx_export.build_qonnx(ir)
    wide = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert len(wide) == sum(1 for _ in ir.linears()) + 2 * len(ir.blocks)
    assert all(n.output[0].rsplit("_", 1)[0].endswith("64") for n in wide)
    logits, _ = qonnx_export.qonnx_run(model, images[:8], batch=8)
    assert np.array_equal(logits, reference[:8])


def test_integer_graphs_need_an_integer_export(float_exported):
    from quasar_vit.errors import ExportError
    from quasar_vit.export.ir import load_ir
    from quasar_vit.export.onnx_integer import IntegerOrtGraph, build_integer_graph

    with pytest.raises(ExportError, match="nonlinear: integer"):
        build_integer_graph(IntegerOrtGraph("int8"), load_ir(float_exported))
