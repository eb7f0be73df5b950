"""Progress for long loops: a tqdm bar on a terminal, plain lines in a log file.

A tqdm bar redraws itself with carriage returns; written to a file (SLURM, ``nohup``, ``> log
2>&1``) that becomes one ever-growing line.  :func:`progress` gives the bar only when stderr is a
terminal and otherwise a :class:`PlainProgress`, which prints a complete line every
``every_s`` seconds and at the end, with the same ``update`` / ``set_postfix_str`` / ``close``
calls, so the loops that report progress do not need to know where their output goes.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def stderr_is_terminal() -> bool:
    """Whether stderr is a TTY (a progress bar can redraw itself there)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class PlainProgress:
    """tqdm's ``update``/``set_postfix_str``/``set_description``/``close`` as plain lines on stderr.

    A line is printed at most every ``every_s`` seconds (the first after ``every_s``) and once
    when the loop closes, so a short loop prints one line and a long one a line a minute.
    """

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, every_s: float = 60.0) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s = every_s
        self.postfix = ""
        self.t0 = self.t_last = time.time()
        self.closed = False

    def line(self) -> str:
        """The progress line as it stands: ``desc n/total unit (p %)  rate  postfix``."""
        dt = max(time.time() - self.t0, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100.0 * self.n / self.total:.0f} %)" if self.total else ""
        parts = [f"{self.desc} {done} {self.unit}{pct}", f"{self.n / dt:.1f} {self.unit}/s", f"{dt:.0f} s"]
        if self.postfix:
            parts.append(self.postfix)
        return "  ".join(parts)

    def _emit(self) -> None:
        print(self.line(), file=sys.stderr, flush=True)
        self.t_last = time.time()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.time() - self.t_last >= self.every_s:
            self._emit()

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._emit()


def progress(
    total: int | None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    leave: bool = True,
    every_s: float = 60.0,
) -> Any:
    """A progress reporter for a loop of ``total`` items: tqdm on a terminal, plain lines otherwise.

    Args:
        total: items in all (None if unknown).
        desc: what the loop does (the line's first word).
        unit: what an item is.
        enabled: False gives a reporter that prints nothing.
        initial: items already done (a resumed loop).
        leave: keep the bar on screen when it closes (terminal only).
        every_s: seconds between two plain lines.

    Returns:
        An object with ``update(n)``, ``set_postfix_str(s)``, ``set_description(s)`` and ``close()``.
    """
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(total=total, disable=True)
    if stderr_is_terminal():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return PlainProgress(total, desc, unit, initial, every_s)


__all__ = ["PlainProgress", "progress", "stderr_is_terminal"]
