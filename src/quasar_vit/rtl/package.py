"""An export's RTL folder: the accelerator's HDL, its parameters, its program and a Vivado script.

:func:`write_rtl` reads an export (its integer IR and the core in ``accelerator.json``) and writes
``EXPORT/rtl/``:

- ``hdl/``: ``qv_top.v`` and every module below it, and the ROM files they ``$readmemh``;
- ``descriptors.hex``: the descriptor table, one 32-bit word a line (``$readmemh`` text), a step's
  words in turn, low word first, for the driver to write through ``desc_wr_*``;
- ``ddr.bin``: the subnet's part of the DDR the DMA reads, ``WB``-bit beats, little-endian: the
  residual the tokens start from and every step's stream.  Each image's patch codes go after it
  (``rtl.json``'s ``image``: where and how many beats);
- ``rtl.json``: ``qv_top``'s parameters, the board and clock, the memory map, and what the host
  does per image (its codes' layout, the logits' rescale);
- ``package_ip.tcl``: a Vivado script that packages ``qv_top`` with these parameters as an IP;
- ``README.md``: the driver's sequence, and what is measured and what is not.

The files are the very program ``verify --rtl`` simulates (``tests/rtl/test_rtl_package.py``
rebuilds it from them).  Deterministic: the same export gives identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from quasar_vit.errors import RtlError
from quasar_vit.rtl.image import image_codes, image_program
from quasar_vit.rtl.layout import GemmShape, descriptor_words, unpack_descriptor
from quasar_vit.rtl.modules import sources
from quasar_vit.rtl.program import Program, code_word_bits, word_beats
from quasar_vit.rtl.tables import table_files
from quasar_vit.rtl.tools import hdl_file
from quasar_vit.utils.io import atomic_dir

FORMAT = "quasar-vit-rtl"
MARKER = "rtl.json"  # an earlier RTL folder holds this (so --out may replace it)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _image_region(prog: Program) -> tuple[int, int]:
    """(first beat, beats) of the image's codes in the program's DDR: the first load's stream."""
    at = unpack_descriptor(prog.descriptors[0])
    return at["addr"], at["beats"]


def _tcl(params: dict[str, int], part: str, clock_mhz: float) -> str:
    generics = " ".join(f"{k}={v}" for k, v in params.items())
    values = " ".join(f"{k} {v}" for k, v in params.items())
    return f"""# Packages qv_top (this export's accelerator) as a Vivado IP.  Untested here: the project's
# machines have no Vivado.  Run: vivado -mode batch -source package_ip.tcl
set here [file dirname [file normalize [info script]]]
proc bus_param {{bif name value}} {{
    set p [ipx::get_bus_parameters $name -of_objects $bif]
    if {{$p eq ""}} {{ set p [ipx::add_bus_parameter $name $bif] }}
    set_property value $value $p
}}
file delete -force $here/ip
create_project -force qv_top_ip $here/vivado -part {part}
add_files [glob $here/hdl/*.v]
# the modules use a few SystemVerilog casts and loop variables: read them as SystemVerilog
set_property file_type SystemVerilog [get_files -of_objects [get_filesets sources_1] *.v]
# qv_ln_path's $readmemh ROM (rsqrt.hex), found by its name in the run directory
add_files -norecurse [glob $here/hdl/*.hex]
set_property file_type {{Memory File}} [get_files -of_objects [get_filesets sources_1] *.hex]
set_property top qv_top [current_fileset]
set_property generic {{{generics}}} [current_fileset]
update_compile_order -fileset sources_1
ipx::package_project -root_dir $here/ip -vendor quasar-vit -library user -taxonomy /UserIP -import_files -set_current true
set core [ipx::current_core]
foreach {{name value}} {{{values}}} {{
    set_property value $value [ipx::get_user_parameters $name -of_objects $core]
}}
# clk and rst: package_project usually infers them; infer them where it did not
if {{[ipx::get_bus_interfaces clk -of_objects $core] eq ""}} {{ ipx::infer_bus_interface clk xilinx.com:signal:clock_rtl:1.0 $core }}
if {{[ipx::get_bus_interfaces rst -of_objects $core] eq ""}} {{ ipx::infer_bus_interface rst xilinx.com:signal:reset_rtl:1.0 $core }}
bus_param [ipx::get_bus_interfaces rst -of_objects $core] POLARITY ACTIVE_HIGH
# the stream from the DMA (an AXI DataMover MM2S data port): AXI4-Stream, no TLAST/TKEEP
set axis [ipx::add_bus_interface s_axis $core]
set_property abstraction_type_vlnv xilinx.com:interface:axis_rtl:1.0 $axis
set_property bus_type_vlnv xilinx.com:interface:axis:1.0 $axis
set_property interface_mode slave $axis
foreach {{logical physical}} {{TVALID s_valid TREADY s_ready TDATA s_data}} {{
    set_property physical_name $physical [ipx::add_port_map $logical $axis]
}}
ipx::associate_bus_interfaces -busif s_axis -clock clk $core
# the clock the design was priced at: {clock_mhz:g} MHz (timing is not closed here)
bus_param [ipx::get_bus_interfaces clk -of_objects $core] FREQ_HZ {int(clock_mhz * 1e6)}
ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::check_integrity $core
ipx::save_core $core
"""


def _readme(meta: dict[str, Any]) -> str:
    p, img = meta["params"], meta["image"]
    return f"""# The RTL accelerator of this export

`qv_top` ({p["R"]} x {p["T"]} x {p["KP"]} W4A6 units, {p["WB"]}-bit stream, a table of {p["STEPS_MAX"]}
descriptors) for {meta["platform"]} at {meta["clock_mhz"]:g} MHz. Written by `quasar-vit rtl`; see
the project's docs/rtl.md.

| file | what |
|---|---|
| `hdl/` | `qv_top.v` and every module below it, and the ROMs they `$readmemh` |
| `descriptors.hex` | the descriptor table: {meta["steps"]} steps of {meta["descriptor_words"]} 32-bit words, one word a line |
| `ddr.bin` | the subnet's DDR: {meta["ddr_beats"]} beats of {p["WB"]} bits, little-endian |
| `rtl.json` | the parameters, the memory map, what the host does per image |
| `package_ip.tcl` | packages `qv_top` as a Vivado IP with these parameters |

A driver, once per subnet: write `ddr.bin` at the DMA's base address, and each step's words
through `desc_wr_*`. Per image: write the image's patch codes at beat {img["addr"]} ({img["beats"]}
beats: for each token, for each chunk of {p["KP"]} codes, one word of {p["KP"]} 6-bit codes offset
to unsigned, low code first, in {img["beats_per_word"]} beat(s)), pulse `run` with `n_steps` =
{meta["steps"]}, and take the head's {meta["classes"]} accumulators from the result port
(`res_valid`, with `lane_token`/`lane_row`/`lane_value`) until `done`. The logits are `acc * scale + bias`
(`weights.npz`'s head scale and bias, as the NumPy engine rescales them). The DMA takes one
command a step (`cmd_addr`, `cmd_beats`, in beats): a DataMover MM2S command needs them in bytes.

Measured here: the cycles in Verilator (`quasar-vit verify EXPORT --rtl`: this program,
bit-exact with the NumPy engine) and the resources by Yosys. Not measured here: timing closure
and the board (no Vivado); the Tcl script has not been run.
"""


def rtl_files(export_dir: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(``rtl.json``'s content, file name -> bytes) of the export's RTL folder."""
    from quasar_vit.export.ir import load_ir
    from quasar_vit.rtl.report import KIND
    from quasar_vit.rtl.verify import core_for, export_core

    ir = load_ir(export_dir)
    if ir.nonlinear != "integer":
        raise RtlError(f"{export_dir}: the RTL runs exports with nonlinear: integer; this one is {ir.nonlinear!r}")
    shape: GemmShape = export_core(export_dir) or core_for(ir)
    accel = (
        json.loads((export_dir / "accelerator.json").read_text()) if (export_dir / "accelerator.json").is_file() else {}
    )
    design: dict[str, Any] = _dict(accel.get("design"))  # (export_core has validated it)
    board: dict[str, Any] = _dict(accel.get("board"))
    clock = float(design["clock_mhz"]) if design.get("accelerator") == KIND else 150.0
    geometry = ir.geometry
    blank = np.zeros((geometry.in_chans, geometry.img_size, geometry.img_size), np.float32)
    prog = image_program(ir, blank, shape)
    addr, beats = _image_region(prog)
    if addr + beats != len(prog.beats):
        raise RtlError("the image's codes must be the last region of the program's DDR")
    wb = shape.WB
    ddr = b"".join(int(b).to_bytes(wb // 8, "little") for b in prog.beats[:addr])
    params = shape.top_params()
    meta = {
        "format": FORMAT,
        "platform": str(accel.get("platform", "")),
        "part": str(board.get("part", "")),
        "clock_mhz": clock,
        "params": params,
        "steps": len(prog.descriptors),
        "descriptor_words": descriptor_words(),
        "ddr_beats": addr,
        "image": {
            "addr": addr,
            "beats": beats,
            "beats_per_word": word_beats(code_word_bits(shape), wb),
            "codes": list(image_codes(ir, blank, shape).shape),
        },
        "classes": int(ir.head.out_features),
    }
    files: dict[str, bytes] = {
        "descriptors.hex": "".join(f"{w:08x}\n" for d in prog.descriptors for w in d).encode(),
        "ddr.bin": ddr,
        "package_ip.tcl": _tcl(params, str(meta["part"]) or "xczu9eg-ffvb1156-2-e", clock).encode(),
        "README.md": _readme(meta).encode(),
    }
    for name in sources("qv_top"):
        files[f"hdl/{name}"] = hdl_file(name).read_bytes()
    for name, text in table_files().items():
        files[f"hdl/{name}"] = text.encode()
    return meta, files


def write_rtl(export_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Writes the RTL folder of an export (default ``EXPORT/rtl``), atomically; an existing ``out_dir``
    is replaced only if it is empty or an earlier RTL folder."""
    export_dir = Path(export_dir)
    out = Path(out_dir) if out_dir is not None else export_dir / "rtl"
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise RtlError(f"{out} exists and is not an earlier RTL folder (no {MARKER}); choose a new or empty directory")
    meta, files = rtl_files(export_dir)
    with atomic_dir(out) as tmp:
        for name, data in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_program(rtl_dir: str | Path) -> tuple[list[tuple[int, ...]], list[int], dict[str, Any]]:
    """The descriptors and the subnet's DDR beats of an RTL folder, and its ``rtl.json``."""
    d = Path(rtl_dir)
    meta = json.loads((d / MARKER).read_text())
    words = [int(line, 16) for line in (d / "descriptors.hex").read_text().split()]
    n = int(meta["descriptor_words"])
    descriptors = [tuple(words[i : i + n]) for i in range(0, len(words), n)]
    wb = int(meta["params"]["WB"]) // 8
    raw = (d / "ddr.bin").read_bytes()
    beats = [int.from_bytes(raw[i : i + wb], "little") for i in range(0, len(raw), wb)]
    return descriptors, beats, meta


__all__ = ["write_rtl", "rtl_files", "read_program"]
