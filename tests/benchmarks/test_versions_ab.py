"""benchmarks/versions_ab.py: another checkout imported under an alias beside this one (here: this checkout)."""

from pathlib import Path

import pytest

pytest.importorskip("transformers")
from benchmarks import versions_ab

SRC = Path(__file__).resolve().parents[2] / "src"


def test_two_versions_side_by_side(capsys):
    tiny = ["--set", "embed_dim=32", "--set", "depth=2", "--set", "num_heads=2", "--set", "patch_size=8"]
    argv = ["vit_base_patch16_224", "--other", str(SRC), *tiny, "--img-size", "32", "--batch-size", "2"]
    assert versions_ab.main([*argv, "--rounds", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| this (optimized) |" in out and "| other (" in out and "other/this" in out
    assert float(out.split("max |logits this - other| ")[1].split()[0]) < 1e-5
    import sys

    assert "vitkit_other" in sys.modules and sys.modules["vitkit_other"] is not sys.modules["vitkit"]
