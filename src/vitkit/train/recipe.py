"""Default settings from what the data looks like: one small table, applied under the settings a user gives.

``vitkit train --data D --time-limit-minutes N`` with no other flag picks a model and recipe for D from its images'
size, channels, number of images and classes; ``--pretrained`` turns the defaults into a fine-tuning recipe. Every
setting the user gives (flag or ``--config`` file) wins over the recipe. The rule, first match:

| data / flags                         | recipe                                                                      |
|--------------------------------------|-----------------------------------------------------------------------------|
| ``pretrained`` given                 | fine-tune: the checkpoint's architecture, resolution and normalisation,     |
|                                      | lr 1e-4 at batch 32, layer decay 0.75, short warm-up                        |
| images up to 40 px (MNIST-like)      | ``SMALL_IMAGES``: the measured Fashion-MNIST recipe, at the data's size;   |
|                                      | random crops (2 px) only in runs expected to last 30 epochs or more         |
| larger images (photos)               | the small CvT at 64 px, flip, batch and lr for the data set's size          |

Then, whatever the row: data sets whose only held-out split is their test split (IDX, CIFAR) hold out 10% of the
training images for validation, so the test split is never used to pick a checkpoint; the batch is at most a
sixteenth of the training images (a small folder still takes many steps per epoch), and the learning rate scales
with the square root of the batch size when the batch is not the recipe's.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitkit.data import build_dataset
from vitkit.data.datasets import parse_source

SMALL_SIDE = 40  # px: up to this, the small-image recipe
PHOTO_SIZE = 64  # px: the resolution larger images are trained at from scratch
# The Fashion-MNIST recipe (docs/recipes.md has what was tried and measured).
SMALL_IMAGES: dict[str, Any] = {
    "model": "cvt_nano_28",
    "batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 0.05,
    "warmup_epochs": 1.0,
    "warmup_fraction": 0.05,
    "label_smoothing": 0.1,
    "drop_path_rate": 0.1,
    "aug": "flip",
    # random crops cost accuracy in short runs and gain it in long ones: only from this many epochs
    "crop_padding": 2,
    "crop_min_epochs": 30.0,
}
PHOTOS: dict[str, Any] = SMALL_IMAGES | {"img_size": PHOTO_SIZE}
FINE_TUNE: dict[str, Any] = {
    "model": "",  # the checkpoint's own architecture (and with it its resolution and normalisation)
    "batch_size": 32,
    "lr": 1e-4,
    "layer_decay": 0.75,
    "warmup_epochs": 0.5,
    "warmup_fraction": 0.05,
    "drop_path_rate": 0.1,
    "label_smoothing": 0.1,
    "aug": "flip",
}
_TEST_AS_VAL = ("sample", "fashion-mnist", "mnist", "cifar10", "cifar100")  # no val split of their own


@dataclass(frozen=True)
class DataInfo:
    """What the recipe looks at: number of training images and classes, channels, typical short side in px."""

    source: str
    images: int
    classes: int
    channels: int
    side: int
    test_as_val: bool = False

    def summary(self) -> str:
        color = {1: "grey", 3: "RGB"}.get(self.channels, f"{self.channels}-channel")
        return f"{self.images:,} {color} images of about {self.side} px, {self.classes} classes"


@dataclass(frozen=True)
class Recipe:
    name: str
    settings: dict[str, Any] = field(default_factory=dict)  # only what the user did not give
    reason: str = ""

    def line(self) -> str:
        chosen = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"recipe: {self.name} ({chosen or 'every setting given'}) because {self.reason}"


def describe_data(source: str, download: bool = False, sample_files: int = 64) -> DataInfo:
    """Read the training split's size, classes, channels and typical image side (a few file headers for folders)."""
    ds = build_dataset(source, "train", download=download)
    kind, _ = parse_source(source)
    if getattr(ds, "in_memory", False):
        side = min(ds.images.shape[1:3])
        channels = ds.channels
    else:
        from PIL import Image

        picks = np.random.default_rng(0).permutation(len(ds))[:sample_files]
        sides, grey = [], True
        for i in picks:
            try:
                with Image.open(ds.samples[i][0]) as img:
                    sides.append(min(img.size))
                    grey &= img.mode in ("1", "L", "I", "I;16", "F")
            except OSError:
                continue  # an unreadable file is the loop's to report
        side = int(np.median(sides)) if sides else PHOTO_SIZE
        channels = 1 if sides and grey else ds.channels
    return DataInfo(source, len(ds), len(ds.classes), channels, int(side), kind in _TEST_AS_VAL)


def choose(data: DataInfo, given: Mapping[str, Any]) -> Recipe:
    """The recipe for ``data``; ``given`` holds the settings the user set (they stay as they are)."""
    if given.get("pretrained"):
        name, settings = "fine-tune", dict(FINE_TUNE)
        reason = f"a checkpoint is given ({given['pretrained']}); data: {data.summary()}"
    elif data.side <= SMALL_SIDE:
        name, settings = "small images", dict(SMALL_IMAGES)
        if data.side != 28:
            settings["img_size"] = data.side
        reason = f"{data.summary()} (up to {SMALL_SIDE} px)"
    else:
        name, settings = "photos", dict(PHOTOS)
        reason = f"{data.summary()}: larger than {SMALL_SIDE} px, trained at {PHOTO_SIZE} px"
    if "crop_padding" in given:  # crops the user asked for apply to any run length, unless they say otherwise
        settings.pop("crop_min_epochs", None)
    if data.channels == 1:  # also grey image files, which would otherwise be read as RGB
        settings["in_chans"] = 1
    if data.test_as_val:
        settings["val_fraction"] = 0.1
    recipe_batch = settings["batch_size"]
    batch = given.get("batch_size") or min(recipe_batch, max(16, 2 ** int(math.log2(max(data.images // 16, 1)))))
    settings["batch_size"] = batch
    if batch != recipe_batch:
        settings["lr"] = settings["lr"] * math.sqrt(batch / recipe_batch)
    kept = {k: v for k, v in settings.items() if k not in given}
    return Recipe(name, kept, reason)


def recipe_for(given: Mapping[str, Any]) -> Recipe:
    """The recipe for the data that ``given`` names (``data``, default the bundled sample)."""
    return choose(describe_data(given.get("data") or "sample", bool(given.get("download"))), given)
