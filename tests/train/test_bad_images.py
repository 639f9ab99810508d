"""Unreadable images in training and validation data: found early, skipped and counted, or a clear error."""

import json
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.cli import main as cli_main
from vitkit.data import DataSpec, Loader, build_dataset
from vitkit.errors import VitkitError
from vitkit.train import train, validate
from vitkit.train.distributed import DistInfo

from .helpers import TINY, image_folder, tiny


def folder_cfg(tmp_path, root: Path, **changes):
    return tiny(tmp_path, data=f"folder:{root}", max_train_samples=0, max_val_samples=0, batch_size=4, epochs=1,
                **changes)  # fmt: skip


def test_bad_validation_image_is_found_before_any_training_step(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", val=(4, 1))
    events = []
    cfg = folder_cfg(tmp_path, root)
    with pytest.raises(VitkitError, match=r"broken0\.png: cannot read image.*found before training") as err:
        train(cfg, callbacks=[lambda event, info: events.append(event)])
    assert "\n" not in str(err.value) and "2 unreadable of 10" in str(err.value)
    assert events == [] and not (tmp_path / "run").exists()  # no step, no metrics.jsonl, nothing written

    result = train(cfg.replace(skip_bad_images=True, progress="log"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["skipped_val_images"] == 2  # one bad file in each class folder
    assert sum("skipped_val_images" in r for r in records) == 1
    assert capsys.readouterr().out.count("skipped 2 unreadable validation image(s)") == 1
    assert result.best_checkpoint is not None


def test_every_training_image_unreadable_stops_without_best(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", train=(0, 4))
    with pytest.raises(VitkitError, match=r"every image was unreadable \(8 skipped"):
        train(folder_cfg(tmp_path, root, skip_bad_images=True))
    assert not (tmp_path / "run" / "best").exists() and not (tmp_path / "run" / "last").exists()
    # the command line ends with the error, not with exit status 0
    argv = ["train", "--model", "vit_tiny_patch4_28", "--model-args", TINY["model_args"], "--img-size", "16"]
    argv += ["--data", f"folder:{root}", "--skip-bad-images", "--epochs", "1", "--batch-size", "4"]
    argv += ["--num-workers", "0", "--progress", "none", "--no-tensorboard", "--output-dir", str(tmp_path / "cli")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "every image was unreadable" in err
    assert not (tmp_path / "cli" / "best").exists()


def test_every_validation_image_unreadable(tmp_path):
    root = image_folder(tmp_path / "imgs", val=(0, 2))
    with pytest.raises(VitkitError, match=r"every image of the validation data .* is unreadable \(4 files\)"):
        train(folder_cfg(tmp_path, root, skip_bad_images=True))
    assert not (tmp_path / "run").exists()


def test_validate_refuses_a_split_without_a_readable_image(tmp_path):
    root = image_folder(tmp_path / "imgs", val=(0, 2))
    dataset = build_dataset(f"folder:{root / 'val'}", "all")
    model = vitkit.create_model("vit_tiny_patch4_28", depth=1, embed_dim=32, num_heads=2, img_size=16, in_chans=3)
    loader = Loader(dataset, DataSpec.from_model(model), batch_size=4, train=False, skip_bad_images=True)
    with pytest.raises(VitkitError, match=r"validation saw no image: every one of the 4 validation images"):
        validate(model, loader, torch.device("cpu"), "none", DistInfo())
