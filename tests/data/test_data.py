"""Tests of the data package: readers, safety of the CIFAR unpickler, splits, transforms, loaders."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from quasar_vit.config import DataConfig
from quasar_vit.data import (
    BatchTransform,
    ImageFolderDataset,
    TensorBatchLoader,
    TensorImageDataset,
    batches_per_epoch,
    build_datasets,
    epoch_indices,
    infinite_batches,
    load_cifar10_split,
    make_loader,
    mixup,
    read_idx,
    safe_load_pickle,
    write_idx,
)
from quasar_vit.data.idx import load_idx_split
from quasar_vit.errors import DataError

FMNIST = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- IDX


def _write_mnist_root(root: Path, n_train: int = 40, n_test: int = 12, gz: bool = True, size: int = 28) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, size, size), dtype=np.uint8))
        write_idx(root / f"{split}-labels-idx1-ubyte{ext}", (np.arange(n) % 10).astype(np.uint8))


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_roundtrip(tmp_path: Path, name: str) -> None:
    arr = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    write_idx(tmp_path / name, arr)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and back.shape == (7, 5, 3)
    np.testing.assert_array_equal(back, arr)


def test_idx_roundtrip_wider_types(tmp_path: Path) -> None:
    arr = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    write_idx(tmp_path / "x.idx", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.idx"), arr)


def test_idx_truncated_and_garbage(tmp_path: Path) -> None:
    write_idx(tmp_path / "ok", np.zeros((4, 3, 3), np.uint8))
    data = (tmp_path / "ok").read_bytes()
    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(DataError, match="short.*truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(data + b"xx")
    with pytest.raises(DataError, match="trailing"):
        read_idx(tmp_path / "long")
    (tmp_path / "junk").write_bytes(b"hello world, not an idx file")
    with pytest.raises(DataError, match="junk.*magic"):
        read_idx(tmp_path / "junk")
    (tmp_path / "badgz.gz").write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(DataError, match="badgz"):
        read_idx(tmp_path / "badgz.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_root_loads(tmp_path: Path, gz: bool) -> None:
    _write_mnist_root(tmp_path, gz=gz)
    x, y = load_idx_split(tmp_path, train=True)
    assert x.shape == (40, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    cfg = DataConfig(name="mnist", root=str(tmp_path), val_size=10)
    s = build_datasets(cfg, img_size=28, in_chans=1, num_classes=10)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 12)
    assert s.classes[0] == "0"


def test_missing_root_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    for name in ("fashion-mnist", "cifar10", "imagefolder"):
        with pytest.raises(DataError, match=str(missing)):
            build_datasets(DataConfig(name=name, root=str(missing)), 28, 1 if name != "cifar10" else 3, 10)


def test_missing_file_and_count_mismatch(tmp_path: Path) -> None:
    _write_mnist_root(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="t10k-labels"):
        load_idx_split(tmp_path, train=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="12 images but"):
        load_idx_split(tmp_path, train=False)


def test_model_mismatch_errors(tmp_path: Path) -> None:
    _write_mnist_root(tmp_path)
    cfg = DataConfig(name="fashion-mnist", root=str(tmp_path), val_size=5)
    with pytest.raises(DataError, match="num_classes"):
        build_datasets(cfg, 28, 1, 100)
    with pytest.raises(DataError, match="in_chans"):
        build_datasets(cfg, 28, 3, 10)
    with pytest.raises(DataError, match="val_size"):
        build_datasets(DataConfig(name="mnist", root=str(tmp_path), val_size=40), 28, 1, 10)


def test_resize_at_load(tmp_path: Path) -> None:
    _write_mnist_root(tmp_path)
    s = build_datasets(DataConfig(name="mnist", root=str(tmp_path), val_size=4), 32, 1, 10)
    assert s.train.images.shape[1:] == (1, 32, 32) and s.train.images.dtype == torch.uint8


# ---------------------------------------------------------------- CIFAR


def _write_cifar(root: Path, n: int = 6, protocol: int = 2) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": b"fake",
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [b"f%d.png" % i for i in range(n)],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {b"label_names": [c.encode() for c in "abcdefghij"], b"num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return d


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_loads(tmp_path: Path, protocol: int) -> None:
    d = _write_cifar(tmp_path, protocol=protocol)
    x, y = load_cifar10_split(tmp_path, train=True)
    assert x.shape == (30, 3, 32, 32) and x.dtype == np.uint8 and y.shape == (30,)
    ref = pickle.loads((d / "data_batch_1").read_bytes())
    np.testing.assert_array_equal(x[:6].reshape(6, -1), ref[b"data"])
    s = build_datasets(DataConfig(name="cifar10", root=str(d), val_size=5, mean=[0.5] * 3, std=[0.25] * 3), 32, 3, 10)
    assert (len(s.train), len(s.val), len(s.test)) == (25, 5, 6)
    assert s.classes == list("abcdefghij")


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes str/bytes as Python 2 ``str`` (BINSTRING), like the official CIFAR-10 files."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _save_str(self, obj: str | bytes) -> None:
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write(pickle.BINSTRING + len(b).to_bytes(4, "little") + b)
        self.memoize(obj)

    dispatch[str] = _save_str
    dispatch[bytes] = _save_str


def test_cifar_python2_style_pickle(tmp_path: Path) -> None:
    d = _write_cifar(tmp_path)
    a = (np.arange(6 * 3072) % 251).astype(np.uint8).reshape(6, 3072)
    with open(d / "test_batch", "wb") as f:
        _Py2Pickler(f, protocol=2).dump({"data": a, "labels": [0, 1, 2, 3, 4, 9], "batch_label": "t"})
    x, y = load_cifar10_split(d, train=False)
    np.testing.assert_array_equal(x.reshape(6, -1), a)
    assert y.tolist() == [0, 1, 2, 3, 4, 9]


class _Evil:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("touch pwned",))


def test_malicious_pickle_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    d = _write_cifar(tmp_path / "c")
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DataError, match="refusing to load global"):
        load_cifar10_split(d, train=True)
    assert not (tmp_path / "pwned").exists()
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"cos\nsystem\n(S'touch pwned'\ntR.")  # protocol-0 GLOBAL + REDUCE
    with pytest.raises(DataError, match="os.system"):
        safe_load_pickle(bad)
    bad.write_bytes(pickle.dumps(getattr, protocol=4))
    with pytest.raises(DataError, match="refusing"):
        safe_load_pickle(bad)
    assert not (tmp_path / "pwned").exists()


def test_codecs_encode_restricted(tmp_path: Path) -> None:
    p = tmp_path / "x.pkl"
    p.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    with pytest.raises(DataError, match="_codecs.encode"):
        safe_load_pickle(p)
    p.write_bytes(pickle.dumps(b"\x00\xffab", protocol=2))
    assert safe_load_pickle(p) == b"\x00\xffab"


# ---------------------------------------------------------------- ImageFolder


def _write_tree(root: Path) -> None:
    sizes = {
        "train": {"zebra": [(40, 30), (25, 50)], "ant": [(32, 32), (60, 20), (33, 47)]},
        "val": {"zebra": [(30, 30)], "ant": [(50, 40)]},
    }
    for split, classes in sizes.items():
        for cls, dims in classes.items():
            (root / split / cls).mkdir(parents=True)
            for i, (w, h) in enumerate(dims):
                mode = "L" if i == 1 else "RGB"
                color = 200 if cls == "zebra" else 50
                Image.new(mode, (w, h), color if mode == "L" else (color, color, color)).save(
                    root / split / cls / f"img{i}.png"
                )
    (root / "train" / "ant" / "notes.txt").write_text("not an image")


def test_imagefolder(tmp_path: Path) -> None:
    _write_tree(tmp_path)
    ds = ImageFolderDataset(tmp_path / "train", img_size=16, in_chans=3)
    assert ds.classes == ["ant", "zebra"] and len(ds) == 5
    assert ds.targets == [0, 0, 0, 1, 1]
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == ds.targets[i]
    assert int(ds[3][0].float().mean().round()) == 200 and int(ds[0][0].float().mean().round()) == 50
    grey = ImageFolderDataset(tmp_path / "train", img_size=8, in_chans=1)
    assert grey[0][0].shape == (1, 8, 8)
    s = build_datasets(
        DataConfig(name="imagefolder", root=str(tmp_path), val_size=1, mean=[0.5] * 3, std=[0.5] * 3), 16, 3, 2
    )
    assert (len(s.train), len(s.val), len(s.test)) == (4, 1, 2) and s.classes == ["ant", "zebra"]
    loader = make_loader(s.train, batch_size=3, shuffle=True, seed=0, drop_last=False)
    xb, yb = next(iter(loader))
    assert xb.shape == (3, 3, 16, 16) and xb.dtype == torch.uint8 and yb.dtype == torch.int64


def test_imagefolder_errors(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), val_size=0, mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.raises(DataError, match="no images"):
        build_datasets(cfg, 16, 3, 1)
    with pytest.raises(DataError, match="not found"):
        ImageFolderDataset(tmp_path / "test", 16, 3)
    (tmp_path / "train" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    ds = ImageFolderDataset(tmp_path / "train", 16, 3)
    with pytest.raises(DataError, match="broken.jpg"):
        ds[0]


# ---------------------------------------------------------------- splits


def _tensor_ds(n: int = 50, c: int = 1, size: int = 8) -> TensorImageDataset:
    x = torch.arange(n, dtype=torch.int64).view(n, 1, 1, 1).expand(n, c, size, size).to(torch.uint8)
    return TensorImageDataset(x.contiguous(), torch.arange(n) % 10)


def test_val_split_deterministic_and_disjoint(tmp_path: Path) -> None:
    _write_mnist_root(tmp_path, n_train=60)
    cfg = DataConfig(name="mnist", root=str(tmp_path), val_size=15)

    def ids(ds: TensorImageDataset) -> set[bytes]:
        return {bytes(img.flatten().tolist()) for img in ds.images}

    a, b, c = (build_datasets(cfg, 28, 1, 10, seed=s) for s in (0, 0, 1))
    torch.testing.assert_close(a.val.images, b.val.images)
    torch.testing.assert_close(a.train.images, b.train.images)
    assert ids(a.val) != ids(c.val)
    assert not ids(a.val) & ids(a.train) and len(ids(a.val) | ids(a.train)) == 60
    limited = build_datasets(
        DataConfig(name="mnist", root=str(tmp_path), val_size=15, train_limit=20, test_limit=5), 28, 1, 10
    )
    assert (len(limited.train), len(limited.val), len(limited.test)) == (20, 15, 5)
    assert ids(limited.val) == ids(a.val) and ids(limited.train) <= ids(a.train)


# ---------------------------------------------------------------- transforms


def test_batch_transform_shapes_and_normalisation() -> None:
    x = torch.full((4, 3, 10, 10), 128, dtype=torch.uint8)
    mean = [128 / 255] * 3
    ev = BatchTransform(mean, [0.5, 0.25, 1.0])
    y = ev(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert y.abs().max() < 1e-5
    tr = BatchTransform([0.0] * 3, [1.0] * 3, augment=True, crop_padding=2, hflip=True)
    z = tr(torch.full((16, 3, 10, 10), 255, dtype=torch.uint8), torch.Generator().manual_seed(0))
    assert z.shape == (16, 3, 10, 10) and z.max() == 1.0 and z.min() == 0.0  # zero padding shows up
    with pytest.raises(DataError):
        ev(torch.zeros(2, 1, 10, 10, dtype=torch.uint8))


def test_flip_and_crop() -> None:
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.uint8).view(2, 1, 4, 5)
    flip = BatchTransform([0.0], [1 / 255], augment=True, crop_padding=0, hflip=True, flip_prob=1.0)
    torch.testing.assert_close(flip(x), x.flip(3).float())
    crop = BatchTransform([0.0], [1 / 255], augment=True, crop_padding=1, hflip=False)
    g = torch.Generator().manual_seed(3)
    out = crop(x.repeat(32, 1, 1, 1), g)
    padded = torch.nn.functional.pad(x.float(), (1, 1, 1, 1))
    windows = {
        padded[i % 2, 0, r : r + 4, c : c + 5].numpy().tobytes(): (i % 2, r, c)
        for i in range(2)
        for r in range(3)
        for c in range(3)
    }
    seen = set()
    for i, img in enumerate(out):
        key = img[0].numpy().tobytes()
        assert key in windows and windows[key][0] == i % 2
        seen.add(windows[key][1:])
    assert len(seen) > 3  # different offsets per sample
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(crop(x, g1), crop(x, g2))
    no_aug = BatchTransform.from_config(DataConfig(), train=False)
    assert not no_aug.augment


def test_mixup() -> None:
    x = torch.randn(8, 1, 4, 4)
    y = torch.arange(8) % 3
    xm, t = mixup(x, y, 0.4, 3, torch.Generator().manual_seed(0))
    assert xm.shape == x.shape and t.shape == (8, 3)
    torch.testing.assert_close(t.sum(1), torch.ones(8))
    xm2, t2 = mixup(x, y, 0.4, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(xm, xm2)
    _, hard = mixup(x, y, 0.0, 3)
    torch.testing.assert_close(hard.argmax(1), y)


# ---------------------------------------------------------------- loaders


def _order(loader) -> list[int]:  # noqa: ANN001
    return [int(v) for xb, _ in loader for v in xb[:, 0, 0, 0]]


def test_loader_reproducible_per_epoch() -> None:
    ds = _tensor_ds(50)
    a = make_loader(ds, 8, shuffle=True, seed=1, drop_last=True)
    b = make_loader(ds, 8, shuffle=True, seed=1, drop_last=True)
    assert isinstance(a, TensorBatchLoader) and len(a) == 6
    a.set_epoch(3)
    b.set_epoch(3)
    assert _order(a) == _order(b) and len(_order(a)) == 48
    b.set_epoch(4)
    assert _order(a) != _order(b)
    c = make_loader(ds, 8, shuffle=False, seed=1, drop_last=False)
    assert _order(c) == list(range(50)) and len(c) == 7
    # the in-memory fast path and the DataLoader path agree on the order
    from torch.utils.data import Subset

    slow = make_loader(Subset(ds, range(50)), 8, shuffle=True, seed=1, drop_last=True)
    a.set_epoch(2)
    slow.sampler.set_epoch(2)
    assert _order(a) == _order(slow)


def test_infinite_batches_resume() -> None:
    ds = _tensor_ds(20)
    loader = make_loader(ds, 4, shuffle=True, seed=7, drop_last=True)
    stream = infinite_batches(loader)
    full = [(e, b[0][:, 0, 0, 0].tolist()) for e, b in (next(stream) for _ in range(13))]
    assert [e for e, _ in full] == [0] * 5 + [1] * 5 + [2] * 3
    per = batches_per_epoch(loader)
    step = 7
    resumed = infinite_batches(
        make_loader(ds, 4, shuffle=True, seed=7, drop_last=True), start_epoch=step // per, start_batch=step % per
    )
    assert [(e, b[0][:, 0, 0, 0].tolist()) for e, b in (next(resumed) for _ in range(6))] == full[7:13]
    from torch.utils.data import Subset

    slow = make_loader(Subset(ds, range(20)), 4, shuffle=True, seed=7, drop_last=True)
    slow_resumed = infinite_batches(slow, start_epoch=1, start_batch=2)
    assert [(e, b[0][:, 0, 0, 0].tolist()) for e, b in (next(slow_resumed) for _ in range(6))] == full[7:13]


@pytest.mark.parametrize("n,drop_last", [(48, False), (50, False), (50, True)])
def test_distributed_shards(n: int, drop_last: bool) -> None:
    ds = _tensor_ds(n)
    shards = []
    for rank in range(4):
        ld = make_loader(ds, 5, shuffle=True, seed=0, drop_last=drop_last, distributed=True, rank=rank, world_size=4)
        ld.set_epoch(1)
        shards.append(_order(ld))
    assert len({len(s) for s in shards}) == 1  # equal batch counts per rank: no DDP hang
    flat = [v for s in shards for v in s]
    if n % 4 == 0:
        assert sorted(flat) == list(range(n))  # disjoint and covering
    elif not drop_last:
        assert set(flat) == set(range(n)) and len(flat) == 52  # padded by wrap-around
    else:
        assert len(set(flat)) == len(flat)


def test_matches_distributed_sampler() -> None:
    from torch.utils.data import DistributedSampler

    for drop_last in (False, True):
        s = DistributedSampler(range(50), num_replicas=4, rank=2, shuffle=True, seed=3, drop_last=drop_last)
        s.set_epoch(5)
        assert epoch_indices(50, True, 3, 5, 2, 4, drop_last).tolist() == list(s)


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist() -> None:
    x, y = load_idx_split(FMNIST, train=True)
    xt, yt = load_idx_split(FMNIST, train=False)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == np.uint8 and set(np.unique(y).tolist()) == set(range(10))
    s = build_datasets(DataConfig(), 28, 1, 10)
    assert (len(s.train), len(s.val), len(s.test)) == (55000, 5000, 10000) and s.num_classes == 10
    assert s.train.images.dtype == torch.uint8
