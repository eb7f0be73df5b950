"""Hardware model: the HLS engine's model (float-ops models) and the dispatch to the RTL core's
(integer models, the default; its own tests are in tests/rtl): ranking of the paper's points,
resources under caps, platforms, errors."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from quasar_vit.errors import HardwareError
from quasar_vit.hardware import (
    AcceleratorDesign,
    HardwareReport,
    Platform,
    evaluate,
    explore,
    list_platforms,
    load_platform,
)
from quasar_vit.hardware.calibration import OPERATING_POINTS
from quasar_vit.hardware.platforms import RESOURCES
from quasar_vit.space import preset_subnet


@pytest.fixture(scope="module")
def zcu102() -> Platform:
    return load_platform("zcu102")


@pytest.mark.parametrize("point", OPERATING_POINTS, ids=lambda p: p.name)
def test_paper_points_have_the_papers_compute(point):
    assert point.subnet.macs() / 1e9 == pytest.approx(point.paper_gmacs, rel=0.05)


@pytest.mark.parametrize("nonlinear", ["integer", "float"])
def test_paper_points_rank_as_the_paper_measured_them(zcu102, nonlinear):
    """Neither model is fitted to the paper's FPS (benchmarks/mission.py reports the ratios as they
    fall); each must still order the operating points as the board did."""
    reps = [explore(p.subnet, zcu102, nonlinear=nonlinear) for p in OPERATING_POINTS]
    by_model = sorted(range(len(reps)), key=lambda i: reps[i].fps)
    by_paper = sorted(range(len(reps)), key=lambda i: OPERATING_POINTS[i].paper_fps)
    assert by_model == by_paper, [(p.name, r.fps, p.paper_fps) for p, r in zip(OPERATING_POINTS, reps)]


@pytest.mark.parametrize("name", ["zcu102", "zcu104", "kv260", "vcu118", "u250"])
def test_every_preset_explores_an_hls_engine_within_its_caps(name):
    plat = load_platform(name)
    rep = explore(preset_subnet("deit-small", share_8bit=0.3), plat, nonlinear="float")
    assert rep.fits and rep.resources.violations() == []
    for r in RESOURCES:
        assert rep.resources.count(r) <= plat.total(r) * plat.cap(r)
    assert rep.fps > 0 and rep.design.platform == name


def _per_linear(sub):
    """``sub`` with each block's four linears at their own shares (qkv, proj, fc1, fc2 rotate)."""
    order = (0.0, 0.25, 0.5, 1.0)
    shares = [order[(i + j) % 4] for i in range(sub.depth) for j in range(4)]
    return dataclasses.replace(sub, w8_shares=tuple(shares))


@pytest.mark.parametrize("per_linear", [False, True])
def test_fast_path_equals_sum_of_layers(zcu102, per_linear):
    sub = OPERATING_POINTS[0].subnet
    if per_linear:
        sub = _per_linear(sub)
        assert sub.block_shares(0) == (0.0, 0.25, 0.5, 1.0) and sub.block_shares(1) == (0.25, 0.5, 1.0, 0.0)
    rep = explore(sub, zcu102, nonlinear="float")
    assert math.isclose(sum(l.cycles for l in rep.layers), rep.cycles, rel_tol=1e-9)
    assert sum(l.macs for l in rep.layers) == sub.macs() == rep.macs
    names = [l.name for l in rep.layers]
    for required in (
        "patch_embed",
        "blocks.0.qkv",
        "blocks.0.qk",
        "blocks.0.av",
        "blocks.0.proj",
        "blocks.0.fc1",
        "blocks.0.fc2",
        "blocks.0.softmax",
        "blocks.0.gelu",
        "head",
    ):
        assert required in names


def test_integer_models_run_on_the_rtl_core_and_float_models_on_the_hls_engine(zcu102):
    """``model.nonlinear: integer`` gets the RTL core (LayerNorm, softmax and GELU in its own units,
    no host time), ``float`` the HLS engine with those ops on the host."""
    from quasar_vit.rtl.report import CoreReport

    sub = OPERATING_POINTS[0].subnet
    integer, floating = explore(sub, zcu102, nonlinear="integer"), explore(sub, zcu102, nonlinear="float")
    assert isinstance(integer, CoreReport) and isinstance(floating, HardwareReport)
    assert integer.design.nonlinear == "fabric" and floating.design.nonlinear == "host"
    assert {s.kind for s in integer.steps} == {"load", "linear", "LayerNorm", "Q K^T", "softmax", "P V"}
    assert integer.to_dict()["total"]["host_ms"] == 0 and floating.host_cycles > 0
    assert {l.unit for l in floating.layers if l.op in ("layernorm", "softmax", "gelu")} == {"host"}
    assert integer.fits and integer.fps > floating.fps


def test_an_hls_design_with_fabric_units_is_refused_in_one_line(zcu102):
    """Designs written before the RTL core priced integer ops as HLS units beside the array; they
    are refused, with the way out."""
    d = explore(OPERATING_POINTS[1].subnet, zcu102, nonlinear="float").design.to_dict()
    with pytest.raises(HardwareError, match="re-explore") as exc:
        AcceleratorDesign.from_dict({**d, "nonlinear": "fabric"})
    assert "\n" not in str(exc.value)


def test_an_hls_design_runs_its_nonlinear_ops_on_the_host(zcu102):
    from quasar_vit.hardware import AcceleratorDesign

    d = explore(OPERATING_POINTS[1].subnet, zcu102, nonlinear="float").design.to_dict()
    assert "nonlinear" not in d and AcceleratorDesign.from_dict(d).nonlinear == "host"
    assert AcceleratorDesign.from_dict({**d, "nonlinear": "host"}).nonlinear == "host"  # written before the RTL core


@pytest.mark.parametrize("nonlinear, small", [("integer", "zcu102"), ("float", "kv260")])
def test_bigger_board_is_not_slower(nonlinear, small):
    sub = preset_subnet("deit-small", share_8bit=0.3)
    assert explore(sub, "u250", nonlinear=nonlinear).fps > explore(sub, small, nonlinear=nonlinear).fps


def test_report_dict_is_json_and_design_roundtrips(zcu102):
    rep = explore(preset_subnet("deit-tiny", share_8bit=0.3), zcu102, nonlinear="float")
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["total"]["fps"] == pytest.approx(rep.fps, rel=1e-3)
    for key in (
        "pe_rows",
        "pe_cols",
        "packing",
        "lut_cols",
        "tile_tokens",
        "tile_k",
        "clock_mhz",
        "platform",
        "units",
        "buffers",
        "tiles",
    ):
        assert key in d["design"]
    again = AcceleratorDesign.from_dict(d["design"])
    assert again == rep.design
    assert AcceleratorDesign.from_dict(d) == rep.design  # a whole report is accepted too
    same = evaluate(rep.subnet, zcu102, again)
    assert same.cycles == pytest.approx(rep.cycles)
    assert d["resources"]["dsp"]["percent"] == pytest.approx(rep.resources.percent("dsp"), abs=0.01)
    assert len(d["layers"]) == len(rep.layers)
    assert "FPS" in rep.format_table()


@pytest.mark.parametrize("nonlinear", ["integer", "float"])
def test_infeasible_fps_target_names_best_fps(zcu102, nonlinear):
    sub = preset_subnet("deit-base", share_8bit=0.3)
    best = explore(sub, zcu102, nonlinear=nonlinear).fps
    with pytest.raises(HardwareError, match=r"not reachable.*\d+\.\d FPS"):
        explore(sub, zcu102, fps_target=best * 2, nonlinear=nonlinear)
    assert explore(sub, zcu102, fps_target=best * 0.9, nonlinear=nonlinear).fps == pytest.approx(best)


@pytest.mark.parametrize("nonlinear, msg", [("integer", "no RTL core fits tiny.*BRAM"), ("float", "no accelerator")])
def test_nothing_fits_is_reported(tmp_path, nonlinear, msg):
    f = tmp_path / "tiny.yaml"
    f.write_text(
        "name: tiny\nlut: 20000\nff: 40000\ndsp: 10\nbram: 10\nclock_mhz: 100\nddr_gbps: 4\nddr_efficiency: 0.5\n"
    )
    with pytest.raises(HardwareError, match=msg) as exc:
        explore(preset_subnet("deit-tiny"), str(f), nonlinear=nonlinear)
    assert "\n" not in str(exc.value)


def test_unknown_platform_lists_presets():
    with pytest.raises(HardwareError) as e:
        load_platform("zcu999")
    for name in list_platforms():
        assert name in str(e.value)
    assert set(list_platforms()) >= {"zcu102", "zcu104", "kv260", "vcu118", "u250"}


def test_user_board_from_yaml(tmp_path):
    f = tmp_path / "myboard.yaml"
    f.write_text(
        "name: myboard\nlut: 150000\nff: 300000\ndsp: 900\nbram: 320\nuram: 0\n"
        "clock_mhz: 200\nddr_gbps: 10\nddr_efficiency: 0.8\nutil_cap: 0.75\n"
        "params: {host_call_overhead_us: 20.0}\n"
    )
    plat = load_platform(str(f))
    assert plat.name == "myboard" and plat.cap("dsp") == 0.75 and plat.params.host_call_overhead_us == 20.0
    rep = explore(preset_subnet("deit-tiny"), plat)
    assert rep.fits and rep.design.clock_mhz == 200 and rep.resources.dsp <= 0.75 * 900


@pytest.mark.parametrize(
    "text, problem",
    [
        ("name: b\nlut: 1000\n", "missing required key"),
        (
            "name: b\nlut: x\nff: 1\ndsp: 1\nbram: 1\nclock_mhz: 1\nddr_gbps: 1\nddr_efficiency: 0.5\n",
            "'lut' must be a number",
        ),
        (
            "name: b\nlut: 1\nff: 1\ndsp: 1\nbram: 1\nclock_mhz: 1\nddr_gbps: 1\nddr_efficiency: 0.5\nbogus: 1\n",
            "unknown key",
        ),
        (
            "name: b\nlut: 1\nff: 1\ndsp: 1\nbram: 1\nclock_mhz: 1\nddr_gbps: 1\nddr_efficiency: 0.5\nparams: {nope: 1}\n",
            "unknown model parameter",
        ),
        ("[unclosed", "not valid YAML"),
    ],
)
def test_malformed_platform_file(tmp_path, text, problem):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(HardwareError, match=problem):
        load_platform(str(f))


def test_design_for_another_board_is_rejected(zcu102):
    rep = explore(preset_subnet("deit-tiny"), zcu102)
    with pytest.raises(HardwareError, match="made for platform"):
        evaluate(rep.subnet, "kv260", rep.design)


def test_evaluate_flags_oversized_design(zcu102):
    big = AcceleratorDesign("zcu102", 150, 512, 128, 4, 0, 197, 1536)
    rep = evaluate(preset_subnet("deit-tiny"), zcu102, big)
    assert not rep.fits and any("DSP" in v for v in rep.resources.violations())


def test_packing_resource_costs_follow_paper(zcu102):
    kw = dict(platform="zcu102", clock_mhz=150, pe_rows=96, pe_cols=64, tile_tokens=64, tile_k=768)
    from quasar_vit.hardware import estimate_resources

    p3 = estimate_resources(AcceleratorDesign(packing=3, lut_cols=0, **kw), zcu102)
    p4 = estimate_resources(AcceleratorDesign(packing=4, lut_cols=0, **kw), zcu102)
    lut = estimate_resources(AcceleratorDesign(packing="lut", lut_cols=64, **kw), zcu102)
    assert p4.dsp < p3.dsp and lut.dsp < p4.dsp  # 0.25 < 0.33 DSP per unit
    assert p3.lut < p4.lut < lut.lut  # 10.9 < 12.9 < 33.3 LUT per unit
    assert p4.lut - p3.lut == pytest.approx(96 * 64 * (12.9 - 10.9), abs=2)


@pytest.mark.parametrize("nonlinear", ["integer", "float"])
def test_bandwidth_starved_board_is_slower(zcu102, nonlinear):
    slow = dataclasses.replace(zcu102, ddr_gbps=0.5)
    sub = preset_subnet("deit-tiny")
    d = explore(sub, zcu102, nonlinear=nonlinear).design
    assert evaluate(sub, slow, d).cycles > evaluate(sub, zcu102, d).cycles


def test_report_type(zcu102):
    assert isinstance(explore(preset_subnet("deit-tiny"), zcu102, nonlinear="float"), HardwareReport)
