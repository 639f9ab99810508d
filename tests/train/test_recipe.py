"""Defaults from what the data looks like (``vitkit.train.recipe``), checked on generated data sets, never on a test
split: the chosen recipe, and that a short budgeted run with nothing else given learns."""

import json

import numpy as np
import pytest
from PIL import Image

from vitkit.cli import main
from vitkit.train.recipe import DataInfo, choose, describe_data

FM = DataInfo("fashion-mnist:x", 60_000, 10, 1, 28, test_as_val=True)
PHOTOS = DataInfo("folder:x", 300, 3, 3, 300)


def stripes(root, *, n: int, sizes: tuple[int, int], seed: int) -> None:
    """root/{train,val}/{horizontal,vertical}/: light-on-dark RGB stripes of random colours, widths and phases."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n), ("val", max(n // 4, 4))):
        for c, name in enumerate(("horizontal", "vertical")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(count):
                h, w = (int(s) for s in rng.integers(*sizes, size=2))
                period = int(rng.integers(max(h, w) // 12, max(h, w) // 5))
                coord = np.arange(h)[:, None] if c == 0 else np.arange(w)[None, :]
                on = ((coord + rng.integers(period)) // (period // 2 + 1)) % 2 == 0
                fg, bg = rng.integers(160, 256, size=3), rng.integers(0, 96, size=3)  # light on dark
                img = np.where(np.broadcast_to(on, (h, w))[..., None], fg, bg).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")


def test_recipe_table():
    small = choose(FM, {})
    assert small.name == "small images" and small.settings["model"] == "cvt_nano_28"
    assert small.settings["val_fraction"] == 0.1  # the test split never picks the checkpoint
    assert "img_size" not in small.settings and small.settings["batch_size"] == 128
    cifar = choose(DataInfo("cifar10:x", 50_000, 10, 3, 32, test_as_val=True), {})
    assert cifar.name == "small images" and cifar.settings["img_size"] == 32 and "in_chans" not in cifar.settings
    photos = choose(PHOTOS, {})
    assert photos.name == "photos" and photos.settings["img_size"] == 64 and "val_fraction" not in photos.settings
    assert photos.settings["batch_size"] == 16  # 300 images: many steps per epoch, lr scaled with the batch
    assert photos.settings["lr"] == pytest.approx(small.settings["lr"] * (16 / 128) ** 0.5)
    grey = choose(DataInfo("folder:x", 300, 3, 1, 300), {})
    assert grey.settings["in_chans"] == 1
    assert "because 300 RGB images of about 300 px, 3 classes" in photos.line()


def test_fine_tune_recipe_and_given_settings_win():
    ft = choose(PHOTOS, {"pretrained": "runs/x/best"})
    assert ft.name == "fine-tune" and ft.settings["model"] == "" and "img_size" not in ft.settings
    assert ft.settings["lr"] == pytest.approx(1e-4 * (16 / 32) ** 0.5) and ft.settings["layer_decay"] == 0.75
    given = choose(FM, {"lr": 0.01, "model": "vit_nano_patch4_28", "batch_size": 256})
    assert not {"lr", "model", "batch_size"} & set(given.settings)
    assert choose(FM, {"batch_size": 256, "model": "x"}).settings["lr"] == pytest.approx(2e-3 * 2**0.5)


def test_crops_only_in_long_runs_unless_asked_for():
    small = choose(FM, {}).settings
    assert small["crop_padding"] == 2 and small["crop_min_epochs"] == 30  # a long budget crops, a short one not
    asked = choose(FM, {"crop_padding": 3}).settings  # the user's crops apply to any run length
    assert "crop_padding" not in asked and "crop_min_epochs" not in asked
    both = choose(FM, {"crop_padding": 3, "crop_min_epochs": 5}).settings
    assert not {"crop_padding", "crop_min_epochs"} & set(both)
    assert "crop_min_epochs" not in choose(FM, {"pretrained": "runs/x/best"}).settings


def test_describe_data(tmp_path):
    stripes(tmp_path / "photos", n=6, sizes=(200, 400), seed=0)
    info = describe_data(f"folder:{tmp_path / 'photos'}")
    assert (info.images, info.classes, info.channels, info.test_as_val) == (12, 2, 3, False)
    assert 200 <= info.side < 400
    sample = describe_data("sample")
    assert (sample.side, sample.channels, sample.classes, sample.test_as_val) == (28, 1, 10, True)


@pytest.mark.parametrize(
    ("sizes", "recipe", "img_size"),
    [((200, 300), "photos", 64), ((32, 33), "small images", 32)],  # photos; a 32 px RGB set like CIFAR
)
def test_defaults_learn_on_generated_data(tmp_path, capsys, one_thread, sizes, recipe, img_size):
    stripes(tmp_path / "data", n=24, sizes=sizes, seed=1)
    out = tmp_path / "run"
    argv = ["train", "--data", f"folder:{tmp_path / 'data'}", "--budget", "480img", "--output-dir", str(out)]
    assert main([*argv, "--num-workers", "0", "--progress", "none", "--no-tensorboard", "--no-plots"]) == 0
    assert f"recipe: {recipe} (" in capsys.readouterr().out
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["img_size"] == img_size and cfg["budget_images"] == 480 and cfg["epochs"] is None
    last = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"type": "epoch"' in x][-1]
    assert last["val_acc"] >= 0.75  # two classes: chance is 0.5 (the held-out val/ folder)


def test_pretrained_turns_the_defaults_into_fine_tuning(capsys):
    assert main(["train", "--pretrained", "runs/x/best", "--print-config"]) == 0
    captured = capsys.readouterr()
    cfg = json.loads(captured.out)
    assert cfg["model"] == "" and cfg["img_size"] == 0  # the checkpoint's architecture, resolution, normalisation
    assert cfg["lr"] == 1e-4 and cfg["layer_decay"] == 0.75 and cfg["batch_size"] == 32
    assert captured.err.startswith("recipe: fine-tune (")
