"""The bad-input corpus: small hostile or careless inputs for every door into vitkit, written by :func:`write`.

``python -m tests.robustness.corpus DIR`` writes it to DIR (the tests write it to a temporary folder). Each
:class:`Case` names the command it is fed to, what must happen (``error``: exit status 2 and one line naming
``needle``; ``handled``: exit status 0 or the documented status) and why the case exists. Nothing here is
random: the corpus is the same on every machine.
"""

import gzip
import io
import json
import os
import pickle
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]  # the vitkit command line; "{root}" is the corpus folder, "{model}" a good tiny checkpoint
    expect: str  # "error" (exit 2, one line naming needle) or "handled" (exit status `status`, no traceback)
    needle: str = ""
    status: int = 0
    why: str = ""
    outputs: list[str] = field(default_factory=list)  # files that must exist afterwards (handled cases)


def _png(path: Path, img: Image.Image, **kw) -> Path:
    img.save(path, format="PNG", **kw)
    return path


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming width x height, with a tiny compressed body: decoding it would be huge."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _exif_rotated_jpeg(path: Path) -> Path:
    img = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    img.save(path, format="JPEG", exif=exif.tobytes())
    return path


def images(root: Path) -> dict[str, Path]:
    """One file (or file-like thing) per image case, in ``root/images``."""
    d = root / "images"
    d.mkdir(parents=True, exist_ok=True)
    good = _png(d / "good.png", Image.new("L", (28, 28), 128))
    out = {"good": good}
    data = good.read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 2])
    out["truncated_png"] = d / "truncated.png"
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="JPEG")
    (d / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    out["truncated_jpeg"] = d / "truncated.jpg"
    (d / "empty.png").write_bytes(b"")
    out["empty"] = d / "empty.png"
    (d / "text.jpg").write_text("this is not an image\n")
    out["text"] = d / "text.jpg"
    out["bomb"] = _bomb_png(d / "bomb.png", 60000, 60000)
    out["wide"] = _png(d / "wide.png", Image.new("L", (4000, 1), 255))  # 1 x 4000: tiny file, extreme aspect
    out["tall"] = _png(d / "tall.png", Image.new("L", (1, 4000), 255))
    sixteen = Image.fromarray(np.linspace(0, 65535, 28 * 28).astype(np.uint16).reshape(28, 28))
    out["sixteen_bit"] = _png(d / "sixteen.png", sixteen)
    out["cmyk"] = d / "cmyk.jpg"
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(out["cmyk"], format="JPEG")
    out["exif_rotated"] = _exif_rotated_jpeg(d / "rotated.jpg")
    out["palette_alpha"] = _png(d / "palette.png", Image.new("P", (20, 20), 3), transparency=3)
    frames = [Image.new("L", (20, 20), v) for v in (0, 128, 255)]
    out["animated_gif"] = d / "animated.gif"
    frames[0].save(out["animated_gif"], save_all=True, append_images=frames[1:])
    (d / "folder.png").mkdir(exist_ok=True)
    out["directory_named_png"] = d / "folder.png"
    dangling = d / "dangling.png"
    if not dangling.is_symlink():
        dangling.symlink_to(d / "does-not-exist.png")
    out["dangling_symlink"] = dangling
    if hasattr(os, "mkfifo"):
        fifo = d / "fifo.png"
        if not fifo.exists():
            os.mkfifo(fifo)
        out["fifo"] = fifo
    return out


def checkpoints(root: Path, good: Path) -> dict[str, Path]:
    """Copies of a good vitkit checkpoint with one thing broken each, in ``root/checkpoints``."""
    import shutil

    d = root / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((good / "config.json").read_text())
    out = {}

    def variant(name: str, change_config=None, files: dict[str, bytes] | None = None) -> Path:
        target = d / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(good, target)
        if change_config is not None:
            value = change_config(json.loads(json.dumps(cfg)))
            (target / "config.json").write_text(value if isinstance(value, str) else json.dumps(value))
        for fname, content in (files or {}).items():
            (target / fname).write_bytes(content)
        out[name] = target
        return target

    def field_(key, value):
        def change(c):
            c["vitkit"]["config"][key] = value
            return c

        return change

    variant("not_json", lambda c: "{ this is not json")
    variant("json_list", lambda c: "[1, 2, 3]")
    variant("unknown_family", lambda c: {**c, "vitkit": {**c["vitkit"], "family": "resnet"}})
    variant("unknown_field", field_("turbo", True))
    variant("string_for_number", field_("embed_dim", "sixteen"))
    variant("negative_width", field_("embed_dim", -1))
    variant("heads_not_dividing", field_("num_heads", 3))
    variant("huge_depth", field_("depth", 10**9))
    variant("nan_rate", field_("drop_path_rate", float("nan")))
    weights = (good / "model.safetensors").read_bytes()
    variant("truncated_weights", files={"model.safetensors": weights[: len(weights) // 3]})
    target = variant("index_outside_folder")
    (target / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"head.weight": "../outside.safetensors"}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    target = variant("malicious_pickle")
    (target / "model.safetensors").unlink()
    (target / "pytorch_model.bin").write_bytes(pickle.dumps(_Evil(), protocol=2))  # torch.load's own protocol:
    # the unpickler reaches the global (protocol 4 would be refused earlier, at its first FRAME)
    target = variant("missing_weights")
    (target / "model.safetensors").unlink()
    return out


class _Evil:
    """Unpickling this would run a shell command; vitkit must refuse it without running anything."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/vitkit-corpus-pwned",))


def data_sets(root: Path, good_image: Path) -> dict[str, Path]:
    """Data sources with one problem each, in ``root/data``."""
    d = root / "data"
    out = {}
    csv = d / "latin1.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_bytes(b"path,label\n" + "caf\xe9.png,a\n".encode("latin-1"))
    out["non_utf8_csv"] = csv
    missing = d / "missing.csv"
    rows = []  # one readable image for each of the good model's first 9 classes, a missing one for the 10th
    for label in range(9):
        (d / f"ok{label}.png").write_bytes(good_image.read_bytes())
        rows.append(f"{d / f'ok{label}.png'},{label}")
    rows.append("nope.png,9")
    missing.write_text("path,label\n" + "\n".join(rows) + "\n")
    out["csv_missing_file"] = missing
    empty = d / "empty_folder"
    (empty / "cat").mkdir(parents=True, exist_ok=True)
    out["empty_folder"] = empty
    bad = d / "all_bad"
    for cls in ("a", "b"):
        (bad / cls).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            (bad / cls / f"{i}.png").write_text("not an image")
    out["all_bad_images"] = bad
    idx = d / "idx"
    idx.mkdir(parents=True, exist_ok=True)
    with gzip.open(idx / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 100, 28, 28) + b"\0" * 500)  # says 100 images, holds 0.6
    with gzip.open(idx / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 100) + bytes(100))
    out["truncated_idx"] = idx
    loop = d / "loop"
    (loop / "a").mkdir(parents=True, exist_ok=True)
    (loop / "b").mkdir(parents=True, exist_ok=True)
    for cls in ("a", "b"):
        for i in range(3):
            _png(loop / cls / f"{i}.png", Image.new("L", (28, 28), 60 * i))
    if not (loop / "a" / "again").is_symlink():
        (loop / "a" / "again").symlink_to(loop, target_is_directory=True)  # a -> .. -> a -> ...
    out["symlink_loop"] = loop
    return out


IMAGE_FILES = {  # case -> file under images/
    "truncated_png": "truncated.png",
    "truncated_jpeg": "truncated.jpg",
    "empty": "empty.png",
    "text": "text.jpg",
    "bomb": "bomb.png",
    "wide": "wide.png",
    "tall": "tall.png",
    "sixteen_bit": "sixteen.png",
    "cmyk": "cmyk.jpg",
    "exif_rotated": "rotated.jpg",
    "palette_alpha": "palette.png",
    "animated_gif": "animated.gif",
    "directory_named_png": "folder.png",
    "dangling_symlink": "dangling.png",
    "fifo": "fifo.png",
}


def write(root: Path, good_checkpoint: Path) -> None:
    """Write every file of the corpus under ``root``."""
    img = images(root)
    checkpoints(root, good_checkpoint)
    data_sets(root, img["good"])


def cases(root: Path, model: Path) -> list[Case]:
    """The cases, for a corpus written to ``root`` and a good tiny grey 28 px checkpoint ``model``."""
    image = lambda key: str(root / "images" / IMAGE_FILES[key])
    good, data, out, m = str(root / "images" / "good.png"), root / "data", root / "outputs", str(model)
    predict = lambda key: ["predict", m, image(key)]
    result = [
        Case("truncated_png", predict("truncated_png"), "handled", "cannot read image", 1, "one line, exit 1"),
        Case("truncated_jpeg", predict("truncated_jpeg"), "handled", "cannot read image", 1),
        Case("empty_file", predict("empty"), "handled", "cannot read image", 1),
        Case("text_as_jpeg", predict("text"), "handled", "cannot read image", 1),
        Case("decompression_bomb", predict("bomb"), "handled", "refused to decode", 1),
        Case("extreme_aspect_wide", predict("wide"), "handled", why="1 x 4000: an answer, bounded memory"),
        Case("extreme_aspect_tall", predict("tall"), "handled"),
        Case("sixteen_bit", predict("sixteen_bit"), "handled"),
        Case("cmyk", predict("cmyk"), "handled"),
        Case("exif_rotated", predict("exif_rotated"), "handled"),
        Case("palette_alpha", predict("palette_alpha"), "handled"),
        Case("animated_gif", predict("animated_gif"), "handled", why="the first frame"),
        Case("directory_named_png", predict("directory_named_png"), "handled", "no image files", 1),
        Case("dangling_symlink", predict("dangling_symlink"), "handled", "no such file", 1),
    ]
    if hasattr(os, "mkfifo"):
        result.append(Case("fifo_named_png", predict("fifo"), "handled", "not a regular file", 1, "never opened"))
    for name, needle in (
        ("not_json", "not valid JSON"),
        ("json_list", "expected a JSON object"),
        ("unknown_family", "unknown model family 'resnet'"),
        ("unknown_field", "turbo"),
        ("string_for_number", "embed_dim"),
        ("negative_width", "embed_dim"),
        ("heads_not_dividing", "num_heads"),
        ("huge_depth", "depth"),
        ("nan_rate", "drop_path_rate"),
        ("truncated_weights", "model.safetensors"),
        ("index_outside_folder", "outside.safetensors"),
        ("malicious_pickle", "refused to load"),
        ("missing_weights", "no weights file"),
    ):
        result.append(Case(f"checkpoint_{name}", ["predict", str(root / "checkpoints" / name), good], "error", needle))
    ev = lambda source: ["eval", m, "--data", source, "--output-dir", str(out / "eval")]
    result += [
        Case("csv_non_utf8", ev(f"csv:{data / 'latin1.csv'}"), "error", "latin1.csv"),
        Case("csv_missing_file", ev(f"csv:{data / 'missing.csv'}"), "error", "nope.png"),
        Case("empty_folder", [*ev(f"folder:{data / 'empty_folder'}"), "--split", "all"], "error", "no image files"),
        Case("flat_folder_test_split", ev(f"folder:{data / 'all_bad'}"), "error", "--split all"),
        Case("truncated_idx", ev(f"fashion-mnist:{data / 'idx'}"), "error", "truncated"),
    ]
    train = ["train", "--model", "vit_nano_patch4_28", "--model-args", "depth=1,embed_dim=16,num_heads=2",
             "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--progress", "none", "--no-tensorboard",
             "--overwrite-output-dir", "--output-dir", str(out / "train")]  # fmt: skip
    bad = f"folder:{data / 'all_bad'}"
    result += [
        Case("train_all_bad_images_skipped", [*train, "--data", bad, "--skip-bad-images"], "error", "unreadable"),
        Case("train_all_bad_images", [*train, "--data", bad], "error", "cannot read image"),
        Case(
            "train_symlink_loop",
            [*train, "--data", f"folder:{data / 'loop'}", "--val-fraction", "0.34"],
            "handled",
            why="a loop neither hangs nor multiplies samples",
        ),
    ]
    for flags, needle in (
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--warmup-epochs", "nan"], "--warmup-epochs"),
        (["--betas", "2", "3"], "--betas"),
        (["--device", "tpu"], "--device"),
        (["--img-size", "100000"], "img_size"),
        (["--in-chans", "2"], "--in-chans"),
        (["--max-train-samples", "-1"], "--max-train-samples"),
        (["--early-stopping-patience", "-1"], "--early-stopping-patience"),
        (["--checkpoint-every-steps", "-5"], "--checkpoint-every-steps"),
        (["--batch-size", "0"], "--batch-size"),
        (["--model-args", "depth=1000000000"], "depth"),
    ):
        name = f"flag_{flags[0][2:]}_{flags[1]}".replace("-", "_").replace("=", "_")
        result.append(Case(name, [*train, "--data", "sample", *flags], "error", needle))
    return result


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    import vitkit

    good = target / "good-model"
    vitkit.save_pretrained(vitkit.create_model("vit_nano_patch4_28", depth=1, embed_dim=16, num_heads=2), good)
    write(target, good)
    for case in cases(target, good):
        print(f"{case.name:<40} {case.expect:<8} {' '.join(case.argv)[:100]}")
