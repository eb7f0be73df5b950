"""CIFAR-10 from the official ``cifar-10-batches-py`` directory, unpickled safely.

The batches are Python pickles, and ``pickle.load`` on a downloaded file can run arbitrary code.
:class:`SafeUnpickler` therefore resolves only the handful of globals a numpy array needs
(``_reconstruct``/``_frombuffer``, ``ndarray``, ``dtype``, and a latin-1-only ``_codecs.encode`` that
Python 3 protocol-2 pickles use for ``bytes``); anything else, e.g. ``os.system``, is refused with a
:class:`DataError` before it can be called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from quasar_vit.errors import DataError

CIFAR10_CLASSES: list[str] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_BATCHES: list[str] = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES: list[str] = ["test_batch"]
_ROW = 3 * 32 * 32


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what protocol-2 ``bytes`` pickles use (latin-1 text)."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return obj.encode("latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    probe = np.zeros(1, dtype=np.uint8)
    reconstruct = probe.__reduce__()[0]  # numpy's multiarray._reconstruct, whatever module holds it
    frombuffer = probe.__reduce_ex__(5)[0]  # numpy's numeric._frombuffer (protocol-5 pickles)
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild dicts, lists, strings, bytes and plain numpy arrays only."""

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle a file with :class:`SafeUnpickler` (``encoding='bytes'`` for Python 2 pickles)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {p}: {exc.strerror or exc}") from None
    try:
        return SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{p}: unsafe or corrupt pickle ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a malformed file
        raise DataError(f"{p}: corrupt pickle ({type(exc).__name__}: {exc})") from None


def _get(d: dict, key: str) -> Any:
    """Dict lookup tolerant of bytes keys (Python 2 pickles) and str keys (Python 3 pickles)."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def find_batches_dir(root: str | Path) -> Path:
    """``root`` itself or ``root/cifar-10-batches-py``, whichever holds ``data_batch_1``."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"data set root not found: {r}")
    for d in (r, r / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file():
            return d
    raise DataError(
        f"data set root {r}: no CIFAR-10 batches (expected data_batch_1..5 and test_batch "
        "in it or in its cifar-10-batches-py directory)"
    )


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images ``uint8 [N, 3, 32, 32]``, labels ``int64 [N]``."""
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    try:
        data, labels = _get(obj, "data"), _get(obj, "labels")
    except KeyError as exc:
        raise DataError(f"{path}: batch has no '{exc.args[0]}' entry") from None
    if isinstance(data, (bytes, bytearray)):
        data = np.frombuffer(data, dtype=np.uint8)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size % _ROW:
        raise DataError(f"{path}: 'data' must be uint8 rows of {_ROW} values")
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32))
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'labels' must be a list of integers") from None
    if len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= 10):
        raise DataError(f"{path}: labels must lie in 0..9")
    return x, y


def class_names(batches_dir: Path) -> list[str]:
    """Label names from ``batches.meta`` when present, else the standard CIFAR-10 names."""
    meta = batches_dir / "batches.meta"
    if meta.is_file():
        obj = safe_load_pickle(meta)
        try:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(obj, "label_names")]
            if len(names) == 10:
                return names
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError):
            pass
    return list(CIFAR10_CLASSES)


def load_cifar10_split(root: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated images ``uint8 [N, 3, 32, 32]`` and labels ``int64 [N]`` of a split."""
    d = find_batches_dir(root)
    xs, ys = [], []
    for name in TRAIN_BATCHES if train else TEST_BATCHES:
        path = d / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 batch missing: {path}")
        x, y = load_batch(path)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)
