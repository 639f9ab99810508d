"""benchmarks/train_loop.py and benchmarks/attention_training.py on the bundled sample: the tables and result files
(never timings)."""

import json

from benchmarks import attention_training, train_loop
from vitkit.settings import malloc_preset


def test_train_loop_runs_every_contender_in_its_own_process_and_writes_the_result(tmp_path, capsys):
    argv = ["--case", "fashion", "--steps", "2", "--warmup", "2", "--rounds", "1", "--batch-size", "16"]
    assert train_loop.main([*argv, "--threads", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| vitkit train |" in out and "| plain loop, vitkit model |" in out
    (result,) = (json.loads(p.read_text()) for p in tmp_path.glob("*.json"))
    assert set(result["images_per_s"]) == {"vitkit train", "plain loop, vitkit model"}
    assert all(v[0] > 0 for v in result["images_per_s"].values())
    assert set(result["left_out"]) == {"plain loop, transformers", "plain loop, timm"}  # no peer builds cvt_nano_28
    assert (
        "cannot build this CvT" in result["left_out"]["plain loop, transformers"]
        or "not importable" in (result["left_out"]["plain loop, transformers"])
    )
    assert result["summary"]["ratio_vs_plain_loop_same_model"] > 0
    assert result["malloc"] == {"vitkit train": malloc_preset(), "plain loops": "default"}


def test_only_picks_contenders_by_a_word_of_their_name(tmp_path, capsys):
    argv = ["--case", "fashion", "--steps", "2", "--warmup", "2", "--rounds", "1", "--batch-size", "16"]
    assert train_loop.main([*argv, "--only", "vitkit model", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| plain loop, vitkit model |" in out and "| vitkit train |" not in out


def test_attention_training_prints_both_paths(capsys):
    argv = ["vit_tiny_patch4_28", "--batch-size", "2", "--rounds", "1", "--threads", "1"]
    assert attention_training.main(argv) == 0
    out = capsys.readouterr().out
    assert "| vit_tiny_patch4_28 | 2 | fp32 |" in out and "| vit_tiny_patch4_28 | 2 | bf16 |" in out
