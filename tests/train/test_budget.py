"""Training to a budget, with a fake clock: the schedule ends at the budget however long a step takes."""

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.cli.conftest import one_line_error
from vitkit.cli import main
from vitkit.data.loader import Loader
from vitkit.errors import VitkitError
from vitkit.train import loop as loop_mod
from vitkit.train import train
from vitkit.train.budget import (
    Budget,
    BudgetSchedule,
    TrainingClock,
    expected_epochs,
    parse_budget,
    planned_epochs,
)

from .helpers import TINY, tiny

# 64 training images / batch 16 = 4 steps per epoch; a budget of 6 s of training
BUDGET = dict(epochs=None, time_limit_minutes=0.1, warmup_fraction=0.25, lr=2e-3, min_lr=1e-5)


class FakeClock:
    """Seconds that pass only when a training batch goes through the model (``dt`` each)."""

    def __init__(self, dt: float, t: float = 0.0) -> None:
        self.dt, self.t = dt, t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def ticking(monkeypatch):
    """A factory of fake clocks; the latest one advances by its ``dt`` with every training batch's loss."""
    latest: list[FakeClock] = []
    real = loop_mod.soft_cross_entropy

    def loss(logits, target):
        latest[-1].t += latest[-1].dt
        return real(logits, target)

    monkeypatch.setattr(loop_mod, "soft_cross_entropy", loss)

    def make(dt: float, t: float = 0.0) -> FakeClock:
        latest.append(FakeClock(dt, t))
        return latest[-1]

    return make


def _train_records(run) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "train"]


@pytest.mark.parametrize("dt", [0.25, 2.0])  # fast steps (24 in the budget) or slow ones (3)
def test_schedule_reaches_min_lr_at_the_budget_fast_or_slow(tmp_path, ticking, dt):
    cfg = tiny(tmp_path, **BUDGET)
    result = train(cfg, clock=ticking(dt))
    records = _train_records(tmp_path / "run")
    steps = round(6 / dt)
    assert [r["step"] for r in records] == list(range(1, steps + 1))  # stopped exactly when 6 s were used
    assert "time limit" in result.stopped_early
    sched = BudgetSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]), Budget(6, 0, None), **_lrs())
    assert [r["lr"] for r in records] == pytest.approx([sched.lr_at(r["step"] * dt / 6) for r in records])
    assert records[-1]["lr"] == cfg.min_lr  # annealed at the budget
    warm = [r["lr"] for r in records if r["step"] * dt / 6 <= 0.25]
    assert warm == sorted(warm) and (dt > 1.5 or warm[-1] == pytest.approx(cfg.lr))  # warm-up: a quarter
    last = result.history[-1]
    assert last["train_time_s"] == 6 and last["budget_fraction"] == 1 and last["images_seen"] == 16 * steps
    assert "val_acc" in last and result.best_checkpoint is not None  # evaluated and saved after the budget


def _lrs() -> dict:
    return dict(base_lr=BUDGET["lr"], min_lr=BUDGET["min_lr"], warmup_fraction=BUDGET["warmup_fraction"])


def test_resume_mid_budget_equals_an_uninterrupted_run(tmp_path, ticking):
    cfg = dict(BUDGET, ema_decay=0.8, drop_path_rate=0.2, checkpoint_every_steps=2)
    straight = train(tiny(tmp_path / "a", **cfg), clock=ticking(0.25))

    def stop_at_7(event, info):
        if event == "step" and info["step"] == 7:
            raise KeyboardInterrupt  # after the checkpoint of step 6 (mid-epoch 2)

    broken = tiny(tmp_path / "b", **cfg)
    with pytest.raises(KeyboardInterrupt):
        train(broken, callbacks=[stop_at_7], clock=ticking(0.25))
    state = json.loads((tmp_path / "b" / "run" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["budget"] == {"train_time_s": 1.5, "images_seen": 96}
    resumed = train(broken.replace(resume="auto"), clock=ticking(0.25, t=1000.0))  # another clock's origin
    for name in ("model.safetensors", "training_state.safetensors"):
        a = load_file(str(straight.last_checkpoint / name))
        b = load_file(str(resumed.last_checkpoint / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    def logged(run):  # every step once, the same losses and learning rates (images_per_s is the real clock's)
        return [{k: v for k, v in r.items() if k != "images_per_s"} for r in _train_records(run)]

    assert logged(tmp_path / "a" / "run") == logged(tmp_path / "b" / "run")


def test_epochs_or_images_whichever_comes_first(tmp_path, ticking):
    # epochs end first: a normal end, annealed at the last step of epoch 2
    r = train(tiny(tmp_path / "e", **dict(BUDGET, epochs=2)), clock=ticking(0.01))
    assert r.stopped_early is None and r.history[-1]["step"] == 8 and r.history[-1]["lr"] == BUDGET["min_lr"]
    # the image budget ends first: 40 images = 3 steps of 16
    r = train(tiny(tmp_path / "i", **dict(BUDGET, time_limit_minutes=0, budget_images=40)), clock=ticking(0.01))
    assert "40 training images" in r.stopped_early and r.history[-1]["step"] == 3
    assert r.history[-1]["lr"] == BUDGET["min_lr"] and r.history[-1]["images_seen"] == 48


def test_expected_epochs_from_epochs_images_or_the_pace_of_a_time_budget():
    assert expected_epochs(Budget(0, 0, None), 7, 100) == 7
    assert expected_epochs(Budget(0, 450, None), None, 100) == 4.5
    timed = Budget(60, 0, None)
    assert expected_epochs(timed, None, 100) is None  # no epoch done yet: the pace is not known
    timed.update(15.0, 200, 4)  # two epochs in a quarter of the budget
    assert expected_epochs(timed, None, 100) == 8 and expected_epochs(timed, 5, 100) == 5
    both = Budget(60, 300, None)
    both.update(15.0, 200, 4)
    assert expected_epochs(both, None, 100) == 3  # the image budget ends the run first


@pytest.fixture
def crops(monkeypatch):
    """The crop padding the loop sets at the start of every epoch."""
    seen: list[int] = []
    real = Loader.set_crop_padding

    def spy(self, pixels):
        seen.append(pixels)
        real(self, pixels)

    monkeypatch.setattr(Loader, "set_crop_padding", spy)
    return seen


@pytest.mark.parametrize("dt, expected", [(0.25, [0, 2, 2, 2, 2, 2]), (1.0, [0, 0])])
def test_random_crop_only_in_runs_long_enough(tmp_path, ticking, crops, capsys, dt, expected):
    """6 s of training, 4 steps an epoch: 6 epochs at 0.25 s a step (crops from epoch 2), 1.5 at 1 s (no crops)."""
    cfg = tiny(tmp_path, **BUDGET, crop_padding=2, crop_min_epochs=5, progress="log")
    train(cfg, clock=ticking(dt))
    assert crops == expected
    out = capsys.readouterr().out
    assert ("random crop on from epoch 2: the run lasts about 6.0 epochs" in out) == (dt < 1)
    off = "random crop off from epoch 2: the run lasts about 1.5 epochs (under crop_min_epochs=5)"
    assert (off in out) == (dt == 1)


def test_random_crop_decided_from_the_start_by_an_image_budget_and_kept_on_resume(
    tmp_path, ticking, crops, monkeypatch
):
    cfg = tiny(tmp_path, **dict(BUDGET, time_limit_minutes=0, budget_images=400), crop_padding=2, crop_min_epochs=5)
    cfg = cfg.replace(checkpoint_every_steps=2)

    def stop_at_7(event, info):
        if event == "step" and info["step"] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[stop_at_7], clock=ticking(0.1))
    assert crops == [2, 2]  # 400 images = 6.25 epochs of 64: long enough from the first epoch
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert state["crops_on"] is True
    crops.clear()
    monkeypatch.setattr(loop_mod, "expected_epochs", lambda *a: 1.0)  # a new decision would turn the crop off
    train(cfg.replace(resume="auto"), clock=ticking(0.1))  # the saved decision holds
    assert crops and set(crops) == {2}


def test_clock_counts_training_time_only():
    now = FakeClock(0.0)
    clock = TrainingClock(now, elapsed=10.0)
    clock.start()
    now.t = 5.0
    with clock.paused():  # a checkpoint write
        now.t = 7.0
    now.t = 8.0
    clock.pause()  # evaluation
    now.t = 100.0
    assert clock.elapsed() == 10.0 + 5.0 + 1.0 and clock.since_pause() == 92.0


def test_epochs_are_optional_with_a_budget(tmp_path):
    assert planned_epochs(tiny(tmp_path, epochs=None)) == 10
    assert planned_epochs(tiny(tmp_path, epochs=None, time_limit_minutes=5)) is None
    assert planned_epochs(tiny(tmp_path, epochs=3, budget_images=1000)) == 3


@pytest.mark.parametrize(
    "text, value", [("10m", (10.0, 0)), ("30s", (0.5, 0)), ("1.5h", (90.0, 0)), ("500kimg", (0.0, 500_000))]
)
def test_parse_budget(text, value):
    assert parse_budget(text) == value


@pytest.mark.parametrize("text", ["10", "0m", "-5m", "ten minutes", "5 parsecs"])
def test_parse_budget_errors_name_the_flag(text):
    with pytest.raises(VitkitError, match=r"^--budget: expected a training time"):
        parse_budget(text)


def test_budget_flag(capsys):
    assert main(["train", "--budget", "1.5h", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["time_limit_minutes"] == 90 and cfg["epochs"] is None and cfg["budget_images"] == 0
    one_line_error(capsys, main(["train", "--budget", "10m", "--time-limit-minutes", "5"]), "--budget and --time")
    one_line_error(capsys, main(["train", "--budget", "ten", "--print-config"]), "--budget: expected")


SCRIPT = """
import json, os, sys, time
import torch
torch.set_num_threads(1)
from vitkit.train import TrainConfig, train
fast = os.environ["RANK"] == "1"  # rank 1's clock runs 50 times too fast: only rank 0's may count
train(TrainConfig(**json.loads(sys.argv[1])), clock=(lambda: 50 * time.perf_counter()) if fast else None)
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_ddp_processes_follow_one_clock(tmp_path):
    from .test_ddp import ROOT, _run_or_fail_on_hang

    cfg = dict(TINY, max_train_samples=64, batch_size=8, device="cpu", output_dir=str(tmp_path / "run"))
    cfg |= dict(BUDGET, time_limit_minutes=0.02)  # 1.2 s of training
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    r = _run_or_fail_on_hang([*cmd, json.dumps(cfg)], env, timeout=240)  # ranks that disagree would hang
    assert r.returncode == 0, r.stdout + r.stderr
    last = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert 1.2 <= last["train_time_s"] < 60 and last["budget_fraction"] == 1  # rank 0's seconds, not rank 1's
    assert last["images_seen"] == 16 * last["step"]  # both processes' images
