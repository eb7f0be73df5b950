"""Accuracy / throughput Pareto fronts and their hypervolume (both objectives maximised).

Points are ``(accuracy, fps)`` pairs.  A point dominates another if it is at least as good in
both and strictly better in one.

Hypervolume reference point (documented default, see docs/search.md): accuracy = chance level
(``100 / num_classes`` %), FPS = the loosest (lowest) latency target, because candidates slower than
that are rejected before they are measured.  :func:`normalized_hypervolume` divides by the box
``[ref_acc, 100] x [ref_fps, max_fps]`` (``max_fps``: the fastest subnet of the full space), so
fronts of different searches compare on one 0..1 scale.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence, TypeVar, overload

T = TypeVar("T")
P = TypeVar("P", bound=tuple[float, float])


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and (a[0] > b[0] or a[1] > b[1])


def _as_objectives(point: tuple[float, float]) -> tuple[float, float]:
    """The default key: the item already is an ``(accuracy, fps)`` pair."""
    return point


# two forms: plain ``(accuracy, fps)`` points, or any items with a ``key`` giving their objectives
@overload
def pareto_front(items: Iterable[P]) -> list[P]: ...
@overload
def pareto_front(items: Iterable[T], key: Callable[[T], tuple[float, float]]) -> list[T]: ...


def pareto_front(items: Iterable[Any], key: Callable[[Any], tuple[float, float]] = _as_objectives) -> list[Any]:
    """The non-dominated items, sorted by decreasing accuracy (so increasing FPS).

    Of items with identical objectives, the first one seen is kept.
    """
    items = list(items)
    # sort by accuracy desc, fps desc, then original order (stable)
    order = sorted(range(len(items)), key=lambda i: (-key(items[i])[0], -key(items[i])[1], i))
    front: list[Any] = []
    best_fps = float("-inf")
    for i in order:
        acc, fps = key(items[i])
        if fps > best_fps:
            front.append(items[i])
            best_fps = fps
    return front


def hypervolume(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` and bounded below by ``ref`` (points not beyond ``ref`` add 0)."""
    pts = [(a, f) for a, f in points if a > ref[0] and f > ref[1]]
    front = pareto_front(pts)
    # front: accuracy decreasing, fps increasing -> sweep along fps
    area = 0.0
    prev_fps = ref[1]
    for acc, fps in sorted(front, key=lambda p: p[1]):
        # the best accuracy available for fps in (prev_fps, fps] is this point's (front sorted by fps
        # has decreasing accuracy)
        area += (fps - prev_fps) * (acc - ref[0])
        prev_fps = fps
    return area


def normalized_hypervolume(
    points: Sequence[tuple[float, float]], ref: tuple[float, float], max_fps: float, max_acc: float = 100.0
) -> float:
    """:func:`hypervolume` with FPS clipped at ``max_fps``, divided by the box area (0..1)."""
    box = (max_acc - ref[0]) * (max_fps - ref[1])
    if box <= 0:
        return 0.0
    clipped = [(min(a, max_acc), min(f, max_fps)) for a, f in points]
    return hypervolume(clipped, ref) / box


def front_dominated(front: Sequence[tuple[float, float]], other: Sequence[tuple[float, float]]) -> bool:
    """True when ``other`` dominates the whole of ``front``: every point of ``front`` is matched or
    beaten in both objectives by some point of ``other``, and at least one is strictly beaten.

    This is the strict reading of "one front dominates another" (a higher hypervolume alone does not
    make a front dominating: fronts that cross each win somewhere).  An empty ``front`` is dominated
    by any non-empty ``other``.
    """
    if not other:
        return False
    strictly = False
    for p in front:
        if any(dominates(q, p) for q in other):
            strictly = True
        elif not any(q[0] >= p[0] and q[1] >= p[1] for q in other):
            return False
    return strictly or not front


def best_meeting(items: Iterable[T], fps_target: float, key: Callable[[T], tuple[float, float]]) -> T | None:
    """The most accurate item with FPS >= ``fps_target`` (ties: faster, then first seen)."""
    best = None
    best_key = None
    for it in items:
        acc, fps = key(it)
        if fps < fps_target:
            continue
        k = (acc, fps)
        if best_key is None or k > best_key:
            best, best_key = it, k
    return best


__all__ = ["best_meeting", "dominates", "front_dominated", "hypervolume", "normalized_hypervolume", "pareto_front"]
