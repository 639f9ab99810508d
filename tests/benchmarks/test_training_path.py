"""benchmarks/training_path.py on a tiny ViT: both ways timed, the same logits, the table and the raw times written."""

import json

from benchmarks import training_path


def test_training_path_times_both_ways_and_writes_the_result(tmp_path, capsys):
    argv = ["vit_tiny_patch4_28", "--batch-size", "2", "--rounds", "2", "--threads", "1", "--out", str(tmp_path)]
    assert training_path.main(argv) == 0
    out = capsys.readouterr().out
    assert "| vit_tiny_patch4_28 | 2 | fp32 |" in out and "| vit_tiny_patch4_28 | 2 | bf16 |" in out
    (table,) = tmp_path.glob("training_path_t1_b2_*.md")
    assert "plain / shortcut" in table.read_text()
    (raw,) = tmp_path.glob("training_path_t1_b2_*.json")
    results = json.loads(raw.read_text())["results"]
    assert [r["dtype"] for r in results] == ["fp32", "bf16"]
    assert all(len(r["plain"]) == len(r["shortcut"]) == 2 for r in results)
    assert results[0]["max_logit_diff"] < 1e-5
