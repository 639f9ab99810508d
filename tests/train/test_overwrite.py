"""overwrite_output_dir: the earlier run stays until the new one has passed its early checks, then goes entirely."""

import json
from pathlib import Path

import pytest

from vitkit.errors import VitkitError
from vitkit.train import loop as loop_mod
from vitkit.train import train

from .helpers import tiny


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_overwrite_touches_the_old_run_only_once_the_new_one_can_start(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, epochs=1)
    train(cfg)
    run = tmp_path / "run"
    for extra in ("plots/training_curves.png", "eval-test/report.json", "final/config.json", "tensorboard/events"):
        (run / extra).parent.mkdir(exist_ok=True)
        (run / extra).write_text("from the old run")
    (run / "notes.txt").write_text("the user's own file")
    before = _files(run)

    with pytest.raises(VitkitError, match="nowhere"):  # the new run fails while loading its data
        train(cfg.replace(overwrite_output_dir=True, data=f"folder:{tmp_path / 'nowhere'}"))
    assert _files(run) == before

    real_loss = loop_mod.soft_cross_entropy
    monkeypatch.setattr(loop_mod, "soft_cross_entropy", lambda logits, target: real_loss(logits, target) * float("nan"))
    with pytest.raises(VitkitError, match="not finite"):  # the new run starts, then fails at its first step
        train(cfg.replace(overwrite_output_dir=True, seed=1))
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "train_config.json"]
    assert json.loads((run / "train_config.json").read_text())["seed"] == 1
