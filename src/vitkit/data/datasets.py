"""Data sets without torchvision: IDX (Fashion-MNIST, MNIST), CIFAR python batches, image folders, CSV.

Two kinds, both with ``classes``, ``targets`` and ``__getitem__(i) -> (PIL image, label)``:

* :class:`ArrayDataset` keeps every image as one uint8 array in memory (IDX, CIFAR). The training
  loader augments whole batches of it as tensors, so no worker processes are needed.
* :class:`FileDataset` holds ``(path, label)`` pairs and decodes files on demand (folder, CSV).
"""

import contextlib
import csv
import gzip
import hashlib
import io
import os
import pickle
import re
import stat
import struct
import urllib.request
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from vitkit.data.images import IMAGE_EXTENSIONS, array_to_image, open_image
from vitkit.errors import VitkitError
from vitkit.utils.io import atomic_write

SAMPLE_DIR = Path(__file__).parent / "sample"

FASHION_MNIST_CLASSES = [
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
MNIST_CLASSES = [str(i) for i in range(10)]

# file name -> md5 of the official gzip file (the same values torchvision checks)
IDX_SOURCES = {
    "fashion-mnist": (
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
}


# --- the two data set kinds ------------------------------------------------------------------------
@dataclass
class ArrayDataset:
    """All images in memory: ``images`` uint8 (N, H, W) or (N, H, W, C); ``targets`` int64 (N,)."""

    images: np.ndarray
    targets: np.ndarray
    classes: list[str]
    source: str = ""
    in_memory = True

    def __post_init__(self) -> None:
        if len(self.images) != len(self.targets):
            raise VitkitError(f"{self.source}: {len(self.images)} images but {len(self.targets)} labels")

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else self.images.shape[-1]

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return array_to_image(self.images[i]), int(self.targets[i])

    def subset(self, indices: np.ndarray) -> "ArrayDataset":
        return ArrayDataset(self.images[indices], self.targets[indices], self.classes, self.source)


@dataclass
class FileDataset:
    """Image files decoded on demand; ``samples`` are (path, label) pairs."""

    samples: list[tuple[str, int]]
    classes: list[str]
    source: str = ""
    channels: int = 3
    in_memory = False
    skipped: int = field(default=0)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> np.ndarray:
        return np.array([t for _, t in self.samples], dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path, label = self.samples[i]
        return open_image(path), label

    def subset(self, indices: np.ndarray) -> "FileDataset":
        return FileDataset([self.samples[i] for i in indices], self.classes, self.source, self.channels, self.skipped)


Dataset = ArrayDataset | FileDataset


# --- IDX (Fashion-MNIST, MNIST) --------------------------------------------------------------------
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic 0x0000 + dtype code + ndim, big-endian sizes, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise VitkitError(f"{path}: cannot read IDX file ({e}); re-download it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise VitkitError(f"{path}: not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise VitkitError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise VitkitError(f"{path}: truncated IDX file (the header names {ndim} sizes, the file ends before them)")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(dtypes[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = data[4 + 4 * ndim :]
    if len(payload) != expected:
        raise VitkitError(f"{path}: truncated IDX file ({len(payload)} data bytes, header says {expected})")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def download_idx(kind: str, directory: str | os.PathLike) -> None:
    """Fetch the four official files into ``directory`` and check their MD5 sums."""
    base, files = IDX_SOURCES[kind]
    directory = Path(directory)
    for name, md5 in files.items():
        dest = directory / name
        if dest.is_file():
            continue
        url = base + name
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                blob = r.read()
        except Exception as e:
            raise VitkitError(
                f"could not download {url} ({type(e).__name__}: {e}); put the four {kind} files "
                f"({', '.join(files)}) into {directory} yourself"
            ) from None
        got = hashlib.md5(blob, usedforsecurity=False).hexdigest()
        if got != md5:
            raise VitkitError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); not saved")

        def write(tmp: str, blob: bytes = blob) -> None:
            with open(tmp, "wb") as f:
                f.write(blob)

        atomic_write(dest, write)


def _idx_files(directory: Path, prefix: str) -> tuple[Path, Path]:
    found = []
    for part in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        for cand in (f"{prefix}-{part}.gz", f"{prefix}-{part}", f"{prefix}-{part.replace('-idx', '.idx')}"):
            if os.path.isfile(directory / cand):
                found.append(directory / cand)
                break
        else:
            return None  # type: ignore[return-value]
    return found[0], found[1]


def load_idx(kind: str, directory: str | os.PathLike, split: str, download: bool = False) -> ArrayDataset:
    """``split`` is 'train' or 'test' (the files' own split)."""
    directory = Path(directory).expanduser()
    prefix = "train" if split == "train" else "t10k"
    files = _idx_files(directory, prefix) if os.path.isdir(directory) else None
    if files is None and download:
        download_idx(kind, directory)
        files = _idx_files(directory, prefix)
    if files is None:
        names = ", ".join(IDX_SOURCES[kind][1])
        raise VitkitError(
            f"{kind}: {prefix}-images-idx3-ubyte(.gz) / {prefix}-labels-idx1-ubyte(.gz) not found in {directory}. "
            f"Put the official files ({names}) there, or pass download=True (--download) on a machine with network"
        )
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3:
        raise VitkitError(f"{files[0]}: expected (N, H, W) images, got shape {images.shape}")
    classes = FASHION_MNIST_CLASSES if kind == "fashion-mnist" else MNIST_CLASSES
    if labels.min() < 0 or labels.max() >= len(classes):
        raise VitkitError(f"{files[1]}: labels outside 0..{len(classes) - 1}")
    return ArrayDataset(images.astype(np.uint8), labels.astype(np.int64), list(classes), f"{kind}:{directory}")


# --- CIFAR python batches, through an unpickler that can only build dicts, lists and numpy arrays ----
class RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global except what a numpy array's reconstruction needs; nothing can run code."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # protocol-2 pickles from Python 3 spell bytes as encode(str, 'latin1')
        ("builtins", "bytearray"),
        ("__builtin__", "bytearray"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")


def safe_unpickle(path: str | os.PathLike) -> Any:
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise VitkitError(f"{path}: refused to unpickle ({e}); CIFAR batches contain only arrays and lists") from None
    except Exception as e:  # whatever a malformed pickle makes the unpickler raise
        raise VitkitError(f"{path}: cannot read pickle ({type(e).__name__}: {e})") from None


def _key(d: dict, name: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise VitkitError(f"{path}: holds a {type(d).__name__}, not a dict (is this a CIFAR python batch?)")
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise VitkitError(f"{path}: no {name!r} entry (is this a CIFAR python batch?)")


def load_cifar(kind: str, directory: str | os.PathLike, split: str) -> ArrayDataset:
    """CIFAR-10: data_batch_1..5 / test_batch + batches.meta; CIFAR-100: train / test + meta (fine labels)."""
    directory = Path(directory).expanduser()
    sub = "cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python"
    if os.path.isdir(directory / sub):
        directory = directory / sub
    if kind == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta_name, label_key, names_key = "batches.meta", "labels", "label_names"
    else:
        names = ["train"] if split == "train" else ["test"]
        meta_name, label_key, names_key = "meta", "fine_labels", "fine_label_names"
    missing = [n for n in [*names, meta_name] if not os.path.isfile(directory / n)]
    if missing:
        raise VitkitError(
            f"{kind}: {', '.join(missing)} not found in {directory}; extract the python version "
            f"({sub}.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html) there"
        )
    images, labels = [], []
    for n in names:
        d = safe_unpickle(directory / n)
        data = _array(_key(d, "data", directory / n), np.uint8, directory / n, "data")
        if data.ndim != 2 or data.shape[1] != 3072:
            raise VitkitError(f"{directory / n}: expected data of shape (N, 3072), got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, H, W, C)
        labels.append(_array(_key(d, label_key, directory / n), np.int64, directory / n, label_key).reshape(-1))
    meta = safe_unpickle(directory / meta_name)
    names_list = _key(meta, names_key, directory / meta_name)
    if not isinstance(names_list, list | tuple):
        raise VitkitError(f"{directory / meta_name}: {names_key!r} is not a list of class names")
    classes = [c.decode(errors="replace") if isinstance(c, bytes) else str(c) for c in names_list]
    targets = np.concatenate(labels)
    if len(targets) and (targets.min() < 0 or targets.max() >= len(classes)):
        raise VitkitError(f"{directory}: labels outside 0..{len(classes) - 1} (the classes in {meta_name})")
    return ArrayDataset(np.concatenate(images), targets, classes, f"{kind}:{directory}")


def _array(value: Any, dtype: Any, path: Path, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as e:
        raise VitkitError(f"{path}: {what!r} is not an array of numbers ({e})") from None


# --- image folders and CSV files -------------------------------------------------------------------
def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _list_folder(folder: str) -> list[os.DirEntry]:
    """The entries of one folder by name; an unreadable folder is an error, never an empty one."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise VitkitError(f"cannot read folder {folder}: {e.strerror or e}") from None


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class _FolderScan:
    """One walk over ``root/<class>/...`` that takes every folder and every file once.

    Folders are known by (device, inode), so a symlink loop ends; files by their real path, so a file that two paths
    reach (a symlinked folder or file) is one sample and can never be in both the training and the validation part.
    Real folders are walked first and symlinks followed afterwards, so a link into another class's folder does not
    take that folder's images away from it. Anything that is not a regular file once links are resolved (a FIFO, a
    socket, a device, a dangling link) is left out with a warning: opening it could block forever. A plain file
    costs no system call beyond the folder listing, which matters for millions of files on a network file system.
    """

    def __init__(self, root: Path, fence: tuple[Path, ...] = ()) -> None:
        self.root = root
        self.folders: set[tuple[int, int]] = set()
        self.files: set[str] = set()  # real paths
        self.samples: list[tuple[str, int]] = []
        self.real_paths: list[str] = []  # of each sample
        self.ignored: list[str] = []
        self.repeated: list[str] = []  # folders and files already reached by another path
        for folder in (root, *fence):  # the root and the split folders are nobody's class: a link back stops there
            with contextlib.suppress(OSError):
                self.folders.add(_identity(os.stat(folder)))
        entries = _list_folder(str(root))
        self.classes = sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=True))
        if not self.classes:
            raise VitkitError(f"{root}: no class sub-folders (expected {root}/<class name>/<image files>)")
        real_root = os.path.realpath(root)
        per_class: list[list[tuple[str, int, str]]] = [[] for _ in self.classes]
        links: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            folder = os.path.join(root, name)
            if os.path.islink(folder):
                links.append((folder, label))
            else:
                self._walk(folder, os.path.join(real_root, name), label, per_class[label], links)
        self._follow(links, per_class)
        for items in per_class:
            for path, label, real in items:
                self.samples.append((path, label))
                self.real_paths.append(real)
        self._warn()
        if not self.samples:
            raise VitkitError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in the class folders")

    def _walk(self, top: str, real_top: str, label: int, out: list, links: list[tuple[str, int]]) -> None:
        """Depth first in name order through real sub-folders; symlinks go on ``links`` for :meth:`_follow`."""
        stack = [(top, real_top)]
        while stack:
            folder, real = stack.pop()
            try:
                key = _identity(os.stat(folder))
            except OSError as e:
                raise VitkitError(f"cannot read folder {folder}: {e.strerror or e}") from None
            if key in self.folders:
                self.repeated.append(folder)
                continue
            self.folders.add(key)
            subfolders = []
            for entry in _list_folder(folder):
                if entry.name.startswith("."):
                    continue
                path = os.path.join(folder, entry.name)
                if entry.is_symlink():
                    links.append((path, label))
                elif entry.is_dir(follow_symlinks=False):
                    subfolders.append((path, os.path.join(real, entry.name)))
                elif _is_image_name(entry.name):
                    self._take(path, os.path.join(real, entry.name), entry.is_file(follow_symlinks=False), label, out)
            stack.extend(reversed(subfolders))

    def _follow(self, links: list[tuple[str, int]], per_class: list[list]) -> None:
        i = 0
        while i < len(links):  # following a linked folder can find more links
            path, label = links[i]
            i += 1
            try:
                st = os.stat(path)
            except PermissionError as e:
                raise VitkitError(f"cannot read {path}: {e.strerror}") from None
            except OSError:  # dangling, or a loop of links
                self.ignored.append(path)
                continue
            if stat.S_ISDIR(st.st_mode):
                self._walk(path, os.path.realpath(path), label, per_class[label], links)
            elif _is_image_name(path):
                self._take(path, os.path.realpath(path), stat.S_ISREG(st.st_mode), label, per_class[label])

    def _take(self, path: str, real: str, regular: bool, label: int, out: list) -> None:
        if not regular:
            self.ignored.append(path)
        elif real in self.files:
            self.repeated.append(path)
        else:
            self.files.add(real)
            out.append((path, label, real))

    def _warn(self) -> None:
        if self.ignored:
            warnings.warn(
                f"{self.root}: ignored {len(self.ignored)} entries that are not regular files (FIFO, socket, device "
                f"or dangling symlink), e.g. {self.ignored[0]}",
                stacklevel=2,
            )
        if self.repeated:
            warnings.warn(
                f"{self.root}: skipped {len(self.repeated)} folders or image files already reached by another path "
                f"(symlink loop, symlinked folder or file), e.g. {self.repeated[0]}",
                stacklevel=2,
            )

    def dataset(self, source: str) -> FileDataset:
        return FileDataset(list(self.samples), list(self.classes), source)


def _scan_class_dirs(root: Path, fence: tuple[Path, ...] = ()) -> _FolderScan:
    """``root/<class>/**/<image>``; ``fence``: folders a symlink must not lead the walk into (the other splits)."""
    return _FolderScan(root, fence)


SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


def _split_dir(root: Path, split: str) -> Path | None:
    for name in SPLIT_DIRS[split]:
        if os.path.isdir(root / name):  # False, not an exception, inside an unreadable folder
            return root / name
    return None


CSV_HEADERS = ("path", "file", "filename", "image")
CSV_MAX_LINE = 1 << 20  # bytes; a 'path,label' line is far shorter, so a longer one means this is not such a file


def _csv_lines(f: io.BufferedReader, path: Path) -> Iterator[str]:
    """The lines of a CSV file opened in binary mode, decoded one by one so that bad bytes are reported by line."""
    lineno = 0
    while raw := f.readline(CSV_MAX_LINE + 1):
        lineno += 1
        if len(raw) > CSV_MAX_LINE:
            raise VitkitError(f"{path}:{lineno}: line longer than {CSV_MAX_LINE} bytes; not a 'path,label' CSV file")
        if b"\0" in raw:
            raise VitkitError(f"{path}:{lineno}: NUL byte; binary data, not a 'path,label' CSV file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise VitkitError(
                f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
                "save the file as UTF-8"
            ) from None
        yield text.removeprefix("\ufeff") if lineno == 1 else text


def _brief(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error quotes the user's cell on one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_csv(path: str | os.PathLike) -> FileDataset:
    """Rows ``path,label`` (tab-separated for ``.tsv``; an optional header row ``path,label``); relative paths from
    the CSV's folder. Cells are stripped; a row that repeats an earlier row's path is counted once, and the same path
    with two labels is an error (it would otherwise be able to land in both the training and the validation part)."""
    path = Path(path).expanduser()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VitkitError(f"CSV file {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise VitkitError(f"cannot read CSV file {path}: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise VitkitError(f"CSV file {path} is not a regular file")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows: list[tuple[str, str]] = []
    seen: dict[str, tuple[int, str]] = {}  # sample path -> (line, label)
    repeated: list[tuple[int, int]] = []
    first_row = True
    reader = None
    try:
        with open(path, "rb") as f:
            reader = csv.reader(_csv_lines(f, path), delimiter=delimiter)
            for row in reader:
                lineno = reader.line_num
                cells = [c.strip() for c in row]
                if not any(cells):
                    continue
                if len(cells) < 2:
                    raise VitkitError(f"{path}:{lineno}: expected 'path{delimiter}label', got {_brief(row)}")
                if first_row and cells[0].lower() in CSV_HEADERS:
                    first_row = False
                    continue
                first_row = False
                file, label = cells[0], cells[1]
                if not file:
                    raise VitkitError(f"{path}:{lineno}: empty path")
                if not label:
                    raise VitkitError(f"{path}:{lineno}: empty label for {_brief(file)}")
                full = str(Path(file) if os.path.isabs(file) else path.parent / file)
                if full in seen:
                    before, other = seen[full]
                    if other != label:
                        raise VitkitError(
                            f"{path}:{lineno}: {_brief(file)} has label {_brief(label)} but line {before} gives it "
                            f"{_brief(other)}"
                        )
                    repeated.append((lineno, before))
                    continue
                seen[full] = (lineno, label)
                rows.append((full, label))
    except csv.Error as e:
        raise VitkitError(f"{path}:{reader.line_num if reader else 0}: malformed CSV ({e})") from None
    except OSError as e:
        raise VitkitError(f"cannot read CSV file {path}: {e.strerror or e}") from None
    if not rows:
        raise VitkitError(f"{path}: no rows")
    if repeated:
        warnings.warn(
            f"{path}: {len(repeated)} rows repeat an earlier row's file and were counted once, "
            f"e.g. line {repeated[0][0]} (as line {repeated[0][1]})",
            stacklevel=2,
        )
    labels = {lbl for _, lbl in rows}
    numeric = all(re.fullmatch(r"-?[0-9]+", lbl) for lbl in labels)
    classes = sorted(labels, key=lambda c: (int(c), c)) if numeric else sorted(labels)  # '7' and '007': by text too
    index = {c: i for i, c in enumerate(classes)}
    return FileDataset([(p, index[lbl]) for p, lbl in rows], classes, f"csv:{path}")


# --- splits ----------------------------------------------------------------------------------------
def stratified_split(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices): ``fraction`` of every class, chosen with ``seed``, held out.

    A class with two or more samples has at least one held out, so every class is validated; a single sample
    stays in training.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = round(len(idx) * fraction)
        if fraction > 0 and len(idx) >= 2:
            n_val = max(n_val, 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _carve(ds: Dataset, split: str, fraction: float, seed: int) -> Dataset:
    train_idx, val_idx = stratified_split(ds.targets, fraction, seed)
    return ds.subset(train_idx if split == "train" else val_idx)


def parse_source(source: str) -> tuple[str, str]:
    """'fashion-mnist:/data/fm' -> ('fashion-mnist', '/data/fm'); a bare path gets its kind guessed."""
    kinds = ("fashion-mnist", "mnist", "cifar10", "cifar100", "folder", "csv", "sample")
    kind, sep, rest = source.partition(":")
    if sep and kind.lower() in kinds:
        return kind.lower(), rest
    if source.lower() in kinds:
        return source.lower(), ""
    path = Path(source).expanduser()  # os.path's checks answer False for an unreadable or malformed path
    if os.path.isfile(path) and path.suffix.lower() in (".csv", ".tsv"):
        return "csv", source
    if os.path.isdir(path):
        if _idx_files(path, "train") or _idx_files(path, "t10k"):
            return "fashion-mnist" if "fashion" in str(path).lower() else "mnist", source
        if os.path.isdir(path / "cifar-10-batches-py") or os.path.isfile(path / "data_batch_1"):
            return "cifar10", source
        if os.path.isdir(path / "cifar-100-python") or os.path.isfile(path / "meta"):
            return "cifar100", source
        return "folder", source
    raise VitkitError(
        f"data source {source!r} is not understood: use sample, fashion-mnist:DIR, mnist:DIR, cifar10:DIR, "
        "cifar100:DIR, folder:DIR or csv:FILE (or an existing directory / .csv file)"
    )


def build_dataset(
    source: str,
    split: str = "train",
    *,
    val_fraction: float = 0.0,
    seed: int = 0,
    download: bool = False,
) -> Dataset:
    """Load split 'train', 'val', 'test' or 'all' of a data source (see :func:`parse_source`).

    'val' is the source's own validation split when it has one (folder ``val/``), else a stratified
    ``val_fraction`` of the training set (then 'train' excludes it), else the test split (IDX, CIFAR, a
    folder with ``test/``). Flat folders and CSV files have no split of their own: without ``val_fraction``
    they hold out 10% for 'val', so training never validates on its own images; 'all' is every file, and so is
    a CSV file's 'test' (a flat folder has no 'test': asking for it is an error that points to 'all').
    """
    if split not in ("train", "val", "test", "all"):
        raise VitkitError(f"split must be 'train', 'val', 'test' or 'all', got {split!r}")
    if not 0 <= val_fraction < 1:
        raise VitkitError(f"val_fraction must be in [0, 1), got {val_fraction}")
    kind, path = parse_source(source)
    if kind == "csv":
        ds = load_csv(path)
        return ds if split in ("test", "all") else _carve(ds, split, val_fraction or 0.1, seed)
    if split == "all" and kind == "folder":  # every file, e.g. a separate validation source
        root = Path(path).expanduser()
        _check_folder(root)
        return _scan_class_dirs(root).dataset(f"folder:{root}")
    if split == "all":
        split = "test"  # array data sets: their held-out split
    if kind in ("sample", "fashion-mnist", "mnist", "cifar10", "cifar100"):
        if kind == "sample":
            kind, path = "fashion-mnist", str(SAMPLE_DIR)
        if not path:
            path = str(Path.home() / ".cache" / "vitkit" / kind)

        def load(s: str) -> ArrayDataset:
            return load_idx(kind, path, s, download) if "mnist" in kind else load_cifar(kind, path, s)

        if split == "test" or (split == "val" and val_fraction == 0):
            ds = load("test")
        else:
            ds = load("train")
            if val_fraction > 0:
                ds = _carve(ds, split, val_fraction, seed)
        if source == "sample":
            ds.source = "sample"
        return ds
    return _folder_split(Path(path).expanduser(), split, val_fraction, seed)


def _check_folder(root: Path) -> None:
    try:
        is_dir = stat.S_ISDIR(os.stat(root).st_mode)
    except FileNotFoundError:
        raise VitkitError(f"image folder {root} does not exist") from None
    except (OSError, ValueError) as e:
        raise VitkitError(f"cannot read folder {root}: {getattr(e, 'strerror', None) or e}") from None
    if not is_dir:
        raise VitkitError(f"{root} is not a folder")


def _folder_split(root: Path, split: str, val_fraction: float, seed: int) -> FileDataset:
    _check_folder(root)
    dirs = {s: _split_dir(root, s) for s in SPLIT_DIRS}
    train_dir = dirs["train"]
    if train_dir is None:  # root/<class>/...: hold out a part for validation
        if split == "test":
            raise VitkitError(
                f"{root}: no test/ sub-folder (layout: {root}/train|val|test/<class>/<images>); "
                "split 'all' (--split all) scores every image of a folder of class folders"
            )
        return _carve(_scan_class_dirs(root).dataset(f"folder:{root}"), split, val_fraction or 0.1, seed)
    fence = (root, *(d for d in dirs.values() if d is not None))  # a link from one split must not reach another
    train = _scan_class_dirs(train_dir, fence)
    holdout = 0.0  # the part of train/ held out for 'val' when there is no val/ folder
    if dirs["val"] is None and (val_fraction > 0 or dirs["test"] is None):
        holdout = val_fraction or 0.1
    if split == "train" or (split == "val" and holdout):
        ds = train.dataset(f"folder:{train_dir}")
        return _carve(ds, split, holdout, seed) if holdout else ds
    wanted = dirs[split] or (dirs["test"] if split == "val" else None)
    if wanted is None:
        raise VitkitError(f"{root}: no {split}/ sub-folder")
    scan = _scan_class_dirs(wanted, fence)
    index = {c: i for i, c in enumerate(train.classes)}
    extra = sorted(set(scan.classes) - set(index))
    if extra:
        raise VitkitError(f"{wanted}: classes {', '.join(extra)} do not exist in {train_dir}")
    samples, leaked = [], []
    for (p, t), real in zip(scan.samples, scan.real_paths, strict=True):
        if real in train.files:
            leaked.append(p)
        else:
            samples.append((p, index[scan.classes[t]]))
    if leaked:
        warnings.warn(
            f"{wanted}: left out {len(leaked)} files that are training images too (the same file under "
            f"{train_dir}), e.g. {leaked[0]}",
            stacklevel=3,
        )
    if not samples:
        raise VitkitError(f"{wanted}: no image files that are not also under {train_dir}")
    return FileDataset(samples, list(train.classes), f"folder:{wanted}")


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (atomically); used for the bundled sample."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
            f.write(header + array.tobytes())

    atomic_write(path, write)


__all__ = [
    "ArrayDataset",
    "FileDataset",
    "build_dataset",
    "download_idx",
    "load_cifar",
    "load_csv",
    "load_idx",
    "parse_source",
    "read_idx",
    "safe_unpickle",
    "stratified_split",
    "write_idx",
]
