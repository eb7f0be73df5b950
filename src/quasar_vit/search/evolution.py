"""The evolutionary search loop (paper section 3), torch-free, with injected accuracy and latency.

``accuracy_fn(subnet) -> top-1 %`` and ``latency_fn(subnet) -> report`` (anything with ``.fps`` and
``.latency_ms``; raising :class:`~quasar_vit.errors.HardwareError` when no design fits) are passed in,
so the loop is unit-testable with stubs and the runner plugs in the supernet and the FPGA model.

Algorithm (AutoFormer's schedule, Quasar-ViT's constraints):

* generation 0: ``population`` random feasible subnets;
* generations 1 .. G-1: ``mutations`` children by per-layer mutation of a random parent and
  ``crossovers`` children by uniform crossover of two random parents (``random`` mode: the same
  number of fresh random samples instead -- random search with the same evaluation budget);
* coarse-to-fine (``tied_generations`` = T > 0, flexible encodings only): generations 0 .. T-1
  draw, mutate and cross with one 8-bit share tied across the layers -- the fixed-ratio search,
  which settles the architecture in a space 5**depth times smaller -- and generations T .. G-1
  continue from those parents with a share per layer.  The budget is unchanged;
* a child is *feasible* if it lies in the encoding's space, some accelerator design fits the board,
  and its FPS is at least the loosest (lowest-FPS) target; infeasible children are rejected
  **before** their accuracy is measured.  A child already measured (or already drawn this
  generation) is a duplicate and is redrawn too.  Each child gets at most ``max_retries`` draws;
  a slot whose draws all fail stays empty;
* parent selection for several targets: the union, over the targets, of the ``parents`` most
  accurate measured subnets meeting that target (deduplicated, loosest target first).  With one
  target this is AutoFormer's top-k; with several, each target keeps its own elite, so the search
  is not pulled only towards the loosest target.

* racing (``screen_size`` > 0, with an evaluator that can screen): each new candidate is scored
  first on the first ``screen_size`` validation images (the same images for all: paired).  It is
  scored on the whole split only if it could still enter the top-``parents`` of a target it meets:
  screen score + ``race_z`` standard errors >= the ``parents``-th best full score there (or fewer
  than ``parents`` are fully scored).  Parents, winners and the front use full scores only, so
  every pick is made on the whole split; the screen only decides what is worth scoring on it.

Budget: ``population + (generations - 1) * (mutations + crossovers)`` candidates at most.  State (measured candidates and the RNG state) is written atomically after every
generation, so an interrupted run resumes exactly where it stopped and ends with the same result as
an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from quasar_vit.config import SearchConfig
from quasar_vit.errors import HardwareError, QuasarError
from quasar_vit.search.encoding import Encoding
from quasar_vit.search.pareto import best_meeting, pareto_front
from quasar_vit.search.targets import Target
from quasar_vit.space import SubnetConfig

STATE_FORMAT = "quasar-vit-search-state"
STATE_VERSION = 1


#: fingerprint entries whose neutral value equals "absent": a state saved before the option existed
#: ran without it, so it still resumes
_NEUTRAL = {"tied_share_prob": 0.0, "tied_generations": 0, "share_mutation": "uniform", "screen_size": 0}


def _comparable(fingerprint: Any) -> Any:
    """A JSON round trip of ``fingerprint`` without the options left at their neutral value."""
    fp = json.loads(json.dumps(fingerprint))
    if isinstance(fp, dict):
        fp = {k: v for k, v in fp.items() if not (k in _NEUTRAL and v == _NEUTRAL[k])}
    return fp


class SearchStateError(QuasarError):
    """A saved search state that cannot be resumed (different settings, corrupt file)."""


class LatencyReport(Protocol):  # pragma: no cover - typing only
    fps: float
    latency_ms: float


_DEFAULTS = SearchConfig()  # one source of truth for the defaults: the config dataclass


@dataclass
class Settings:
    """Evolution hyper-parameters (a subset of :class:`quasar_vit.config.SearchConfig`)."""

    population: int = _DEFAULTS.population
    generations: int = _DEFAULTS.generations
    parents: int = _DEFAULTS.parents
    mutations: int = _DEFAULTS.mutations
    crossovers: int = _DEFAULTS.crossovers
    mutation_prob: float = _DEFAULTS.mutation_prob
    tied_generations: int = _DEFAULTS.tied_generations
    max_retries: int = _DEFAULTS.max_retries
    seed: int = _DEFAULTS.seed
    screen_size: int = 0  # racing off unless asked for (the runner passes search.screen_size)
    race_z: float = _DEFAULTS.race_z

    @classmethod
    def from_config(cls, cfg: Any) -> "Settings":
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__})

    def validate(self) -> None:
        for k in ("population", "generations", "parents", "max_retries"):
            if getattr(self, k) < 1:
                raise QuasarError(f"search.{k} must be >= 1, got {getattr(self, k)}")
        for k in ("mutations", "crossovers", "tied_generations"):
            if getattr(self, k) < 0:
                raise QuasarError(f"search.{k} must be >= 0, got {getattr(self, k)}")
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise QuasarError("search.mutation_prob must lie in [0, 1]")
        if self.screen_size < 0 or self.race_z < 0:
            raise QuasarError("search.screen_size and search.race_z must be >= 0")

    @property
    def budget(self) -> int:
        """Most accuracy evaluations a run makes."""
        return self.population + (self.generations - 1) * (self.mutations + self.crossovers)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Candidate:
    """One measured subnet.  ``val_top1`` is on the whole validation split, ``None`` when racing
    screened it out (then only ``screen_top1``, on the screen images, is known)."""

    index: int
    generation: int
    origin: str
    subnet: SubnetConfig
    val_top1: float | None
    fps: float
    latency_ms: float
    screen_top1: float | None = None

    @property
    def scored(self) -> bool:
        """Scored on the whole split: may be a parent, a winner or on the front."""
        return self.val_top1 is not None

    @property
    def objectives(self) -> tuple[float, float]:
        if self.val_top1 is None:
            raise ValueError(f"candidate {self.index} was screened out: it has no full validation score")
        return (self.val_top1, self.fps)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "index": self.index,
            "generation": self.generation,
            "origin": self.origin,
            "subnet": self.subnet.to_dict(),
            "val_top1": self.val_top1,
            "fps": self.fps,
            "latency_ms": self.latency_ms,
        }
        if self.screen_top1 is not None:
            d["screen_top1"] = self.screen_top1
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        opt = lambda k: None if d.get(k) is None else float(d[k])  # noqa: E731
        return cls(
            int(d["index"]),
            int(d["generation"]),
            str(d["origin"]),
            SubnetConfig.from_dict(d["subnet"]),
            opt("val_top1"),
            float(d["fps"]),
            float(d["latency_ms"]),
            opt("screen_top1"),
        )


class Evaluator:
    """Measures the accuracy of a list of subnets, once per distinct subnet (cached).

    ``accuracy_fn`` scores on the whole validation split; ``screen_fn`` (optional, for racing) on
    its first ``screen_images`` images out of ``full_images``.  With ``world_size > 1`` every rank
    measures the slice ``todo[rank::world_size]`` of the not-yet-cached subnets and
    ``gather(obj) -> [obj of rank 0, obj of rank 1, ...]`` (e.g. ``torch.distributed.all_gather_object``)
    shares the results, so every rank ends with the same cache.  Every rank must call it with the
    same list.
    """

    def __init__(
        self,
        accuracy_fn: Callable[[SubnetConfig], float],
        rank: int = 0,
        world_size: int = 1,
        gather: Callable[[Any], list[Any]] | None = None,
        screen_fn: Callable[[SubnetConfig], float] | None = None,
        screen_images: int = 0,
        full_images: int = 0,
    ) -> None:
        if world_size > 1 and gather is None:
            raise ValueError("a gather function is needed for world_size > 1")
        self.accuracy_fn, self.screen_fn = accuracy_fn, screen_fn
        self.screen_images, self.full_images = screen_images, full_images
        self.rank, self.world_size, self.gather = rank, world_size, gather
        self.cache: dict[SubnetConfig, float] = {}
        self.screen_cache: dict[SubnetConfig, float] = {}
        self.calls = 0  # accuracy_fn calls on this rank
        self.screen_calls = 0

    @property
    def can_screen(self) -> bool:
        return self.screen_fn is not None and 0 < self.screen_images < self.full_images

    def __call__(self, subnets: Sequence[SubnetConfig]) -> list[float]:
        self.calls += self._measure(self.accuracy_fn, self.cache, subnets)
        return [self.cache[s] for s in subnets]

    def screen(self, subnets: Sequence[SubnetConfig]) -> list[float]:
        """Top-1 on the screen images (see :attr:`can_screen`)."""
        assert self.screen_fn is not None
        self.screen_calls += self._measure(self.screen_fn, self.screen_cache, subnets)
        return [self.screen_cache[s] for s in subnets]

    def screen_error(self, top1: float) -> float:
        """Standard error (points) of a screen score as an estimate of the full score: a sample of
        ``screen_images`` drawn without replacement from ``full_images`` (binomial, with the
        finite-population factor; p kept off 0 and 1 so a perfect screen still has a margin)."""
        p = min(max(top1 / 100.0, 0.02), 0.98)
        n, big_n = self.screen_images, self.full_images
        return 100.0 * math.sqrt(p * (1 - p) / n * (1 - n / big_n))

    def _measure(
        self, fn: Callable[[SubnetConfig], float], cache: dict[SubnetConfig, float], subnets: Sequence[SubnetConfig]
    ) -> int:
        todo = [s for s in dict.fromkeys(subnets) if s not in cache]
        if not todo:
            return 0
        local = [(i, float(fn(todo[i]))) for i in range(self.rank, len(todo), self.world_size)]
        parts = self.gather(local) if self.world_size > 1 else [local]  # type: ignore[misc]
        for part in parts:
            for i, acc in part:
                cache[todo[i]] = float(acc)
        return len(local)


class HardwareOracle:
    """Caches ``latency_fn`` per subnet and decides feasibility against a minimum FPS."""

    def __init__(self, latency_fn: Callable[[SubnetConfig], Any]) -> None:
        self.latency_fn = latency_fn
        self.cache: dict[SubnetConfig, Any] = {}  # report, or the HardwareError message (str)

    def report(self, subnet: SubnetConfig) -> Any:
        """The report, or a string saying why no design fits."""
        if subnet not in self.cache:
            try:
                self.cache[subnet] = self.latency_fn(subnet)
            except HardwareError as exc:
                self.cache[subnet] = str(exc) or "no design fits"
        return self.cache[subnet]

    def fps(self, subnet: SubnetConfig) -> float:
        rep = self.report(subnet)
        return 0.0 if isinstance(rep, str) else float(rep.fps)


@dataclass
class Stats:
    draws: int = 0
    duplicates: int = 0
    rejected_no_fit: int = 0
    rejected_too_slow: int = 0
    rejected_outside: int = 0
    empty_slots: int = 0
    screened_out: int = 0  # racing: candidates scored on the screen images only

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class EvolutionResult:
    mode: str
    targets: list[Target]  # the targets searched (reachable in this mode)
    unreachable: dict[str, float]  # target name -> fastest FPS of this mode (above it)
    fastest_fps: float
    records: list[Candidate]
    front: list[Candidate]
    best: dict[str, Candidate | None]  # target name -> winner (None: not met)
    stats: Stats
    generations_done: int
    complete: bool
    elapsed_s: float
    budget: int

    @property
    def evaluations(self) -> int:
        return len(self.records)


class Evolution:
    """One search (one mode) over ``encoding`` for ``targets``; see the module docstring."""

    def __init__(
        self,
        encoding: Encoding,
        targets: Sequence[Target],
        accuracy: Callable[[SubnetConfig], float] | Evaluator,
        latency_fn: Callable[[SubnetConfig], Any] | HardwareOracle,
        settings: Settings,
        *,
        state_path: str | Path | None = None,
        history_path: str | Path | None = None,
        write: bool = True,
        resume: bool = True,
        progress: bool = False,
        callback: Callable[[int, "Evolution"], None] | None = None,
        fingerprint: dict[str, Any] | None = None,
        random_search: bool | None = None,
        fastest_fps: float | None = None,
    ) -> None:
        settings.validate()
        if not targets:
            raise QuasarError("the search needs at least one latency target")
        self.encoding = encoding
        self.settings = settings
        self.evaluator = accuracy if isinstance(accuracy, Evaluator) else Evaluator(accuracy)
        self.oracle = latency_fn if isinstance(latency_fn, HardwareOracle) else HardwareOracle(latency_fn)
        self.random_search = (encoding.mode == "random") if random_search is None else random_search
        self.state_path = Path(state_path) if state_path else None
        self.history_path = Path(history_path) if history_path else None
        self.write, self.resume, self.progress, self.callback = write, resume, progress, callback
        self.all_targets = sorted(targets, key=lambda t: t.fps)
        # the fastest subnet of this encoding bounds which targets can be met at all
        if fastest_fps is None:
            from quasar_vit.search.targets import fastest_fps as _fastest

            fastest_fps = _fastest(encoding.space, self.oracle.fps)
        self.fastest_fps = float(fastest_fps)
        self.targets = [t for t in self.all_targets if t.fps <= self.fastest_fps * (1 + 1e-9)]
        self.unreachable = {t.name: self.fastest_fps for t in self.all_targets if t not in self.targets}
        self.min_fps = self.targets[0].fps if self.targets else math.inf
        # the share options act only where shares are per layer and children come from parents
        bred_per_layer = not (encoding.tie_shares or self.random_search)
        self.tied_generations = settings.tied_generations if bred_per_layer else 0
        self._tied_encoding = replace(encoding, tie_shares=True, tied_share_prob=0.0)
        self.racing = settings.screen_size > 0 and self.evaluator.can_screen
        settings_fp = settings.to_dict()
        settings_fp.pop("tied_generations")  # recorded at the top level, as the value in effect
        for k in ("screen_size", "race_z"):  # top level too, so that a state saved before racing resumes
            settings_fp.pop(k)
        self.fingerprint = {
            "mode": encoding.mode,
            "space": encoding.space.to_dict(),
            "tie_shares": encoding.tie_shares,
            "tied_share_prob": encoding.tied_share_prob,
            "tied_generations": self.tied_generations,
            "share_mutation": encoding.share_mutation if bred_per_layer else "uniform",
            "random_search": self.random_search,
            "targets": [t.to_dict() for t in self.all_targets],
            "settings": settings_fp,
            **(fingerprint or {}),
            **({"screen_size": self.evaluator.screen_images, "race_z": settings.race_z} if self.racing else {}),
        }
        self.rng = random.Random(settings.seed)
        self.records: list[Candidate] = []
        self.by_subnet: dict[SubnetConfig, Candidate] = {}
        self.stats = Stats()
        self.generation = 0  # next generation to run
        self.elapsed = 0.0

    # ---- feasibility and drawing ----------------------------------------------------------------
    def encoding_at(self, gen: int) -> Encoding:
        """The operators of generation ``gen``: tied shares during the coarse stage, else the encoding."""
        return self._tied_encoding if gen < self.tied_generations else self.encoding

    def feasible(self, subnet: SubnetConfig, encoding: Encoding | None = None) -> tuple[bool, str]:
        if not (encoding or self.encoding).contains(subnet):
            return False, "outside"
        rep = self.oracle.report(subnet)
        if isinstance(rep, str):
            return False, "no_fit"
        if rep.fps < self.min_fps:
            return False, "too_slow"
        return True, ""

    def _draw(
        self, make: Callable[[], SubnetConfig], pending: dict[SubnetConfig, str], encoding: Encoding | None = None
    ) -> SubnetConfig | None:
        for _ in range(self.settings.max_retries):
            sub = make()
            self.stats.draws += 1
            if sub in self.by_subnet or sub in pending:
                self.stats.duplicates += 1
                continue
            ok, why = self.feasible(sub, encoding)
            if not ok:
                setattr(self.stats, f"rejected_{why}", getattr(self.stats, f"rejected_{why}") + 1)
                continue
            return sub
        self.stats.empty_slots += 1
        return None

    def parents(self) -> list[Candidate]:
        """Union over targets of the top-``parents`` measured subnets meeting each target."""
        out: dict[SubnetConfig, Candidate] = {}
        k = self.settings.parents
        for t in self.targets:
            for c in self._top(t.fps, k):
                out.setdefault(c.subnet, c)
        return list(out.values())

    def _top(self, fps: float, k: int) -> list[Candidate]:
        """The ``k`` best fully scored candidates reaching ``fps``."""
        meeting = [c for c in self.records if c.scored and c.fps >= fps]
        meeting.sort(key=lambda c: (-c.val_top1, -c.fps, c.index))  # type: ignore[operator]
        return meeting[:k]

    def _race_cutoffs(self) -> list[tuple[float, float]]:
        """``(target fps, score to reach)`` per target, fixed while a generation is screened: the
        ``parents``-th best full score there, or -inf while fewer than ``parents`` are scored."""
        k = self.settings.parents
        out = []
        for t in self.targets:
            top = self._top(t.fps, k)
            out.append((t.fps, top[-1].val_top1 if len(top) >= k else -math.inf))  # type: ignore[misc]
        return out

    def _worth_full_score(self, sub: SubnetConfig, screen_top1: float, cutoffs: list[tuple[float, float]]) -> bool:
        """Racing: could ``sub`` still enter the top-``parents`` of a target it meets?"""
        fps = self.oracle.fps(sub)
        margin = self.settings.race_z * self.evaluator.screen_error(screen_top1)
        return any(fps >= t_fps and screen_top1 + margin >= cut for t_fps, cut in cutoffs)

    def _score(self, subs: list[SubnetConfig]) -> dict[SubnetConfig, tuple[float | None, float | None]]:
        """``subnet -> (val_top1 or None, screen_top1 or None)`` for this generation's children."""
        if not self.racing:
            return {s: (a, None) for s, a in zip(subs, self.evaluator(subs))}
        screens = dict(zip(subs, self.evaluator.screen(subs)))
        cutoffs = self._race_cutoffs()
        worth = [s for s in subs if self._worth_full_score(s, screens[s], cutoffs)]
        full = dict(zip(worth, self.evaluator(worth)))
        self.stats.screened_out += len(subs) - len(worth)
        return {s: (full.get(s), screens[s]) for s in subs}

    def _children(self, gen: int) -> dict[SubnetConfig, str]:
        pending: dict[SubnetConfig, str] = {}
        s, rng, enc = self.settings, self.rng, self.encoding_at(gen)
        parents = [] if (gen == 0 or self.random_search) else [c.subnet for c in self.parents()]
        if not parents:
            n = s.population if gen == 0 else s.mutations + s.crossovers
            origin = "init" if gen == 0 else "random"
            for _ in range(n):
                sub = self._draw(lambda: enc.sample(rng), pending, enc)
                if sub is not None:
                    pending[sub] = origin
            return pending
        for _ in range(s.mutations):
            sub = self._draw(lambda: enc.mutate(rng.choice(parents), rng, s.mutation_prob), pending, enc)
            if sub is not None:
                pending[sub] = "mutation"

        def cross() -> SubnetConfig:
            if len(parents) < 2:
                return enc.mutate(parents[0], rng, s.mutation_prob)
            a, b = rng.sample(parents, 2)
            return enc.crossover(a, b, rng)

        for _ in range(s.crossovers):
            sub = self._draw(cross, pending, enc)
            if sub is not None:
                pending[sub] = "crossover"
        return pending

    # ---- results --------------------------------------------------------------------------------
    def front(self) -> list[Candidate]:
        return pareto_front(self.scored(), key=lambda c: c.objectives)

    def scored(self) -> list[Candidate]:
        """Candidates scored on the whole validation split (all of them without racing)."""
        return [c for c in self.records if c.scored]

    def best(self) -> dict[str, Candidate | None]:
        out: dict[str, Candidate | None] = {}
        scored = self.scored()
        for t in self.all_targets:
            out[t.name] = (
                None if t.name in self.unreachable else best_meeting(scored, t.fps, key=lambda c: c.objectives)
            )
        return out

    def result(self) -> EvolutionResult:
        return EvolutionResult(
            self.encoding.mode,
            list(self.targets),
            dict(self.unreachable),
            self.fastest_fps,
            list(self.records),
            self.front(),
            self.best(),
            self.stats,
            self.generation,
            self.generation >= self.settings.generations,
            self.elapsed,
            self.settings.budget,
        )

    # ---- state --------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        st = self.rng.getstate()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "generation": self.generation,
            "complete": self.generation >= self.settings.generations,
            "elapsed_s": self.elapsed,
            "rng": [st[0], list(st[1]), st[2]],
            "stats": self.stats.to_dict(),
            "records": [c.to_dict() for c in self.records],
        }

    def _save_state(self) -> None:
        if self.state_path is not None and self.write:
            from quasar_vit.utils.io import atomic_write_json

            atomic_write_json(self.state_path, self._state())

    def _load_state(self) -> bool:
        p = self.state_path
        if p is None or not self.resume or not p.is_file():
            return False
        try:
            st = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SearchStateError(
                f"{p} is not a readable search state ({exc}); pass --restart to start over"
            ) from None
        if not isinstance(st, dict) or st.get("format") != STATE_FORMAT or st.get("version") != STATE_VERSION:
            raise SearchStateError(f"{p} is not a quasar-vit search state; pass --restart to start over")
        saved = _comparable(st.get("fingerprint"))
        mine = _comparable(self.fingerprint)
        if saved != mine:
            diff = sorted(k for k in set(saved or {}) | set(mine) if (saved or {}).get(k) != mine.get(k))
            raise SearchStateError(
                f"{p} holds a search with different settings (differs in: {', '.join(diff)}); "
                "pass --restart to discard it, or choose another --out"
            )
        try:
            self.records = [Candidate.from_dict(d) for d in st["records"]]
            r = st["rng"]
            self.rng.setstate((int(r[0]), tuple(int(x) for x in r[1]), r[2]))
            self.generation = int(st["generation"])
            self.elapsed = float(st.get("elapsed_s", 0.0))
            self.stats = Stats(**st.get("stats", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchStateError(f"{p} is a damaged search state ({exc}); pass --restart to start over") from None
        self.by_subnet = {c.subnet: c for c in self.records}
        for c in self.records:  # the accuracy caches survive the restart
            if c.val_top1 is not None:
                self.evaluator.cache.setdefault(c.subnet, c.val_top1)
            if c.screen_top1 is not None:
                self.evaluator.screen_cache.setdefault(c.subnet, c.screen_top1)
        self._trim_history()
        return True

    def _trim_history(self) -> None:
        """Drop history lines of generations after the saved state (written just before a crash)."""
        h = self.history_path
        if h is None or not self.write or not h.is_file():
            return
        keep = []
        for line in h.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if int(rec.get("generation", 0)) < self.generation:
                keep.append(line)
        from quasar_vit.utils.io import atomic_write_text

        atomic_write_text(h, "".join(k + "\n" for k in keep))

    def _log(self, records: Iterable[dict[str, Any]]) -> None:
        if self.history_path is None or not self.write:
            return
        from quasar_vit.utils.io import append_jsonl

        for r in records:
            append_jsonl(self.history_path, r)

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, max_generations: int | None = None) -> EvolutionResult:
        """Run (or resume) up to generation ``max_generations`` (default: all of them)."""
        if not self.targets:
            return self.result()
        resumed = self._load_state()
        if not resumed and self.history_path is not None and self.write and self.history_path.exists():
            self.history_path.unlink()
        s = self.settings
        stop = s.generations if max_generations is None else min(max_generations, s.generations)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=s.budget,
                initial=len(self.records),
                unit="cand",
                dynamic_ncols=True,
                desc=f"{self.encoding.mode} gen {self.generation}/{s.generations}",
            )
            bar.set_postfix_str(self._best_str())
        try:
            while self.generation < stop:
                g = self.generation
                t0 = time.perf_counter()
                if bar is not None:
                    bar.set_description(f"{self.encoding.mode} gen {g + 1}/{s.generations}")
                children = self._children(g)
                scores = self._score(list(children))
                new = []
                for sub, (acc, screen) in scores.items():
                    rep = self.oracle.report(sub)
                    c = Candidate(
                        len(self.records), g, children[sub], sub, acc, float(rep.fps), float(rep.latency_ms), screen
                    )
                    self.records.append(c)
                    self.by_subnet[sub] = c
                    new.append(c)
                self.generation = g + 1
                self.elapsed += time.perf_counter() - t0
                best = self.best()
                summary = {
                    "event": "generation",
                    "generation": g,
                    "mode": self.encoding.mode,
                    "shares": "tied" if self.encoding_at(g).tie_shares else "per-layer",
                    "new": len(new),
                    "evaluated": len(self.records),
                    "front_size": len(self.front()),
                    "elapsed_s": round(self.elapsed, 3),
                    "stats": self.stats.to_dict(),
                    "best": {
                        k: (None if c is None else {"val_top1": c.val_top1, "fps": c.fps, "index": c.index})
                        for k, c in best.items()
                    },
                }
                self._log([{"event": "candidate", **c.to_dict()} for c in new] + [summary])
                self._save_state()
                if bar is not None:
                    bar.update(len(new))
                    bar.set_postfix_str(self._best_str())
                if self.callback is not None:
                    self.callback(g, self)
        finally:
            if bar is not None:
                bar.close()
        return self.result()

    def _best_str(self) -> str:
        parts = []
        for name, c in self.best().items():
            if name in self.unreachable:
                continue
            parts.append(f"{name}={c.val_top1:.1f}%" if c is not None else f"{name}=-")
        return " ".join(parts)


def run_evolution(
    encoding: Encoding,
    targets: Sequence[Target],
    accuracy_fn: Callable[[SubnetConfig], float] | Evaluator,
    latency_fn: Callable[[SubnetConfig], Any] | HardwareOracle,
    settings: Settings,
    max_generations: int | None = None,
    **kwargs: Any,
) -> EvolutionResult:
    """Convenience wrapper: build an :class:`Evolution` and run it."""
    return Evolution(encoding, targets, accuracy_fn, latency_fn, settings, **kwargs).run(max_generations)


__all__ = [
    "Candidate",
    "Evaluator",
    "Evolution",
    "EvolutionResult",
    "HardwareOracle",
    "SearchStateError",
    "Settings",
    "Stats",
    "run_evolution",
]
