"""IDX file reader for MNIST and Fashion-MNIST.

The IDX format is a 4-byte magic number (two zero bytes, a type code, the number of dimensions),
one big-endian uint32 per dimension, then the raw big-endian values.  Files may be gzipped; we detect
gzip by its magic bytes rather than the file name, so a renamed file still loads.  Every structural
problem (bad magic, truncated payload, trailing bytes, broken gzip stream) becomes a :class:`DataError`
naming the file, because a half-downloaded data set is the most common user mistake here.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from quasar_vit.errors import DataError

# IDX type code -> big-endian numpy dtype
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

#: Class names of Fashion-MNIST, in label order.
FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES: list[str] = [str(i) for i in range(10)]


def _read_bytes(path: Path) -> bytes:
    """Whole file contents, transparently gunzipped."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"corrupt gzip IDX file {path}: {exc}") from None
    return raw


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes into a native-endian array (a copy, so it is writable)."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{name} is not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"{name}: IDX file declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got < expected:
        raise DataError(
            f"{name}: truncated IDX file (expected {expected} data bytes for shape {tuple(dims)}, found {got})"
        )
    if got > expected:
        raise DataError(f"{name}: {got - expected} unexpected trailing bytes after IDX data of shape {tuple(dims)}")
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzipped)."""
    p = Path(path)
    return parse_idx(_read_bytes(p), str(p))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an IDX file (used by tests and for making small subsets); gzip if ``compress`` or the
    name ends in ``.gz``."""
    p = Path(path)
    arr = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    key = arr.dtype.newbyteorder("=")
    if key not in codes:
        raise ValueError(f"dtype {arr.dtype} cannot be stored in IDX")
    big = arr.astype(np.dtype(_IDX_DTYPES[codes[key]]), copy=False)
    payload = bytes([0, 0, codes[key], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + big.tobytes()
    if compress if compress is not None else p.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=1)
    p.write_bytes(payload)


def _find(root: Path, split: str, kind: str) -> Path:
    """Locate ``{split}-{kind}`` under the usual layouts (plain dir, torchvision's ``*/raw``)."""
    idx_kind = "idx3" if kind == "images" else "idx1"
    names = [f"{split}-{kind}-{idx_kind}-ubyte", f"{split}-{kind}.{idx_kind}-ubyte"]
    dirs = [root, root / "raw", root / "MNIST" / "raw", root / "FashionMNIST" / "raw"]
    for d in dirs:
        for n in names:
            for cand in (d / (n + ".gz"), d / n):
                if cand.is_file():
                    return cand
    raise DataError(f"data set root {root}: missing {names[0]}(.gz)")


def load_idx_split(root: str | Path, train: bool, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, 1, H, W]`` and labels ``int64 [N]`` of the train or t10k split."""
    r = Path(root)
    if not r.is_dir():
        raise DataError(f"data set root not found: {r}")
    split = "train" if train else "t10k"
    img_path, lbl_path = _find(r, split, "images"), _find(r, split, "labels")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{img_path}: expected uint8 images of shape [N, H, W], got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{lbl_path}: expected uint8 labels of shape [N], got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    if len(labels) and int(labels.max()) >= num_classes:
        raise DataError(f"{lbl_path}: label {int(labels.max())} out of range for {num_classes} classes")
    return images[:, None], labels.astype(np.int64)
