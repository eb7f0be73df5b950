"""The whole method end to end (``quasar-vit demo``): train -> search -> export -> verify -> report.

Every stage writes its results to its own folder under ``out`` and is skipped when they are already
there, so an interrupted demo resumes stage by stage (training and search also resume inside the
stage).  The defaults are sized to finish in about 20 minutes on a 2-core CPU; they are arguments,
not constants, and the report states the budget that was used.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from quasar_vit.utils.io import atomic_write_json, atomic_write_text


@dataclass
class DemoSettings:
    config: str = "fmnist-tiny"
    platform: str = "zcu102"
    train_steps: int = 1200
    fps_targets: list[float] = field(default_factory=list)  # empty: three spread over the space's range
    population: int = 20
    generations: int = 6
    mutations: int = 10
    crossovers: int = 10
    parents: int = 6
    val_size: int = 2000
    verify_limit: int = 2000
    csim_limit: int = 100
    csim: bool = True
    seed: int = 0


STAGES = ("train", "search", "export", "verify", "csim", "report")


def _stage(i: int, name: str, say: Callable[[str], None]) -> float:
    say(f"\n[{i}/{len(STAGES)}] {name}")
    return time.time()


def run_demo(
    out: str | Path = "runs/demo",
    settings: DemoSettings | None = None,
    device: str | None = None,
    progress: bool = True,
    data_root: str | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) the demo in ``out``; returns the summary also written to ``out/demo.json``."""
    from quasar_vit.config import load_config

    s = settings or DemoSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "demo.json"
    summary: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if summary.get("settings") and summary["settings"] != asdict(s):
        from quasar_vit.errors import QuasarError

        changed = sorted(k for k, v in asdict(s).items() if summary["settings"].get(k) != v)
        raise QuasarError(
            f"{out} holds a demo run with other settings ({', '.join(changed)} differ); "
            "rerun with the same settings to resume it, or choose another --out"
        )
    summary["settings"] = asdict(s)
    timings = summary.setdefault("stage_seconds", {})

    overrides = [f"train.steps={s.train_steps}", f"train.seed={s.seed}"]
    if data_root:
        overrides.append(f"data.root={data_root}")
    search_overrides = [
        f"population={s.population}",
        f"generations={s.generations}",
        f"mutations={s.mutations}",
        f"crossovers={s.crossovers}",
        f"parents={min(s.parents, s.population)}",
        f"val_size={s.val_size}",
        f"seed={s.seed}",
    ]
    cfg = load_config(s.config, overrides + [f"search.{o}" for o in search_overrides])  # validates early

    # 1. train ------------------------------------------------------------------------------------
    train_dir = out / "train"
    t0 = _stage(1, f"train the {cfg.name} supernet ({s.train_steps} steps)", say)
    if (train_dir / "supernet.pt").is_file():
        say("  done before: skipped")
    else:
        from quasar_vit.training.trainer import train_supernet

        train_supernet(cfg, train_dir, resume=(train_dir / "last.pt").is_file(), device=device, progress=progress)
        timings["train"] = time.time() - t0
    summary["train"] = json.loads((train_dir / "final.json").read_text())
    atomic_write_json(summary_path, summary)

    # 2. search -----------------------------------------------------------------------------------
    search_dir = out / "search"
    t0 = _stage(2, f"search on {s.platform} (population {s.population}, {s.generations} generations)", say)
    pareto = search_dir / "pareto.json"
    if pareto.is_file() and json.loads(pareto.read_text()).get("complete"):
        say("  done before: skipped")
    else:
        from quasar_vit.search import run_search
        from quasar_vit.search.targets import Target

        targets = [Target.from_fps(f) for f in s.fps_targets] or None
        run_search(
            train_dir / "supernet.pt",
            search_dir,
            platform=s.platform,
            targets=targets,
            overrides=search_overrides,
            device=device,
            progress=progress,
            data_root=data_root,
        )
        timings["search"] = time.time() - t0
    result = json.loads(pareto.read_text())
    met = [t for t in result["targets"] if t["status"] == "met"]
    summary["targets"] = result["targets"]
    if not met:
        atomic_write_json(summary_path, summary)
        from quasar_vit.errors import HardwareError

        raise HardwareError(
            "the search met none of the targets: " + "; ".join(t.get("message", t["name"]) for t in result["targets"])
        )
    best = max(met, key=lambda t: (t["test_top1"] if t.get("test_top1") is not None else t["val_top1"], t["fps"]))
    summary["exported_target"] = best["name"]
    subnet_file = search_dir / f"subnet_{best['name']}.json"
    if not subnet_file.is_file():
        from quasar_vit.space import SubnetConfig

        SubnetConfig.from_dict(best["subnet"]).save(subnet_file)
    atomic_write_json(summary_path, summary)

    # 3. export -----------------------------------------------------------------------------------
    export_dir = out / "export"
    t0 = _stage(3, f"export the winner of target {best['name']} ({best['fps']:.0f} FPS predicted)", say)
    if (export_dir / "export.json").is_file():
        say("  done before: skipped")
    else:
        from quasar_vit.export import export_subnet

        export_subnet(train_dir / "supernet.pt", subnet_file, s.platform, export_dir, data_root=data_root)
        timings["export"] = time.time() - t0
    summary["export"] = json.loads((export_dir / "export.json").read_text()).get("evaluation")

    # 4. verify -----------------------------------------------------------------------------------
    t0 = _stage(4, f"verify with the NumPy integer engine ({s.verify_limit} test images)", say)
    if (export_dir / "verify.json").is_file():
        say("  done before: skipped")
        summary["verify"] = json.loads((export_dir / "verify.json").read_text())
    else:
        from quasar_vit.export import verify_export

        summary["verify"] = verify_export(export_dir, data_root=data_root, limit=s.verify_limit)
        timings["verify"] = time.time() - t0
    atomic_write_json(summary_path, summary)

    # 5. HLS C simulation ---------------------------------------------------------------------------
    t0 = _stage(5, f"HLS C++ generation and C simulation ({s.csim_limit} images)", say)
    csim_file = export_dir / "hls" / "csim.json"
    if not s.csim:
        say("  disabled (--no-csim)")
    elif csim_file.is_file():
        say("  done before: skipped")
        summary["csim"] = json.loads(csim_file.read_text())
    elif shutil.which("g++") is None:
        say("  g++ not found: skipped (install g++ to run the C simulation)")
        summary["csim"] = {"skipped": "g++ not found"}
    else:
        from quasar_vit.hls.csim import run_csim

        summary["csim"] = run_csim(export_dir, limit=s.csim_limit, data_root=data_root)
        atomic_write_json(csim_file, summary["csim"])
        timings["csim"] = time.time() - t0
    atomic_write_json(summary_path, summary)

    # 6. report -----------------------------------------------------------------------------------
    _stage(6, "report", say)
    report = write_demo_report(out, summary, result, cfg.name)
    summary["report"] = str(report)
    atomic_write_json(summary_path, summary)
    say(f"  {report}")
    return summary


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def write_demo_report(out: Path, summary: dict[str, Any], pareto: dict[str, Any], config_name: str) -> Path:
    """``out/report.md``: the Pareto plot and the table of chosen subnets, plus the export's checks."""
    s = summary["settings"]
    tr = summary.get("train", {})
    lines = [
        f"# quasar-vit demo: {config_name} on {s['platform']}",
        "",
        f"Supernet trained for {tr.get('steps')} steps ({_fmt(tr.get('train_seconds', 0) / 60, '.1f')} min): "
        f"largest subnet {_fmt(tr.get('test_top1_largest'))} % top-1, smallest "
        f"{_fmt(tr.get('test_top1_smallest'))} % (test split).",
        "",
        f"Search: population {s['population']}, {s['generations']} generations, "
        f"{pareto.get('evaluations')} candidates measured on {pareto.get('val_images')} validation images, "
        f"{_fmt(pareto.get('search_seconds'), '.0f')} s.",
        "",
    ]
    if (out / "search" / "pareto.png").is_file():
        lines += ["![accuracy vs FPS](search/pareto.png)", ""]
    lines += [
        "## Chosen subnets",
        "",
        "| target | FPS >= | status | predicted FPS | val % | test % | 8-bit rows | GMACs | weights KB | subnet |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in pareto["targets"]:
        if t["status"] == "met":
            lines.append(
                f"| {t['name']} | {t['target_fps']:.0f} | met | {t['fps']:.0f} | {_fmt(t['val_top1'])} | "
                f"{_fmt(t.get('test_top1'))} | {100 * t['share_8bit']:.0f} % | {t['gmacs']:.4f} | "
                f"{1000 * t['weight_mb']:.1f} | `{t['description']}` |"
            )
        else:
            lines.append(
                f"| {t['name']} | {t['target_fps']:.0f} | {t['status']} | - | - | - | - | - | - | "
                f"{t.get('message', '')} |"
            )
    ver = summary.get("verify", {}) or {}
    lines += [
        "",
        f"## Exported subnet (target {summary.get('exported_target')})",
        "",
        "Folder `export/`: `model.pt2`, `weights.npz`, `model.onnx`, `accelerator.json`, "
        "[`report.md`](export/report.md).",
        "",
        "| check | result |",
        "|---|---|",
    ]
    for k, v in sorted(ver.items()):
        if isinstance(v, (int, float, str, bool)):
            lines.append(f"| verify: {k} | {v} |")
    cs = summary.get("csim") or {}
    for k, v in sorted(cs.items()):
        if isinstance(v, (int, float, str, bool)):
            lines.append(f"| C simulation: {k} | {v} |")
    if isinstance(cs.get("cycles"), dict):
        from quasar_vit.hls.csim import cycles_markdown

        lines += ["", cycles_markdown(cs["cycles"]).replace("## ", "### ", 1).rstrip("\n")]
    lines += ["", "## Time per stage (this machine)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in summary.get("stage_seconds", {}).items()]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
