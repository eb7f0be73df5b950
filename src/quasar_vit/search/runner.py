"""``run_search``: supernet + held-out validation data + FPGA model -> subnets per latency target.

The glue between the torch-free evolution (:mod:`quasar_vit.search.evolution`), the trained
supernet (accuracy of a candidate = top-1 of the supernet with that subnet active on the
validation split held out from the training data at training time, never the test split) and the
hardware model (``explore``: the fastest accelerator design for the subnet that fits the board).

One run serves every target.  The front of everything measured is kept; per target the most
accurate measured subnet that meets it wins; the front members (winners included) are then scored
once each on the test split.  Baselines (``random``, ``uniform8``, ``uniform4``, ``fixed``) run
through the same code with the same budget and the same targets, each in ``DIR/baselines/MODE``.

Under ``torchrun`` every rank runs the same (seeded) evolution and measures a slice of each
generation's new candidates; results are all-gathered so every rank holds the same state, and only
rank 0 writes files.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from quasar_vit.errors import ConfigError, DataError, HardwareError
from quasar_vit.search.encoding import make_encoding, parse_mode
from quasar_vit.search.evolution import Candidate, Evaluator, Evolution, EvolutionResult, HardwareOracle, Settings
from quasar_vit.search.pareto import front_dominated, hypervolume, normalized_hypervolume
from quasar_vit.search.targets import Target, default_targets, fastest_fps, sort_targets
from quasar_vit.space import SearchSpace, SubnetConfig
from quasar_vit.utils.lock import locks_output

RESULT_FORMAT = "quasar-vit-search"


@dataclass
class ModeResult:
    """The outcome of one search mode (the main search or one baseline)."""

    mode: str
    evolution: EvolutionResult
    test_top1: dict[SubnetConfig, float]
    reports: dict[SubnetConfig, Any]
    hv_ref: tuple[float, float]
    max_fps: float
    state_dir: Path

    @property
    def front(self) -> list[Candidate]:
        return self.evolution.front

    @property
    def hypervolume(self) -> float:
        return hypervolume([c.objectives for c in self.front], self.hv_ref)

    @property
    def hypervolume_normalized(self) -> float:
        return normalized_hypervolume([c.objectives for c in self.front], self.hv_ref, self.max_fps)

    def _entry(self, c: Candidate) -> dict[str, Any]:
        rep = self.reports.get(c.subnet)
        d: dict[str, Any] = {
            "subnet": c.subnet.to_dict(),
            "description": c.subnet.describe(),
            "val_top1": c.val_top1,
            "test_top1": self.test_top1.get(c.subnet),
            "fps": c.fps,
            "latency_ms": c.latency_ms,
            "share_8bit": round(c.subnet.share_8bit(), 4),
            "gmacs": round(c.subnet.macs() / 1e9, 6),
            "weight_mb": round(c.subnet.weight_bytes() / 1e6, 6),
            "index": c.index,
            "generation": c.generation,
            "origin": c.origin,
        }
        if rep is not None and not isinstance(rep, str):
            d["resources"] = _as_dict(getattr(rep, "resources", None))
            d["design"] = _as_dict(getattr(rep, "design", None))
        return d

    def target_entries(self, all_targets: Sequence[Target]) -> list[dict[str, Any]]:
        out = []
        ev = self.evolution
        for t in all_targets:
            c = ev.best.get(t.name)
            e: dict[str, Any] = {"name": t.name, "target_fps": t.fps, "target_latency_ms": t.latency_ms}
            if c is not None:
                e.update(status="met", **self._entry(c))
            elif t.name in ev.unreachable:
                top = max([ev.unreachable[t.name]] + [r.fps for r in ev.records])
                e.update(
                    status="infeasible",
                    fastest_fps=top,
                    message=f"target {t.name} ({t.fps:.1f} FPS) is above the fastest FPS reachable "
                    f"in this space on the board ({top:.1f} FPS)",
                )
            else:
                fastest = max((r.fps for r in ev.records), default=0.0)
                e.update(
                    status="not_found",
                    fastest_fps=max(fastest, ev.fastest_fps),
                    message=f"no measured subnet met target {t.name} ({t.fps:.1f} FPS); the fastest "
                    f"measured reaches {fastest:.1f} FPS, the fastest in the space "
                    f"{ev.fastest_fps:.1f} FPS (a larger budget may find one)",
                )
            out.append(e)
        return out

    def to_dict(self, all_targets: Sequence[Target]) -> dict[str, Any]:
        ev = self.evolution
        return {
            "mode": self.mode,
            "evaluations": ev.evaluations,
            "budget": ev.budget,
            "generations": ev.generations_done,
            "complete": ev.complete,
            "search_seconds": round(ev.elapsed_s, 3),
            "stats": ev.stats.to_dict(),
            "fastest_fps": ev.fastest_fps,
            "hypervolume": self.hypervolume,
            "hypervolume_normalized": self.hypervolume_normalized,
            "targets": self.target_entries(all_targets),
            "front": [self._entry(c) for c in self.front],
            "measured": [[c.val_top1, c.fps] for c in ev.records if c.scored],
            "screened_out": [[c.screen_top1, c.fps] for c in ev.records if not c.scored],
        }


@dataclass
class SearchResult:
    out_dir: Path
    platform: str
    checkpoint: str
    targets: list[Target]
    main: ModeResult
    baselines: dict[str, ModeResult] = field(default_factory=dict)
    hv_ref: tuple[float, float] = (0.0, 0.0)
    max_fps: float = 0.0
    val_images: int = 0
    test_images: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def infeasible(self) -> dict[str, float]:
        """Target name -> fastest FPS reachable, for the targets the main search could not meet."""
        return {e["name"]: e["fastest_fps"] for e in self.main.target_entries(self.targets) if e["status"] != "met"}

    @property
    def winners(self) -> dict[str, Candidate | None]:
        return dict(self.main.evolution.best)

    def dominance(self) -> dict[str, dict[str, bool]]:
        """Per baseline: does its validation front dominate the main front, or the reverse?"""
        mine = [c.objectives for c in self.main.front]
        out = {}
        for m, r in self.baselines.items():
            theirs = [c.objectives for c in r.front]
            out[m] = {
                "dominates_main": front_dominated(mine, theirs),
                "dominated_by_main": front_dominated(theirs, mine),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        main = self.main.to_dict(self.targets)
        return {
            "format": RESULT_FORMAT,
            "version": 1,
            "platform": self.platform,
            "checkpoint": self.checkpoint,
            "mode": self.main.mode,
            "targets": main.pop("targets"),
            "front": main.pop("front"),
            "hypervolume_reference": {
                "val_top1": self.hv_ref[0],
                "fps": self.hv_ref[1],
                "max_fps": self.max_fps,
                "note": "accuracy = chance level, FPS = loosest target; normalised by "
                "the box up to 100 % and the fastest subnet's FPS",
            },
            "val_images": self.val_images,
            "test_images": self.test_images,
            "settings": self.settings,
            **main,
            "infeasible": self.infeasible,
            "baselines": {m: r.to_dict(self.targets) for m, r in self.baselines.items()},
            "dominance": self.dominance(),
            "files": self.files,
        }


def _as_dict(x: Any) -> Any:
    if x is None:
        return None
    if hasattr(x, "to_dict"):
        return x.to_dict()
    return x


def _apply_search_overrides(cfg, overrides: Sequence[str]):
    """``population=6`` or ``search.population=6`` -> a validated copy of ``cfg``."""
    if not overrides:
        return cfg
    from quasar_vit.config import apply_override, config_from_dict

    data = cfg.to_dict()
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("search."):
            if "." in key:
                raise ConfigError(f"override '{item}': only search.* settings can be changed for a search")
            item = "search." + item.strip()
        apply_override(data, item)
    return config_from_dict(data)


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def resolve_targets(
    targets: Sequence[Target] | None,
    cfg_fps: Sequence[float],
    space: SearchSpace,
    fps_of: Callable[[SubnetConfig], float],
) -> list[Target]:
    if targets:
        return sort_targets(targets)
    if cfg_fps:
        return sort_targets(Target.from_fps(f) for f in cfg_fps)
    slow, fast = fps_of(space.largest()), fastest_fps(space, fps_of)
    if not (slow > 0 and fast > 0):
        raise HardwareError("cannot place default targets: the largest or smallest subnet does not fit the board")
    return default_targets(min(slow, fast), max(slow, fast))


def search_splits(cfg: Any, val_size: int) -> tuple[Any, int]:
    """``(splits, n)``: the first ``n = min(val_size, data.val_size)`` images of the validation split
    held out at training time (``perm[:data.val_size]``, so never an image the supernet trained on),
    and the test split.  The one definition of the images a search scores candidates on.  JPEG
    evaluation crops come from the decoded-crop cache, so candidates do not decode images."""
    from quasar_vit.data import build_datasets

    if cfg.data.val_size <= 0:
        raise DataError(
            "the supernet was trained without a held-out validation split (data.val_size=0); "
            "search needs one: retrain with data.val_size > 0"
        )
    val_n = min(val_size, cfg.data.val_size)
    if val_n <= 0:
        raise ConfigError("search.val_size must be positive")
    dcfg = copy.deepcopy(cfg.data)
    dcfg.val_size = val_n
    splits = build_datasets(dcfg, cfg.model.img_size, cfg.model.in_chans, cfg.model.num_classes, seed=cfg.train.seed)
    # every candidate reads the same fixed crops: decode the JPEGs once into the crop cache
    # (a no-op for in-memory data sets and when QUASAR_VIT_CACHE=off; see quasar_vit.data.cache)
    from quasar_vit.data.cache import cached_eval_crops

    splits.val = cached_eval_crops(splits.val, f"val-seed{cfg.train.seed}")
    splits.test = cached_eval_crops(splits.test, "test")
    return splits, val_n


def racing_scorers(
    model: Any, val: Any, val_n: int, screen_size: int, tf: Any, device: Any, batch_size: int
) -> tuple[Callable[[SubnetConfig], float], Callable[[SubnetConfig], float] | None, int]:
    """``(full_fn, screen_fn, screen_n)``: top-1 of a subnet on the whole validation split, and on its
    first ``screen_n`` images (``None`` / 0 when racing is off).

    The full score of a screened subnet adds the screen's correct count to a count over the other
    images, so promoting a candidate costs ``val_n - screen_n`` images, not ``val_n``, and gives
    exactly the count a single pass over the split would.
    """
    from quasar_vit.data.datasets import subset
    from quasar_vit.training.evaluate import count_correct

    def correct(s: SubnetConfig, ds: Any) -> int:
        return count_correct(lambda x: model(x, s), ds, tf, device, batch_size)[0]

    if not 0 < screen_size < val_n:
        return (lambda s: 100.0 * correct(s, val) / val_n), None, 0
    head, tail = subset(val, range(screen_size)), subset(val, range(screen_size, val_n))
    screened: dict[SubnetConfig, int] = {}

    def screen_fn(s: SubnetConfig) -> float:
        screened[s] = correct(s, head)
        return 100.0 * screened[s] / screen_size

    def full_fn(s: SubnetConfig) -> float:
        first = screened.pop(s) if s in screened else correct(s, head)
        return 100.0 * (first + correct(s, tail)) / val_n

    return full_fn, screen_fn, screen_size


@locks_output("search", "out_dir")
def run_search(
    checkpoint: str | Path,
    out_dir: str | Path,
    platform: str | None = None,
    targets: Sequence[Target] | None = None,
    mode: str = "flexible",
    baselines: Sequence[str] = (),
    overrides: Sequence[str] = (),
    device: str | None = None,
    progress: bool = True,
    restart: bool = False,
    max_generations: int | None = None,
    data_root: str | None = None,
    test: bool = True,
    plot: bool = True,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Search ``checkpoint``'s supernet for the best subnet per target on ``platform``.

    ``overrides``: ``search.KEY=VALUE`` (or ``KEY=VALUE``) changes of the search settings stored in
    the checkpoint's config (population, generations, parents, mutations, crossovers,
    mutation_prob, tied_share_prob, tied_generations, share_mutation, max_retries, val_size,
    eval_batch_size, seed, platform, fps_targets).
    ``max_generations`` stops after that many generations (the state is kept for a later resume).
    A run finds its own saved state in ``out_dir`` and resumes it; ``restart`` discards it.
    """
    import torch

    from quasar_vit.data import BatchTransform
    from quasar_vit.hardware import explore, load_platform
    from quasar_vit.training.checkpoint import load_supernet
    from quasar_vit.training.distributed import barrier, init_distributed
    from quasar_vit.training.evaluate import evaluate_subnet

    info = init_distributed(device)
    say = log if log is not None else (print if info.is_main else (lambda s: None))
    modes = [parse_mode(mode)] + [parse_mode(b) for b in baselines]
    labels = []
    for name, share in modes:
        label = name if share is None else f"fixed:{share:g}"
        if label not in labels:
            labels.append(label)

    # ---- inputs (every mistake raises a QuasarError before any work) -------------------------------
    plat = load_platform(platform) if platform else None
    model, cfg, ckpt = load_supernet(checkpoint, info.device)
    cfg = _apply_search_overrides(cfg, overrides)
    if plat is None:
        plat = load_platform(cfg.search.platform)
    if data_root:
        cfg.data.root = data_root
    scfg = cfg.search
    settings = Settings.from_config(scfg)
    settings.validate()
    space = cfg.model.space()
    if settings.tied_generations >= settings.generations and "flexible" in labels:
        say(
            f"note: search.tied_generations ({settings.tied_generations}) >= search.generations "
            f"({settings.generations}): the flexible search keeps one 8-bit share for all layers throughout"
        )
    encodings = {lab: make_encoding(space, lab, scfg.tied_share_prob, scfg.share_mutation) for lab in labels}

    oracle = HardwareOracle(lambda s: explore(s, plat))
    all_targets = resolve_targets(targets, scfg.fps_targets, space, oracle.fps)
    fastest = fastest_fps(space, oracle.fps)
    if fastest <= 0:
        raise HardwareError(
            f"no accelerator design fits {plat.name} even for the smallest subnet: {oracle.report(space.smallest())}"
        )
    reachable = [t for t in all_targets if t.fps <= fastest * (1 + 1e-9)]
    if not reachable:
        names = ", ".join(f"{t.name} ({t.fps:.1f} FPS)" for t in all_targets)
        raise HardwareError(
            f"no target can be met on {plat.name}: {names}; the fastest subnet of the space "
            f"(the smallest) reaches {fastest:.1f} FPS"
        )
    for t in all_targets:
        if t not in reachable:
            say(
                f"target {t.name} ({t.fps:.1f} FPS) is infeasible on {plat.name}: the fastest subnet reaches "
                f"{fastest:.1f} FPS"
            )

    splits, val_n = search_splits(cfg, scfg.val_size)
    tf = BatchTransform.from_config(cfg.data, train=False)
    dev = info.device
    bs = scfg.eval_batch_size

    val_acc, screen_acc, screen_n = racing_scorers(model, splits.val, val_n, scfg.screen_size, tf, dev, bs)

    def test_acc(s: SubnetConfig) -> float:
        return evaluate_subnet(model, s, splits.test, tf, dev, bs, False)

    gather = None
    if info.enabled:
        import torch.distributed as dist

        def gather(obj: Any) -> list[Any]:
            out: list[Any] = [None] * info.world_size
            dist.all_gather_object(out, obj)
            return out

    val_eval = Evaluator(
        val_acc, info.rank, info.world_size, gather, screen_fn=screen_acc, screen_images=screen_n, full_images=val_n
    )
    test_eval = Evaluator(test_acc, info.rank, info.world_size, gather)

    out = Path(out_dir)
    ckpt_id = hashlib.sha256(json.dumps(ckpt["config"], sort_keys=True, default=str).encode()).hexdigest()[:16]
    extra = {
        "platform": plat.name,
        "val_images": val_n,
        "checkpoint_step": int(ckpt["step"]),
        "checkpoint_config": ckpt_id,
    }

    def mode_dir(label: str, first: bool) -> Path:
        return out if first else out / "baselines" / _slug(label)

    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if restart:
            for i, lab in enumerate(labels):
                d = mode_dir(lab, i == 0)
                for name in ("search_state.json", "history.jsonl"):
                    if (d / name).exists():
                        (d / name).unlink()
    barrier()

    hv_ref = (100.0 / cfg.model.num_classes, reachable[0].fps)
    results: dict[str, ModeResult] = {}
    torch.set_grad_enabled(False)
    try:
        for i, lab in enumerate(labels):
            enc = encodings[lab]
            d = mode_dir(lab, i == 0)
            mode_fastest = fastest_fps(enc.space, oracle.fps)
            evo = Evolution(
                enc,
                all_targets,
                val_eval,
                oracle,
                settings,
                state_path=d / "search_state.json",
                history_path=d / "history.jsonl",
                write=info.is_main,
                resume=True,
                progress=progress and info.is_main,
                fingerprint=extra,
                fastest_fps=mode_fastest,
            )
            if info.is_main and i > 0:
                d.mkdir(parents=True, exist_ok=True)
            res = evo.run(max_generations)
            results[lab] = ModeResult(lab, res, {}, {}, hv_ref, fastest, d)
    finally:
        torch.set_grad_enabled(True)

    # ---- test accuracy of the front members (winners included), once per distinct subnet ----------
    fronts = {c.subnet for r in results.values() for c in r.front}
    ordered = sorted(fronts, key=lambda s: json.dumps(s.to_dict(), sort_keys=True))
    if test and ordered:
        with torch.no_grad():
            accs = test_eval(ordered)
        tests = dict(zip(ordered, accs))
    else:
        tests = {}
    for r in results.values():
        r.test_top1 = {s: tests[s] for s in (c.subnet for c in r.front) if s in tests}
        r.reports = {c.subnet: oracle.report(c.subnet) for c in r.front}

    main_label = labels[0]
    result = SearchResult(
        out,
        plat.name,
        str(checkpoint),
        all_targets,
        results[main_label],
        {k: v for k, v in results.items() if k != main_label},
        hv_ref,
        fastest,
        val_n,
        len(splits.test),
        {**settings.to_dict(), "budget": settings.budget, "eval_batch_size": bs},
    )
    if info.is_main:
        write_outputs(result, plot=plot)
    barrier()
    return result


def write_outputs(result: SearchResult, plot: bool = True) -> None:
    """``pareto.json``, one subnet JSON per met target, ``pareto.png`` (rank 0 only)."""
    from quasar_vit.utils.io import atomic_write_json

    out = result.out_dir
    files: dict[str, str] = {"pareto": str(out / "pareto.json"), "history": str(out / "history.jsonl")}
    entries = result.main.target_entries(result.targets)
    current = {f"subnet_{_slug(e['name'])}.json" for e in entries if e["status"] == "met"}
    previous = out / "pareto.json"
    if previous.is_file():  # winners of an earlier run with other targets: only files that run wrote
        try:
            written = json.loads(previous.read_text()).get("files", {})
        except (json.JSONDecodeError, AttributeError):
            written = {}
        for key, name in written.items():
            old = Path(name)
            if (
                key.startswith("subnet_")
                and old.parent.resolve() == out.resolve()
                and old.name not in current
                and old.is_file()
            ):
                old.unlink()
    for e in entries:
        if e["status"] != "met":
            continue
        path = out / f"subnet_{_slug(e['name'])}.json"
        doc = {
            "target": {"name": e["name"], "fps": e["target_fps"], "latency_ms": e["target_latency_ms"]},
            "platform": result.platform,
            "checkpoint": result.checkpoint,
        }
        doc.update(
            {
                k: e.get(k)
                for k in (
                    "subnet",
                    "description",
                    "val_top1",
                    "test_top1",
                    "fps",
                    "latency_ms",
                    "share_8bit",
                    "gmacs",
                    "weight_mb",
                    "design",
                    "resources",
                )
            }
        )
        atomic_write_json(path, doc)
        files[f"subnet_{e['name']}"] = str(path)
    if plot:
        try:
            from quasar_vit.search.plot import plot_pareto

            plot_pareto(result.to_dict(), out / "pareto.png")
            files["plot"] = str(out / "pareto.png")
        except ImportError:  # pragma: no cover - matplotlib is a dependency, but keep results if absent
            pass
    result.files = files
    atomic_write_json(out / "pareto.json", result.to_dict())


__all__ = ["ModeResult", "SearchResult", "resolve_targets", "run_search", "search_splits", "write_outputs"]
