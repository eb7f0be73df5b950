"""The accelerator as RTL: hand-written Verilog modules (``hdl/``), their testbenches (``hdl/tb/``),
and the Python that builds, simulates (Verilator) and synthesises (Yosys) them.

Each module in ``hdl/`` is small and parameterised, one per file, with a SystemVerilog testbench
beside it in ``hdl/tb/`` (as FINN's finn-rtllib arranges its modules).  The tests drive each
testbench with vectors from the project's own integer arithmetic
(:mod:`quasar_vit.quantization.intops`) and compare bit for bit.  Resource figures come from Yosys
``synth_xilinx -family xcup`` on these modules (:mod:`quasar_vit.rtl.synth`), cycle figures from
Verilator simulation (:mod:`quasar_vit.rtl.sim`).  See ``docs/rtl.md``.
"""
