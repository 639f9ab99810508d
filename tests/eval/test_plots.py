import json

import pytest
import torch

from vitkit.errors import VitkitError
from vitkit.eval.plots import (
    plot_confusion_matrix,
    plot_misclassified,
    plot_training_curves,
    read_jsonl,
    training_curves,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(path):
    records = [{"type": "train", "step": s, "epoch": s / 4, "loss": 2.0 / s, "lr": 1e-3 * s / 8} for s in range(1, 9)]
    records += [
        {"type": "epoch", "epoch": e, "step": 4 * e, "train_loss": 1.0 / e, "train_acc": 0.5 + e / 10,
         "val_acc": 0.45 + e / 10, "val_top5": 0.9, "best_val_acc": 0.55, "lr": 1e-3 * e / 2, "time_s": 3.0 * e}
        for e in (1, 2)
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in records) + '\n{"type": "train", "st')  # torn last line
    return records


def test_training_curves_groups_series(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _metrics(path)
    records = read_jsonl(path)
    assert len(records) == 10  # the torn line is ignored
    panels = training_curves(records)
    assert set(panels) == {"loss", "accuracy", "learning rate"}
    assert set(panels["loss"]) == {"loss (per step)", "train_loss (per epoch)"}
    assert panels["loss"]["train_loss (per epoch)"] == ([4.0, 8.0], [1.0, 0.5])  # x = optimizer step
    assert set(panels["accuracy"]) == {"train_acc (per epoch)", "val_acc (per epoch)", "val_top5 (per epoch)"}
    assert list(panels["learning rate"]) == ["lr (per step)"]  # the denser of the two lr series
    assert len(panels["learning rate"]["lr (per step)"][0]) == 8


def test_plot_training_curves_png(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _metrics(path)
    out = plot_training_curves(path, tmp_path / "plots" / "curves.png", title="run")
    assert out.read_bytes()[:8] == PNG
    with pytest.raises(VitkitError, match="no such metrics file"):
        plot_training_curves(tmp_path / "missing.jsonl", tmp_path / "x.png")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"note": 1}\n')
    with pytest.raises(VitkitError, match="no step/epoch records"):
        plot_training_curves(empty, tmp_path / "x.png")


def test_confusion_and_misclassified_png(tmp_path):
    cm = torch.tensor([[5, 1], [0, 4]])
    assert plot_confusion_matrix(cm, tmp_path / "cm.png", ["a", "b"], "t").read_bytes()[:8] == PNG
    images = torch.rand(3, 1, 28, 28)
    out = plot_misclassified(images, [0, 1, 1], [1, 0, 0], tmp_path / "m.png", ["a", "b"], [0.9, 0.8, 0.7])
    assert out.read_bytes()[:8] == PNG
    rgb = plot_misclassified(torch.rand(2, 3, 8, 8), [0, 1], [1, 0], tmp_path / "rgb.png")
    assert rgb.read_bytes()[:8] == PNG
    assert plot_misclassified(torch.zeros(0, 1, 8, 8), [], [], tmp_path / "none.png").is_file()
