"""vitkit.predict.expand_inputs: every input becomes image files or a named failure, never an exception."""

import os

import numpy as np
from PIL import Image

from vitkit.predict import expand_inputs


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    return str(path)


def test_files_folders_patterns_and_missing(tmp_path):
    a = _png(tmp_path / "a.png")
    b = _png(tmp_path / "sub" / "deep" / "b.png")
    (tmp_path / "sub" / "notes.txt").write_text("x")
    files, failed = expand_inputs([a, str(tmp_path / "sub"), str(tmp_path / "*.png"), str(tmp_path / "nope.png")])
    assert files == [a, b]  # the pattern's match is not listed twice
    assert [(f.path, f.error) for f in failed] == [(str(tmp_path / "nope.png"), "no such file or directory")]


def test_a_folder_without_images_and_a_pattern_without_matches(tmp_path):
    (tmp_path / "empty").mkdir()
    files, failed = expand_inputs([str(tmp_path / "empty"), str(tmp_path / "*.jpg")])
    assert files == []
    assert "folder has no image files" in failed[0].error and failed[1].error == "pattern matches no files"


def test_an_unreadable_path_or_sub_folder_is_named(tmp_path, monkeypatch):
    """A parent folder that may not be read, and a sub-folder that may not be listed (root ignores permission
    bits, so the denials are simulated where the operating system reports them)."""
    good = _png(tmp_path / "pics" / "ok.png")
    _png(tmp_path / "pics" / "locked" / "hidden.png")
    locked, secret = str(tmp_path / "pics" / "locked"), str(tmp_path / "private" / "x.png")
    real_stat, real_scandir = os.stat, os.scandir

    def stat(path, *a, **kw):
        if str(path) == secret:
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *a, **kw)

    def scandir(path="."):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "scandir", scandir)
    files, failed = expand_inputs([str(tmp_path / "pics"), secret])
    assert files == [good]
    assert [(f.path, f.error) for f in failed] == [
        (locked, "cannot read folder: Permission denied"),
        (secret, "cannot access: Permission denied"),
    ]


def test_a_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    files, failed = expand_inputs([str(fifo)])
    assert files == [] and "not a regular file" in failed[0].error
