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
from quasar_vit.search.encoding import Encoding, make_encoding, parse_mode
from quasar_vit.search.evolution import Candidate, Evaluator, Evolution, EvolutionResult, HardwareOracle
from quasar_vit.search.pareto import front_dominated, hypervolume, normalized_hypervolume
from quasar_vit.search.state import evolution_settings
from quasar_vit.search.targets import Target, default_targets, fastest_fps, sort_targets
from quasar_vit.space import SearchSpace, SubnetConfig
from quasar_vit.utils.lock import output_lock

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


#: Settings outside ``search.*`` a search may change: they change which subnets are drawn, not weights.
SEARCH_MODEL_OVERRIDES = ("model.share_granularity",)


def _apply_search_overrides(cfg, overrides: Sequence[str]):
    """``population=6`` or ``search.population=6`` -> a validated copy of ``cfg``."""
    if not overrides:
        return cfg
    from quasar_vit.config import apply_override, config_from_dict

    data = cfg.to_dict()
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("search.") and key not in SEARCH_MODEL_OVERRIDES:
            if "." in key:
                raise ConfigError(
                    f"override '{item}': only search.* settings and {', '.join(SEARCH_MODEL_OVERRIDES)} "
                    "can be changed for a search"
                )
            item = "search." + item.strip()
        apply_override(data, item)
    return config_from_dict(data)


def settings_notes(scfg: Any, overrides: Sequence[str], labels: Sequence[str]) -> list[str]:
    """Notes on search settings a user may not expect: a coarse stage that takes every generation,
    and a setting left at a default that has since changed (a checkpoint keeps the config it was
    trained with) unless an override set it."""
    notes = []
    if scfg.tied_generations >= scfg.generations and "flexible" in labels:
        notes.append(
            f"note: search.tied_generations ({scfg.tied_generations}) >= search.generations "
            f"({scfg.generations}): the flexible search keeps one 8-bit share for all layers throughout"
        )
    overridden = {o.split("=", 1)[0].strip().removeprefix("search.") for o in overrides}
    for key, (value, now) in scfg.earlier_defaults_in_use().items():
        if key not in overridden:
            notes.append(
                f"note: the checkpoint's config sets search.{key}={value}, the default when it was trained; "
                f"the default is now {now} (--set search.{key}={now} to use it)"
            )
    return notes


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


def search_splits(cfg: Any, val_images: int) -> tuple[Any, int]:
    """``(splits, n)``: the first ``n = min(val_images, data.val_size)`` images of the validation split
    held out at training time (``perm[:data.val_size]``, so never an image the supernet trained on),
    and the test split.  The one definition of the images a search scores candidates on.  JPEG
    evaluation crops come from the decoded-crop cache, so candidates do not decode images."""
    from quasar_vit.data import build_datasets

    if cfg.data.val_size <= 0:
        raise DataError(
            "the supernet was trained without a held-out validation split (data.val_size=0); "
            "search needs one: retrain with data.val_size > 0"
        )
    val_n = min(val_images, cfg.data.val_size)
    if val_n <= 0:
        raise ConfigError("search.val_images must be positive")
    dcfg = copy.deepcopy(cfg.data)
    dcfg.val_size = val_n
    g = cfg.model.geometry
    splits = build_datasets(dcfg, g.img_size, g.in_chans, g.num_classes, seed=cfg.train.seed)
    # every candidate reads the same fixed crops: decode the JPEGs once into the crop cache
    # (a no-op for in-memory data sets and when QUASAR_VIT_CACHE=off; see quasar_vit.data.cache)
    from quasar_vit.data.cache import cached_eval_crops

    splits.val = cached_eval_crops(splits.val, f"val-seed{cfg.train.seed}")
    splits.test = cached_eval_crops(splits.test, "test")
    return splits, val_n


def validation_evaluator(
    model: Any,
    val: Any,
    val_n: int,
    screen_size: int,
    tf: Any,
    device: Any,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[Any], list[Any]] | None = None,
) -> Evaluator:
    """The :class:`Evaluator` of the search: top-1 of a subnet on the ``val_n`` validation images and,
    when racing (``0 < screen_size < val_n``), on their first ``screen_size`` (else no screen).

    The full score of a screened subnet adds the screen's correct count, read back from the
    evaluator's screen cache (shared by every rank, and restored on resume), to a count over the
    other images: promoting a candidate costs ``val_n - screen_size`` images, not ``val_n``, and gives
    exactly the count a single pass over the split would.  The screen also reports which of its
    images the subnet got right (:func:`~quasar_vit.search.evolution.pack_hits`, 125 bytes per
    1,000 images) for paired racing (``search.race_error``).

    Args:
        model: the supernet, called as ``model(x, subnet)``.
        val: the validation split (``val_n`` images).
        val_n: its size.
        screen_size: images of the racing screen (``search.screen_size``; 0 = no racing).
        tf: the evaluation batch transform.
        device: where to evaluate.
        batch_size: evaluation batch size.
        rank, world_size, gather: as for :class:`Evaluator` (``torchrun``).

    Returns:
        The evaluator; ``evaluator.can_screen`` says whether it races.
    """
    from quasar_vit.data.datasets import subset
    from quasar_vit.search.evolution import pack_hits
    from quasar_vit.training.evaluate import correct_flags, count_correct

    def correct(s: SubnetConfig, ds: Any) -> int:
        return count_correct(lambda x: model(x, s), ds, tf, device, batch_size)[0]

    dist: dict[str, Any] = dict(rank=rank, world_size=world_size, gather=gather, full_images=val_n)
    if not 0 < screen_size < val_n:
        return Evaluator(lambda s: 100.0 * correct(s, val) / val_n, **dist)
    head, tail = subset(val, range(screen_size)), subset(val, range(screen_size, val_n))

    def screen_fn(s: SubnetConfig) -> tuple[float, bytes]:
        hits = correct_flags(lambda x: model(x, s), head, tf, device, batch_size)
        return 100.0 * int(hits.sum()) / screen_size, pack_hits(hits.tolist())

    def full_fn(s: SubnetConfig) -> float:
        top1 = evaluator.screen_cache.get(s)  # the exact count back: top1 = 100 * count / screen_size
        first = correct(s, head) if top1 is None else round(top1 * screen_size / 100.0)
        return 100.0 * (first + correct(s, tail)) / val_n

    evaluator = Evaluator(full_fn, screen_fn=screen_fn, screen_images=screen_size, **dist)
    return evaluator


@dataclass
class SearchRequest:
    """One search: what to search and how to run it.  The search settings themselves
    (``search.*``: population, generations, ...) come from the checkpoint's config, changed by
    ``overrides``.

    Attributes:
        checkpoint: ``supernet.pt`` / ``last.pt``, or a training run directory.
        out_dir: output directory; a saved state there is resumed.
        platform: board preset or platform YAML (default: the config's ``search.platform``).
        targets: latency targets (default: ``search.fps_targets``, else three spread over the space).
        mode: the main search's mode (flexible, random, uniform8, uniform4, fixed, fixed:SHARE).
        baselines: more modes, run with the same budget and targets into ``out_dir/baselines/MODE``.
        overrides: ``search.KEY=VALUE`` (or ``KEY=VALUE``) changes of the search settings.
        device: torch device (default: picked per rank).
        progress: a progress bar per mode (rank 0).
        restart: discard a saved state instead of resuming it.
        max_generations: stop after that many generations (the state is kept for a later resume).
        data_root: replaces the data root stored in the checkpoint's config.
        test: score the front members on the test split.
        plot: draw ``pareto.png``.
        log: where messages go (default: print on rank 0).
    """

    checkpoint: str | Path
    out_dir: str | Path
    platform: str | None = None
    targets: Sequence[Target] | None = None
    mode: str = "flexible"
    baselines: Sequence[str] = ()
    overrides: Sequence[str] = ()
    device: str | None = None
    progress: bool = True
    restart: bool = False
    max_generations: int | None = None
    data_root: str | None = None
    test: bool = True
    plot: bool = True
    log: Callable[[str], None] | None = None

    def labels(self) -> list[str]:
        """The modes to run, the main one first, each once (``fixed:0.5`` for a fixed share)."""
        labels: list[str] = []
        for name, share in [parse_mode(self.mode)] + [parse_mode(b) for b in self.baselines]:
            label = name if share is None else f"fixed:{share:g}"
            if label not in labels:
                labels.append(label)
        return labels


@dataclass
class SearchSetup:
    """Everything :func:`prepare_search` checked and built before the first candidate is measured."""

    info: Any  # quasar_vit.training.distributed.DistInfo
    say: Callable[[str], None]
    out: Path
    labels: list[str]
    cfg: Any  # the checkpoint's ExperimentConfig with the overrides applied
    platform_name: str
    encodings: dict[str, Encoding]
    oracle: HardwareOracle
    targets: list[Target]  # every target, reachable or not
    fastest: float  # FPS of the fastest subnet of the space
    hv_ref: tuple[float, float]
    val_eval: Evaluator
    test_eval: Evaluator
    test_images: int
    fingerprint: dict[str, Any]  # what a saved state must also match: platform, data, checkpoint

    def mode_dir(self, label: str) -> Path:
        """The main search writes into ``out``, a baseline into ``out/baselines/MODE``."""
        return self.out if label == self.labels[0] else self.out / "baselines" / _slug(label)


def _load_inputs(req: SearchRequest, device: Any) -> tuple[Any, Any, dict[str, Any], Any]:
    """``(model, cfg, checkpoint dict, platform)``, the overrides applied and validated."""
    from quasar_vit.hardware import load_platform
    from quasar_vit.training.checkpoint import load_supernet

    plat = load_platform(req.platform) if req.platform else None
    model, cfg, ckpt = load_supernet(req.checkpoint, device)
    cfg = _apply_search_overrides(cfg, req.overrides)
    if plat is None:
        plat = load_platform(cfg.search.platform)
    if req.data_root:
        cfg.data.root = req.data_root
    cfg.search.validate()
    return model, cfg, ckpt, plat


def _check_targets(
    req: SearchRequest, cfg: Any, oracle: HardwareOracle, plat_name: str, say: Callable[[str], None]
) -> tuple[list[Target], float]:
    """``(targets, fastest FPS)``; raises when no design fits or no target can be met, and says which
    targets are above the fastest subnet."""
    space = cfg.model.space()
    all_targets = resolve_targets(req.targets, cfg.search.fps_targets, space, oracle.fps)
    fastest = fastest_fps(space, oracle.fps)
    if fastest <= 0:
        raise HardwareError(
            f"no accelerator design fits {plat_name} even for the smallest subnet: {oracle.report(space.smallest())}"
        )
    reachable = [t for t in all_targets if t.fps <= fastest * (1 + 1e-9)]
    if not reachable:
        names = ", ".join(f"{t.name} ({t.fps:.1f} FPS)" for t in all_targets)
        raise HardwareError(
            f"no target can be met on {plat_name}: {names}; the fastest subnet of the space "
            f"(the smallest) reaches {fastest:.1f} FPS"
        )
    for t in all_targets:
        if t not in reachable:
            say(
                f"target {t.name} ({t.fps:.1f} FPS) is infeasible on {plat_name}: the fastest subnet reaches "
                f"{fastest:.1f} FPS"
            )
    return all_targets, fastest


def _gather_fn(info: Any) -> Callable[[Any], list[Any]] | None:
    """``all_gather_object`` under ``torchrun``, None alone."""
    if not info.enabled:
        return None
    import torch.distributed as dist

    def gather(obj: Any) -> list[Any]:
        out: list[Any] = [None] * info.world_size
        dist.all_gather_object(out, obj)
        return out

    return gather


def _evaluators(model: Any, cfg: Any, info: Any) -> tuple[Evaluator, Evaluator, int, int]:
    """``(validation evaluator, test evaluator, validation images, test images)``."""
    from quasar_vit.data import BatchTransform
    from quasar_vit.training.evaluate import evaluate_subnet

    scfg = cfg.search
    splits, val_n = search_splits(cfg, scfg.val_images)
    tf = BatchTransform.from_config(cfg.data, train=False)
    dev, bs, gather = info.device, scfg.eval_batch_size, _gather_fn(info)
    dist: dict[str, Any] = dict(rank=info.rank, world_size=info.world_size, gather=gather)
    val_eval = validation_evaluator(model, splits.val, val_n, scfg.screen_size, tf, dev, bs, **dist)

    def test_acc(s: SubnetConfig) -> float:
        return evaluate_subnet(model, s, splits.test, tf, dev, bs, False)

    return val_eval, Evaluator(test_acc, **dist), val_n, len(splits.test)


def prepare_search(req: SearchRequest) -> SearchSetup:
    """Load, check and build everything the search needs: every user mistake raises a
    :class:`~quasar_vit.errors.QuasarError` here, before any candidate is measured.

    Args:
        req: the search request.

    Returns:
        The setup; the output directory exists (rank 0) and, with ``req.restart``, holds no state.
    """
    from quasar_vit.hardware import explore
    from quasar_vit.training.distributed import barrier, init_distributed

    info = init_distributed(req.device)
    say = req.log if req.log is not None else (print if info.is_main else (lambda s: None))
    labels = req.labels()
    model, cfg, ckpt, plat = _load_inputs(req, info.device)
    scfg, space = cfg.search, cfg.model.space()
    for note in settings_notes(scfg, req.overrides, labels):
        say(note)
    encodings = {lab: make_encoding(space, lab, scfg.tied_share_prob, scfg.share_mutation) for lab in labels}
    oracle = HardwareOracle(lambda s: explore(s, plat, nonlinear=cfg.model.nonlinear))
    all_targets, fastest = _check_targets(req, cfg, oracle, plat.name, say)
    val_eval, test_eval, val_n, test_n = _evaluators(model, cfg, info)
    ckpt_id = hashlib.sha256(json.dumps(ckpt["config"], sort_keys=True, default=str).encode()).hexdigest()[:16]
    extra = {"platform": plat.name, "val_images": val_n, "checkpoint_step": int(ckpt["step"])}
    extra["checkpoint_config"] = ckpt_id
    setup = SearchSetup(
        info=info,
        say=say,
        out=Path(req.out_dir),
        labels=labels,
        cfg=cfg,
        platform_name=plat.name,
        encodings=encodings,
        oracle=oracle,
        targets=all_targets,
        fastest=fastest,
        # accuracy = chance level, FPS = the loosest target (sorted first, and reachable)
        hv_ref=(100.0 / cfg.model.geometry.num_classes, all_targets[0].fps),
        val_eval=val_eval,
        test_eval=test_eval,
        test_images=test_n,
        fingerprint=extra,
    )
    _prepare_dirs(setup, req.restart)
    barrier()
    return setup


def _prepare_dirs(setup: SearchSetup, restart: bool) -> None:
    """Rank 0: create the output directory; ``restart`` deletes every mode's state and history."""
    if not setup.info.is_main:
        return
    setup.out.mkdir(parents=True, exist_ok=True)
    if restart:
        for lab in setup.labels:
            for name in ("search_state.json", "history.jsonl"):
                (setup.mode_dir(lab) / name).unlink(missing_ok=True)


def run_modes(setup: SearchSetup, req: SearchRequest) -> dict[str, ModeResult]:
    """Run (or resume) the main search and each baseline, in order, gradients off.

    Args:
        setup: from :func:`prepare_search`.
        req: the request (progress, max_generations).

    Returns:
        Mode label -> its result, test scores not yet filled in.
    """
    import torch

    from quasar_vit.search.progress import ProgressBar

    info, results = setup.info, {}
    with torch.inference_mode():
        for lab in setup.labels:
            enc, d = setup.encodings[lab], setup.mode_dir(lab)
            evo = Evolution(
                enc,
                setup.targets,
                setup.val_eval,
                setup.oracle,
                setup.cfg.search,
                state_path=d / "search_state.json",
                history_path=d / "history.jsonl",
                write=info.is_main,
                resume=True,
                progress=ProgressBar() if req.progress and info.is_main else None,
                fingerprint=setup.fingerprint,
                fastest_fps=fastest_fps(enc.space, setup.oracle.fps),
            )
            if info.is_main and d != setup.out:
                d.mkdir(parents=True, exist_ok=True)
            results[lab] = ModeResult(lab, evo.run(req.max_generations), {}, {}, setup.hv_ref, setup.fastest, d)
    return results


def score_fronts(setup: SearchSetup, results: dict[str, ModeResult], test: bool = True) -> None:
    """Fill in the test accuracy (``test``) and the hardware report of every front member, winners
    included: each distinct subnet is scored once, in a fixed order, on every rank.

    Args:
        setup: from :func:`prepare_search` (test evaluator, hardware oracle).
        results: from :func:`run_modes`; their ``test_top1`` and ``reports`` are set.
        test: False leaves the test scores out (faster; the fields stay empty).
    """
    import torch

    fronts = {c.subnet for r in results.values() for c in r.front}
    ordered = sorted(fronts, key=lambda s: json.dumps(s.to_dict(), sort_keys=True))
    tests: dict[SubnetConfig, float] = {}
    if test and ordered:
        with torch.inference_mode():
            tests = dict(zip(ordered, setup.test_eval(ordered)))
    for r in results.values():
        r.test_top1 = {s: tests[s] for s in (c.subnet for c in r.front) if s in tests}
        r.reports = {c.subnet: setup.oracle.report(c.subnet) for c in r.front}


def search_result(setup: SearchSetup, req: SearchRequest, results: dict[str, ModeResult]) -> SearchResult:
    """The :class:`SearchResult` of the modes' results.

    Args:
        setup: from :func:`prepare_search`.
        req: the request (its checkpoint is recorded).
        results: from :func:`run_modes`; the first label's is the main search.

    Returns:
        The result, with the evolution settings and budget recorded for ``pareto.json``.
    """
    scfg, main = setup.cfg.search, setup.labels[0]
    return SearchResult(
        setup.out,
        setup.platform_name,
        str(req.checkpoint),
        setup.targets,
        results[main],
        {k: v for k, v in results.items() if k != main},
        setup.hv_ref,
        setup.fastest,
        setup.fingerprint["val_images"],
        setup.test_images,
        {
            **evolution_settings(scfg),
            "tied_share_prob": scfg.tied_share_prob,
            "share_mutation": scfg.share_mutation,
            "fill_slack": scfg.fill_slack,
            "budget": scfg.budget,
            "eval_batch_size": scfg.eval_batch_size,
        },
    )


def run_search(request: SearchRequest) -> SearchResult:
    """Search the checkpoint's supernet for the most accurate subnet per latency target.

    Holds the lock of the output directory; resumes a saved state there unless
    ``request.restart``.  Under ``torchrun`` every rank calls it; only rank 0 writes files.

    Args:
        request: what to search and how (see :class:`SearchRequest`).

    Returns:
        The fronts, winners and baselines; also written to ``pareto.json`` and ``subnet_*.json``.
    """
    from quasar_vit.training.distributed import barrier

    with output_lock(request.out_dir, "search"):
        setup = prepare_search(request)
        results = run_modes(setup, request)
        score_fronts(setup, results, request.test)
        result = search_result(setup, request, results)
        if setup.info.is_main:
            write_outputs(result, plot=request.plot)
        barrier()
        return result


#: the entries of a target's winner copied into its ``subnet_NAME.json``
_WINNER_KEYS = (
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


def _remove_stale_winners(out: Path, current: set[str]) -> None:
    """Delete the winner files of an earlier run in ``out`` (other targets) that this run does not
    write again: only files that run listed in its ``pareto.json``, never a user's file."""
    previous = out / "pareto.json"
    if not previous.is_file():
        return
    try:
        written = json.loads(previous.read_text()).get("files", {})
    except (json.JSONDecodeError, AttributeError):
        written = {}
    for key, name in written.items():
        old = Path(name)
        if key.startswith("subnet_") and old.parent.resolve() == out.resolve() and old.name not in current:
            if old.is_file():
                old.unlink()


def write_outputs(result: SearchResult, plot: bool = True) -> None:
    """``pareto.json``, one subnet JSON per met target, ``pareto.png`` (rank 0 only).

    Args:
        result: the search result; its ``files`` are set to what was written.
        plot: draw ``pareto.png``.
    """
    from quasar_vit.utils.io import atomic_write_json

    out = result.out_dir
    files: dict[str, str] = {"pareto": str(out / "pareto.json"), "history": str(out / "history.jsonl")}
    entries = result.main.target_entries(result.targets)
    _remove_stale_winners(out, {f"subnet_{_slug(e['name'])}.json" for e in entries if e["status"] == "met"})
    for e in entries:
        if e["status"] != "met":
            continue
        path = out / f"subnet_{_slug(e['name'])}.json"
        doc: dict[str, Any] = {
            "target": {"name": e["name"], "fps": e["target_fps"], "latency_ms": e["target_latency_ms"]},
            "platform": result.platform,
            "checkpoint": result.checkpoint,
        }
        doc.update({k: e.get(k) for k in _WINNER_KEYS})
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


__all__ = [
    "ModeResult",
    "SearchRequest",
    "SearchResult",
    "SearchSetup",
    "prepare_search",
    "resolve_targets",
    "run_modes",
    "run_search",
    "score_fronts",
    "search_splits",
    "validation_evaluator",
    "write_outputs",
]
