"""benchmarks/engine_ab.py on a tiny model: the table and equal logits (never timings)."""

import pytest

pytest.importorskip("transformers")
from benchmarks import engine_ab

TINY = ["--set", "embed_dim=32", "--set", "depth=2", "--set", "num_heads=2", "--set", "patch_size=8"]
FAST = ["--img-size", "32", "--batch-size", "3", "--rounds", "2", "--threads", "1"]


def test_engine_ab_prints_the_table(capsys):
    assert engine_ab.main(["vit_base_patch16_224", "micro_batch_bytes=1", *TINY, *FAST]) == 0
    out = capsys.readouterr().out
    assert "max |logits A - B|" in out and "| optimized |" in out and "| micro_batch_bytes=1 |" in out
    assert "| reference |" in out and "| transformers |" in out and "B/A" in out
    diff = float(out.split("max |logits A - B| ")[1].split()[0])
    assert diff < 1e-5  # one image at a time gives the same logits


def test_unknown_switch_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        engine_ab.main(["vit_base_patch16_224", "nope=1", *TINY, *FAST])
    assert "unknown switch(es) nope" in capsys.readouterr().err
