"""DSP packing of the generated array (qvit_pack.hpp): every weight-nibble code times every 6-bit
activation code, for every row kind, equals the plain product, for packing 3, packing 4 and the
LUT-only unit.  Compiled with g++ against the real ap_int.h (the hls4ml copy)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None and not os.environ.get("CI"), reason="g++ is not installed")

# Operand ranges of every row kind: signed 4-bit codes and high nibbles [-8, 7], unsigned low
# nibbles [0, 15]; signed 6-bit activations [-32, 31], unsigned softmax codes [0, 63].
CHECK = r"""
#include "qvit_pack.hpp"
#include <cstdio>
using namespace qvit;
int main() {
    long n3 = 0, bad3 = 0, n4 = 0, bad4 = 0, nl = 0, badl = 0;
    for (int w0 = -8; w0 <= 15; ++w0) for (int w1 = -8; w1 <= 15; ++w1) for (int w2 = -8; w2 <= 15; ++w2)
        for (int a = -32; a <= 63; ++a) {
            prod_t p0, p1, p2;
            mul_pack3(w0, w1, w2, a, p0, p1, p2);
            ++n3;
            bad3 += (int(p0) != w0 * a) || (int(p1) != w1 * a) || (int(p2) != w2 * a);
        }
    for (int w0 = -8; w0 <= 15; ++w0) for (int w1 = -8; w1 <= 15; ++w1)
        for (int a0 = -32; a0 <= 63; ++a0) for (int a1 = -32; a1 <= 63; ++a1) {
            prod_t p00, p01, p10, p11;
            mul_pack4(w0, w1, a0, a1, p00, p01, p10, p11);
            ++n4;
            bad4 += (int(p00) != w0 * a0) || (int(p01) != w0 * a1) || (int(p10) != w1 * a0) || (int(p11) != w1 * a1);
        }
    for (int w = -8; w <= 15; ++w) for (int a = -32; a <= 63; ++a) { ++nl; badl += int(mul_lut(w, a)) != w * a; }
    std::printf("%ld %ld %ld %ld %ld %ld\n", n3, bad3, n4, bad4, nl, badl);
    return 0;
}
"""


def _run_check(tmp_path, header: str) -> list[int]:
    from quasar_vit.hls.csim import ap_types_dir

    (tmp_path / "qvit_pack.hpp").write_text(header)
    (tmp_path / "check.cpp").write_text(CHECK)
    exe = tmp_path / "check"
    subprocess.run(
        [
            "g++",
            "-O2",
            "-std=c++17",
            "-Wno-unknown-pragmas",
            "-I",
            str(tmp_path),
            "-I",
            str(ap_types_dir()),
            str(tmp_path / "check.cpp"),
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    return [int(v) for v in out]


def _header() -> str:
    from quasar_vit.hls.generator import _env

    return _env().get_template("qvit_pack.hpp.j2").render(generator={"tool": "test"})


@needs_gxx
def test_packed_products_equal_plain_products_for_every_code(tmp_path):
    n3, bad3, n4, bad4, nl, badl = _run_check(tmp_path, _header())
    assert (n3, n4, nl) == (24**3 * 96, 24**2 * 96**2, 24 * 96)  # every code combination was tried
    assert bad3 == 0 and bad4 == 0 and badl == 0


@needs_gxx
def test_exhaustive_check_catches_fields_too_narrow(tmp_path):
    """With 10-bit fields the product 15 * 63 = 945 overflows: the same check must report it."""
    narrow = _header().replace("constexpr int FIELD = 11;", "constexpr int FIELD = 10;")
    assert narrow != _header()
    _, bad3, _, bad4, _, _ = _run_check(tmp_path, narrow)
    assert bad3 > 0 and bad4 > 0
