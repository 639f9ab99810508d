"""torchrun with 2 CPU processes (gloo): the same losses and weights as 1 process with the same global batch, and no
hang when one process's whole batch is unreadable (DDP and FSDP)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .helpers import TINY, image_folder

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


def _run_or_fail_on_hang(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; past ``timeout`` every process of it is killed and the test fails."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the processes hung (killed after {timeout:.0f} s)\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _train_on_two_processes(tmp_path: Path, cfg: dict) -> subprocess.CompletedProcess:
    """``train(cfg)`` under torchrun with 2 CPU processes (failing the test if they hang)."""
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    return _run_or_fail_on_hang([*cmd, json.dumps(cfg)], env, timeout=240)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_rank_whose_whole_batch_is_unreadable_does_not_hang_the_others(tmp_path, strategy):
    from vitkit.data import DataSpec, Loader
    from vitkit.train import TrainConfig
    from vitkit.train.loop import build_datasets

    root = image_folder(tmp_path / "imgs", train=(5, 2), val=(3, 1))
    cfg = dict(TINY, data=f"folder:{root}", max_train_samples=0, max_val_samples=0, batch_size=1, accum_steps=2)
    cfg |= dict(epochs=1, seed=1, aug="none", skip_bad_images=True, device="cpu", output_dir=str(tmp_path / "run"))
    cfg["strategy"] = strategy  # FSDP gathers parameters in every forward pass, evaluation included
    # one image per process and batch; with this seed, some batch has an unreadable image on one process and a good
    # one on the other, and some accumulation group loses its last batch after its first one went through backward
    train_ds, _ = build_datasets(TrainConfig(**cfg))
    spec = DataSpec((16, 16), 3, (0.5,) * 3, (0.5,) * 3)
    shares = [Loader(train_ds, spec, batch_size=1, train=True, seed=1, rank=r, world_size=2).indices(0) for r in (0, 1)]
    bad = ["broken" in path for path, _ in train_ds.samples]
    broken = [(bad[i], bad[j]) for i, j in zip(*shares, strict=True)]
    assert (True, False) in broken or (False, True) in broken
    groups = [broken[g : g + 2] for g in range(0, len(broken), 2)]
    assert any(len(g) == 2 and not any(g[0]) and any(g[1]) for g in groups)

    r = _train_on_two_processes(tmp_path, cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "run"
    assert json.loads((run / "last" / "trainer_state.json").read_text())["world_size"] == 2
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["skipped_val_images"] == 2
    (epoch,) = [r for r in records if r["type"] == "epoch"]
    assert epoch["skipped_images"] == 4 and epoch["train_loss"] > 0 and "val_acc" in epoch


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_cvt_under_ddp_trains_without_a_stride_warning(tmp_path):
    """CvT's depthwise conv weights get gradients whose strides differ from DDP's buckets only in a size-1 dimension;
    the run says nothing about it (and its [CLS]-row shortcut gives every parameter a gradient: no unused ones)."""
    cfg = dict(TINY, model="cvt_nano_28", model_args="", img_size=28, max_train_samples=32, max_val_samples=16)
    cfg |= dict(epochs=1, batch_size=8, aug="none", device="cpu", output_dir=str(tmp_path / "run"))
    r = _train_on_two_processes(tmp_path, cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Grad strides" not in r.stderr and "unused parameters" not in r.stderr
    assert json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())["world_size"] == 2
