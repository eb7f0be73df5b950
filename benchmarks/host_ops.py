"""Host-op costs of the generated host program, timed per element on this CPU, beside the latency
model's A53 assumption.

The timed code is the generated ``qvit_host.cpp`` itself: the driver ``#include``s it (so its
functions, in an anonymous namespace, are callable) and times LayerNorm, Softmax, GELU (each with
the 6-bit quantisation of its output) and the attention-operand preparation on DeiT-Small shapes
(197 tokens, embed 384, 6 heads of 64, MLP 1536), single-threaded.  That program is the C
simulation's verification host: float64, NumPy's pairwise sums and SciPy's erf re-implemented so
that it is bit-exact with the reference engine.  It is not what the latency model prices: the
model assumes a float32 NEON host on the four A53 cores (``ModelParams`` ``host_*_ns_per_elem``,
derived in docs/hardware-model.md).  This benchmark shows how far the verification host is from
that, so nobody mistakes one for the other.

Run: ``python benchmarks/host_ops.py --export DIR`` (any export; its HLS code is generated);
writes ``benchmarks/results/host_ops.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from common import RESULTS, write_results

from quasar_vit.hls.csim import ap_types_dir, find_compiler
from quasar_vit.hls.generator import CXXFLAGS, generate_hls

DRIVER = r"""
#define main qvit_host_main
#include "qvit_host.cpp"
#undef main
#include <chrono>
using clk = std::chrono::steady_clock;
template <class F> double ns_per(F f, double elems, int reps) {
    f();
    const auto t0 = clk::now();
    for (int r = 0; r < reps; ++r) f();
    return std::chrono::duration<double, std::nano>(clk::now() - t0).count() / (reps * elems);
}
volatile float sink;
int main() {
    const int T = 197, E = 384, H = 6, HD = 64, HID = 1536;
    std::vector<float> x(std::size_t(T) * HID), y(x.size()), w(HID, 1.1f), b(HID, 0.1f);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = float((i * 2654435761u) % 1000) / 250.0f - 2.0f;
    std::vector<code_t> c(x.size());
    std::vector<wbyte_t> nib(std::size_t(2 * T + T / 2 + 2) * 64);
    std::vector<std::uint8_t> kind(2 * T + T / 2 + 2);
    const double ln = ns_per([&] {
        for (int t = 0; t < T; ++t) layernorm_row(x.data() + t * E, E, w.data(), b.data(), y.data() + t * E);
        for (int i = 0; i < T * E; ++i) c[i] = quantize(y[i], 0.05f, -32, 31);
    }, double(T) * E, 20);
    const double sm = ns_per([&] {
        for (int r = 0; r < H * T; ++r) softmax_row(x.data() + (r % T) * T, T, y.data() + (r % T) * T);
        for (int i = 0; i < T * T; ++i) c[i] = quantize(y[i], 0.01f, 0, 63);
    }, double(H) * T * T, 3);
    const double ge = ns_per([&] {
        for (int i = 0; i < T * HID; ++i) c[i] = quantize(gelu(x[i]), 0.05f, -32, 31);
    }, double(T) * HID, 3);
    const double prep = ns_per([&] {   // q, k, v codes of one block, then k and v^T split into nibble programs
        for (int i = 0; i < 3 * T * H * HD; ++i) c[i % c.size()] = quantize(x[i % x.size()], 0.05f, -32, 31);
        for (int h = 0; h < H; ++h) {
            split_stationary(c.data(), T, HD, nibble_row_bytes(HD), nib.data(), kind.data());
            split_stationary(c.data(), HD, T, nibble_row_bytes(T), nib.data(), kind.data());
        }
    }, 3.0 * T * H * HD, 10);
    sink = y[7];
    std::printf("{\"layernorm\": %.4f, \"softmax\": %.4f, \"gelu\": %.4f, \"attn_prep\": %.4f}\n", ln, sm, ge, prep);
    return 0;
}
"""


def measure(export: Path) -> dict[str, float]:
    """ns per element of each host op on this CPU (the generated host code, -O2, one thread)."""
    with tempfile.TemporaryDirectory(prefix="qvit-hostops-") as tmp:
        hls = generate_hls(export, Path(tmp) / "hls")
        (hls / "driver.cpp").write_text(DRIVER)
        exe = Path(tmp) / "driver"
        subprocess.run(
            [
                find_compiler(),
                *CXXFLAGS,
                "-Wno-unused-function",
                "-I",
                str(hls),
                "-I",
                str(ap_types_dir()),
                str(hls / "driver.cpp"),
                str(hls / "qvit_kernel.cpp"),
                "-o",
                str(exe),
            ],
            check=True,
            capture_output=True,
        )
        runs = [
            json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout) for _ in range(3)
        ]
    return {k: min(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> int:
    from quasar_vit.hardware.params import ModelParams

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", type=Path, required=True)
    args = ap.parse_args(argv)
    here = measure(args.export)
    p = ModelParams()
    model = {
        "layernorm": p.host_layernorm_ns_per_elem,
        "softmax": p.host_softmax_ns_per_elem,
        "gelu": p.host_gelu_ns_per_elem,
        "attn_prep": p.host_attn_prep_ns_per_elem,
    }
    print(f"{'op':<10} {'verification host here':>23} {'model (A53 NEON, 4 cores)':>27}   ns per element")
    for k in here:
        print(f"{k:<10} {here[k]:23.3f} {model[k]:27.3f}")
    write_results(
        RESULTS / "host_ops.json",
        {
            "machine": platform.platform(),
            "processor": platform.processor(),
            "ns_per_element_verification_host_here": here,
            "ns_per_element_model_a53": model,
            "command": f"python benchmarks/host_ops.py --export {args.export}",
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
