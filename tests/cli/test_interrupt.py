"""Ctrl-C during `vitkit train`: exit status 130, a whole checkpoint, and the command that continues the run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.conftest import TINY_TRAIN
from vitkit.cli import main
from vitkit.train.state import STATE_JSON, find_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_names_the_checkpoint_and_the_resume_command(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "vitkit", "train", *TINY_TRAIN, "--epochs", "500", "--checkpoint-every-steps", "1"]
    argv += ["--output-dir", str(out), "--no-plots"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    # a test run started in the background (`pytest &` without job control) ignores SIGINT, and a child inherits
    # that: give the child the default disposition, as an interactive shell would
    proc = subprocess.Popen(
        argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "last" / STATE_JSON).is_file():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    last = find_checkpoint(out / "last")
    state, _, _ = load_checkpoint(last)  # whole: every file matches its SHA-256
    assert stderr.splitlines()[-1] == (
        f"vitkit: interrupted; the last complete checkpoint is {last} (step {state['step']}); "
        f"continue with: vitkit train --output-dir {out} --resume auto"
    )

    # the command it names continues the run with the settings the run was started with
    epochs = state["epoch"] + 1
    assert main(["train", "--output-dir", str(out), "--resume", "auto", "--epochs", str(epochs), "--no-plots"]) == 0
    resumed = json.loads((out / "last" / STATE_JSON).read_text())
    assert resumed["epoch"] == epochs and resumed["step"] > state["step"]
    assert resumed["config"]["model_args"] == state["config"]["model_args"]
    assert resumed["config"]["max_train_samples"] == 128
