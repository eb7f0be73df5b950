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
* slack filling (``fill_slack``, flexible search with per-layer shares): a drawn child's 8-bit
  shares are raised one step at a time, genes in a random order, while the child still meets the
  tightest target it met as drawn.  More 8-bit rows cost latency but hardly ever accuracy, so a
  subnet that meets a target with room to spare is the same architecture with fewer 8-bit rows than
  it could have; the repair spends that room.  A mutation that lowers one layer's share thus hands
  its latency to other layers (precision moves between layers at a fixed target), and at a loose
  target the architecture is searched with all rows 8-bit, as the uniform-8-bit search does;
* a child is *feasible* if it lies in the encoding's space, some accelerator design fits the board,
  and its FPS is at least the loosest (lowest-FPS) target; infeasible children are rejected
  **before** their accuracy is measured.  A child already measured (or already drawn this
  generation) is a duplicate and is redrawn too.  Each child gets at most ``max_retries`` draws;
  a slot whose draws all fail stays empty;
* parent selection for several targets: the union, over the targets, of the ``parents`` most
  accurate measured subnets meeting that target (deduplicated, loosest target first).  With one
  target this is AutoFormer's top-k; with several, each target keeps its own elite, so the search
  is not pulled only towards the loosest target.

* racing (an :class:`Evaluator` that can screen: ``0 < screen_images < full_images``, the one
  switch): each new candidate is scored
  first on the first ``screen_images`` validation images (the same images for all: paired).  It is
  scored on the whole split only if it could still enter the top-``parents`` of a target it meets
  (or fewer than ``parents`` are fully scored there).  ``race_error: paired`` (when the screen
  reports which images each subnet got right): its screen score + ``race_z`` paired standard
  errors >= the screen score of the ``parents``-th best there, the error counting only the images
  on which the two disagree; ``binomial``: screen score + ``race_z`` binomial standard errors >=
  the ``parents``-th best full score.  Parents, winners and the front use full scores only, so
  every pick is made on the whole split; the screen only decides what is worth scoring on it.
  ``select_on: screen`` instead picks the parents by screen score, and after every generation scores
  in full each target's top-``parents`` by screen score (those not scored yet): winners and the
  front are still picked on the whole split, among the candidates that were in some target's
  screen elite; everything else costs only its screen.

Budget: ``population + (generations - 1) * (mutations + crossovers)`` candidates at most
(:attr:`SearchConfig.budget <quasar_vit.config.SearchConfig.budget>`).  The settings are the
``search`` section of the config itself; what is saved between generations, and how, is
:mod:`quasar_vit.search.state`; a progress bar is an observer (:mod:`quasar_vit.search.progress`).
"""

from __future__ import annotations

import base64
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from quasar_vit.config import SearchConfig
from quasar_vit.errors import HardwareError, QuasarError
from quasar_vit.search.encoding import Encoding
from quasar_vit.search.pareto import best_meeting, pareto_front
from quasar_vit.search.state import SearchStateError, StateFiles
from quasar_vit.search.state import fingerprint as state_fingerprint
from quasar_vit.search.targets import Target
from quasar_vit.space import SubnetConfig


class LatencyReport(Protocol):  # pragma: no cover - typing only
    fps: float
    latency_ms: float


class Observer(Protocol):  # pragma: no cover - typing only
    """Follows a run (e.g. :class:`quasar_vit.search.progress.ProgressBar`)."""

    def start(self, evo: "Evolution") -> None: ...
    def generation(self, evo: "Evolution", gen: int) -> None: ...
    def measured(self, evo: "Evolution", new: list["Candidate"]) -> None: ...
    def done(self) -> None: ...


@dataclass
class Candidate:
    """One measured subnet.  ``val_top1`` is on the whole validation split, ``None`` when racing
    screened it out (then only ``screen_top1``, on the screen images, is known).  ``screen_bits``
    (racing with a paired screen): which screen images it got right, one bit each, base64."""

    index: int
    generation: int
    origin: str
    subnet: SubnetConfig
    val_top1: float | None
    fps: float
    latency_ms: float
    screen_top1: float | None = None
    screen_bits: str | None = None

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
        if self.screen_bits is not None:
            d["screen_bits"] = self.screen_bits
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
            None if d.get("screen_bits") is None else str(d["screen_bits"]),
        )


class Evaluator:
    """Measures the accuracy of a list of subnets, once per distinct subnet (cached).

    ``accuracy_fn`` scores on the whole validation split; ``screen_fn`` (optional, for racing) on
    its first ``screen_images`` images out of ``full_images``, returning the top-1 or ``(top-1,
    bits)`` with ``bits`` saying which screen images the subnet got right (:func:`pack_hits`), which
    lets racing compare two subnets on the images where they differ (:meth:`paired_error`).
    With ``world_size > 1`` every rank measures the slice ``todo[rank::world_size]`` of the not-yet-cached subnets and
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
        screen_fn: Callable[[SubnetConfig], float | tuple[float, bytes]] | None = None,
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
        self.screen_bits: dict[SubnetConfig, bytes] = {}
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
        self.screen_calls += self._measure(self.screen_fn, self.screen_cache, subnets, self.screen_bits)
        return [self.screen_cache[s] for s in subnets]

    def screen_error(self, top1: float) -> float:
        """Standard error (points) of a screen score as an estimate of the full score: a sample of
        ``screen_images`` drawn without replacement from ``full_images`` (binomial, with the
        finite-population factor; p kept off 0 and 1 so a perfect screen still has a margin)."""
        p = min(max(top1 / 100.0, 0.02), 0.98)
        n, big_n = self.screen_images, self.full_images
        return 100.0 * math.sqrt(p * (1 - p) / n * (1 - n / big_n))

    def paired_error(self, a: SubnetConfig, b: SubnetConfig) -> float | None:
        """Standard error (points) of ``screen(a) - screen(b)`` as an estimate of ``full(a) - full(b)``.

        Both subnets are scored on the same images, so their difference varies only through the
        images on which they disagree: with ``d`` the disagreeing share of the ``n`` screen images
        (at least one image), the error is ``sqrt(d / n * (1 - n / N))``.  Two subnets of one
        supernet disagree on a few percent of the images, so this is several times smaller than
        the binomial error of one score (:meth:`screen_error`).  ``None`` when the bits of either
        are unknown (a screen that gives only top-1, or a state saved without them).
        """
        bits_a, bits_b = self.screen_bits.get(a), self.screen_bits.get(b)
        if bits_a is None or bits_b is None or len(bits_a) != len(bits_b):
            return None
        n, big_n = self.screen_images, self.full_images
        disagree = (int.from_bytes(bits_a, "big") ^ int.from_bytes(bits_b, "big")).bit_count()
        return 100.0 * math.sqrt(max(disagree, 1) / n / n * (1 - n / big_n))

    def _measure(
        self,
        fn: Callable[[SubnetConfig], Any],
        cache: dict[SubnetConfig, float],
        subnets: Sequence[SubnetConfig],
        bits: dict[SubnetConfig, bytes] | None = None,
    ) -> int:
        todo = [s for s in dict.fromkeys(subnets) if s not in cache]
        if not todo:
            return 0
        local = [(i, fn(todo[i])) for i in range(self.rank, len(todo), self.world_size)]
        # ``gather`` is set whenever world_size > 1 (checked in __init__)
        parts = self.gather(local) if self.gather is not None and self.world_size > 1 else [local]
        for part in parts:
            for i, acc in part:
                if isinstance(acc, tuple):  # (top-1, hit bits) from a paired screen
                    acc, hit_bits = acc
                    if bits is not None:
                        bits[todo[i]] = bytes(hit_bits)
                cache[todo[i]] = float(acc)
        return len(local)


def pack_hits(hits: Sequence[bool]) -> bytes:
    """One bit per image, first image in the highest bit of the first byte (as ``numpy.packbits``)."""
    out = bytearray((len(hits) + 7) // 8)
    for i, h in enumerate(hits):
        if h:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


def encode_bits(bits: bytes | None) -> str | None:
    """Base64 text of screen bits, as a candidate record stores them."""
    return None if bits is None else base64.b64encode(bits).decode("ascii")


def decode_bits(text: str) -> bytes:
    """The screen bits of a candidate record."""
    return base64.b64decode(text.encode("ascii"), validate=True)


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
    """One search (one mode) over ``encoding`` for ``targets``; see the module docstring.

    Args:
        encoding: the search space and its operators (the mode: flexible, random, uniform8, ...).
        targets: latency targets; those above the encoding's fastest subnet are reported unreachable.
        accuracy: ``subnet -> top-1 %``, or an :class:`Evaluator` (caching, distributed, racing).
        latency_fn: ``subnet -> report`` with ``.fps``/``.latency_ms``, or a :class:`HardwareOracle`.
        settings: the ``search`` config section (validated here too).
        state_path: ``search_state.json`` to resume from and save to after every generation.
        history_path: ``history.jsonl``, one line per candidate and per generation.
        write: False on ranks other than 0: read a saved state, write nothing.
        resume: False ignores a saved state.
        progress: an observer of the run (a progress bar), or None.
        callback: ``callback(generation, evolution)`` after every generation.
        fingerprint: extra entries a saved state must match (platform, data, checkpoint).
        random_search: fresh samples instead of bred children (default: ``mode == "random"``).
        fastest_fps: FPS of the encoding's fastest subnet, if the caller knows it already.
    """

    def __init__(
        self,
        encoding: Encoding,
        targets: Sequence[Target],
        accuracy: Callable[[SubnetConfig], float] | Evaluator,
        latency_fn: Callable[[SubnetConfig], Any] | HardwareOracle,
        settings: SearchConfig,
        *,
        state_path: str | Path | None = None,
        history_path: str | Path | None = None,
        write: bool = True,
        resume: bool = True,
        progress: Observer | None = None,
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
        paths = (Path(state_path) if state_path else None, Path(history_path) if history_path else None)
        self.files = StateFiles(*paths, write=write, resume=resume)
        self.progress, self.callback = progress, callback
        self._set_targets(targets, fastest_fps)
        # the share options act only where shares are per layer and children come from parents
        self.bred_per_layer = not (encoding.tie_shares or self.random_search)
        self.tied_generations = settings.tied_generations if self.bred_per_layer else 0
        self.fills_slack = settings.fill_slack and self.bred_per_layer
        self._tied_encoding = replace(encoding, tie_shares=True, tied_share_prob=0.0)
        self.racing = self.evaluator.can_screen  # the one switch: the evaluator has a screen
        self.fingerprint = state_fingerprint(self, fingerprint)
        self.rng = random.Random(settings.seed)
        self.records: list[Candidate] = []
        self.by_subnet: dict[SubnetConfig, Candidate] = {}
        self.stats = Stats()
        self.generation = 0  # next generation to run
        self.elapsed = 0.0

    def _set_targets(self, targets: Sequence[Target], fastest_fps: float | None) -> None:
        """Sort the targets; those above the fastest subnet of this encoding cannot be met at all."""
        self.all_targets = sorted(targets, key=lambda t: t.fps)
        if fastest_fps is None:
            from quasar_vit.search.targets import fastest_fps as _fastest

            fastest_fps = _fastest(self.encoding.space, self.oracle.fps)
        self.fastest_fps = float(fastest_fps)
        self.targets = [t for t in self.all_targets if t.fps <= self.fastest_fps * (1 + 1e-9)]
        self.unreachable = {t.name: self.fastest_fps for t in self.all_targets if t not in self.targets}
        self.min_fps = self.targets[0].fps if self.targets else math.inf

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
        enc = encoding or self.encoding
        for _ in range(self.settings.max_retries):
            sub = make()
            if self.fills_slack and not enc.tie_shares:
                sub = self._fill_slack(sub, enc)
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

    def _fill_slack(self, sub: SubnetConfig, enc: Encoding) -> SubnetConfig:
        """``sub`` with its 8-bit shares raised while it meets the tightest target it meets now.

        Passes over the share genes below the top share, in an order drawn from the search's RNG:
        each gene goes one share up if the child still meets that target; the passes stop when one
        raises nothing.  A child that meets no target (or fits no design) is returned as it is, and
        rejected by the caller.
        """
        fps = self.oracle.fps(sub)
        met = [t.fps for t in self.targets if t.fps <= fps]
        if not met or not enc.contains(sub):
            return sub
        floor, order = met[-1], sorted(enc.space.w8_shares)
        shares = enc.share_vector(sub)
        raised = True
        while raised:
            raised = False
            genes = [i for i, s in enumerate(shares) if s in order and s < order[-1]]
            self.rng.shuffle(genes)
            for i in genes:
                trial = list(shares)
                trial[i] = order[order.index(shares[i]) + 1]
                cand = enc.with_share_vector(sub, trial)
                if self.oracle.fps(cand) >= floor:
                    shares, sub, raised = trial, cand, True
        return sub

    @property
    def selects_on_screen(self) -> bool:
        """Parents by screen score (racing with ``select_on: screen``)."""
        return self.racing and self.settings.select_on == "screen"

    def parents(self) -> list[Candidate]:
        """Union over targets of the top-``parents`` measured subnets meeting each target (by full
        score, or by screen score when :attr:`selects_on_screen`)."""
        out: dict[SubnetConfig, Candidate] = {}
        k = self.settings.parents
        top = self._top_screen if self.selects_on_screen else self._top
        for t in self.targets:
            for c in top(t.fps, k):
                out.setdefault(c.subnet, c)
        return list(out.values())

    def _top_screen(self, fps: float, k: int) -> list[Candidate]:
        """The ``k`` best candidates reaching ``fps`` by screen score."""
        meeting = [c for c in self.records if c.screen_top1 is not None and c.fps >= fps]
        meeting.sort(key=lambda c: (-(c.screen_top1 or 0.0), -c.fps, c.index))
        return meeting[:k]

    def _promote_screen_elite(self) -> list[Candidate]:
        """``select_on: screen``: score in full every candidate of a target's screen top-``parents``
        that is not scored yet; returns those, now scored."""
        todo = [c for c in self.parents() if not c.scored]
        for c, acc in zip(todo, self.evaluator([c.subnet for c in todo])):
            c.val_top1 = acc
        self.stats.screened_out = sum(1 for c in self.records if not c.scored)
        return todo

    def _top(self, fps: float, k: int) -> list[Candidate]:
        """The ``k`` best fully scored candidates reaching ``fps``."""
        meeting = [c for c in self.records if c.scored and c.fps >= fps]
        meeting.sort(key=lambda c: (-c.objectives[0], -c.fps, c.index))  # objectives[0]: the scored val_top1
        return meeting[:k]

    def _race_cutoffs(self) -> list[tuple[float, Candidate | None]]:
        """``(target fps, candidate to reach)`` per target, fixed while a generation is screened: the
        ``parents``-th best fully scored there, or None while fewer than ``parents`` are scored."""
        k = self.settings.parents
        out = []
        for t in self.targets:
            top = self._top(t.fps, k)
            out.append((t.fps, top[-1] if len(top) >= k else None))
        return out

    def _could_reach(self, sub: SubnetConfig, screen_top1: float, ref: Candidate | None) -> bool:
        """Racing: could ``sub``'s full score reach ``ref``'s, judged by ``sub``'s screen score?"""
        if ref is None:
            return True
        z = self.settings.race_z
        if self.settings.race_error == "paired" and ref.screen_top1 is not None:
            se = self.evaluator.paired_error(sub, ref.subnet)
            if se is not None:
                return screen_top1 - ref.screen_top1 + z * se >= 0
        return screen_top1 + z * self.evaluator.screen_error(screen_top1) >= ref.objectives[0]

    def _worth_full_score(
        self, sub: SubnetConfig, screen_top1: float, cutoffs: list[tuple[float, Candidate | None]]
    ) -> bool:
        """Racing: could ``sub`` still enter the top-``parents`` of a target it meets?"""
        fps = self.oracle.fps(sub)
        return any(fps >= t_fps and self._could_reach(sub, screen_top1, ref) for t_fps, ref in cutoffs)

    def _score(self, subs: list[SubnetConfig]) -> dict[SubnetConfig, tuple[float | None, float | None]]:
        """``subnet -> (val_top1 or None, screen_top1 or None)`` for this generation's children."""
        if not self.racing:
            return {s: (a, None) for s, a in zip(subs, self.evaluator(subs))}
        screens = dict(zip(subs, self.evaluator.screen(subs)))
        if self.selects_on_screen:  # scored in full afterwards, if they enter a screen elite
            return {s: (self.evaluator.cache.get(s), screens[s]) for s in subs}
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

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, max_generations: int | None = None) -> EvolutionResult:
        """Run (or resume from the saved state) up to generation ``max_generations``.

        Args:
            max_generations: stop after this many generations in all (default: all of them); the
                saved state lets a later call continue.

        Returns:
            The result so far (``complete`` once every generation has run).
        """
        if not self.targets:
            return self.result()
        self.files.load(self)
        s = self.settings
        stop = s.generations if max_generations is None else min(max_generations, s.generations)
        obs = self.progress
        if obs is not None:
            obs.start(self)
        try:
            while self.generation < stop:
                g = self.generation
                if obs is not None:
                    obs.generation(self, g)
                new = self.step()
                if obs is not None:
                    obs.measured(self, new)
                if self.callback is not None:
                    self.callback(g, self)
        finally:
            if obs is not None:
                obs.done()
        return self.result()

    def step(self) -> list[Candidate]:
        """Run the next generation: draw children, score them, record, log and save the state.

        Returns:
            The candidates this generation measured.
        """
        g = self.generation
        t0 = time.perf_counter()
        children = self._children(g)
        scores = self._score(list(children))
        new = []
        for sub, (acc, screen) in scores.items():
            rep = self.oracle.report(sub)
            bits = encode_bits(self.evaluator.screen_bits.get(sub))
            c = Candidate(
                len(self.records), g, children[sub], sub, acc, float(rep.fps), float(rep.latency_ms), screen, bits
            )
            self.records.append(c)
            self.by_subnet[sub] = c
            new.append(c)
        promoted = self._promote_screen_elite() if self.selects_on_screen else []
        self.generation = g + 1
        self.elapsed += time.perf_counter() - t0
        lines = [{"event": "candidate", **c.to_dict()} for c in new]
        lines += [{"event": "promoted", "generation": g, "index": c.index, "val_top1": c.val_top1} for c in promoted]
        self.files.log(lines + [self._summary(g, new)])
        self.files.save(self)
        return new

    def _summary(self, g: int, new: list[Candidate]) -> dict[str, Any]:
        """The history line closing generation ``g``."""
        return {
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
                for k, c in self.best().items()
            },
        }


def run_evolution(
    encoding: Encoding,
    targets: Sequence[Target],
    accuracy_fn: Callable[[SubnetConfig], float] | Evaluator,
    latency_fn: Callable[[SubnetConfig], Any] | HardwareOracle,
    settings: SearchConfig,
    max_generations: int | None = None,
    **kwargs: Any,
) -> EvolutionResult:
    """Convenience wrapper: build an :class:`Evolution` and run it.

    Args:
        encoding, targets, accuracy_fn, latency_fn, settings, kwargs: as for :class:`Evolution`.
        max_generations: as for :meth:`Evolution.run`.

    Returns:
        The run's :class:`EvolutionResult`.
    """
    return Evolution(encoding, targets, accuracy_fn, latency_fn, settings, **kwargs).run(max_generations)


__all__ = [
    "Candidate",
    "Evaluator",
    "Evolution",
    "EvolutionResult",
    "HardwareOracle",
    "SearchStateError",
    "Stats",
    "run_evolution",
]
