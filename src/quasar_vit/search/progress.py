"""Progress of an evolution, kept out of the algorithm: a tqdm bar, or one line per generation.

:meth:`Evolution.run <quasar_vit.search.evolution.Evolution.run>` calls an observer's ``start``,
``generation``, ``measured`` and ``done`` hooks; this one shows candidates measured out of the
budget and the best accuracy reached per target so far.  On a terminal that is a tqdm bar; when
stderr is a file (SLURM, ``nohup``, ``> log 2>&1``) it is one plain line per generation, since a
bar's carriage-return frames would make the log one unreadable line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    from quasar_vit.search.evolution import Candidate, Evolution


def best_summary(evo: "Evolution") -> str:
    """``name=acc%`` per reachable target (``name=-`` while none meets it)."""
    parts = []
    for name, c in evo.best().items():
        if name in evo.unreachable:
            continue
        parts.append(f"{name}={c.val_top1:.1f}%" if c is not None else f"{name}=-")
    return " ".join(parts)


def generation_line(evo: "Evolution", gen: int, new: list["Candidate"]) -> str:
    """The plain log line closing generation ``gen`` (0-based) of ``evo``.

    ``MODE gen G/N  new candidates (screened out)  measured/budget  elapsed  best per target``.
    """
    screened = sum(1 for c in new if not c.scored)
    return (
        f"search {evo.encoding.mode} gen {gen + 1}/{evo.settings.generations}  "
        f"{len(new)} new ({screened} screened out)  {len(evo.records)}/{evo.settings.budget} measured  "
        f"{evo.elapsed:.0f} s  best val {best_summary(evo)}"
    )


class ProgressBar:
    """Progress of one search mode: ``MODE gen G/N``, candidates out of the budget, best per target.

    ``plain`` (default: stderr is not a terminal) prints :func:`generation_line` per generation
    instead of drawing a bar.
    """

    def __init__(self, plain: bool | None = None) -> None:
        from quasar_vit.utils.progress import stderr_is_terminal

        self.bar: Any = None
        self.plain = (not stderr_is_terminal()) if plain is None else plain
        self._gen = 0

    def _desc(self, evo: "Evolution", gen: int) -> str:
        return f"{evo.encoding.mode} gen {gen}/{evo.settings.generations}"

    def start(self, evo: "Evolution") -> None:
        """Open the bar (after a resume, so that it starts at the candidates already measured)."""
        from tqdm.auto import tqdm

        if self.plain:
            return
        self.bar = tqdm(
            total=evo.settings.budget,
            initial=len(evo.records),
            unit="cand",
            dynamic_ncols=True,
            desc=self._desc(evo, evo.generation),
        )
        self.bar.set_postfix_str(best_summary(evo))

    def generation(self, evo: "Evolution", gen: int) -> None:
        """Generation ``gen`` (0-based) begins."""
        self._gen = gen
        if self.bar is not None:
            self.bar.set_description(self._desc(evo, gen + 1))

    def measured(self, evo: "Evolution", new: list["Candidate"]) -> None:
        """A generation ended with ``new`` candidates."""
        if self.plain:
            import sys

            print(generation_line(evo, self._gen, new), file=sys.stderr, flush=True)
            return
        self.bar.update(len(new))
        self.bar.set_postfix_str(best_summary(evo))

    def done(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["ProgressBar", "best_summary", "generation_line"]
