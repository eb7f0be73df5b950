"""Atomic writes: a crash or Ctrl-C mid-write never leaves a truncated result behind.

Every file quasar-vit produces (checkpoints, search state, results, exports) is written to a
temporary file in the same directory and moved into place with ``os.replace``, which is atomic
on POSIX and Windows.  Temporary names carry the writer's process id, so that a writer killed
with ``kill -9`` (whose ``finally`` never runs) leaves debris that the next writer of the same path
recognises as dead and removes -- a killed 1 GB checkpoint write does not stay on disk forever.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # e.g. Windows without the probe: assume alive, never delete a live temp
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by writers that no longer run; returns what was removed.

    A temporary of a live process (another writer, or this one) is never touched.  Temporaries of
    the form ``.NAME.PID.xxxx.tmp`` are recognised; anything else in the folder is left alone.
    """
    removed = []
    for cand in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        parts = cand.name[len(path.name) + 2 :].split(".")
        if not parts or not parts[0].isdigit() or pid_alive(int(parts[0])):
            continue
        try:
            shutil.rmtree(cand) if cand.is_dir() else cand.unlink()
            removed.append(cand)
        except OSError:  # raced with another cleaner, or not ours to remove: harmless
            pass
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result into place."""
    with atomic_path(path) as tmp:
        writer(tmp)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line (flushed and fsynced so that a killed run keeps its log)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then rename it into place.

    If ``path`` already exists it is replaced only after the new one is complete, so a failed
    export never leaves a half-written folder.  After a ``kill -9`` the folder is the old one (or
    absent); the next writer removes the dead temporary and restores an old folder that the killed
    writer had moved aside but not yet replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():  # a writer was killed between its two renames: undo the first
        os.replace(old, path)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_json(path: str | Path, error: type[Exception], what: str = "file") -> Any:
    """Parse a JSON file, turning a missing or malformed file into one ``error`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON: {exc}") from None


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
