"""What a search keeps on disk: its fingerprint, the resumable state and the history log.

The evolution (:mod:`quasar_vit.search.evolution`) is the algorithm; this module is where it is
saved.  ``search_state.json`` holds the measured candidates and the RNG state after every
generation, written atomically, so an interrupted run resumes exactly where it stopped and ends with
the same result as an uninterrupted one.  The fingerprint says which settings produced the state: a
run with other settings refuses to resume it rather than mixing two searches.  ``history.jsonl``
has one line per candidate and per generation; lines of generations after the saved state (written
just before a crash) are dropped on resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from quasar_vit.errors import QuasarError
from quasar_vit.space import nest_geometry

if TYPE_CHECKING:  # pragma: no cover - typing only
    from quasar_vit.search.evolution import Evolution

STATE_FORMAT = "quasar-vit-search-state"
STATE_VERSION = 1

#: the ``search.*`` keys that steer the evolution (recorded in ``pareto.json``'s settings)
EVOLUTION_KEYS = (
    "population",
    "generations",
    "parents",
    "mutations",
    "crossovers",
    "mutation_prob",
    "tied_generations",
    "max_retries",
    "seed",
    "screen_size",
    "race_z",
    "race_error",
    "select_on",
)
#: recorded at the top level of the fingerprint instead (tied_generations as the value in effect;
#: the racing keys only when racing, so that a state saved before racing existed still resumes)
_TOP_LEVEL_KEYS = ("tied_generations", "screen_size", "race_z", "race_error", "select_on")

#: fingerprint entries whose neutral value equals "absent": a state saved before the option existed
#: ran without it, so it still resumes
_NEUTRAL = {
    "tied_share_prob": 0.0,
    "tied_generations": 0,
    "share_mutation": "uniform",
    "screen_size": 0,
    "fill_slack": False,
}


class SearchStateError(QuasarError):
    """A saved search state that cannot be resumed (different settings, corrupt file)."""


def evolution_settings(settings: Any) -> dict[str, Any]:
    """The :data:`EVOLUTION_KEYS` of a :class:`~quasar_vit.config.SearchConfig`, in that order."""
    return {k: getattr(settings, k) for k in EVOLUTION_KEYS}


def fingerprint(evo: "Evolution", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What must match for a saved state to be resumed by ``evo``.

    Args:
        evo: the evolution, with its encoding, targets and effective options already set.
        extra: caller entries (platform, validation images, checkpoint identity).

    Returns:
        A JSON-able dict, stored in the state file.
    """
    enc = evo.encoding
    settings_fp = {k: v for k, v in evolution_settings(evo.settings).items() if k not in _TOP_LEVEL_KEYS}
    return {
        "mode": enc.mode,
        "space": enc.space.to_dict(),
        "tie_shares": enc.tie_shares,
        "tied_share_prob": enc.tied_share_prob,
        "tied_generations": evo.tied_generations,
        "share_mutation": enc.share_mutation if evo.bred_per_layer else "uniform",
        "fill_slack": evo.fills_slack,
        "random_search": evo.random_search,
        "targets": [t.to_dict() for t in evo.all_targets],
        "settings": settings_fp,
        **(extra or {}),
        **(_racing_fingerprint(evo) if evo.racing else {}),
    }


def _racing_fingerprint(evo: "Evolution") -> dict[str, Any]:
    """The racing options of a racing ``evo`` (``race_error`` absent means binomial: a state saved
    before paired racing existed ran that way)."""
    out: dict[str, Any] = {"screen_size": evo.evaluator.screen_images, "race_z": evo.settings.race_z}
    if evo.settings.race_error != "binomial":
        out["race_error"] = evo.settings.race_error
    if evo.settings.select_on != "full":
        out["select_on"] = evo.settings.select_on
    return out


def comparable(fp: Any) -> Any:
    """A JSON round trip of ``fp`` without the options left at their neutral value."""
    fp = json.loads(json.dumps(fp))
    if isinstance(fp, dict):
        fp = {k: v for k, v in fp.items() if not (k in _NEUTRAL and v == _NEUTRAL[k])}
        if isinstance(fp.get("space"), dict):  # a state saved before ViTGeometry: flat geometry
            fp["space"] = nest_geometry(fp["space"])
            if fp["space"].get("share_granularity") == "block":  # the neutral value; absent before it existed
                fp["space"] = {k: v for k, v in fp["space"].items() if k != "share_granularity"}
    return fp


def state_dict(evo: "Evolution") -> dict[str, Any]:
    """The resumable state of ``evo`` after its last finished generation."""
    st = evo.rng.getstate()
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "fingerprint": evo.fingerprint,
        "generation": evo.generation,
        "complete": evo.generation >= evo.settings.generations,
        "elapsed_s": evo.elapsed,
        "rng": [st[0], list(st[1]), st[2]],
        "stats": evo.stats.to_dict(),
        "records": [c.to_dict() for c in evo.records],
    }


def read_state(path: Path, fp: dict[str, Any]) -> dict[str, Any]:
    """The state saved in ``path``, checked to be one and to match the fingerprint ``fp``."""
    try:
        st = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SearchStateError(f"{path} is not a readable search state ({exc}); pass --restart to start over") from None
    if not isinstance(st, dict) or st.get("format") != STATE_FORMAT or st.get("version") != STATE_VERSION:
        raise SearchStateError(f"{path} is not a quasar-vit search state; pass --restart to start over")
    saved, mine = comparable(st.get("fingerprint")), comparable(fp)
    if saved != mine:
        diff = sorted(k for k in set(saved or {}) | set(mine) if (saved or {}).get(k) != mine.get(k))
        raise SearchStateError(
            f"{path} holds a search with different settings (differs in: {', '.join(diff)}); "
            "pass --restart to discard it, or choose another --out"
        )
    return st


def restore(evo: "Evolution", st: dict[str, Any], path: Path) -> None:
    """Put the saved state ``st`` (read from ``path``) into ``evo``, accuracy caches included."""
    from quasar_vit.search.evolution import Candidate, Stats, decode_bits

    try:
        evo.records = [Candidate.from_dict(d) for d in st["records"]]
        r = st["rng"]
        evo.rng.setstate((int(r[0]), tuple(int(x) for x in r[1]), r[2]))
        evo.generation = int(st["generation"])
        evo.elapsed = float(st.get("elapsed_s", 0.0))
        evo.stats = Stats(**st.get("stats", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise SearchStateError(f"{path} is a damaged search state ({exc}); pass --restart to start over") from None
    evo.by_subnet = {c.subnet: c for c in evo.records}
    for c in evo.records:  # the accuracy caches survive the restart
        if c.val_top1 is not None:
            evo.evaluator.cache.setdefault(c.subnet, c.val_top1)
        if c.screen_top1 is not None:
            evo.evaluator.screen_cache.setdefault(c.subnet, c.screen_top1)
        if c.screen_bits is not None:
            try:
                evo.evaluator.screen_bits.setdefault(c.subnet, decode_bits(c.screen_bits))
            except ValueError:
                raise SearchStateError(
                    f"{path} is a damaged search state (screen bits of candidate {c.index})"
                ) from None


def trim_history(path: Path, generation: int) -> None:
    """Drop the lines of ``path`` from generation ``generation`` on (written just before a crash)."""
    from quasar_vit.utils.io import atomic_write_text

    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(rec.get("generation", 0)) < generation:
            keep.append(line)
    atomic_write_text(path, "".join(k + "\n" for k in keep))


@dataclass
class StateFiles:
    """Where one evolution keeps its state and history (``None``: not kept).

    ``write`` False (ranks other than 0) reads a state but never writes; ``resume`` False ignores
    a saved state.
    """

    state_path: Path | None = None
    history_path: Path | None = None
    write: bool = True
    resume: bool = True

    def load(self, evo: "Evolution") -> bool:
        """Resume ``evo`` from the saved state if there is one; else start a fresh history.

        Returns:
            True when a state was loaded.
        """
        p = self.state_path
        if p is not None and self.resume and p.is_file():
            restore(evo, read_state(p, evo.fingerprint), p)
            h = self.history_path
            if h is not None and self.write and h.is_file():
                trim_history(h, evo.generation)
            return True
        if self.history_path is not None and self.write and self.history_path.exists():
            self.history_path.unlink()
        return False

    def save(self, evo: "Evolution") -> None:
        """Write ``evo``'s state atomically (after every generation)."""
        if self.state_path is not None and self.write:
            from quasar_vit.utils.io import atomic_write_json

            atomic_write_json(self.state_path, state_dict(evo))

    def log(self, records: Iterable[dict[str, Any]]) -> None:
        """Append ``records`` to the history, one JSON line each."""
        if self.history_path is None or not self.write:
            return
        from quasar_vit.utils.io import append_jsonl

        for r in records:
            append_jsonl(self.history_path, r)


__all__ = ["EVOLUTION_KEYS", "SearchStateError", "StateFiles", "evolution_settings", "fingerprint"]
