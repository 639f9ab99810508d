"""CSV sources that are not what they claim: binary files, other encodings, broken quoting, empty cells."""

import os
import re

import pytest

from tests.data.conftest import finishes, noise, save, with_warnings
from vitkit.data import build_dataset, load_csv
from vitkit.errors import VitkitError

ROWS = b"path,label\nimg/0.png,cat\n"


def write(tmp_path, data: bytes, name: str = "list.csv"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def png_bytes(tmp_path) -> bytes:
    return save(noise((8, 8)), tmp_path / "some.png").read_bytes()


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (ROWS + b"img/1.png,caf\xe9\n", 3, r"not UTF-8 text \(byte 0xe9 at column 14\); save the file as UTF-8"),
        (ROWS + b"img/\x001.png,dog\n", 3, "NUL byte; binary data"),
        (ROWS + b"x" * (2 << 20) + b",cat\n", 3, r"line longer than 1048576 bytes"),
        (ROWS + b'"' + b"y" * 200_000 + b'",dog\n', 3, r"malformed CSV \(field larger than field limit"),
        (ROWS + b'"never closed\n' + (b"z" * 1000 + b"\n") * 300, None, r"malformed CSV \(field larger"),
        (ROWS + b"img/1.png, \n", 3, "empty label for 'img/1.png'"),
        (ROWS + b"  ,cat\n", 3, "empty path"),
        (ROWS + b"img/1.png\n", 3, r"expected 'path,label', got \['img/1.png'\]"),
        (ROWS + b"img/0.png,dog\n", 3, "'img/0.png' has label 'dog' but line 2 gives it 'cat'"),
        (ROWS + b"z" * 5000 + b"\n", 3, r"expected 'path,label', got \['z{75}\.\.\.$"),
    ],
    ids=[
        "latin-1",
        "nul",
        "huge-line",
        "huge-field",
        "open-quote",
        "no-label",
        "no-path",
        "one-column",
        "two-labels",
        "long-cell",
    ],
)
def test_malformed_csv_is_one_line_naming_file_and_line(tmp_path, data, line, problem):
    path = write(tmp_path, data)
    with pytest.raises(VitkitError) as e:
        build_dataset(f"csv:{path}", "train")
    message = str(e.value)
    assert "\n" not in message and len(message) < 300
    assert re.match(rf"{re.escape(str(path))}:{line or r'[0-9]+'}: {problem}", message), message


def test_binary_files_named_csv(tmp_path):
    path = write(tmp_path, png_bytes(tmp_path))  # the PNG signature's first byte is not UTF-8
    with pytest.raises(VitkitError, match=rf"^{re.escape(str(path))}:1: not UTF-8 text \(byte 0x89 at column 1\)"):
        load_csv(path)
    garbage = bytes(range(256)) * 64
    path = write(tmp_path, garbage, "garbage.csv")
    with pytest.raises(VitkitError, match=rf"^{re.escape(str(path))}:1: (NUL byte|not UTF-8 text)"):
        load_csv(path)


def test_cells_are_stripped_and_repeated_rows_count_once(tmp_path):
    for i in range(3):
        save(noise((4, 4), seed=i), tmp_path / "img" / f"{i}.png")
    text = "\ufeffpath,label\n img/0.png , cat\nimg/1.png,cat  \n\nimg/2.png,\tdog\n./img/0.png,cat\n"
    path = write(tmp_path, text.encode())
    ds, messages = with_warnings(lambda: load_csv(path))
    assert ds.classes == ["cat", "dog"] and ds.targets.tolist() == [0, 0, 1]
    assert [os.path.basename(p) for p, _ in ds.samples] == ["0.png", "1.png", "2.png"]
    assert messages == [f"{path}: 1 rows repeat an earlier row's file and were counted once, e.g. line 6 (as line 2)"]
    assert ds[0][0].size == (4, 4)


def test_tsv_and_label_kinds(tmp_path):
    ds = load_csv(write(tmp_path, b"a.png\t10\nb.png\t2\nc.png\t-1\nd.png\t02\n", "list.tsv"))
    assert ds.classes == ["-1", "02", "2", "10"] and ds.targets.tolist() == [3, 2, 0, 1]
    # labels that look numeric to str.isdigit() but are not integers sort as text
    ds = load_csv(write(tmp_path, "a.png,1\nb.png,²\nc.png,--1\n".encode()))
    assert ds.classes == ["--1", "1", "²"]


def test_csv_that_is_not_a_file(tmp_path):
    with pytest.raises(VitkitError, match="does not exist"):
        load_csv(tmp_path / "missing.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(VitkitError, match=r"dir\.csv is not a regular file"):
        load_csv(tmp_path / "dir.csv")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(VitkitError, match=r"pipe\.csv is not a regular file"):
        finishes(lambda: load_csv(fifo), timeout=10, unblock=fifo)
    with pytest.raises(VitkitError, match="no rows"):
        load_csv(write(tmp_path, b"path,label\n\n \n"))


def test_a_row_naming_a_fifo_is_an_error_not_a_hang(tmp_path):
    os.mkfifo(tmp_path / "x.png")
    ds = load_csv(write(tmp_path, b"x.png,cat\n"))
    with pytest.raises(VitkitError, match=r"x\.png: not a regular file"):
        finishes(lambda: ds[0], timeout=10, unblock=tmp_path / "x.png")
