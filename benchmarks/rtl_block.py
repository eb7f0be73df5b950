"""A paper-size block on the simulated RTL core, measured in Verilator; an image priced by its model.

Block 0 of the quasar-L2-like subnet (``hardware/calibration.py``: DeiT-Small size, 197 tokens,
E = 384, 7 heads of 64, MLP 1536) runs as one chain of steps on a DeiT-Small-size core (R = 32
slots, T = 22 tokens, KP = 8 lanes: 5632 W4A6 units, packing 4), with no host work between steps:
LayerNorm, qkv, every head's Q K^T, softmax and P V, proj with its residual add, LayerNorm, fc1 with
GELU, fc2 with its residual add.  Weights stream from a modelled DDR; the attention operands come
from the core's own memories.  The weights and codes are random and the constants are set from the
data so that every code range is used; the block's codes (both LayerNorms', the heads' output,
GELU's and the output residual) are checked against the same chain computed with
:mod:`quasar_vit.quantization.intops`.  The table gives each step's measured cycles and the
schedule model's.

The image total is the model's sum over every step of the subnet (its blocks, the patch embedding
as a linear step, the final LayerNorm and the head on the class token), each step type being one
whose model equals the RTL on every measured run.  Not in it: loading the class token and the
positions into the residual memory (a DDR transfer the core does not make yet), and the host's
final rescale of the logits.

Run: ``python benchmarks/rtl_block.py`` (about 10 minutes on 2 cores, most of it Verilator);
writes ``benchmarks/results/rtl_block.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, argv_string, today, write_results

from quasar_vit.hardware.calibration import QUASAR_L2_LIKE, QUASAR_S_LIKE
from quasar_vit.hardware.engine import row_mask
from quasar_vit.quantization import intops
from quasar_vit.rtl.gemm import ATTENTION, MODE_GELU, MODE_PV, MODE_RESIDUAL, Layer, run_layers
from quasar_vit.rtl.layout import GemmShape
from quasar_vit.rtl.image import head_order
from quasar_vit.rtl.model import DDR as CORE_DDR
from quasar_vit.hardware import load_platform
from quasar_vit.rtl.model import explore, image_cycles
from quasar_vit.rtl.schedule import chain_cycles
from quasar_vit.space import SubnetConfig

OUT = RESULTS / "rtl_block.json"
# T = 22: the fewest tokens a tile that still covers 197 in 9 tiles (T = 24 leaves 19 of its 216 token
# slots empty and costs 128 more DSPs for no fewer cycles); 198 tokens
SHAPE = GemmShape(R=32, T=22, KP=8, WB=256, tiles_max=9, ch_max=512, wch_max=256, rch_max=64)
# two 128-bit HP ports at 150 MHz (4.8 GB/s, a third of the ZCU102's usable PS DDR bandwidth from the
# PL); the first beat about 430 ns after a step starts
DDR = CORE_DDR
CLOCK_MHZ = 150.0
RES = (-(2**19), 2**19 - 1)  # the residual codes (20 bits)
LN = (24, 1000)  # a LayerNorm's output shift and EPS


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-sim", action="store_true", help="price the images only (no Verilator run)")
    args = ap.parse_args(argv)
    sub = QUASAR_L2_LIKE
    rows: list[dict[str, Any]] = []
    seconds, softmax_runs = None, None
    if not args.no_sim:
        steps, ref, res_in = _block(sub, 0, np.random.default_rng(0))
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            n = res_in.shape[0]
            chain = run_layers(SHAPE, steps, np.zeros((n, 0), np.int64), True, Path(tmp), DDR, residual=res_in)
        seconds = round(time.time() - t0, 1)
        _check(chain, steps, ref)
        model = chain_cycles(SHAPE, steps, n, DDR)
        rows = [_row(s, r.cycles, c, n) for s, r, c in zip(steps, chain.layers, model.steps)]
        softmax_runs = {"rtl": chain.softmax_cycles, "model": model.softmax}
        if chain.softmax_cycles != model.softmax:
            raise SystemExit("error: the softmax runs on the RTL differ from the model's")
    points = (("quasar-L2-like", sub), ("quasar-S-like", QUASAR_S_LIKE))
    images = {name: _image(s) for name, s in points}
    explored = {name: _explore(s) for name, s in points}
    md = _markdown(rows, images) + _explored_markdown(explored)
    print(md)
    write_results(
        OUT,
        {
            "date": today(),
            "command": f"python benchmarks/rtl_block.py {argv_string(argv)}".strip(),
            "design": SHAPE.params(),
            "ddr": vars(DDR),
            "clock_mhz": CLOCK_MHZ,
            "block0_steps": rows,
            "block0_seconds": seconds,
            "block0_softmax_runs": softmax_runs,
            "max_model_error": max((abs(r["model"] / r["rtl"] - 1) for r in rows), default=None),
            "images": images,
            "explored": explored,
        },
        md,
    )
    print(f"wrote {OUT}")


# ---- block 0 with random weights, constants set from the data, and its intops reference ----------
def _rq(acc: np.ndarray, hi: int, axis: int | None = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A requantiser (mult, offset, shift; per row, or one if ``axis`` is None) that maps the largest
    ``|acc|`` to about ``hi``, rounding to nearest."""
    top = np.abs(acc).max(axis=axis) if axis is not None else np.abs(acc).max()
    top = np.maximum(np.asarray(top, np.int64), 1)
    shift = np.array([max(1, (int(t) << 16).bit_length() - hi.bit_length()) for t in np.ravel(top)])
    return np.full(shift.shape, 1 << 16), 1 << (shift - 1), shift


def _ln(rng: np.random.Generator, e: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(2**15, 2**16, e), rng.integers(-(2**30), 2**30, e) + 2**23


def _lin(rng: np.random.Generator, m: int, k: int, is8: np.ndarray) -> np.ndarray:
    return np.where(is8[:, None], rng.integers(-128, 128, (m, k)), rng.integers(-8, 8, (m, k)))


def _f(*a: Any) -> list[np.ndarray]:
    return [np.asarray(v, np.float64) for v in a]


def _block(sub: SubnetConfig, i: int, rng: np.random.Generator) -> tuple[list[Layer], dict[str, np.ndarray], Any]:
    """Block ``i``'s steps and the codes the same chain gives in intops (the reference)."""
    specs = {s.name.split(".")[-1]: s for s in sub.linear_layers() if s.name.startswith(f"blocks.{i}.")}
    n, e, heads, hd = specs["qkv"].tokens, sub.embed_dim, sub.num_heads[i], 64
    is8 = {k: np.array(row_mask(s.out_features, s.n8_rows, s.sections)) for k, s in specs.items()}
    w = {k: _lin(rng, s.out_features, s.in_features, is8[k]) for k, s in specs.items()}
    res_in = res = rng.integers(-30000, 30000, (n, e))
    ref: dict[str, np.ndarray] = {}
    steps: list[Layer] = []
    # LayerNorm -> qkv
    g1, b1 = _ln(rng, e)
    h = intops.layernorm(*_f(res, g1, b1), float(LN[0]), float(LN[1]), -32, 31).astype(np.int64)
    ref["qkv.in"] = h
    steps.append(Layer.layernorm(g1, b1, *LN, (-32, 31)))
    acc = h @ w["qkv"].T
    rq = _rq(acc, 31)
    qkv = intops.requant(*_f(acc, *rq), -32, 31).astype(np.int64)
    steps.append(Layer(w["qkv"], is8["qkv"], *rq, (-32, 31), kv=True))
    q, k, v = (qkv[:, t * heads * hd : (t + 1) * heads * hd].reshape(n, heads, hd).transpose(1, 0, 2) for t in range(3))
    # the heads: scores, softmax (about two octaves of exp2 per standard deviation; P's step 1/64), P V
    sms, outs = [], []
    for j in range(heads):
        scores = q[j] @ k[j].T
        m = 128.0 / max(1.0, float(scores.std()))
        s = 16 - int(np.ceil(np.log2(m)))
        sms.append((int(round(m * 2**s)), s, 1 << 22))
        outs.append(intops.softmax(scores.astype(np.float64), *sms[j], 6, 63).astype(np.int64) @ v[j])
    pv_all = np.concatenate(outs, 1)
    pv = tuple(int(x[0]) for x in _rq(pv_all, 31, None))
    ref["proj.in"] = a = intops.requant(*_f(pv_all, *pv), -32, 31).astype(np.int64)
    make = {
        "qk": lambda j: Layer.scores(n, hd, j, heads),
        "sm": lambda j: Layer.softmax(n, j, heads, sms[j], 63),
        "pv": lambda j: Layer.attend(n, hd, j, heads, pv, (-32, 31)),
    }
    steps += [make[kind](j) for kind, j in head_order(heads)]
    # proj with its residual add, LayerNorm, fc1 with GELU, fc2 with its residual add
    acc = a @ w["proj"].T
    rq = _rq(acc, 2**14)
    res = intops.residual_add(*_f(res, acc, *rq), *RES).astype(np.int64)
    steps.append(Layer(w["proj"], is8["proj"], *rq, RES, MODE_RESIDUAL))
    g2, b2 = _ln(rng, e)
    h = intops.layernorm(*_f(res, g2, b2), float(LN[0]), float(LN[1]), -32, 31).astype(np.int64)
    ref["fc1.in"] = h
    steps.append(Layer.layernorm(g2, b2, *LN, (-32, 31)))
    acc = h @ w["fc1"].T
    mult, _, shift = _rq(acc, 511)
    offset = (512 << shift) + (1 << (shift - 1))  # index 512 is an accumulator of 0
    table = rng.integers(-32, 32, 1024)
    g = intops.gelu(*_f(acc, mult, offset, shift, table), 10).astype(np.int64)
    ref["fc2.in"] = g
    steps.append(Layer(w["fc1"], is8["fc1"], mult, offset, shift, (0, 1023), MODE_GELU, table, True))
    acc = g @ w["fc2"].T
    rq = _rq(acc, 2**14)
    ref["res2"] = intops.residual_add(*_f(res, acc, *rq), *RES).astype(np.int64)
    steps.append(Layer(w["fc2"], is8["fc2"], *rq, RES, MODE_RESIDUAL))
    return steps, ref, res_in


def _check(chain: Any, steps: list[Layer], ref: dict[str, np.ndarray]) -> None:
    """The RTL's codes against the intops chain's; one error line if any differs."""
    runs = chain.layers
    pv = np.concatenate([r.codes for s, r in zip(steps, runs) if s.mode == MODE_PV], 1)
    got = {
        "qkv.in": runs[0].codes,
        "proj.in": pv,
        "fc1.in": runs[-3].codes,
        "fc2.in": chain.act,
        "res2": chain.residual,
    }
    for key, want in ref.items():
        if not np.array_equal(got[key], want):
            raise SystemExit(f"error: block 0's {key} codes on the RTL differ from intops")


def _row(step: Layer, rtl: int, model: int, n: int) -> dict[str, Any]:
    """A measured step: its cycles, the model's, and (for the array's steps) the array's use, useful
    nibble MACs over units x cycles (an 8-bit or 6-bit stationary row is two nibble rows)."""
    kind = step.kind
    m, k = step.w_int.shape
    name = f"head {step.head} {kind}" if step.mode in ATTENTION else f"{kind}: {m} outputs, K = {k}"
    if kind == "LayerNorm":
        name = f"LayerNorm: {m} channels"
    use = None
    if kind in ("linear", "Q K^T", "P V"):
        use = round(n * k * (m + int(step.is8.sum())) / (SHAPE.units * rtl), 3)
    return {"step": name, "kind": kind, "rtl": rtl, "model": model, "array_use": use}


# ---- an image by the model --------------------------------------------------------------------------
def _image(sub: SubnetConfig) -> dict[str, Any]:
    """The model's cycles of every step of an image of ``sub`` (``rtl.model.image_cycles``), by kind."""
    cyc = image_cycles(sub, SHAPE, DDR)
    return {"cycles": cyc.total, "by_kind": cyc.by_kind, "fps": round(cyc.fps(CLOCK_MHZ), 1)}


def _explore(sub: SubnetConfig) -> dict[str, Any]:
    """The core the explorer picks for ``sub`` on the ZCU102 (``rtl.model.explore``: the fastest
    (R, T) whose resources by the model fit the board's caps)."""
    rep = explore(sub, load_platform("zcu102"))
    res = rep.resources
    return {
        "core": rep.shape.params(),
        "units": rep.shape.units,
        "cycles": rep.cycles,
        "fps": round(rep.fps, 1),
        "resources": {k: res.count(b) for k, b in _BOARD.items()},
        "percent": {k: round(res.percent(b), 1) for k, b in _BOARD.items()},
    }


_BOARD = {"lut": "lut", "ff": "ff", "dsp": "dsp", "bram36": "bram"}  # the resource model's names on the board


def _explored_markdown(explored: dict[str, dict[str, Any]]) -> str:
    lines = ["", "The explorer's core per point (ZCU102 caps; resources by the model, `rtl/resources.py`):", ""]
    lines += ["| subnet | R x T x KP | units | FPS (model) | LUT | DSP | BRAM36 |", "|---|---|---|---|---|---|---|"]
    for name, e in explored.items():
        c, p = e["core"], e["percent"]
        lines.append(
            f"| {name} | {c['R']} x {c['T']} x {c['KP']} | {e['units']} | {e['fps']} | {p['lut']} % | "
            f"{p['dsp']} % | {p['bram36']} % |"
        )
    return "\n".join(lines) + "\n"


def _markdown(rows: list[dict[str, Any]], images: dict[str, dict[str, Any]]) -> str:
    lines = []
    if rows:
        lines += ["| block 0 step | RTL cycles | model | model/RTL | array use |", "|---|---|---|---|---|"]
        for r in rows:
            use = "-" if r["array_use"] is None else f"{100 * r['array_use']:.1f} %"
            lines.append(f"| {r['step']} | {r['rtl']} | {r['model']} | {r['model'] / r['rtl']:.4f} | {use} |")
        total = sum(r["rtl"] for r in rows)
        lines += [f"| block 0 | {total} | {sum(r['model'] for r in rows)} | | |", ""]
    heads = [_HEADINGS.get(k, k) for k in _ORDER]
    lines += ["| subnet | image cycles (model) | FPS at 150 MHz | " + " | ".join(heads) + " |"]
    lines += ["|---|---|---|" + "---|" * len(_ORDER)]
    for name, im in images.items():
        shares = " | ".join(f"{100 * im['by_kind'].get(k, 0) / im['cycles']:.1f} %" for k in _ORDER)
        lines.append(f"| {name} | {im['cycles']} | {im['fps']} | {shares} |")
    return "\n".join(lines) + "\n"


_ORDER = ["linear", "LayerNorm", "Q K^T", "softmax", "P V"]
# the softmax step only launches its run; P V waits for what Q K^T of the next head did not hide
_HEADINGS = {"softmax": "softmax launch", "P V": "P V (with its wait for the softmax)"}


if __name__ == "__main__":
    main()
