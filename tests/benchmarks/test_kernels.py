"""benchmarks/kernels.py at batch 1: every shape runs, both sides agree, files are written (never timings)."""

import json

import pytest

from benchmarks import kernels
from vitkit.kernels import compiler

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C compiler: the kernels are not built")


def test_every_shape_agrees_with_pytorch_and_is_written(tmp_path, capsys):
    assert kernels.main(["--threads", "1", "--batch-size", "1", "--rounds", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "kernels_cpu_t1_b1.json").read_text())["rows"]
    assert len(rows) == 2 * len(kernels.SWIN_T) + len(kernels.ATTENTION)
    assert all(r["max_diff"] < 1e-4 and r["torch_ms"] > 0 and r["native_ms"] > 0 for r in rows)
    assert "| window_attention | Swin-T 56x56, C 96, SW-MSA |" in capsys.readouterr().out
    assert (tmp_path / "kernels_cpu_t1_b1.md").read_text().startswith("### native kernels vs PyTorch")
