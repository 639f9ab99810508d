"""A run killed with SIGKILL in the middle of an epoch and resumed ends bitwise equal to an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .helpers import TINY

ROOT = Path(__file__).resolve().parents[2]

# Runs training in a fresh interpreter; with KILL_AT_STEP it SIGKILLs itself right after that optimizer step.
SCRIPT = """
import json, os, signal, sys
import torch
torch.set_num_threads(1)
from vitkit.train import TrainConfig, train
cfg = TrainConfig(**json.loads(sys.argv[1]))
kill_at = int(os.environ.get("KILL_AT_STEP", "0"))
def killer(event, info):
    if event == "step" and info["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
train(cfg, callbacks=[killer])
"""


def _run(cfg: dict, kill_at: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KILL_AT_STEP": str(kill_at), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(cfg)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "model, model_args",
    [
        ("vit_tiny_patch4_28", "depth=2,embed_dim=32,num_heads=2"),  # depth 2: block 1 has drop-path 0.3 (RNG in use)
        # Swin trains through the native window-attention kernel where it builds (the training path)
        ("swin_nano_patch2_window7_28", "embed_dim=32,depths=(2,),num_heads=(2,),window_size=4"),
    ],
    ids=["vit", "swin"],
)
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, model, model_args):
    # 96 samples / batch 16 = 6 batches per epoch, accumulation 2 -> 3 steps per epoch, 3 epochs = 9 steps.
    # Everything stateful is on: drop-path noise, EMA, mixup/cutmix, TrivialAugment, warm-up + cosine.
    cfg = dict(TINY, max_train_samples=96, epochs=3, accum_steps=2, drop_path_rate=0.3, ema_decay=0.8)
    cfg |= dict(model=model, model_args=model_args)
    cfg |= dict(aug="trivialaugment", mixup=0.4, cutmix=1.0, checkpoint_every_steps=2)
    straight = _run({**cfg, "output_dir": str(tmp_path / "straight")})
    assert straight.returncode == 0, straight.stderr

    broken = {**cfg, "output_dir": str(tmp_path / "broken")}
    killed = _run(broken, kill_at=5)  # killed after step 5; the last checkpoint is step 4, mid-epoch 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = json.loads((tmp_path / "broken" / "last" / "trainer_state.json").read_text())
    assert (state["epoch"], state["batch_in_epoch"], state["step"]) == (1, 2, 4)  # 0-based epoch 1, 2 of 6 batches
    resumed = _run({**broken, "resume": "auto"})
    assert resumed.returncode == 0, resumed.stderr

    for name in ("model.safetensors", "training_state.safetensors"):
        a = load_file(str(tmp_path / "straight" / "last" / name))
        b = load_file(str(tmp_path / "broken" / "last" / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs"  # weights, EMA, AdamW moments, RNG
    sa = json.loads((tmp_path / "straight" / "last" / "trainer_state.json").read_text())
    sb = json.loads((tmp_path / "broken" / "last" / "trainer_state.json").read_text())
    assert sa["history"] == [dict(h, time_s=sh["time_s"]) for h, sh in zip(sb["history"], sa["history"], strict=True)]
    # the metrics log has each step once
    records = [json.loads(x) for x in (tmp_path / "broken" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "train"] == list(range(1, 10))
