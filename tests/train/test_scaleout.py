"""Past one process, on CPU with gloo: BatchNorm over the global batch, FSDP2 against DDP, Distributed Checkpoints
loaded into another number of processes, and a process killed mid-epoch under ``torchrun --max-restarts``.

One torchrun launch (2 processes) trains every 2-process run of this module one after another; single-process runs
train in this process. The model is a tiny CvT, so BatchNorm is in every block.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vitkit
from vitkit.train import TrainConfig, train

from .helpers import TINY

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 480  # seconds for one launch: generous, the machine may be shared

# Global batch 16 (8 per process on 2, 16 on 1): 64 images, 4 optimizer steps per epoch; 33 validation images, so the
# two processes' evaluation shards differ in length (17 and 16).
CVT = dict(TINY, model="cvt_nano_28", model_args="embed_dims=(16,16,32),depths=(1,1,1),num_heads=(1,1,2)")
CVT |= dict(max_val_samples=33, device="cpu", checkpoint_every_steps=2)
EXACT = dict(CVT, aug="none", drop_path_rate=0.0)  # no per-process randomness: 1 and 2 processes can agree
NOISY = dict(CVT, aug="flip", drop_path_rate=0.2, ema_decay=0.9)  # per-process flips, drop-path noise; an EMA

# Trains the runs of argv[1] ({name: config}) one after another in each of the processes (a config with "copy_from"
# first gets a copy of that run directory), then, given argv[2], checks the cross-process BatchNorm against one
# process there. Each process appends "attempt step" lines to steps.<rank> beside each run; KILL="rank:step"
# SIGKILLs that process right after that optimizer step, in torchrun's first attempt only.
SCRIPT = """
import json, os, shutil, signal, sys
from pathlib import Path
import torch
import torch.distributed as dist
torch.set_num_threads(1)
from vitkit.train import TrainConfig, distributed, train

rank = distributed.setup("cpu").rank  # one process group for all the runs
attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
kill_rank, _, kill_step = os.environ.get("KILL", "-1:0").partition(":")

for name, cfg in json.loads(sys.argv[1]).items():
    out = Path(cfg["output_dir"])
    if "copy_from" in cfg:
        if rank == 0 and not out.exists():
            shutil.copytree(cfg["copy_from"], out)
        dist.barrier()
    cfg.pop("copy_from", None)

    def on_step(event, info, out=out):
        if event != "step":
            return
        with open(out.parent / f"{out.name}.steps.{rank}", "a") as f:
            f.write(f"{attempt} {info['step']}\\n")
        if rank == int(kill_rank) and info["step"] == int(kill_step) and attempt == "0":
            os.kill(os.getpid(), signal.SIGKILL)

    train(TrainConfig(**cfg), callbacks=[on_step])

if sys.argv[2:]:  # BatchNorm over processes 0 and 1 holding 2 and 4 of 6 images vs one BatchNorm over all 6
    from vitkit.train.sync_bn import CrossProcessBatchNorm2d, convert_batchnorm
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    net.load_state_dict(ref.state_dict())
    assert convert_batchnorm(net, torch.device("cpu")) == 1 and isinstance(net[1], CrossProcessBatchNorm2d)
    x = torch.randn(6, 3, 5, 5) * 3 + 1
    w = torch.randn(6, 4, 3, 3)  # the loss weights each output differently
    mine = slice(0, 2) if rank == 0 else slice(2, 6)
    xa, xr = x.clone().requires_grad_(), x[mine].clone().requires_grad_()
    diff = {}
    for step in range(2):
        out, full = net(xr), ref(xa)
        (out * w[mine]).sum().backward()
        (full * w).sum().backward()
        diff["output"] = max(diff.get("output", 0), (out - full[mine]).abs().max().item())
    diff["input_grad"] = (xr.grad - xa.grad[mine]).abs().max().item()
    for name, p, q in (("conv_grad", net[0].weight, ref[0].weight), ("bn_grad", net[1].weight, ref[1].weight)):
        grad = p.grad.clone()
        dist.all_reduce(grad)  # each process holds its share of a parameter's gradient, as DDP would sum them
        diff[name] = ((grad - q.grad).abs().max() / q.grad.abs().max()).item()
    for name in ("running_mean", "running_var"):
        diff[name] = (getattr(net[1], name) - getattr(ref[1], name)).abs().max().item()
    diff["num_batches_tracked"] = int(net[1].num_batches_tracked - ref[1].num_batches_tracked)
    Path(sys.argv[2]).joinpath(f"bn{rank}.json").write_text(json.dumps(diff))

dist.barrier()  # this script made the process group: every process done, then it is taken down before exit (gloo's
dist.destroy_process_group()  # threads may otherwise abort a process at interpreter exit)
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", **extra}


def torchrun(tmp: Path, runs: dict[str, dict], *args: str, restarts: int = 0, **env: str):
    """Launch SCRIPT on 2 processes; every process of the launch is killed past TIMEOUT and the test fails."""
    script = tmp / "scaleout_train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["--max-restarts", str(restarts), "--monitor-interval", "0.5", str(script), json.dumps(runs), *args]
    proc = subprocess.Popen(cmd, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s\n{out[-6000:]}")
    assert proc.returncode == 0, out[-6000:]
    return out


def epochs(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == "epoch"]


def same_scores(a: dict, b: dict, rel: float) -> None:
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5"):
        assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-6), key


def dcp_tensors(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A Distributed Checkpoint's tensors, whole (model, AdamW moments, EMA), flattened to dotted keys."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = checkpoint.parent / f"{checkpoint.name}.pt"
    dcp_to_torch_save(checkpoint / "dcp", out)
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif torch.is_tensor(value):
            flat[prefix] = value

    walk("", torch.load(out, weights_only=True))
    return flat


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("scaleout")

    def at(name: str, base: dict, **changes) -> dict:
        return {**base, **changes, "output_dir": str(tmp / name)}

    # one process, strategy fsdp (trains unsharded, writes Distributed Checkpoints): 1 epoch, copied, then a second
    train(TrainConfig(**at("one", EXACT, strategy="fsdp", batch_size=16, epochs=1)))
    shutil.copytree(tmp / "one", tmp / "one_to_two")
    train(TrainConfig(**at("one", EXACT, strategy="fsdp", batch_size=16, epochs=2, resume="auto")))

    two = {
        "sync": at("sync", EXACT, batch_size=8, epochs=1),
        "nosync": at("nosync", EXACT, batch_size=8, epochs=1, sync_bn=False),
        "ddp": at("ddp", NOISY, batch_size=8),
        "fsdp": at("fsdp", NOISY, batch_size=8, strategy="fsdp"),
        "bf16": at("bf16", NOISY, batch_size=8, strategy="fsdp", epochs=1, amp="bf16", grad_checkpointing=True),
        "one_to_two": at("one_to_two", EXACT, strategy="fsdp", batch_size=8, epochs=2, resume="auto"),
        # a third epoch: the FSDP run from its Distributed Checkpoint, the DDP run's full files into FSDP
        "fsdp_more": at(
            "fsdp_more", NOISY, batch_size=8, strategy="fsdp", epochs=3, copy_from=str(tmp / "fsdp"), resume="auto"
        ),
        "ddp_as_fsdp": at(
            "ddp_as_fsdp", NOISY, batch_size=8, strategy="fsdp", epochs=3, copy_from=str(tmp / "ddp"), resume="auto"
        ),
    }
    log = torchrun(tmp, two, str(tmp))
    (tmp / "launch.log").write_text(log)

    # two processes -> one: the FSDP run (Distributed Checkpoint) and the DDP run (full files) continue for an epoch
    for name in ("fsdp", "ddp"):
        shutil.copytree(tmp / name, tmp / f"{name}_to_one")
        train(TrainConfig(**at(f"{name}_to_one", NOISY, strategy=name, batch_size=16, epochs=3, resume="auto")))
    return tmp


def test_batchnorm_statistics_over_processes_equal_one_process_over_the_global_batch(runs):
    for rank in (0, 1):
        diff = json.loads((runs / f"bn{rank}.json").read_text())
        assert diff["num_batches_tracked"] == 0
        for key in ("output", "input_grad", "running_mean", "running_var", "conv_grad", "bn_grad"):
            assert diff[key] < 1e-5, (rank, key, diff[key])
    # in training: a CvT on 2 processes x 8 images equals 1 process x 16 (sync_bn is on by default), and differs
    # without it
    one, synced, alone = epochs(runs / "one")[0], epochs(runs / "sync")[0], epochs(runs / "nosync")[0]
    same_scores(one, synced, rel=1e-5)
    assert abs(alone["train_loss"] - one["train_loss"]) > 1e-4


def test_fsdp_trains_like_ddp_with_half_the_parameter_and_optimizer_memory(runs):
    ddp, fsdp = epochs(runs / "ddp"), epochs(runs / "fsdp")
    assert [e["step"] for e in ddp] == [e["step"] for e in fsdp] == [4, 8]
    for a, b in zip(ddp, fsdp, strict=True):
        same_scores(a, b, rel=1e-5)
    full, shard = ddp[0]["param_optimizer_bytes"], fsdp[0]["param_optimizer_bytes"]
    assert 0.45 * full < shard < 0.55 * full  # each process holds about half

    # bf16 parameters in the blocks (FSDP's mixed-precision policy) + gradient checkpointing: close to float32
    bf16 = epochs(runs / "bf16")[0]
    assert bf16["train_loss"] == pytest.approx(fsdp[0]["train_loss"], rel=2e-2)
    assert bf16["val_loss"] == pytest.approx(fsdp[0]["val_loss"], rel=2e-2)


def test_fsdp_checkpoint_is_sharded_and_loads_as_a_plain_model(runs):
    last = runs / "fsdp" / "last"
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["config"]["strategy"] == "fsdp"
    shards = sorted(p.name for p in (last / "dcp").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]  # each process wrote its own file
    assert {f"dcp/{n}" for n in shards} <= set(state["sha256"])
    assert not any(k.startswith("optim.") for k in load_file(str(last / "training_state.safetensors")))

    model = vitkit.from_pretrained(runs / "fsdp")  # the run directory: its best/ (full weights, rank 0)
    weights = load_file(str(last / "model.safetensors"))
    sharded = dcp_tensors(last)
    for k, v in weights.items():
        assert torch.equal(sharded[f"model.{k}"], v), k  # the consolidated weights are the shards, whole
    ddp = load_file(str(runs / "ddp" / "last" / "model.safetensors"))
    for k, v in weights.items():
        torch.testing.assert_close(v, ddp[k], rtol=1e-3, atol=1e-4)
    assert model.config.embed_dims == (16, 16, 32)


def test_checkpoints_move_between_one_and_two_processes(runs):
    # 1 -> 2: a one-process checkpoint continued on two processes = continued on one
    assert [e["step"] for e in epochs(runs / "one_to_two")] == [4, 8]
    same_scores(epochs(runs / "one")[1], epochs(runs / "one_to_two")[1], rel=1e-4)
    # 2 -> 1: the FSDP run's Distributed Checkpoint and the DDP run's full files continue alike on one process
    from_fsdp, from_ddp = epochs(runs / "fsdp_to_one"), epochs(runs / "ddp_to_one")
    assert [e["step"] for e in from_fsdp] == [4, 8, 12]
    same_scores(from_ddp[2], from_fsdp[2], rel=1e-4)
    # a DDP checkpoint (full files) continued with FSDP = the FSDP run continued from its shards
    same_scores(epochs(runs / "fsdp_more")[2], epochs(runs / "ddp_as_fsdp")[2], rel=1e-4)


@pytest.mark.parametrize("strategy", ["fsdp", "ddp"])
def test_a_process_killed_mid_epoch_restarts_from_the_last_checkpoint_and_ends_bitwise_equal(runs, tmp_path, strategy):
    # torchrun --max-restarts 1: process 1 is SIGKILLed after step 3 (the last checkpoint is step 2, mid-epoch 1);
    # torchrun stops process 0 and starts both again, which resume from last/ by themselves (no --resume given)
    cfg = {**NOISY, "batch_size": 8, "strategy": strategy, "output_dir": str(tmp_path / "killed")}
    torchrun(tmp_path, {"killed": cfg}, restarts=1, KILL="1:3")
    for rank in (0, 1):
        seen = [tuple(map(int, line.split())) for line in (tmp_path / f"killed.steps.{rank}").read_text().splitlines()]
        first = [step for attempt, step in seen if attempt == 0]
        assert first[:2] == [1, 2] and max(first) <= 3  # process 0 may not have reached step 3 before it was stopped
        assert [step for attempt, step in seen if attempt == 1] == list(range(3, 9)), seen

    done, killed = runs / strategy / "last", tmp_path / "killed" / "last"  # the same run, uninterrupted
    for name in ("model.safetensors", "training_state.safetensors"):
        a, b = load_file(str(done / name)), load_file(str(killed / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k}"
    if strategy == "fsdp":
        a, b = dcp_tensors(done), dcp_tensors(killed)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"dcp: {k}"  # weights and AdamW moments, every shard
    history = [{**h, "time_s": 0} for h in json.loads((killed / "trainer_state.json").read_text())["history"]]
    assert history == [{**h, "time_s": 0} for h in json.loads((done / "trainer_state.json").read_text())["history"]]
