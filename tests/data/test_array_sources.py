"""IDX and CIFAR files that are damaged or not what their names say: one-line errors, never a traceback."""

import gzip
import pickle
import re

import numpy as np
import pytest

from vitkit.data import load_cifar, read_idx, safe_unpickle, write_idx
from vitkit.errors import VitkitError


def test_idx_header_cut_short(tmp_path):
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02")  # three sizes announced, one present
    with pytest.raises(VitkitError, match=r"short: truncated IDX file \(the header names 3 sizes"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("damage", ["block-type", "zeros"])
def test_idx_gzip_with_damaged_data(tmp_path, damage):
    write_idx(tmp_path / "x.gz", np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    blob = bytearray(gzip.compress(gzip.decompress((tmp_path / "x.gz").read_bytes()), mtime=0))  # no name field
    if damage == "block-type":
        blob[10] = 0xFF  # the first deflate block after the 10-byte gzip header: an invalid block type
    else:
        blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)
    (tmp_path / "bad.gz").write_bytes(bytes(blob))
    with pytest.raises(VitkitError, match=r"bad\.gz: cannot read IDX file .*re-download it$"):
        read_idx(tmp_path / "bad.gz")


def test_unpickler_errors_of_any_kind_name_the_file(tmp_path):
    (tmp_path / "memo").write_bytes(b"\x80\x02h\x05.")  # fetches a memo entry that was never stored
    (tmp_path / "cut").write_bytes(pickle.dumps({b"data": list(range(100))}, protocol=2)[:-7])
    for name in ("memo", "cut"):
        with pytest.raises(VitkitError, match=rf"{name}: (cannot read pickle|refused to unpickle)") as e:
            safe_unpickle(tmp_path / name)
        assert "\n" not in str(e.value)


def _cifar10(root, labels, data=None, meta=None):
    root.mkdir(parents=True, exist_ok=True)
    n = len(labels) if isinstance(labels, list) else 2
    batch = {b"data": np.zeros((n, 3072), np.uint8) if data is None else data, b"labels": labels}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    names = {b"label_names": [f"c{i}".encode() for i in range(10)]} if meta is None else meta
    (root / "batches.meta").write_bytes(pickle.dumps(names, protocol=2))
    return root


@pytest.mark.parametrize(
    ("labels", "data", "meta", "problem"),
    [
        ([0, 10], None, None, r"labels outside 0\.\.9"),
        ([-1, 3], None, None, r"labels outside 0\.\.9"),
        (["cat", "dog"], None, None, r"test_batch: 'labels' is not an array of numbers"),
        ([1, 2], [[1, 2, 3]], None, r"test_batch: expected data of shape \(N, 3072\)"),
        ([1, 2], None, {b"label_names": 7}, r"batches\.meta: 'label_names' is not a list of class names"),
        ([1, 2], None, ["not", "a", "dict"], r"batches\.meta: holds a list, not a dict"),
    ],
    ids=["too-high", "negative", "text-labels", "bad-data", "names-not-list", "meta-not-dict"],
)
def test_cifar_batches_that_do_not_fit(tmp_path, labels, data, meta, problem):
    root = _cifar10(tmp_path / "cifar-10-batches-py", labels, data, meta)
    with pytest.raises(VitkitError, match=problem) as e:
        load_cifar("cifar10", tmp_path, "test")
    assert "\n" not in str(e.value) and re.search(re.escape(str(root)), str(e.value))
