"""Checkpoint writes that fail or are killed half-way, and the file modes of what a run writes."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitkit
from vitkit.errors import CheckpointError
from vitkit.train import TrainConfig, train
from vitkit.train.state import find_checkpoint, load_checkpoint, save_checkpoint
from vitkit.utils import io as io_mod
from vitkit.utils.io import atomic_write_json

from .helpers import TINY, tiny

ROOT = Path(__file__).resolve().parents[2]


# --- a full disk -----------------------------------------------------------------------------------
def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, epochs=1)
    train(cfg)
    run = tmp_path / "run"
    before = {name: _files(run / name) for name in ("best", "last")}
    real_save_file = io_mod.save_file

    def disk_full(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as f:
            f.truncate(64)  # what fitted on the disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(io_mod, "save_file", disk_full)
    with pytest.raises(CheckpointError) as err:
        train(cfg.replace(resume="auto", epochs=2))
    message = str(err.value)
    name = "best" if "/best:" in message else "last"
    assert message == (
        f"could not write checkpoint {run / name}: No space left on device; the previous checkpoint {run / name} "
        "is intact"
    )
    monkeypatch.undo()
    assert not [p for p in run.rglob("*") if p.name.endswith((".tmp", ".old"))]  # no temporary folder or file
    assert {name: _files(run / name) for name in ("best", "last")} == before  # bit-identical
    assert load_checkpoint(run / "last")[0]["epoch"] == 1
    assert len(train(cfg.replace(resume="auto", epochs=2)).history) == 2  # and the run continues from it


# --- SIGKILL at every step of a checkpoint write ---------------------------------------------------
# The child writes `last` after every optimizer step and SIGKILLs itself just before the k-th rename / removal of its
# second write, at step 2 (4 file renames into the temporary folder, last -> .last.old, .last.tmp -> last, removing
# .last.old); when k is past the end it finishes and prints how many steps that write took.
KILL_SCRIPT = """
import json, os, shutil, signal, sys
import torch
torch.set_num_threads(1)
from vitkit.train import TrainConfig, train
from vitkit.train import loop
cfg, kill_at = TrainConfig(**json.loads(sys.argv[1])), int(sys.argv[2])
real_save, real_replace, real_rmtree = loop.save_checkpoint, os.replace, shutil.rmtree
writes, steps = [], [0]

def counted(real):
    def step(*args, **kwargs):
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return step

def save(directory, *args, **kwargs):
    writes.append(os.path.basename(directory))
    if writes.count("last") != 2 or writes[-1] != "last":
        return real_save(directory, *args, **kwargs)
    os.replace, shutil.rmtree = counted(real_replace), counted(real_rmtree)
    try:
        return real_save(directory, *args, **kwargs)
    finally:
        os.replace, shutil.rmtree = real_replace, real_rmtree

loop.save_checkpoint = save
train(cfg)
print("steps", steps[0])
"""
WRITE_STEPS = 7
KILL_CFG = dict(TINY, epochs=1, checkpoint_every_steps=1)


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory):
    """One child per kill point, all started at once: {k: (return code, output_dir, stdout)}."""
    base = tmp_path_factory.mktemp("kill")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    procs = {}
    for k in range(1, WRITE_STEPS + 2):
        cfg = {**KILL_CFG, "output_dir": str(base / f"k{k}")}
        cmd = [sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg), str(k)]
        procs[k] = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = {}
    for k, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        runs[k] = (proc.returncode, base / f"k{k}", out + err)
    return runs


def test_the_kill_points_cover_the_whole_write(killed_runs):
    rc, _, output = killed_runs[WRITE_STEPS + 1]
    assert rc == 0, output
    assert f"steps {WRITE_STEPS}" in output


@pytest.mark.parametrize("k", range(1, WRITE_STEPS + 1))
def test_sigkill_during_a_checkpoint_write_leaves_a_whole_checkpoint(killed_runs, k):
    rc, run, output = killed_runs[k]
    assert rc == -signal.SIGKILL, output
    last = find_checkpoint(run / "last")
    assert last == run / "last"
    state, _, _ = load_checkpoint(last)  # every file's SHA-256 matches trainer_state.json: never a mix
    # the new checkpoint (optimizer step 2) counts only once it has been renamed into place (write step 6)
    assert state["step"] == (1 if k <= 6 else 2)
    assert vitkit.from_pretrained(last).config.img_size == 16
    result = train(TrainConfig(**{**KILL_CFG, "output_dir": str(run), "resume": "auto", "epochs": 2}))
    assert [h["epoch"] for h in result.history] == [1, 2] and result.history[-1]["step"] == 8
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # nothing temporary is left


# --- file modes ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    model = vitkit.create_model("vit_tiny_patch4_28", depth=1, embed_dim=32, num_heads=2)
    previous = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "ckpt", model, state={"epoch": 0}, tensors={"x": torch.zeros(1)})
        atomic_write_json(tmp_path / "report.json", {"top1": 1.0})
        with open(tmp_path / "plain.txt", "w") as f:  # what an ordinary open() gives
            f.write("x")
    finally:
        os.umask(previous)
    files = [*(tmp_path / "ckpt").iterdir(), tmp_path / "report.json", tmp_path / "plain.txt"]
    assert len(files) == 6
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: mode for p in files}
