import gzip
import pickle

import numpy as np
import pytest
from PIL import Image

from vitkit.data import build_dataset, load_cifar, open_image, read_idx, safe_unpickle, to_channels, write_idx
from vitkit.data import datasets as dsmod
from vitkit.errors import VitkitError


def test_sample_is_balanced_fashion_mnist():
    train, test = build_dataset("sample", "train"), build_dataset("sample", "test")
    assert (len(train), len(test)) == (5000, 1000)
    assert train.images.shape == (5000, 28, 28) and train.images.dtype == np.uint8
    assert np.bincount(train.targets).tolist() == [500] * 10
    assert np.bincount(test.targets).tolist() == [100] * 10
    assert train.classes[0] == "T-shirt/top" and train.channels == 1
    assert build_dataset("sample", "val").targets.shape == (1000,)  # no val_fraction: the test split


def test_val_fraction_is_a_stratified_disjoint_split():
    tr = build_dataset("sample", "train", val_fraction=0.1, seed=3)
    va = build_dataset("sample", "val", val_fraction=0.1, seed=3)
    assert (len(tr), len(va)) == (4500, 500)
    assert np.bincount(va.targets).tolist() == [50] * 10
    full = build_dataset("sample", "train")
    joined = np.concatenate([tr.images, va.images]).reshape(5000, -1)
    assert len(np.unique(joined, axis=0)) == len(np.unique(full.images.reshape(5000, -1), axis=0))


def test_idx_roundtrip_and_truncation(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "x.gz"), a)
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    (tmp_path / "cut").write_bytes(raw[:-5])
    with pytest.raises(VitkitError, match="truncated IDX"):
        read_idx(tmp_path / "cut")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + raw[4:])
    with pytest.raises(VitkitError, match="magic"):
        read_idx(tmp_path / "bad")


def test_missing_idx_files_say_where_to_put_them(tmp_path):
    with pytest.raises(VitkitError) as e:
        build_dataset(f"fashion-mnist:{tmp_path}", "train")
    assert str(tmp_path) in str(e.value) and "train-images-idx3-ubyte.gz" in str(e.value)


class FakeResponse:
    """What urllib.request.urlopen returns, serving fixed bytes (no network in tests)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_download_verifies_checksums_and_reports_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(dsmod.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"not the real file"))
    with pytest.raises(VitkitError, match="checksum mismatch"):
        build_dataset(f"mnist:{tmp_path}", "train", download=True)
    assert not list(tmp_path.iterdir())  # nothing half-written

    def offline(url, timeout):
        raise OSError("network is unreachable")

    monkeypatch.setattr(dsmod.urllib.request, "urlopen", offline)
    with pytest.raises(VitkitError, match=r"could not download .*put the four mnist files"):
        build_dataset(f"mnist:{tmp_path}", "train", download=True)


def _cifar_batch(path, n, seed, labels_key=b"labels"):
    rng = np.random.default_rng(seed)
    d = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), labels_key: rng.integers(0, 10, n).tolist()}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)
    return d


def test_cifar10_batches(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = [_cifar_batch(root / f"data_batch_{i}", 4, i) for i in range(1, 6)]
    _cifar_batch(root / "test_batch", 3, 9)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, f, protocol=2)
    ds = load_cifar("cifar10", tmp_path, "train")
    assert ds.images.shape == (20, 32, 32, 3) and ds.classes[3] == "c3" and ds.channels == 3
    # channel-first rows of 1024 values -> (H, W, C)
    np.testing.assert_array_equal(ds.images[0, :, :, 1].ravel(), batches[0][b"data"][0, 1024:2048])
    assert len(build_dataset(f"cifar10:{tmp_path}", "test")) == 3


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil()}, f, protocol=4)
    with pytest.raises(VitkitError, match=r"refused to unpickle.*posix.system|refused to unpickle.*os.system"):
        safe_unpickle(tmp_path / "data_batch_1")
    assert not (tmp_path / "PWNED").exists()


def _save(img, path):
    img.save(path)
    return path


def test_image_folder_modes_and_splits(tmp_path):
    for cls, color in (("cat", (200, 10, 10)), ("dog", (10, 200, 10))):
        d = tmp_path / cls
        d.mkdir()
        for i in range(5):
            _save(Image.new("RGB", (20, 12), color), d / f"{i}.png")
        _save(Image.new("L", (8, 8), 128), d / "gray.jpg")
        _save(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), d / "clear.webp")
        (d / "notes.txt").write_text("ignored")
    tr = build_dataset(f"folder:{tmp_path}", "train")
    va = build_dataset(f"folder:{tmp_path}", "val")
    assert tr.classes == ["cat", "dog"] and len(tr) + len(va) == 14 and len(va) == 2
    assert not set(tr.samples) & set(va.samples)
    img, label = tr[0]
    assert isinstance(img, Image.Image) and label in (0, 1)


def test_split_subfolders(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            _save(Image.new("RGB", (4, 4)), tmp_path / split / cls / "x.png")
    assert len(build_dataset(str(tmp_path), "train")) == 2
    assert build_dataset(str(tmp_path), "val").classes == ["a", "b"]


def test_transparency_on_white_and_16_bit():
    clear = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    assert to_channels(clear, 3).getpixel((0, 0)) == (255, 255, 255)
    assert to_channels(clear, 1).getpixel((0, 0)) == 255
    half = Image.new("LA", (2, 2), (0, 128))
    assert 120 <= to_channels(half, 1).getpixel((0, 0)) <= 130
    deep = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert to_channels(deep, 3).getpixel((0, 0)) == (255, 255, 255)
    assert to_channels(Image.new("L", (2, 2), 7), 3).getpixel((0, 0)) == (7, 7, 7)


def test_truncated_and_bomb_images_are_refused(tmp_path, monkeypatch):
    good = _save(Image.effect_noise((64, 64), 50).convert("RGB"), tmp_path / "ok.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(VitkitError, match=r"cut\.jpg"):
        open_image(cut)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(VitkitError, match=r"junk\.png"):
        open_image(tmp_path / "junk.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # between 1x and 2x: PIL would only warn
    with pytest.raises(VitkitError, match=r"ok.jpg: refused to decode"):
        open_image(good)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(VitkitError, match=r"ok.jpg: refused to decode"):
        open_image(good)


def test_csv_dataset(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(4):
        _save(Image.new("RGB", (4, 4)), tmp_path / "img" / f"{i}.png")
    (tmp_path / "list.csv").write_text("path,label\nimg/0.png,shirt\nimg/1.png,shoe\nimg/2.png,shirt\nimg/3.png,shoe\n")
    ds = build_dataset(f"csv:{tmp_path / 'list.csv'}", "all")
    assert ds.classes == ["shirt", "shoe"] and ds.targets.tolist() == [0, 1, 0, 1]
    assert ds[1][0].size == (4, 4)
    (tmp_path / "bad.csv").write_text("only-one-column\n")
    with pytest.raises(VitkitError, match=r"bad.csv:1"):
        build_dataset(str(tmp_path / "bad.csv"))


def test_unknown_source():
    with pytest.raises(VitkitError, match="not understood"):
        build_dataset("imagenet-on-mars", "train")


def test_download_writes_verified_files_then_loads(tmp_path, monkeypatch):
    import hashlib

    blobs = {}
    for prefix, n in (("train", 6), ("t10k", 2)):
        write_idx(tmp_path / "src" / f"{prefix}-images-idx3-ubyte.gz", np.full((n, 28, 28), 9, np.uint8))
        write_idx(tmp_path / "src" / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n, dtype=np.uint8) % 10)
    for p in (tmp_path / "src").iterdir():
        blobs[p.name] = p.read_bytes()
    sums = {name: hashlib.md5(b).hexdigest() for name, b in blobs.items()}
    monkeypatch.setitem(dsmod.IDX_SOURCES, "mnist", ("https://example.invalid/", sums))

    monkeypatch.setattr(
        dsmod.urllib.request, "urlopen", lambda url, timeout: FakeResponse(blobs[url.rsplit("/", 1)[1]])
    )
    ds = build_dataset(f"mnist:{tmp_path / 'dl'}", "train", download=True)
    assert len(ds) == 6 and sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(blobs)
