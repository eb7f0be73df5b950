"""Latency targets: parsed from FPS or milliseconds, named, and defaulted from the space's range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from quasar_vit.errors import ConfigError

DEFAULT_QUANTILES = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Target:
    """A throughput target in frames per second (batch 1); ``name`` is how it is reported."""

    fps: float
    name: str

    @property
    def latency_ms(self) -> float:
        return 1e3 / self.fps

    def to_dict(self) -> dict:
        return {"name": self.name, "fps": self.fps, "latency_ms": self.latency_ms}

    @classmethod
    def from_fps(cls, fps: float) -> "Target":
        return cls(float(fps), f"{_fmt(fps)}fps")

    @classmethod
    def from_ms(cls, ms: float) -> "Target":
        return cls(1e3 / float(ms), f"{_fmt(ms)}ms")


def _fmt(x: float) -> str:
    return f"{float(x):g}"


def _parse_numbers(text: str, what: str) -> list[float]:
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise ConfigError(
                f"{what}: '{part}' is not a number (expected a comma-separated list such as 100,150,250)"
            ) from None
        if not v > 0 or v == float("inf"):
            raise ConfigError(f"{what}: targets must be positive finite numbers, got '{part}'")
        out.append(v)
    if not out:
        raise ConfigError(f"{what}: no target given")
    return out


def parse_targets(
    fps: str | Sequence[float] | None = None, latency_ms: str | Sequence[float] | None = None
) -> list[Target]:
    """Targets from ``--fps 100,150`` and/or ``--latency-ms 10,6.6`` (sorted loosest first, deduped)."""
    targets: list[Target] = []
    if fps is not None:
        vals = _parse_numbers(fps, "--fps") if isinstance(fps, str) else [float(v) for v in fps]
        if any(not v > 0 for v in vals):
            raise ConfigError("fps targets must be positive")
        targets += [Target.from_fps(v) for v in vals]
    if latency_ms is not None:
        vals = (
            _parse_numbers(latency_ms, "--latency-ms")
            if isinstance(latency_ms, str)
            else [float(v) for v in latency_ms]
        )
        if any(not v > 0 for v in vals):
            raise ConfigError("latency targets must be positive")
        targets += [Target.from_ms(v) for v in vals]
    return sort_targets(targets)


def sort_targets(targets: Iterable[Target]) -> list[Target]:
    """Loosest (lowest FPS) first; a target equal in FPS to an earlier one is dropped."""
    out: list[Target] = []
    for t in sorted(targets, key=lambda t: t.fps):
        if not out or abs(out[-1].fps - t.fps) > 1e-9 * t.fps:
            out.append(t)
    return out


def default_targets(
    slowest_fps: float, fastest_fps: float, quantiles: Sequence[float] = DEFAULT_QUANTILES
) -> list[Target]:
    """Targets spread between the slowest (largest) and fastest (smallest) subnet's FPS.

    Rounded to whole FPS (or 3 significant digits below 100 FPS) so that they read well.
    """
    out = []
    for q in quantiles:
        f = slowest_fps + q * (fastest_fps - slowest_fps)
        f = round(f) if f >= 100 else float(f"{f:.3g}")
        out.append(Target.from_fps(f))
    return sort_targets(out)


def fastest_fps(space, fps_of: Callable) -> float:
    """FPS of the space's fastest subnet: the smallest architecture at its best uniform 8-bit share.

    The smallest architecture is the fastest; its share is tried at every choice because the
    accelerator exploration treats designs within 0.5 % as ties (and then picks the cheaper one), so
    all-4-bit is not always the fastest by a fraction of a percent.
    """
    small = space.smallest()
    return max(
        fps_of(space.make(small.embed_dim, small.depth, small.num_heads, small.mlp_ratios, [s] * small.depth))
        for s in space.w8_shares
    )


def space_fps_range(space, fps_of: Callable) -> tuple[float, float]:
    """FPS of the space's largest subnet and of its fastest subnet (``fps_of(subnet) -> float``)."""
    return fps_of(space.largest()), fastest_fps(space, fps_of)


__all__ = [
    "Target",
    "default_targets",
    "fastest_fps",
    "parse_targets",
    "sort_targets",
    "space_fps_range",
    "DEFAULT_QUANTILES",
]
