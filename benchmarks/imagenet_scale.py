"""ImageNet-scale benchmark (issue 18, parts 4 and 5): what the 224 path costs on this machine.

Measures, on a synthetic ImageFolder of JPEGs 300-500 px on a side (built in --workdir):
1. loader speed: images/s of one worker process (decode + RandomResizedCrop for training, decode +
   resize 256 + centre crop 224 for evaluation), i.e. per loader worker on one core;
2. forward+backward seconds per image at batch 8 of one subnet pass inside the supernet (fake
   quantization, elastic slicing) against the same architecture as a plain FP32 torch model, for
   the largest and smallest subnets of ``imagenet-small`` (``--large``: also ``imagenet-large``);
3. peak memory per image of that step (RSS sampled during the step, minus RSS before it), and the
   activation bytes autograd saves for backward (counted exactly with saved-tensor hooks);
4. an *estimate* of GPU memory for batch 128: fp32 weights + grads + AdamW moments (16 bytes per
   parameter of the whole supernet) plus the saved activations scaled to 128 images in bf16
   (half the fp32 count; quantizer masks and softmax outputs make the real figure differ);
5. seconds per search candidate for 1,000 validation images at 224, decoding JPEGs per candidate
   (before) against reading the decoded-crop cache (after, :mod:`quasar_vit.data.cache`), measured on
   ``--val-images`` images and extrapolated linearly to 1,000 (stated in the output).

Usage:  python benchmarks/imagenet_scale.py [--quick] [--large]
Writes benchmarks/results/imagenet_scale.json and prints a Markdown table.  The machine is shared:
the load average is recorded next to the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS

from quasar_vit.config import QuantConfig, load_config
from quasar_vit.models import QuantViT
from quasar_vit.quantization import calibrate
from quasar_vit.supernet import build_supernet
from quasar_vit.utils.io import atomic_write_json

PAGE = os.sysconf("SC_PAGE_SIZE")


def write_folder(root: Path, per_class: int, classes: int = 4) -> Path:
    """A synthetic ImageFolder ``root/val/classK/*.jpg`` (kept between runs)."""
    from quasar_vit.data.synthetic import write_synthetic_imagefolder

    split = root / "val"
    if not (split.is_dir() and sum(1 for _ in split.rglob("*.jpg")) == per_class * classes):
        write_synthetic_imagefolder(root, {"val": per_class}, classes)
    return split


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: peaks then only show growth beyond earlier steps
        pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms by a thread."""

    def __enter__(self) -> "PeakRSS":
        _trim()  # hand freed heap back to the OS, or a second step would reuse it unseen
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def delta(self) -> int:
        return self.peak - self.base


def loader_rates(split: Path, n: int) -> dict[str, float]:
    """Images/s of one process: training crops (RandomResizedCrop) and evaluation crops."""
    from quasar_vit.data.decode import FolderCrops
    from quasar_vit.data.imagefolder import ImageFolderDataset

    parent = ImageFolderDataset(split, 224, 3)
    n = min(n, len(parent))
    out = {}
    for name, train in (("train_rrc", True), ("eval_center", False)):
        ds = FolderCrops(parent, list(range(n)), train=train, size=224)
        t = time.perf_counter()
        for i in range(n):
            ds[i]
        out[f"{name}_img_per_s"] = n / (time.perf_counter() - t)
    return out


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn`` runs (activation memory)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def step_costs(cfg, which: str, batch: int, reps: int) -> dict[str, float]:
    """Per-image forward+backward seconds and memory of subnet ``which`` (largest/smallest): one
    pass inside the supernet against the same architecture in plain FP32 torch."""
    torch.manual_seed(0)
    space = cfg.model.space()
    sub = space.largest() if which == "largest" else space.smallest()
    supernet = build_supernet(cfg.model, cfg.quant).train()
    fp32 = QuantViT(sub, QuantConfig(enabled=False), cfg.model.layer_scale).train()
    g = cfg.model.geometry
    x = torch.randn(batch, g.in_chans, g.img_size, g.img_size)
    y = torch.randint(0, g.num_classes, (batch,))
    runs = {
        "supernet": lambda: F.cross_entropy(supernet(x, sub), y).backward(),
        "fp32": lambda: F.cross_entropy(fp32(x), y).backward(),
    }
    calibrate(supernet, x[:1], sub)  # initialises the activation quantizers (not timed)
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, int] = {k: 0 for k in runs}
    for _ in range(reps):
        for name, fn in runs.items():  # interleaved: load changes hit both alike
            supernet.zero_grad(set_to_none=True)
            fp32.zero_grad(set_to_none=True)
            with PeakRSS() as mem:
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
            peaks[name] = max(peaks[name], mem.delta)
    saved = {
        k: _saved_bytes(lambda m=m: m(x, sub) if m is supernet else m(x))
        for k, m in (("supernet", supernet), ("fp32", fp32))
    }
    out: dict[str, float] = {
        "subnet_gmacs": sub.macs() / 1e9,
        "params_supernet": sum(p.numel() for p in supernet.parameters()),
        "params_subnet": sum(p.numel() for p in fp32.parameters()),
    }
    for k in runs:
        out[f"{k}_s_per_img"] = statistics.median(times[k]) / batch
        out[f"{k}_peak_mb_per_img"] = peaks[k] / batch / 1e6
        out[f"{k}_saved_act_mb_per_img"] = saved[k] / batch / 1e6
    out["ratio_supernet_over_fp32"] = out["supernet_s_per_img"] / out["fp32_s_per_img"]
    return out


def gpu_estimate_gb(params_supernet: int, saved_mb_per_img_fp32: float, batch: int = 128) -> dict[str, float]:
    """Estimate (not a measurement): 16 B/parameter for fp32 weights, grads and AdamW moments, plus
    the activations autograd saves, per image, halved for bf16 and scaled to ``batch``."""
    states = 16 * params_supernet / 1e9
    acts = saved_mb_per_img_fp32 * 0.5 * batch / 1e3
    return {"weights_grads_adamw_gb": states, "activations_bf16_gb": acts, "total_gb": states + acts}


def candidate_seconds(cfg, split: Path, n: int, cache_dir: Path, batch: int) -> dict[str, float]:
    """Seconds to score the smallest subnet on ``n`` validation crops, decoding each JPEG (before)
    and reading the crop cache (after); both extrapolated to 1,000 images."""
    from quasar_vit.data import BatchTransform
    from quasar_vit.data.cache import cached_eval_crops
    from quasar_vit.data.decode import FolderCrops
    from quasar_vit.data.imagefolder import ImageFolderDataset
    from quasar_vit.training.evaluate import count_correct

    parent = ImageFolderDataset(split, 224, 3)
    n = min(n, len(parent))
    plain = FolderCrops(parent, list(range(n)), train=False, size=224)
    for old in Path(cache_dir).glob("bench-*.npy"):  # time a real build, not a hit of an earlier run
        old.unlink()
    t = time.perf_counter()
    cached = cached_eval_crops(plain, "bench", cache_dir)
    build_s = time.perf_counter() - t
    model = build_supernet(cfg.model, cfg.quant).eval()
    sub = cfg.model.space().smallest()
    tf = BatchTransform.from_config(cfg.data, train=False)
    out = {"images_measured": n, "cache_build_s_per_1000": build_s * 1000 / n}
    with torch.no_grad():
        calibrate(model, torch.zeros(1, 3, 224, 224), sub)
        for name, ds in (("decode", plain), ("cache", cached)):
            t = time.perf_counter()
            for _ in iter_items(ds):
                pass
            data_s = time.perf_counter() - t
            t = time.perf_counter()
            count_correct(lambda v: model(v, sub), ds, tf, "cpu", batch)
            out[f"{name}_data_s_per_1000"] = data_s * 1000 / n
            out[f"{name}_candidate_s_per_1000"] = (time.perf_counter() - t) * 1000 / n
    return out


def iter_items(ds):
    for i in range(len(ds)):
        yield ds[i]


def table(res: dict) -> str:
    lines = ["| measure | value |", "|---|---|"]
    lo = res["loader"]
    lines += [
        f"| loader, train RandomResizedCrop (img/s per worker) | {lo['train_rrc_img_per_s']:.1f} |",
        f"| loader, eval resize+centre crop (img/s per worker) | {lo['eval_center_img_per_s']:.1f} |",
    ]
    for key, r in res["steps"].items():
        lines += [
            f"| {key}: supernet fwd+bwd (s/img, batch {res['batch']}) | {r['supernet_s_per_img']:.3f} |",
            f"| {key}: plain FP32 fwd+bwd (s/img) | {r['fp32_s_per_img']:.3f} |",
            f"| {key}: supernet / FP32 | {r['ratio_supernet_over_fp32']:.2f}x |",
            f"| {key}: peak RSS per image, supernet / FP32 (MB) | {r['supernet_peak_mb_per_img']:.0f} / "
            f"{r['fp32_peak_mb_per_img']:.0f} |",
            f"| {key}: saved activations per image, supernet / FP32 (MB) | "
            f"{r['supernet_saved_act_mb_per_img']:.0f} / {r['fp32_saved_act_mb_per_img']:.0f} |",
            f"| {key}: GPU memory at batch 128, bf16 (estimate, GB) | {r['gpu_estimate']['total_gb']:.1f} |",
        ]
    c = res["candidate"]
    lines += [
        f"| search candidate, 1,000 val images, decoding JPEGs (s, extrapolated from {c['images_measured']}) | "
        f"{c['decode_candidate_s_per_1000']:.1f} |",
        f"| search candidate, 1,000 val images, crop cache (s, extrapolated) | {c['cache_candidate_s_per_1000']:.1f} |",
        f"| data part only: decode / cache (s per 1,000) | {c['decode_data_s_per_1000']:.1f} / "
        f"{c['cache_data_s_per_1000']:.2f} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="runs/bench_imagenet_scale", help="synthetic JPEGs and the crop cache")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions per step (median)")
    ap.add_argument("--val-images", type=int, default=64, help="images timed per candidate (then x1000/n)")
    ap.add_argument("--loader-images", type=int, default=64)
    ap.add_argument("--large", action="store_true", help="also imagenet-large (slow on a CPU)")
    ap.add_argument("--quick", action="store_true", help="1 repetition, 16 images: a smoke run")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch threads (1: the per-core figure, steadier under load)"
    )
    ap.add_argument("--out", default=str(RESULTS / "imagenet_scale.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.val_images, args.loader_images = 1, 16, 16
    if args.batch < 1 or args.reps < 1 or args.val_images < 1 or args.loader_images < 1:
        print("error: --batch, --reps, --val-images and --loader-images must be positive", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(args.threads, os.cpu_count() or 1)))
    work = Path(args.workdir)
    split = write_folder(work / "data", per_class=max(args.val_images, args.loader_images) // 4 + 1)
    res: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "load_average_start": os.getloadavg(),
        },
        "batch": args.batch,
        "reps": args.reps,
        "img_size": 224,
    }
    res["loader"] = loader_rates(split, args.loader_images)
    print(f"loader: {res['loader']}", flush=True)
    res["steps"] = {}
    for name in ["imagenet-small"] + (["imagenet-large"] if args.large else []):
        cfg = load_config(name)
        for which in ("largest", "smallest"):
            r = step_costs(cfg, which, args.batch, args.reps)
            r["gpu_estimate"] = gpu_estimate_gb(int(r["params_supernet"]), r["supernet_saved_act_mb_per_img"])
            res["steps"][f"{name} {which}"] = r
            print(
                f"{name} {which}: {r['supernet_s_per_img']:.3f} s/img supernet, {r['fp32_s_per_img']:.3f} FP32",
                flush=True,
            )
            atomic_write_json(args.out, {**res, "partial": True})  # a long run keeps what it measured
    res["candidate"] = candidate_seconds(
        load_config("imagenet-small"), split, args.val_images, work / "crop_cache", batch=min(args.val_images, 50)
    )
    res["candidate"]["note"] = (
        f"measured on {res['candidate']['images_measured']} images, smallest subnet, scaled linearly to 1,000"
    )
    res["gpu_estimate_note"] = (
        "estimate: 16 B/parameter (fp32 weights, grads, AdamW m and v) of the whole "
        "supernet + autograd-saved activations of one subnet pass x 128 x 0.5 (bf16); "
        "the sandwich frees each pass before the next"
    )
    res["machine"]["load_average_end"] = os.getloadavg()
    print(table(res))
    atomic_write_json(args.out, res)
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
