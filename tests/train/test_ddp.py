"""torchrun with 2 CPU processes (gloo) reaches the same losses and weights as 1 process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .helpers import TINY

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys
import torch
torch.set_num_threads(1)
from vitkit.train import TrainConfig, train
train(TrainConfig(**json.loads(sys.argv[1])))
"""


def _history(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"type": "epoch"' in x]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_cpu_processes_match_one_process(tmp_path):
    # aug/mixup off: their random draws are per rank, so only the no-augmentation run can match exactly
    cfg = dict(TINY, max_train_samples=64, epochs=2, aug="none", drop_path_rate=0.0, device="cpu")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    one = {**cfg, "batch_size": 16, "output_dir": str(tmp_path / "one")}
    two = {**cfg, "batch_size": 8, "output_dir": str(tmp_path / "two")}  # per process: global batch 16 again
    r1 = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(one)], env=env, capture_output=True, text=True)
    assert r1.returncode == 0, r1.stderr
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    r2 = subprocess.run([*cmd, json.dumps(two)], env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert json.loads((tmp_path / "two" / "last" / "trainer_state.json").read_text())["world_size"] == 2

    h1, h2 = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert [h["step"] for h in h1] == [h["step"] for h in h2] == [4, 8]
    for a, b in zip(h1, h2, strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    w1 = load_file(str(tmp_path / "one" / "last" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "two" / "last" / "model.safetensors"))
    for k in w1:
        # Adam divides by sqrt(v): a near-zero gradient summed in another order moves a weight by ~1e-5
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-4)
