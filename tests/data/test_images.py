"""One evaluation pipeline for image files: the same pixels everywhere, bounded memory, bad files as one-line errors."""

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import vitkit
from tests.data.conftest import noise, save
from vitkit.data import DataSpec, FileDataset, Loader, PILTransform, open_image, to_channels, transforms
from vitkit.data.transforms import eval_geometry, eval_image, eval_resize_crop
from vitkit.errors import VitkitError
from vitkit.eval.evaluate import evaluate
from vitkit.predict import load_image

RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


# --- bounded memory --------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 4000), (4000, 1)])
def test_extreme_aspect_ratios_are_resized_to_the_output_only(tmp_path, monkeypatch, size):
    path = save(noise(size), tmp_path / "line.png")
    sizes = []
    resize = Image.Image.resize

    def recording_resize(self, out_size, *args, **kwargs):
        sizes.append(tuple(out_size))
        return resize(self, out_size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    spec = DataSpec((224, 224), 3, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)
    x = load_image(path, spec)
    assert x.shape == (3, 224, 224) and torch.isfinite(x).all()
    assert sizes and all(w <= 224 and h <= 224 for w, h in sizes)
    assert eval_image(noise(size), spec).shape == (3, 224, 224)


MEASURE = """
import json, resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux, bytes on macOS
print(json.dumps({"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr,
                  "peak_mb": peak / (1 << 20 if sys.platform == "darwin" else 1 << 10)}))
"""


def test_predict_on_a_one_pixel_wide_image_keeps_memory_small(tmp_path):
    """A whole-image resize of 1 x 4000 to a 224 px short side would need a 224 x 896,000 RGB intermediate."""
    model = vitkit.create_model("vit_base_patch16_224", embed_dim=32, depth=1, num_heads=2, num_classes=3)
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    image = save(noise((1, 4000)), tmp_path / "tall.png")
    src = str(Path(vitkit.__file__).parents[1])  # this checkout's src/, not another installed copy
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vitkit", "predict", str(tmp_path / "ckpt"), str(image), "--json"]
    cmd += ["--reference", "--device", "cpu", "--threads", "1"]
    r = subprocess.run([sys.executable, "-c", MEASURE, *cmd], env=env, capture_output=True, text=True, timeout=300)
    out = json.loads(r.stdout)
    assert out["rc"] == 0, out["stderr"]
    (prediction,) = json.loads(out["stdout"])
    assert prediction["path"] == str(image) and len(prediction["predictions"]) == 3
    assert out["peak_mb"] < 600, out["peak_mb"]


# --- the same computation ---------------------------------------------------------------------------
@pytest.mark.parametrize("region", [False, True], ids=["as-chosen", "region-only"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
@pytest.mark.parametrize(
    ("size", "img_size", "crop_pct"),
    [
        ((40, 30), (16, 16), 0.875),
        ((30, 40), (16, 16), 0.9),
        ((97, 13), (24, 24), 1.0),
        ((13, 97), (24, 24), 0.875),  # PIL 13 takes a region call's passes in another order than the whole image's
        ((50, 50), (16, 24), 0.875),
        ((64, 20), (24, 16), 0.95),
        ((3, 258), (224, 16), 0.875),
        ((7, 5), (16, 16), 0.875),
        ((300, 200), (224, 224), 0.875),
        ((2, 300), (16, 16), 0.875),  # extreme aspect ratios: the region is resized even when not forced
        ((700, 5), (24, 24), 0.9),
    ],
)
def test_resize_crop_is_whole_resize_then_centre_crop(monkeypatch, size, img_size, crop_pct, interpolation, region):
    if region:
        monkeypatch.setattr(transforms, "WHOLE_RESIZE_LIMIT", 0)
    spec = DataSpec(img_size, 3, (0.5,) * 3, (0.5,) * 3, interpolation, crop_pct)
    img = noise(size, seed=sum(size))
    nh, nw, top, left = eval_geometry(size[1], size[0], spec)
    th, tw = img_size
    whole = img.resize((nw, nh), RESAMPLE[interpolation]).crop((left, top, left + tw, top + th))
    got = eval_resize_crop(img, spec)
    assert got.size == whole.size == (tw, th)
    diff = np.abs(np.asarray(got, dtype=np.int16) - np.asarray(whole, dtype=np.int16))
    assert diff.max() <= 1
    if not region and nh * nw <= transforms.WHOLE_RESIZE_LIMIT * th * tw:
        assert diff.max() == 0  # the same computation


class Recorder(torch.nn.Module):
    """Stands in for a classifier: keeps the batches it is fed."""

    num_classes = 2

    def __init__(self, in_chans: int) -> None:
        super().__init__()
        self.data_config = {
            "input_size": (in_chans, 16, 16),
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
            "interpolation": "bicubic",
            "crop_pct": 0.875,
        }
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.zeros(len(x), self.num_classes)


def mode_file(tmp_path: Path, mode: str) -> Path:
    """A 37 x 23 file whose decoded mode is ``mode``."""
    rng = np.random.default_rng(3)
    base = noise((37, 23), "RGBA", seed=4)
    if mode in ("L", "RGB", "RGBA", "LA", "1"):
        return save(base.convert(mode), tmp_path / f"{mode}.png")
    if mode == "P":
        img = base.convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=16)
        return save(img, tmp_path / "P.png", transparency=3)
    if mode == "I;16":
        return save(Image.fromarray(rng.integers(0, 65536, (23, 37), dtype=np.uint16)), tmp_path / "I16.png")
    if mode == "I":
        return save(Image.fromarray(rng.integers(-5, 100_000, (23, 37), dtype=np.int32)), tmp_path / "I.tif")
    if mode == "F":
        return save(Image.fromarray(rng.random((23, 37), dtype=np.float32)), tmp_path / "F.tif")
    if mode == "CMYK":
        return save(base.convert("CMYK"), tmp_path / "CMYK.tif")
    raise ValueError(mode)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F", "CMYK", "1"])
def test_predict_eval_and_validation_see_identical_tensors(tmp_path, mode, channels):
    path = mode_file(tmp_path, mode)
    with Image.open(path) as img:
        assert img.mode == mode  # the file really holds this mode
    model = Recorder(channels)
    spec = DataSpec.from_model(model)
    expected = load_image(path, spec)  # vitkit predict
    assert expected.shape == (channels, 16, 16) and torch.isfinite(expected).all()
    ds = FileDataset([(str(path), 0), (str(path), 1)], ["a", "b"], "files")
    evaluate(model, ds, batch_size=2)  # vitkit eval on image files
    assert torch.equal(model.seen[0][0], expected) and torch.equal(model.seen[0][1], expected)
    assert torch.equal(PILTransform(spec, train=False)(open_image(path)), expected)
    (batch,) = Loader(ds, spec, batch_size=2, train=False).batches(0)  # training validation
    assert torch.equal(batch.x[0], expected)


def test_deep_images_are_scaled_from_their_range(tmp_path):
    ramp = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    got = np.asarray(to_channels(open_image(save(Image.fromarray(ramp), tmp_path / "deep.png")), 1))
    assert got.min() == 0 and got.max() == 255
    np.testing.assert_array_equal(got, np.round(ramp / 65535 * 255).astype(np.uint8))
    ints = np.linspace(0, 1000, 64).astype(np.int32).reshape(8, 8)
    got = np.asarray(to_channels(open_image(save(Image.fromarray(ints), tmp_path / "i.tif")), 1))
    np.testing.assert_array_equal(got, np.round(ints / 1000 * 255).astype(np.uint8))
    for top in (1.0, 4000.0):
        floats = np.linspace(0, top, 64, dtype=np.float32).reshape(8, 8)
        got = np.asarray(to_channels(open_image(save(Image.fromarray(floats), tmp_path / "f.tif")), 3))
        assert got.shape == (8, 8, 3) and got.min() == 0 and got.max() == 255
        np.testing.assert_array_equal(got[..., 1], np.round(floats.astype(np.float64) / top * 255).astype(np.uint8))


def test_other_colour_spaces_become_rgb_or_a_named_error(tmp_path):
    path = save(Image.new("LAB", (8, 8), (60, 130, 120)), tmp_path / "lab.tif")
    with Image.open(path) as img:
        assert img.mode == "LAB"
    try:
        img = open_image(path)
    except VitkitError as e:  # a Pillow without colour management cannot convert LAB
        assert str(e).startswith(f"{path}: cannot read image") and "\n" not in str(e)
    else:
        assert img.mode == "RGB"
        assert eval_image(img, DataSpec((4, 4), 3, (0.5,) * 3, (0.5,) * 3)).shape == (3, 4, 4)


# --- EXIF orientation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_exif_orientation_6_gives_the_upright_image(tmp_path, ext):
    upright = noise((40, 24))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways writes
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    tagged = save(stored, tmp_path / f"tagged.{ext}", exif=exif)
    plain = save(stored, tmp_path / f"plain.{ext}")  # the same pixels, no tag
    spec = DataSpec((16, 16), 3, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875)
    with Image.open(plain) as img:
        by_hand = img.transpose(Image.Transpose.ROTATE_270)  # decoded as stored, turned upright by hand
    assert open_image(tagged).size == (40, 24)
    assert torch.equal(load_image(tagged, spec), eval_image(by_hand, spec))
    if ext == "png":  # lossless: exactly the pre-rotated image
        assert torch.equal(load_image(tagged, spec), eval_image(upright, spec))


# --- files that are not images ---------------------------------------------------------------------
def bad_file(tmp_path: Path, kind: str) -> Path:
    if kind in ("truncated.png", "truncated.jpg"):
        good = save(noise((64, 64)), tmp_path / f"good.{kind[-3:]}").read_bytes()
        return save_bytes(tmp_path / kind, good[: len(good) // 2])
    if kind == "empty.png":
        return save_bytes(tmp_path / kind, b"")
    if kind == "text.jpg":
        return save_bytes(tmp_path / kind, b"eggs, milk, flour\n")
    raise ValueError(kind)


def save_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def loaders():
    return [open_image, lambda p: FileDataset([(str(p), 0)], ["a"])[0][0]]


@pytest.mark.parametrize("kind", ["truncated.png", "truncated.jpg", "empty.png", "text.jpg"])
def test_broken_files_are_one_line_errors_naming_them(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    for load in loaders():
        with pytest.raises(VitkitError, match=rf"^{re.escape(str(path))}: cannot read image") as e:
            load(path)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("limit", [64 * 64 - 1, 100])  # PIL itself only warns between 1x and 2x the limit
def test_decompression_bombs_are_refused(tmp_path, monkeypatch, limit):
    path = save(noise((64, 64)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    for load in loaders():
        with pytest.raises(VitkitError, match=rf"^{re.escape(str(path))}: refused to decode") as e:
            load(path)
        assert "\n" not in str(e.value)


def test_a_decoder_failing_its_own_way_is_a_named_error(tmp_path, monkeypatch):
    path = save(noise((8, 8)), tmp_path / "odd.png")

    def failing_load(self):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    for load in loaders():
        with pytest.raises(VitkitError, match=rf"^{re.escape(str(path))}: cannot read image \(error: unpack"):
            load(path)


def test_paths_that_cannot_be_opened(tmp_path):
    with pytest.raises(VitkitError, match="image file not found"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(VitkitError, match="cannot read image"):
        open_image(str(tmp_path / "nul\0.png"))
