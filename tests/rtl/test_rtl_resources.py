"""The resource model of the core (``rtl/resources.py``): its mechanics, without Yosys.

What these show: the per-module lines go through both fit cores' figures, the totals are the sum
of the modules, and a missing fit file is one error line.  Whether the model predicts *other* cores
is what ``benchmarks/rtl_units.py`` measures against Yosys (docs/rtl.md quotes it); a test that
re-read those recorded figures would only check that they were recorded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from quasar_vit.errors import RtlError
from quasar_vit.rtl import resources
from quasar_vit.rtl.layout import GemmShape


def _synthetic() -> dict[str, dict[str, dict[str, int]]]:
    """Breakdowns of the fit cores made up from known lines (cost = 7 + 3 * driver per module)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name, shape in resources.FIT_SHAPES.items():
        out[name] = {m: {k: int(7 + 3 * d(shape)) for k in resources.KINDS} for m, d in resources.DRIVERS.items()}
    return out


def test_the_fit_recovers_each_modules_line() -> None:
    fits = resources.fit(_synthetic())
    shape = GemmShape(R=32, T=22, KP=8, WB=256, tiles_max=9, ch_max=512, wch_max=256, rch_max=64)
    est = resources.estimate(shape, fits)
    for m, d in resources.DRIVERS.items():
        assert abs(est["modules"][m]["lut"] - (7 + 3 * d(shape))) <= 1
    assert est["lut"] == sum(v["lut"] for v in est["modules"].values())


def test_the_stored_fit_goes_through_its_own_cores() -> None:
    """A self-consistency check of the stored data: each fit core's modules come back exactly."""
    import json

    data = json.loads(resources.FIT_FILE.read_text())
    fits = resources.load_fit()
    est = {name: resources.estimate(shape, fits)["modules"] for name, shape in resources.FIT_SHAPES.items()}
    for m in resources.DRIVERS:
        for name in resources.FIT_SHAPES:
            got = data[name]["modules"].get(m, {})
            kinds = [k for k in resources.KINDS if not (k == "bram36" and m in resources.BRAM_COUNTED)]
            assert all(abs(est[name][m][k] - got.get(k, 0)) <= 1 for k in kinds)
    dsp = resources.estimate(resources.FIT_SHAPES["small"], fits)["modules"]["qv_mul_pack4"]["dsp"]
    assert dsp == resources.FIT_SHAPES["small"].units // 4  # packing 4: a DSP48E2 per four units


def test_missing_fit_file_is_one_error_line(tmp_path: Path) -> None:
    with pytest.raises(RtlError, match="rtl_units.py --fit") as exc:
        resources.load_fit(tmp_path / "none.json")
    assert "\n" not in str(exc.value)


def test_the_explorer_picks_a_fitting_core_or_says_none_fits() -> None:
    """``rtl.model.explore`` returns a core whose modelled resources are within the board's caps,
    the fastest of those it tried; on a board too small for any core, one error line naming what the
    smallest core is over."""
    import dataclasses

    from quasar_vit.config import load_config
    from quasar_vit.errors import HardwareError
    from quasar_vit.hardware import load_platform
    from quasar_vit.rtl import model
    from quasar_vit.rtl.report import CoreDesign

    subnet = load_config("fmnist-tiny").model.space().largest()
    zcu = load_platform("zcu102")
    best = model.explore(subnet, zcu)
    assert best.fits and best.resources.violations() == []
    for r in model.ROWS:
        for t in model.tile_options(subnet.geometry.num_tokens):
            other = model.evaluate(subnet, CoreDesign("zcu102", 150.0, model.core_shape(subnet, r, t)), zcu)
            assert not other.fits or other.fps <= best.fps * 1.005
    with pytest.raises(HardwareError, match="no RTL core fits .* over LUT") as exc:
        model.explore(subnet, dataclasses.replace(zcu, lut=1000))
    assert "\n" not in str(exc.value)


def test_block_ram_of_a_bank_is_the_cheapest_configuration_mix() -> None:
    """A bank takes whole RAMB36E2s or RAMB18E2 halves side by side across its width, each cascaded
    to its depth, the cheapest mix; a shallow one is LUT RAM."""
    assert resources.bank_bram36(72, 512) == 1.0  # one RAMB36 at 72 x 512
    assert resources.bank_bram36(36, 512) == 0.5  # one RAMB18
    assert resources.bank_bram36(48, 1152) == 2.5  # three RAMB18s at 36 x 512, one RAMB36 at 18 x 2048
    assert resources.bank_bram36(6, 1024) == 0.5  # a GELU table: RAMB18 at 9 x 2048
    assert resources.bank_bram36(160, 64) == 0.0  # LUT RAM
    assert resources.bank_bram36(160, 3168) > resources.bank_bram36(160, 1584) > 0
