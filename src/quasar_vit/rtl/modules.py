"""Which HDL files make each module: one map, read by the simulation, synthesis, tests and benchmarks.

``sources("qv_dot_array")`` lists the module's file after every file it instantiates, in an order
both Verilator and Yosys accept.  ``tb_sources("qv_dot_array")`` adds its testbench.
"""

from __future__ import annotations

from quasar_vit.errors import RtlError

#: module -> the modules it instantiates
DEPENDS: dict[str, tuple[str, ...]] = {
    "qv_mul_pack4": (),
    "qv_adder_tree": (),
    "qv_tree_acc": ("qv_adder_tree",),
    "qv_dot_array": ("qv_mul_pack4", "qv_tree_acc"),
    "qv_drain": (),
    "qv_requant": (),
    "qv_act_mem": (),
    "qv_res_mem": (),
    "qv_ln_path": (),
    "qv_weight_buf": (),
    "qv_kv_loader": (),
    "qv_vt_mem": (),
    "qv_run_max": (),
    "qv_sm_path": ("qv_res_mem", "qv_run_max"),
    "qv_gemm_core": (
        "qv_act_mem",
        "qv_res_mem",
        "qv_ln_path",
        "qv_weight_buf",
        "qv_kv_loader",
        "qv_vt_mem",
        "qv_sm_path",
        "qv_run_max",
        "qv_dot_array",
        "qv_drain",
        "qv_outstage",
    ),
    "qv_outstage": ("qv_requant",),
    "qv_top": ("qv_gemm_core",),
}


def sources(top: str) -> list[str]:
    """The HDL files of ``top`` and of everything below it (each once, dependencies first)."""
    if top not in DEPENDS:
        raise RtlError(f"unknown RTL module {top!r}")
    out: list[str] = []

    def visit(m: str) -> None:
        for d in DEPENDS[m]:
            visit(d)
        if f"{m}.v" not in out:
            out.append(f"{m}.v")

    visit(top)
    return out


def tb_sources(top: str) -> list[str]:
    """:func:`sources` plus the module's own testbench ``tb/tb_<top>.sv``."""
    return [*sources(top), f"tb/tb_{top}.sv"]
