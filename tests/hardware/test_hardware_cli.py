"""``quasar-vit hw`` and the torch-free guarantee."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from quasar_vit.cli.main import main


def test_cli_table(capsys):
    assert main(["hw", "--preset", "deit-tiny", "--platform", "zcu102"]) == 0
    out = capsys.readouterr().out
    assert "FPS" in out and "blocks.0.qkv" in out and "DSP" in out and "zcu102" in out


def test_cli_shows_the_nonlinear_ops_where_they_run(capsys):
    assert main(["hw", "--preset", "deit-tiny", "--platform", "zcu102"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = lambda name: next(line.split() for line in out if line.startswith(name + " "))  # noqa: E731
    assert row("blocks.0.norm1")[1] == "LayerNorm" and row("blocks.0.attn.sm0")[1] == "softmax"
    assert "design: RTL core" in "\n".join(out) and "LayerNorm/softmax/GELU on the fabric" in "\n".join(out)
    assert main(["hw", "--preset", "deit-tiny", "--platform", "zcu102", "--nonlinear", "float"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert row("blocks.0.norm1")[1:3] == ["layernorm", "host"] and row("blocks.0.attn_prep")[2] == "host"


def test_cli_json_and_design_roundtrip(capsys, tmp_path):
    assert main(["hw", "--preset", "deit-small", "--share-8bit", "0.3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"]["fps"] > 0 and data["fits"] and data["layers"]
    design = tmp_path / "design.json"
    design.write_text(json.dumps(data["design"]))
    assert main(["hw", "--preset", "deit-small", "--share-8bit", "0.3", "--design", str(design), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["total"]["fps"] == pytest.approx(data["total"]["fps"], rel=1e-6)


def test_cli_subnet_file_and_user_platform(capsys, tmp_path):
    from quasar_vit.hardware.calibration import QUASAR_S_LIKE

    sub = tmp_path / "subnet.json"
    QUASAR_S_LIKE.save(sub)
    board = tmp_path / "board.yaml"
    board.write_text(
        "name: board\nlut: 200000\nff: 400000\ndsp: 1500\nbram: 500\nclock_mhz: 180\n"
        "ddr_gbps: 12\nddr_efficiency: 0.7\n"
    )
    assert main(["hw", "--subnet", str(sub), "--platform", str(board), "--json", "--no-layers"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["platform"] == "board" and data["design"]["clock_mhz"] == 180 and "layers" not in data


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--preset", "deit-tiny", "--platform", "nope"], "unknown platform"),
        (["--preset", "deit-base", "--fps-target", "100000"], "not reachable"),
    ],
)
def test_cli_errors_exit_2(capsys, argv, msg):
    assert main(["hw", *argv]) == 2
    assert msg in capsys.readouterr().err


def test_no_torch_import(tmp_path):
    code = (
        "import sys\n"
        "import quasar_vit.hardware as hw\n"
        "from quasar_vit.space import preset_subnet\n"
        "hw.explore(preset_subnet('deit-tiny'), 'zcu102')\n"
        "from quasar_vit.cli.main import main\n"
        "rc = main(['hw', '--preset', 'deit-tiny', '--json'])\n"
        "assert rc == 0, rc\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "print('NO_TORCH_OK', file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "NO_TORCH_OK" in res.stderr
