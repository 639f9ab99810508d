"""benchmarks/explain_faithfulness.py in its seconds-long version: a tiny ViT learns the synthetic pattern task, and
its explanations must point at the pattern and delete / insert it faster than a random order."""

import json

import pytest

from benchmarks import explain_faithfulness

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_run_beats_chance_and_random(tmp_path):
    assert explain_faithfulness.main(["--tiny", "--families", "vit", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "explain_faithfulness.json").read_text())
    pointing = result["pointing"]
    vit = pointing["families"]["vit"]
    assert vit["accuracy"] >= 0.9  # the tiny model learned the task: its decision depends on the pattern
    assert vit["hit_rate"]["rollout"] >= max(0.5, 3 * pointing["chance"])
    rollout, random = vit["blocks"]["rollout"], vit["blocks"]["random"]
    assert rollout["deletion_auc"] < random["deletion_auc"] - 0.05
    assert rollout["insertion_auc"] > random["insertion_auc"] + 0.05
    assert set(vit["hit_rate"]) == {"rollout", "grad-rollout", "gradcam", "integrated-gradients"}
    assert vit["hit_rate"]["integrated-gradients"] >= 3 * pointing["chance"]
    assert (tmp_path / "explain_faithfulness.md").read_text().startswith("### Explanation faithfulness")
