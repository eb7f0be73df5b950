"""A head of attention on the simulated RTL core: Q K^T, the softmax and P V, all on chip.

The qkv layer (a kv layer) writes q into the activation memory and also fills the K memory and the
V^T memory.  Per head, Q K^T (mode 4) then takes K from the K memory and writes the scores to the
score memory; the softmax (mode 6, ``qv_sm_path``) turns the score memory's rows into the head's P
codes in the activation memory; and P V (mode 5) takes V^T from its memory and writes the
projection's input codes.  The stationary operands come from ``qv_kv_loader``, not from DDR.  The
scores must be the exact products of the engine's q and k codes, P the engine's probability codes
and P V its projection input, bit for bit, and every step must take the cycles the schedule model
predicts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from quasar_vit.errors import RtlError
from quasar_vit.quantization import intops
from quasar_vit.rtl.gemm import ATTENTION, MODE_PV, MODE_QK, Layer, run_layers
from quasar_vit.rtl.image import attention_steps, block_steps, head_order
from quasar_vit.rtl.layout import GemmShape
from quasar_vit.rtl.schedule import chain_cycles

DEMO = GemmShape(R=16, T=4, KP=8, WB=64, tiles_max=8, ch_max=128, wch_max=64)
ODD = GemmShape(R=8, T=6, KP=4, WB=32, tiles_max=6, ch_max=128, wch_max=16, rch_max=16)  # T not a multiple of R/2


def _attention_steps(ir, blk, n: int, heads: int | None = None) -> list[Layer]:
    """Block ``blk``'s qkv layer (kv), then Q K^T, the softmax and P V of its first ``heads`` heads."""
    qkv = Layer.from_ir(blk.qkv, blk.ops.qkv, ir.act_range_signed, kv=True)
    return [qkv, *attention_steps(ir, blk, n, heads)]


def _run_of(steps: list[Layer], runs: list, mode: int, head: int):
    """The run of ``head``'s step of ``mode`` (the heads' steps interleave: :func:`head_order`)."""
    return next(r for s, r in zip(steps, runs) if s.mode in ATTENTION and s.mode == mode and s.head == head)


def _check_cycles(shape: GemmShape, steps: list[Layer], n: int, chain) -> None:
    """Every step's cycles, and every softmax's background run, are the model's."""
    model = chain_cycles(shape, steps, n)
    assert [r.cycles for r in chain.layers] == model.steps
    assert chain.softmax_cycles == model.softmax


def test_exported_attention_on_chip(exported_trace, tmp_path: Path) -> None:
    """Block 0 of a trained export on two images: qkv, then every head's Q K^T, softmax and P V on
    chip, from the engine's qkv input codes to its projection input codes."""
    ir, trace, _ = exported_trace
    blk = ir.blocks[0]
    p, heads = "blocks.0", blk.heads
    for img in range(2):
        x = trace[f"{p}.qkv.in"][img].astype(np.int64)
        n = len(x)
        steps = _attention_steps(ir, blk, n)
        chain = run_layers(DEMO, steps, x, True, tmp_path / f"img{img}")
        q, k = (trace[f"{p}.{t}"][img].astype(np.int64) for t in "qk")
        for h in range(heads):
            np.testing.assert_array_equal(_run_of(steps, chain.layers, MODE_QK, h).codes, q[h] @ k[h].T)
        np.testing.assert_array_equal(chain.scores, q[-1] @ k[-1].T)  # the last head's, in the score memory
        want = trace[f"{p}.proj.in"][img].astype(np.int64)
        hd = blk.head_dim
        for h in range(heads):
            np.testing.assert_array_equal(
                _run_of(steps, chain.layers, MODE_PV, h).codes, want[:, h * hd : (h + 1) * hd]
            )
        np.testing.assert_array_equal(chain.act, want)  # the projection's input, read back from the memory
        _check_cycles(DEMO, steps, n, chain)
        assert not any(r.overrun for r in chain.layers)


def test_exported_blocks_on_chip(exported_trace, tmp_path: Path) -> None:
    """Blocks 0 and 1 of a trained export, each a chain of steps on the core with no host work in
    between: from the engine's residual codes at the block's input to those at its output, with the
    LayerNorms', the heads' and GELU's codes in between, bit for bit, in the predicted cycles."""
    ir, trace, _ = exported_trace
    for blk in ir.blocks[:2]:
        p, i = f"blocks.{blk.index}", blk.index
        r_in = trace["stem.res" if i == 0 else f"blocks.{i - 1}.res2"][0].astype(np.int64)
        n = len(r_in)
        steps = block_steps(ir, blk, n)
        none = np.zeros((n, 0), np.int64)
        chain = run_layers(DEMO, steps, none, True, tmp_path / p, residual=r_in)
        heads = blk.heads
        runs = chain.layers
        np.testing.assert_array_equal(runs[0].codes, trace[f"{p}.qkv.in"][0])
        pv = np.concatenate([_run_of(steps, runs, MODE_PV, h).codes for h in range(heads)], 1)
        np.testing.assert_array_equal(pv, trace[f"{p}.proj.in"][0])
        np.testing.assert_array_equal(runs[-3].codes, trace[f"{p}.fc1.in"][0])
        np.testing.assert_array_equal(chain.act, trace[f"{p}.fc2.in"][0])
        np.testing.assert_array_equal(chain.residual, trace[f"{p}.res2"][0])
        _check_cycles(DEMO, steps, n, chain)
        assert not any(r.overrun for r in runs)


def test_exported_softmax_codes(exported_trace, tmp_path: Path) -> None:
    """The P codes the softmax step writes for head 1 of block 0 are the engine's, bit for bit."""
    ir, trace, _ = exported_trace
    blk = ir.blocks[0]
    x = trace["blocks.0.qkv.in"][0].astype(np.int64)
    steps = _attention_steps(ir, blk, len(x), heads=2)[:-1]  # ... ending with head 1's softmax
    chain = run_layers(DEMO, steps, x, True, tmp_path)
    np.testing.assert_array_equal(chain.act, trace["blocks.0.attn"][0][1].astype(np.int64))


def test_random_attention_on_an_odd_core(tmp_path: Path) -> None:
    """Random weights on a core whose token tiles (T = 6) do not line up with its key tiles
    (R/2 = 4), with 8-bit and 4-bit rows in the qkv layer and a partial last key tile and word:
    the scores are q k^T, P is ``intops.softmax`` of them, and P V the requantised exact product."""
    rng = np.random.default_rng(5)
    n, e, heads = 23, 32, 2
    hd = e // heads
    x = rng.integers(-32, 32, (n, e))
    w = rng.integers(-8, 8, (3 * e, e))
    is8 = np.zeros(3 * e, bool)
    for t in range(3):  # each third: its leading rows 8-bit (a share that does not fill a tile)
        is8[t * e : t * e + 5] = True
    w[is8] = rng.integers(-128, 128, (int(is8.sum()), e))
    acc = x @ w.T
    shift = np.full(3 * e, 14)
    mult = np.full(3 * e, 3000)
    qkv_codes = np.clip((acc * mult + (1 << 13)) >> shift, -32, 31)
    qkv = Layer(w, is8, mult, np.full(3 * e, 1 << 13), shift, (-32, 31), kv=True)
    pv, sm = (1500, 1 << 11, 12), (9000, 15, 1 << 22)  # M, S, Qa: Qa for s_attn = 1/64
    make = {
        "qk": lambda i: Layer.scores(n, hd, i, heads),
        "sm": lambda i: Layer.softmax(n, i, heads, sm, 63),
        "pv": lambda i: Layer.attend(n, hd, i, heads, pv, (-32, 31)),
    }
    steps = [qkv, *(make[kind](i) for kind, i in head_order(heads))]
    chain = run_layers(ODD, steps, x, True, tmp_path)
    np.testing.assert_array_equal(chain.layers[0].codes, qkv_codes)
    q, k, v = (qkv_codes[:, t * e : (t + 1) * e].reshape(n, heads, hd).transpose(1, 0, 2) for t in range(3))
    for h in range(heads):
        scores = q[h] @ k[h].T
        np.testing.assert_array_equal(_run_of(steps, chain.layers, MODE_QK, h).codes, scores)
        probs = intops.softmax(scores, sm[0], sm[1], sm[2], 6, 63).astype(np.int64)
        assert 0 < probs.max() and len(np.unique(probs)) > 8  # the constants give a spread of codes
        want = np.clip((probs @ v[h] * pv[0] + pv[1]) >> pv[2], -32, 31)
        np.testing.assert_array_equal(_run_of(steps, chain.layers, MODE_PV, h).codes, want)
    _check_cycles(ODD, steps, n, chain)


def test_negative_scores_and_a_partial_key_tile(tmp_path: Path) -> None:
    """Every score negative (q = x, k = -x for positive codes x) and a last key tile of 3 keys out of
    4: the row maxima that Q K^T hands the softmax must ignore the tile's empty positions (a 0
    there would exceed every score), so the codes are intops.softmax's."""
    rng = np.random.default_rng(7)
    n, e = 23, 16
    x = rng.integers(20, 32, (n, e))  # every score below -6400: a maximum of 0 would push e far down
    eye = np.eye(e, dtype=np.int64)
    w = np.concatenate([eye, -eye, eye])  # q = x, k = -x, v = x
    one = np.ones(3 * e, np.int64)
    qkv = Layer(w, np.zeros(3 * e, bool), one, 0 * one, 0 * one, (-32, 31), kv=True)
    sm, pv = (13107, 17, 1 << 22), (1500, 1 << 11, 12)
    steps = [qkv, Layer.scores(n, e, 0, 1), Layer.softmax(n, 0, 1, sm, 63), Layer.attend(n, e, 0, 1, pv, (-32, 31))]
    chain = run_layers(ODD, steps, x, True, tmp_path)
    scores = -(x @ x.T)
    assert scores.max() < 0 and n % (ODD.R // 2)
    np.testing.assert_array_equal(chain.layers[1].codes, scores)
    probs = intops.softmax(scores.astype(np.float64), *sm, 6, 63).astype(np.int64)
    want = np.clip((probs @ x * pv[0] + pv[1]) >> pv[2], -32, 31)
    np.testing.assert_array_equal(chain.layers[3].codes, want)
    _check_cycles(ODD, steps, n, chain)


def test_attention_steps_refused_with_one_line(tmp_path: Path) -> None:
    x = np.zeros((8, 32), np.int64)
    with pytest.raises(RtlError, match="needs a kv layer before it"):
        run_layers(ODD, [Layer.scores(8, 16, 0, 2)], x, True, tmp_path)
    qkv = Layer(np.zeros((96, 32), np.int64), np.zeros(96, bool), *(np.ones(96, np.int64),) * 3, (-32, 31), kv=True)
    with pytest.raises(RtlError, match="do not fit the kv layer"):
        run_layers(ODD, [qkv, Layer.scores(8, 8, 0, 2)], x, True, tmp_path)
    with pytest.raises(RtlError, match="takes 9 keys; there are 8 tokens"):
        run_layers(ODD, [qkv, Layer.attend(9, 16, 1, 2, (1, 0, 0), (-32, 31))], x, True, tmp_path)
    with pytest.raises(RtlError, match="must come after its head's Q K\\^T"):
        run_layers(ODD, [qkv, Layer.softmax(8, 0, 2, (1, 1, 1), 63)], x, True, tmp_path)
    quarter = [Layer.scores(8, 8, h, 4) for h in (0, 2)]  # heads 0 and 2 of 4 share bank 0
    with pytest.raises(RtlError, match="must come after its head's Q K\\^T"):  # head 2's went between
        run_layers(ODD, [qkv, *quarter, Layer.softmax(8, 0, 4, (1, 1, 1), 63)], x, True, tmp_path)
    qk0, qk1 = (Layer.scores(8, 16, h, 2) for h in (0, 1))
    sm0 = Layer.softmax(8, 0, 2, (1, 1, 1), 63)
    with pytest.raises(RtlError, match="finds its own row maxima runs alone"):
        run_layers(ODD, [qkv, qk0, dataclasses.replace(sm0, maxima=False), qk1], x, True, tmp_path)
    with pytest.raises(RtlError, match="would overwrite the scores the softmax of head 0 still reads"):
        run_layers(ODD, [qkv, qk0, sm0, qk1, qk0], x, True, tmp_path)
    with pytest.raises(RtlError, match="only Q K\\^T and P V steps may follow a softmax"):
        lin = Layer(np.zeros((8, 96), np.int64), np.zeros(8, bool), *(np.ones(8, np.int64),) * 3, (-32, 31))
        run_layers(ODD, [qkv, qk0, sm0, lin], x, True, tmp_path)
    with pytest.raises(RtlError, match="a kv layer writes codes in thirds"):
        run_layers(ODD, [dataclasses.replace(qkv, w_int=np.zeros((90, 32), np.int64))], x, True, tmp_path)
