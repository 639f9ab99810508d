"""Training and validation parts of sources without a split of their own (CSV files, flat image folders)."""

import numpy as np
import pytest

from tests.data.conftest import class_folders
from vitkit.data import build_dataset
from vitkit.data.datasets import stratified_split
from vitkit.errors import VitkitError

COUNTS = {"cat": 12, "dog": 7, "eel": 2, "fox": 1}


def write_csv(tmp_path, counts=COUNTS) -> str:
    class_folders(tmp_path / "img", counts)
    lines = ["path,label", *(f"img/{c}/{i:03d}.png,{c}" for c, n in counts.items() for i in range(n))]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    return f"csv:{tmp_path / 'list.csv'}"


@pytest.fixture(params=["csv", "folder"])
def source(request, tmp_path) -> str:
    if request.param == "csv":
        return write_csv(tmp_path)
    return f"folder:{class_folders(tmp_path / 'img', COUNTS)}"


def paths(ds) -> set[str]:
    return {p for p, _ in ds.samples}


def test_without_val_fraction_validation_never_sees_training_images(source):
    train = build_dataset(source, "train", seed=3)
    val = build_dataset(source, "val", seed=3)
    assert train.classes == val.classes == ["cat", "dog", "eel", "fox"]
    assert not paths(train) & paths(val)
    assert len(paths(train) | paths(val)) == sum(COUNTS.values())
    # 10% rounded, but at least one image of every class that has two; a single image stays in training
    assert np.bincount(val.targets, minlength=4).tolist() == [1, 1, 1, 0]
    assert np.bincount(train.targets, minlength=4).tolist() == [11, 6, 1, 1]


def test_the_split_is_a_function_of_the_seed(source):
    first = build_dataset(source, "val", seed=5).samples
    assert build_dataset(source, "val", seed=5).samples == first
    assert any(build_dataset(source, "val", seed=s).samples != first for s in range(6, 12))
    for seed in (0, 1, 2):
        train, val = (build_dataset(source, split, seed=seed) for split in ("train", "val"))
        assert not paths(train) & paths(val)


def test_val_fraction_is_held_out_per_class(source):
    train = build_dataset(source, "train", val_fraction=0.5, seed=1)
    val = build_dataset(source, "val", val_fraction=0.5, seed=1)
    assert np.bincount(val.targets, minlength=4).tolist() == [6, 4, 1, 0]
    assert not paths(train) & paths(val) and len(train) + len(val) == sum(COUNTS.values())


def test_csv_test_and_all_are_every_row(tmp_path):
    src = write_csv(tmp_path)
    for split in ("test", "all"):
        ds = build_dataset(src, split)
        assert len(ds) == sum(COUNTS.values()) and ds.source.startswith("csv:")


def test_flat_folder_all_is_every_file_and_has_no_test_split(tmp_path):
    root = class_folders(tmp_path / "img", COUNTS)
    assert len(build_dataset(f"folder:{root}", "all")) == sum(COUNTS.values())
    with pytest.raises(VitkitError, match="no test/ sub-folder"):
        build_dataset(f"folder:{root}", "test")


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 2.5, float("nan")])
def test_val_fraction_out_of_range(source, fraction):
    with pytest.raises(VitkitError, match=r"val_fraction must be in \[0, 1\)"):
        build_dataset(source, "train", val_fraction=fraction)


def test_stratified_split_holds_out_at_least_one_of_each_class():
    targets = np.array([0] * 30 + [1] * 3 + [2] * 2 + [3])
    train, val = stratified_split(targets, 0.05, seed=0)
    assert np.bincount(targets[val], minlength=4).tolist() == [2, 1, 1, 0]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(targets)))
    train2, val2 = stratified_split(targets, 0.05, seed=0)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)
