"""`vitkit push` against a fake Hub (HfApi's methods replaced: no network) and the card `vitkit eval` writes."""

import json

import pytest
import torch

import vitkit
from tests.cli.conftest import one_line_error
from tests.test_publish import FakeHub, fake_run
from vitkit.cli import main
from vitkit.errors import VitkitError

pytest.importorskip("huggingface_hub")


def test_push_uploads_weights_config_card_and_evaluation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may reach the network
    run = fake_run(tmp_path)
    hub = FakeHub(tmp_path)
    hub.install(monkeypatch)
    rc = main(["push", str(run), "me/fm-vit", "--private", "--token", "hf_x", "--message", "first"])
    assert rc == 0, capsys.readouterr().err
    assert "https://huggingface.co/me/fm-vit/commit/abc" in capsys.readouterr().out
    (_, create), (_, upload) = hub.calls
    assert create == {"repo_id": "me/fm-vit", "token": "hf_x", "private": True, "exist_ok": True, "repo_type": "model"}
    assert upload["commit_message"] == "first" and upload["repo_type"] == "model"
    files = sorted(p.name for p in hub.uploaded.iterdir())
    assert files == ["README.md", "config.json", "confusion_matrix.png", "eval_report.json", "model.safetensors"]
    card = (hub.uploaded / "README.md").read_text()
    assert "![confusion matrix](confusion_matrix.png)" in card and 'from_pretrained("hf-hub:me/fm-vit")' in card
    assert "top1: 0.9123" in card and "vitkit train --model vit_nano_patch4_28" in card
    pushed = vitkit.from_pretrained(hub.uploaded)  # what a user downloads loads back
    local = vitkit.from_pretrained(run)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(pushed(x), local(x), rtol=0, atol=0)
    assert pushed.class_names == [f"c{i}" for i in range(10)]


def test_push_in_transformers_format(tmp_path, monkeypatch):
    run = fake_run(tmp_path, "swin")
    hub = FakeHub(tmp_path)
    hub.install(monkeypatch)
    vitkit.publish.push(run / "best", "me/fm-swin", format="transformers")
    config = json.loads((hub.uploaded / "config.json").read_text())
    assert config["model_type"] == "swin" and config["id2label"]["3"] == "c3"
    assert (hub.uploaded / "preprocessor_config.json").is_file()
    assert "AutoModelForImageClassification" in (hub.uploaded / "README.md").read_text()


def test_push_failures_are_one_line(tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path)
    FakeHub(tmp_path, fail=RuntimeError("401 Client Error: Unauthorized\nmore lines")).install(monkeypatch)
    line = one_line_error(capsys, main(["push", str(run), "me/x"]), "push to me/x failed", "Unauthorized")
    assert "hf auth login" in line
    one_line_error(capsys, main(["push", str(run), "not-a-repo-id"]), "expected 'org/name'")
    one_line_error(capsys, main(["push", "hf-hub:a/b", "me/x"]), "push a local checkpoint")
    one_line_error(capsys, main(["push", str(run), "me/x", "--eval-dir", str(tmp_path)]), "no report.json")
    with pytest.raises(VitkitError, match="timm has no cvt models"):
        vitkit.save_pretrained(vitkit.create_model("cvt_nano_28"), tmp_path / "t", format="timm")


def test_eval_writes_the_card_beside_the_checkpoint(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    rc = main(["eval", str(run_dir), "--max-samples", "50", "--output-dir", str(tmp_path / "ev")])
    assert rc == 0
    out = capsys.readouterr().out
    checkpoint = vitkit.hub.resolve_source(run_dir)
    assert f"model card: {checkpoint / 'README.md'}" in out
    card = (checkpoint / "README.md").read_text()
    assert "## Training" in card and "- data: `sample`" in card and "## Evaluation" in card
    assert "50 images" in card and "confusion_matrix.png" in card
