"""Training checkpoints: a directory that ``vitkit.from_pretrained`` loads, plus everything to resume.

    last/                       best/ (same layout)
      config.json               model config + class names (vitkit.save_pretrained)
      model.safetensors         the trained weights
      training_state.safetensors  optimizer moments, EMA weights, torch/CUDA RNG states
      trainer_state.json        TrainConfig, epoch, step, batch in epoch, metrics, history, scheduler,
                                optimizer hyper-parameters, numpy/python RNG states, SHA-256 of the files
      dcp/                      (--strategy fsdp) model, optimizer and EMA as a Distributed Checkpoint: each
                                process wrote its shards; the moments are then not in training_state.safetensors

A checkpoint is written into a temporary sibling directory (every file fsynced), then swapped in
with renames; ``trainer_state.json`` is written last, so a directory without it is incomplete. A crash
at any point leaves the previous checkpoint (or, between the two renames, ``.<name>.old``, which
:func:`find_checkpoint` recovers).
"""

import contextlib
import json
import os
import random
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vitkit.errors import CheckpointError
from vitkit.hub import save_pretrained
from vitkit.utils.io import atomic_save_safetensors, atomic_write_json, sha256_file

STATE_JSON = "trainer_state.json"
STATE_TENSORS = "training_state.safetensors"
SHARDS_DIR = "dcp"
FORMAT_VERSION = 1


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON-able python/numpy states, tensors for torch/CUDA states)."""
    py = random.getstate()
    np_state = np.random.get_state()
    json_part = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            *[v if not hasattr(v, "item") else v.item() for v in np_state[2:]],
        ],
    }
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return json_part, tensors


def set_rng_state(json_part: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    py = json_part["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = json_part["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Split ``optimizer.state_dict()`` into JSON (hyper-parameters, step counts) and tensors (moments)."""
    sd = optimizer.state_dict()
    tensors, meta = {}, {}
    for pid, st in sd["state"].items():
        meta[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
                meta[str(pid)][k] = "tensor"
            else:
                meta[str(pid)][k] = v
    groups = [{k: v for k, v in g.items() if k != "names"} for g in sd["param_groups"]]
    return {"state": meta, "param_groups": groups}, tensors


def load_optimizer_state(optimizer, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    state = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {k: tensors[f"optim.{pid}.{k}"] if v == "tensor" else v for k, v in st.items()}
    groups = optimizer.state_dict()["param_groups"]
    if len(groups) != len(meta["param_groups"]):
        raise CheckpointError("the checkpoint's optimizer has a different parameter grouping; same settings?")
    merged = []
    for g, saved in zip(groups, meta["param_groups"], strict=True):
        merged.append({**g, **{k: v for k, v in saved.items() if k != "params"}})
    optimizer.load_state_dict({"state": state, "param_groups": merged})


def save_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    *,
    state: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    weights: torch.nn.Module | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    shards: dict[str, str] | None = None,
) -> Path:
    """Write a complete checkpoint to ``directory`` (replacing an older one only once the new one is whole).

    ``weights`` (e.g. the EMA model) goes into model.safetensors instead of ``model`` when given; ``state_dict``
    instead of its own state dict (full weights gathered from a sharded model). ``shards`` ({``dcp/<file>``:
    SHA-256}) are the files every process wrote into :func:`shards_tmp` (``directory``'s Distributed Checkpoint):
    they move into the checkpoint as ``dcp/`` and are listed in its manifest. A write that fails
    (disk full, no permission) is a :class:`CheckpointError` that leaves the previous checkpoint in place and no
    temporary folder behind; Ctrl-C during the write takes effect once it is complete.
    """
    directory = Path(directory)
    parent = directory.parent
    tmp = parent / f".{directory.name}.tmp"
    old = parent / f".{directory.name}.old"
    had_previous = (directory / STATE_JSON).is_file()
    try:
        with _sigint_deferred():
            parent.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            weights = weights if weights is not None else model
            extra = {"training": {"epoch": state.get("epoch")}}
            save_pretrained(weights, tmp, extra=extra, state_dict=state_dict)
            atomic_save_safetensors(tmp / STATE_TENSORS, tensors, metadata={"format": "pt"})
            files = {n: sha256_file(tmp / n) for n in ("model.safetensors", STATE_TENSORS, "config.json")}
            if shards is not None:
                os.replace(shards_tmp(directory), tmp / SHARDS_DIR)
                _fsync_dir(tmp / SHARDS_DIR)
                files |= shards
            atomic_write_json(tmp / STATE_JSON, {"format_version": FORMAT_VERSION, **state, "sha256": files})
            _fsync_dir(tmp)
            if directory.exists():
                if old.exists():
                    shutil.rmtree(old)
                os.replace(directory, old)
            os.replace(tmp, directory)
            _fsync_dir(parent)
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if shards is not None:
            shutil.rmtree(shards_tmp(directory), ignore_errors=True)
        if not directory.exists() and (old / STATE_JSON).is_file():
            with contextlib.suppress(OSError):  # the swap failed halfway: put the previous checkpoint back
                os.replace(old, directory)
        if not isinstance(e, OSError):
            raise
        reason = e.strerror or str(e) or type(e).__name__
        kept = f"the previous checkpoint {directory} is intact" if had_previous else "no earlier checkpoint was there"
        raise CheckpointError(f"could not write checkpoint {directory}: {reason}; {kept}") from None
    return directory


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a SIGINT (Ctrl-C) that arrives inside the block and deliver it at the end, so a checkpoint is never left
    half-swapped by an interrupt. Only the main thread can install signal handlers; elsewhere this does nothing."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield  # not the main thread, or a handler installed outside Python that cannot be put back
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt here
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def shards_tmp(directory: str | os.PathLike) -> Path:
    """Where the processes write a checkpoint's Distributed Checkpoint files before it is assembled."""
    directory = Path(directory)
    return directory.parent / f".{directory.name}.shards.tmp"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def find_checkpoint(directory: str | os.PathLike) -> Path | None:
    """``directory`` if complete; recovers ``.<name>.old`` left by a crash between two renames."""
    directory = Path(directory)
    old = directory.parent / f".{directory.name}.old"
    if not (directory / STATE_JSON).is_file() and (old / STATE_JSON).is_file():
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(old, directory)
    return directory if (directory / STATE_JSON).is_file() else None


def load_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """Read and verify a checkpoint: (trainer state, training tensors, directory). Nothing is modified.

    The files of ``dcp/`` are verified where they are loaded (each process a share: ``vitkit.train.dcp``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} does not exist")
    path = directory / STATE_JSON
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {STATE_JSON}; not a training checkpoint or an interrupted write")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt ({e})") from None
    for name, digest in state.get("sha256", {}).items():
        if name.startswith(SHARDS_DIR + "/"):
            continue
        f = directory / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing from the checkpoint")
        if sha256_file(f) != digest:
            raise CheckpointError(f"{f}: corrupt or truncated (SHA-256 does not match {STATE_JSON})")
    try:
        tensors = load_file(str(directory / STATE_TENSORS))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{directory / STATE_TENSORS}: cannot read ({e})") from None
    return state, tensors, directory


def load_model_weights(directory: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(directory / "model.safetensors"))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{directory / 'model.safetensors'}: cannot read ({e})") from None
