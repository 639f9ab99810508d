"""Model cards beside checkpoints and ``vitkit push`` against a fake Hub (no network: HfApi's methods replaced)."""

import json
import shutil
from pathlib import Path

import pytest

import vitkit
from vitkit.publish import model_card, train_command, write_model_card
from vitkit.train.config import TrainConfig

huggingface_hub = pytest.importorskip("huggingface_hub")

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16  # enough of a PNG for a file that is only copied


def fake_run(tmp_path: Path, family: str = "vit") -> Path:
    """A training run as `vitkit train` leaves it (train_config.json, best/), evaluated by `vitkit eval`."""
    name = {"vit": "vit_nano_patch4_28", "swin": "swin_nano_patch2_window7_28"}[family]
    model = vitkit.create_model(name, depth=1, embed_dim=16, num_heads=2) if family == "vit" else (
        vitkit.create_model(name, depths=(2, 2), embed_dim=16, num_heads=(2, 2))
    )  # fmt: skip
    model.class_names = [f"c{i}" for i in range(10)]
    run = tmp_path / "run"
    vitkit.save_pretrained(model, run / "best")
    config = TrainConfig(model=name, data="fashion-mnist:/data/fm", epochs=7, lr=1e-3, output_dir=str(run))
    (run / "train_config.json").write_text(json.dumps(config.to_dict()))
    (run / "eval-test").mkdir()
    per_class = [{"name": f"c{i}", "precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 1000} for i in range(10)]
    report = {"data": "fashion-mnist:/data/fm", "split": "test", "num_samples": 10000, "top1": 0.9123}
    report |= {"top5": 0.998, "macro_f1": 0.91, "per_class": per_class}
    (run / "eval-test" / "report.json").write_text(json.dumps(report))
    (run / "eval-test" / "confusion_matrix.png").write_bytes(PNG)
    return run


def test_the_card_says_what_the_weights_are_and_how_they_were_made(tmp_path):
    run = fake_run(tmp_path)
    path = write_model_card(run / "best")
    assert path == run / "best" / "README.md"
    card = path.read_text()
    assert card.startswith("---\nlibrary_name: vitkit\n")
    model = vitkit.from_pretrained(run / "best")
    assert f"parameters: {model.num_params():,}" in card and "`vit_nano_patch4_28` (family `vit`)" in card
    assert "- data: `fashion-mnist:/data/fm`" in card
    assert "vitkit train --model vit_nano_patch4_28 --data fashion-mnist:/data/fm --epochs 7 --lr 0.001" in card
    assert "top1: 0.9123" in card and "| c3 | 0.9000 |" in card
    assert "![confusion matrix](../eval-test/confusion_matrix.png)" in card
    assert "resize the shorter side to 28 px (bilinear), centre-crop 28x28" in card
    assert "normalise with mean [0.286] and std [0.353]" in card


def test_the_card_says_when_the_score_used_test_time_augmentation(tmp_path):
    run = fake_run(tmp_path)
    report_path = run / "eval-test" / "report.json"
    report = json.loads(report_path.read_text()) | {"tta": "flip", "top1_without_tta": 0.9011}
    report_path.write_text(json.dumps(report))
    card = write_model_card(run / "best").read_text()
    assert "- test-time augmentation: flip (the scores below; top1 without it: 0.9011)" in card
    assert "top1: 0.9123" in card


def test_train_command_lists_only_what_differs_from_the_defaults():
    cfg = TrainConfig(model="swin_tiny_patch4_window7_224", pretrained="w.pth", freeze_backbone=True, betas=(0.9, 0.95))
    cmd = train_command(json.loads(json.dumps(cfg.to_dict())))  # as read back from train_config.json
    assert cmd == (
        "vitkit train --model swin_tiny_patch4_window7_224 --pretrained w.pth --freeze-backbone --betas 0.9 0.95"
    )


def test_a_card_without_training_or_evaluation(tmp_path):
    model = vitkit.create_model("cvt_nano_28")
    card = model_card(model, repo_id="org/fm-cvt", format="transformers")
    assert "# fm-cvt" in card and "## Training" not in card and "## Evaluation" not in card
    assert 'AutoModelForImageClassification.from_pretrained("org/fm-cvt")' in card
    assert 'vitkit.from_pretrained("hf-hub:org/fm-cvt")' in card


class FakeHub:
    """Records what HfApi would have been asked, and keeps a copy of the uploaded folder."""

    def __init__(self, tmp_path: Path, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploaded = tmp_path / "uploaded"
        self.fail = fail

    def install(self, monkeypatch) -> None:
        hub = self

        def create_repo(self, repo_id, **kw):
            hub.calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kw}))
            if hub.fail:
                raise hub.fail
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, *, repo_id, folder_path, **kw):
            hub.calls.append(("upload_folder", {"repo_id": repo_id, **kw}))
            shutil.copytree(folder_path, hub.uploaded)
            return huggingface_hub.CommitInfo(
                commit_url=f"https://huggingface.co/{repo_id}/commit/abc",
                commit_message=kw.get("commit_message") or "",
                commit_description="",
                oid="abc",
            )

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
