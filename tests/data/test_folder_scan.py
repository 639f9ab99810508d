"""Image folders as careless or hostile users leave them: symlink loops, files reached twice, FIFOs, locked folders."""

import errno
import os
import re
import socket

import pytest

from tests.data.conftest import class_folders, finishes, noise, save, with_warnings
from vitkit.data import DataSpec, FileDataset, Loader, build_dataset, open_image
from vitkit.errors import VitkitError


def identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def identities(ds) -> list[tuple[int, int]]:
    return [identity(p) for p, _ in ds.samples]


def test_symlink_loops_do_not_multiply_samples(tmp_path):
    root = class_folders(tmp_path / "data", {"cat": 3, "dog": 2})
    save(noise((4, 4), seed=7), root / "dog" / "sub" / "x.png")
    (root / "cat" / "loop").symlink_to("..")  # the data root
    (root / "dog" / "self").symlink_to(".")
    (root / "dog" / "sub" / "up").symlink_to("..")  # the class folder
    (root / "dog" / "sub" / "a").symlink_to("b")  # a loop of two links
    (root / "dog" / "sub" / "b").symlink_to("a")
    ds, messages = with_warnings(lambda: build_dataset(f"folder:{root}", "all"))
    assert ds.targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(set(identities(ds))) == 6
    assert any("already reached by another path" in m for m in messages)


def test_a_file_two_paths_reach_is_one_sample(tmp_path):
    root = class_folders(tmp_path / "data", {"cat": 8, "dog": 8})
    outside = class_folders(tmp_path / "elsewhere", {"more": 4})
    class_folders(root / "cat", {"sub": 5})
    (root / "cat" / "alias").symlink_to("sub")  # a symlinked folder inside the class
    (root / "cat" / "more").symlink_to(outside / "more")  # a folder outside the root, linked twice
    (root / "cat" / "more_again").symlink_to(outside / "more")
    (root / "dog" / "link.png").symlink_to("000.png")  # a symlinked file
    (root / "dog" / "same.png").symlink_to(root / "dog" / "001.png")  # by its absolute path
    ds, messages = with_warnings(lambda: build_dataset(f"folder:{root}", "all"))
    assert len(ds) == 8 + 5 + 4 + 8
    assert len(set(identities(ds))) == len(ds)
    assert len(messages) == 1 and re.search(r"skipped 4 folders or image files already reached", messages[0])
    for seed in range(4):
        train, _ = with_warnings(lambda seed=seed: build_dataset(f"folder:{root}", "train", seed=seed))
        val, _ = with_warnings(lambda seed=seed: build_dataset(f"folder:{root}", "val", seed=seed))
        assert not set(identities(train)) & set(identities(val))
        assert len(train) + len(val) == len(ds)


def test_a_link_into_another_class_leaves_the_images_in_their_own_class(tmp_path):
    root = class_folders(tmp_path / "data", {"ant": 2, "cat": 3})
    (root / "ant" / "cats").symlink_to("../cat")  # "ant" is walked first, yet the cats stay cats
    (root / "ant" / "cat0.png").symlink_to("../cat/000.png")
    ds, _ = with_warnings(lambda: build_dataset(f"folder:{root}", "all"))
    expected = [(str(root / "ant" / f"{i:03d}.png"), 0) for i in range(2)]
    expected += [(str(root / "cat" / f"{i:03d}.png"), 1) for i in range(3)]
    assert ds.samples == expected


def test_split_folders_never_share_a_file(tmp_path):
    root = tmp_path / "data"
    class_folders(root / "train", {"cat": 3, "dog": 3})
    for c in ("cat", "dog"):
        save(noise((5, 5), seed=50), root / "val" / c / "own.png")
    (root / "val" / "cat" / "leak.png").symlink_to(root / "train" / "cat" / "000.png")
    (root / "val" / "dog" / "more").symlink_to(root / "train" / "dog")
    (root / "train" / "cat" / "back").symlink_to("../..")  # the data root: not a class of anything
    (root / "train" / "dog" / "val").symlink_to("../../val")  # another split
    train, _ = with_warnings(lambda: build_dataset(str(root), "train"))
    assert len(train) == 6 and all("/val/" not in p for p, _ in train.samples)
    val, messages = with_warnings(lambda: build_dataset(str(root), "val"))
    assert sorted(os.path.basename(p) for p, _ in val.samples) == ["own.png", "own.png"]
    assert any("left out 4 files that are training images too" in m for m in messages)
    assert not set(identities(train)) & set(identities(val))


def test_fifos_sockets_and_dangling_links_are_skipped_with_one_warning(tmp_path, monkeypatch):
    root = class_folders(tmp_path / "data", {"cat": 4, "dog": 4})
    fifo = root / "cat" / "x.png"
    os.mkfifo(fifo)
    (root / "cat" / "pipe.png").symlink_to("x.png")
    (root / "dog" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (root / "dog" / "self.png").symlink_to("self.png")
    monkeypatch.chdir(root / "dog")  # a short relative name: socket paths are limited to about 100 bytes
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind("s.jpg")
        ds, messages = finishes(lambda: with_warnings(lambda: build_dataset(f"folder:{root}", "all")), unblock=fifo)
    finally:
        sock.close()
    assert len(ds) == 8 and all(p.endswith(("0.png", "1.png", "2.png", "3.png")) for p, _ in ds.samples)
    assert len(messages) == 1
    assert re.search(r"ignored 5 entries that are not regular files .* e\.g\. .*cat/x\.png$", messages[0])
    # training and evaluation read every sample without blocking
    spec = DataSpec((8, 8), 3, (0.5,) * 3, (0.5,) * 3)
    train, _ = with_warnings(lambda: build_dataset(f"folder:{root}", "train"))
    loader = Loader(train, spec, batch_size=len(train), train=True, aug="flip")
    (batch,) = finishes(lambda: list(loader.batches(0)), unblock=fifo)
    assert len(batch.y) == len(train) and batch.skipped == 0
    batches = finishes(lambda: list(Loader(ds, spec, batch_size=3, train=False).batches(0)), unblock=fifo)
    assert sum(len(b.y) for b in batches) == 8


def test_open_image_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(VitkitError, match=r"x\.png: not a regular file$"):
        finishes(lambda: open_image(fifo), timeout=10, unblock=fifo)
    ds = FileDataset([(str(fifo), 0)], ["a"])
    with pytest.raises(VitkitError, match=r"x\.png: not a regular file$"):
        finishes(lambda: ds[0], timeout=10, unblock=fifo)
    with pytest.raises(VitkitError, match=r"not a regular file$"):
        open_image(tmp_path)


@pytest.mark.parametrize("locked", [".", "cat", "cat/more"])
def test_an_unreadable_folder_is_an_error_not_a_missing_class(tmp_path, monkeypatch, locked):
    root = class_folders(tmp_path / "data", {"cat": 2, "dog": 2})
    folder = root / locked
    save(noise((4, 4)), folder / "unseen.png")
    folder.chmod(0)
    try:
        if os.access(folder, os.R_OK):  # root reads everything: refuse the listing as the kernel would for others
            listing = os.scandir

            def scandir(path="."):
                if os.fspath(path) == str(folder):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
                return listing(path)

            monkeypatch.setattr(os, "scandir", scandir)
        for split in ("train", "all"):
            with pytest.raises(VitkitError, match=rf"^cannot read folder {re.escape(str(folder))}: Permission denied$"):
                build_dataset(f"folder:{root}", split)
    finally:
        folder.chmod(0o755)
