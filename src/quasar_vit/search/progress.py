"""A tqdm progress bar over an evolution's candidates, kept out of the algorithm.

:meth:`Evolution.run <quasar_vit.search.evolution.Evolution.run>` calls an observer's ``start``,
``generation`` and ``done`` hooks; this one shows candidates measured out of the budget and the
best accuracy reached per target so far.
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


class ProgressBar:
    """Progress of one search mode: ``MODE gen G/N``, candidates out of the budget, best per target."""

    def __init__(self) -> None:
        self.bar: Any = None

    def _desc(self, evo: "Evolution", gen: int) -> str:
        return f"{evo.encoding.mode} gen {gen}/{evo.settings.generations}"

    def start(self, evo: "Evolution") -> None:
        """Open the bar (after a resume, so that it starts at the candidates already measured)."""
        from tqdm.auto import tqdm

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
        self.bar.set_description(self._desc(evo, gen + 1))

    def measured(self, evo: "Evolution", new: list["Candidate"]) -> None:
        """A generation ended with ``new`` candidates."""
        self.bar.update(len(new))
        self.bar.set_postfix_str(best_summary(evo))

    def done(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


__all__ = ["ProgressBar", "best_summary"]
