"""The RTL core as the hardware model hands it on: its report, its design's round trip, its stream
on a board's DDR, and the physical checks every priced step must pass.  No simulator."""

from __future__ import annotations

import dataclasses
import json

import pytest

from quasar_vit.errors import HardwareError
from quasar_vit.hardware import design_from_dict, evaluate, explore, load_platform
from quasar_vit.hardware.calibration import OPERATING_POINTS
from quasar_vit.rtl import model
from quasar_vit.rtl.report import CoreDesign, CoreReport
from quasar_vit.rtl.schedule import RUN_LEAD


@pytest.fixture(scope="module")
def zcu102():
    return load_platform("zcu102")


@pytest.fixture(scope="module")
def l2(zcu102) -> CoreReport:
    rep = explore(OPERATING_POINTS[0].subnet, zcu102)
    assert isinstance(rep, CoreReport)
    return rep


def test_the_steps_are_the_image_in_program_order(l2) -> None:
    """Every step of the subnet once, in the order qv_top runs them (the image's two loads first);
    their cycles and the sequencer's lead add up to the image's, their MACs to the subnet's; the
    descriptor table holds them."""
    sub = l2.subnet
    names = [s.name for s in l2.steps]
    assert names[:3] == ["load.image", "load.residual", "patch_embed"] and names[-2:] == ["norm", "head"]
    assert names[3:6] == ["blocks.0.norm1", "blocks.0.qkv", "blocks.0.attn.qk0"]
    heads = sub.num_heads[0]
    assert sum(n.startswith("blocks.0.attn.") for n in names) == 3 * heads
    assert l2.cycles == model.image_cycles(sub, l2.shape).total == RUN_LEAD + sum(s.cycles for s in l2.steps)
    assert sum(s.macs for s in l2.steps) == sub.macs()
    assert (
        len(l2.steps)
        == model.program_steps([(sub.qkv_dim(i), sub.num_heads[i], sub.mlp_hidden(i)) for i in range(sub.depth)])
        <= l2.shape.steps_max
    )
    assert sum(s.macs for s in l2.steps) == sub.macs()


def test_no_step_uses_more_than_the_array(l2) -> None:
    """Physical check: a step's unit passes fit in its cycles on the array (utilisation <= 100 %)."""
    for s in l2.steps:
        assert s.passes <= s.cycles * l2.design.units, s
    assert 0 < l2.array_utilisation <= 1


def test_the_design_round_trips_through_its_dict(l2, zcu102) -> None:
    d = json.loads(json.dumps(l2.to_dict()))
    design = design_from_dict(d["design"])
    assert design == l2.design
    again = evaluate(l2.subnet, zcu102, design)
    assert again.cycles == l2.cycles and again.resources == l2.resources
    assert d["total"]["fps"] == pytest.approx(l2.fps, rel=1e-3) and len(d["layers"]) == len(l2.steps)
    assert "RTL core 32 x 22 x 8" in l2.format_table(layers=False)


@pytest.mark.parametrize(
    "change, msg",
    [({"R": 24}, "R must be a multiple"), ({"T": None}, "lacks T"), ({"tiles_max": "x"}, "invalid literal")],
)
def test_a_malformed_core_design_is_one_error_line(l2, change, msg) -> None:
    d = {**l2.design.to_dict(), **change}
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(HardwareError, match=msg) as exc:
        design_from_dict(d)
    assert "\n" not in str(exc.value)


def test_the_stream_runs_at_the_boards_usable_bandwidth(zcu102) -> None:
    """A beat a cycle where the board's DDR allows it (the ZCU102: 96 usable bytes a cycle against
    32), slowed to the board's share where it does not."""
    assert model.platform_ddr(zcu102) == model.DDR
    starved = dataclasses.replace(zcu102, ddr_gbps=1.6)  # 8 usable bytes a cycle at 150 MHz
    ddr = model.platform_ddr(starved)
    assert (ddr.num, ddr.den) == (1, 4)


def test_a_core_for_another_board_is_refused(l2) -> None:
    with pytest.raises(HardwareError, match="made for platform"):
        evaluate(l2.subnet, "vcu118", l2.design)


def test_a_core_design_is_refused_for_a_float_model(l2) -> None:
    """The exporter's check: the RTL core runs integer ops only."""
    assert CoreDesign.from_dict(l2.design.to_dict()).nonlinear == "fabric"


@pytest.mark.parametrize("num, den, fifo", [(1, 1, 64), (3, 2, 8), (1, 3, 4), (2, 5, 16)])
def test_a_run_of_beats_is_taken_as_beat_by_beat(num, den, fifo) -> None:
    """``_Stream.take_run`` (at full rate, the run worked out at once) gives the edges and leaves the
    credit as the beats taken one by one do, whatever the earliest edges and the stalls between runs."""
    import random

    from quasar_vit.rtl.layout import Ddr
    from quasar_vit.rtl.schedule import _Stream

    ddr = Ddr(latency=5, num=num, den=den, fifo=fifo)
    rng = random.Random(num * 100 + den)
    one, run = _Stream(ddr), _Stream(ddr)
    earliest = 0
    for _ in range(200):
        earliest = max(earliest, one.last + 1) + rng.choice([0, 0, 1, 7, 40])
        n = rng.randint(1, 30)
        for _ in range(n):
            last = one.take(earliest)
        assert run.take_run(earliest, n) == last
        assert (run.x, run.c, run.last) == (one.x, one.c, one.last)
