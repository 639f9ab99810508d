"""benchmarks/switch_ab.py on a tiny model: the table, equal logits, the switch restored (never timings)."""

import pytest

pytest.importorskip("transformers")
from benchmarks import switch_ab
from vitkit.layers import micro_batch


def test_switch_ab_prints_the_table_and_restores_the_switch(capsys):
    before = micro_batch.MICRO_BATCH_BYTES
    argv = ["vit_base_patch16_224", "vitkit.layers.micro_batch", "MICRO_BATCH_BYTES", "--on", "1", "--off", "0"]
    tiny = ["--set", "embed_dim=32", "--set", "depth=2", "--set", "num_heads=2", "--set", "patch_size=8"]
    fast = ["--img-size", "32", "--batch-size", "3", "--rounds", "2", "--threads", "1"]
    assert switch_ab.main([*argv, *tiny, *fast]) == 0
    out = capsys.readouterr().out
    assert "max |logits on - off| 0.0e+00" in out  # one image at a time gives the same logits
    assert "| on |" in out and "| off |" in out and "| transformers |" in out and "off/on" in out
    assert before == micro_batch.MICRO_BATCH_BYTES


def test_unknown_switch_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        switch_ab.main(["vit_base_patch16_224", "vitkit.layers.micro_batch", "NOPE", "--on", "1", "--off", "0"])
    assert "vitkit.layers.micro_batch has no NOPE" in capsys.readouterr().err
