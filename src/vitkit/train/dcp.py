"""Training checkpoints of ``strategy="fsdp"`` as PyTorch Distributed Checkpoints (``torch.distributed.checkpoint``).

The model, the AdamW moments and the EMA weights go to ``<checkpoint>/dcp/``: every process writes its own shards
(no process ever holds the whole optimizer state) and loading reshards them for any number of processes, one
included. Rank 0 also writes the whole weights to ``model.safetensors`` (gathered into its CPU memory: one full
copy of the weights, not of the optimizer state), so ``from_pretrained``, ``vitkit eval`` and ``export`` read the
checkpoint like any other. The files are written into a temporary folder and moved into the checkpoint by
:func:`vitkit.train.state.save_checkpoint`, with their SHA-256 in its manifest.
"""

import contextlib
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitkit.errors import CheckpointError
from vitkit.train import distributed
from vitkit.train.state import SHARDS_DIR, load_model_weights, shards_tmp
from vitkit.utils.io import sha256_file


@contextlib.contextmanager
def _one_process_quietly(info: distributed.DistInfo) -> Iterator[None]:
    """On one process, without the warning Distributed Checkpoint gives for a save or load without process group."""
    with warnings.catch_warnings():
        if not info.enabled:
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        yield


def has_shards(directory: Path) -> bool:
    return (directory / SHARDS_DIR).is_dir()


def _app_state(model: nn.Module, optimizer: torch.optim.Optimizer, ema_model: nn.Module | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_sd, "optimizer": optim_sd}
    if ema_model is not None:
        state["ema"] = get_model_state_dict(ema_model)
    return state


def save(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema_model: nn.Module | None,
    info: distributed.DistInfo,
) -> dict[str, str]:
    """Every process writes its shards into ``shards_tmp(directory)`` (a collective); returns the SHA-256 of every
    file, ``{"dcp/<file>": hex}``, each process hashing a share of them."""
    import torch.distributed.checkpoint as dcp

    tmp = shards_tmp(directory)
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier(info)
    with _one_process_quietly(info):
        dcp.save(_app_state(model, optimizer, ema_model), checkpoint_id=tmp, no_dist=not info.enabled)
    names = sorted(p.name for p in tmp.iterdir())  # complete on every process: save() returns after the metadata
    mine = {f"{SHARDS_DIR}/{n}": sha256_file(tmp / n) for n in names[info.rank :: info.world_size]}
    return {k: v for part in distributed.gather_objects(mine, info) for k, v in part.items()}


def _verify(directory: Path, manifest: dict[str, str], info: distributed.DistInfo) -> None:
    """Check the shards' SHA-256 (each process a share); every process raises the same error or none does."""
    names = sorted(n for n in manifest if n.startswith(SHARDS_DIR + "/"))
    problem = None
    for name in names[info.rank :: info.world_size]:
        f = directory / name
        if not f.is_file():
            problem = f"{f}: missing from the checkpoint"
        elif sha256_file(f) != manifest[name]:
            problem = f"{f}: corrupt or truncated (SHA-256 does not match the checkpoint's manifest)"
        if problem:
            break
    problems = [p for p in distributed.gather_objects(problem, info) if p]
    if not names:
        problems.append(f"{directory}: its manifest lists no {SHARDS_DIR}/ files")
    if problems:
        raise CheckpointError(problems[0])


def load(
    directory: Path,
    state: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema_model: nn.Module | None,
    info: distributed.DistInfo,
) -> None:
    """Model, optimizer and EMA from the checkpoint ``directory`` (its trainer ``state`` and ``tensors`` read).

    A checkpoint with ``dcp/`` loads into any number of processes, sharded or not; one without (written by
    ``strategy="ddp"`` or one process) loads into a sharded model from its full files, each process keeping its
    shard.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
        set_state_dict,
    )

    if has_shards(directory):
        import torch.distributed.checkpoint as dcp

        _verify(directory, state.get("sha256", {}), info)
        app = _app_state(model, optimizer, ema_model)
        with _one_process_quietly(info):
            dcp.load(app, checkpoint_id=directory / SHARDS_DIR, no_dist=not info.enabled)
        set_state_dict(model, optimizer, model_state_dict=app["model"], optim_state_dict=app["optimizer"])
        if ema_model is not None:
            set_model_state_dict(ema_model, app["ema"])
        return
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, load_model_weights(directory), options=full)
    named = _named_optimizer_state(optimizer, state["optimizer"], tensors)
    set_optimizer_state_dict(model, optimizer, named, options=full)
    if ema_model is not None:
        ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        set_model_state_dict(ema_model, ema, options=full)


def _named_optimizer_state(
    optimizer: torch.optim.Optimizer, meta: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """The optimizer state of a checkpoint without shards (parameters by position), keyed by parameter name."""
    names = [n for g in optimizer.param_groups for n in g["names"]]
    state = {
        names[int(pid)]: {k: tensors[f"optim.{pid}.{k}"] if v == "tensor" else v for k, v in st.items()}
        for pid, st in meta["state"].items()
    }
    if len(meta["param_groups"]) != len(optimizer.param_groups):
        raise CheckpointError("the checkpoint's optimizer has a different parameter grouping; same settings?")
    groups = [
        {**current, **{k: v for k, v in saved.items() if k != "params"}, "params": current["names"]}
        for current, saved in zip(optimizer.param_groups, meta["param_groups"], strict=True)
    ]
    return {"state": state, "param_groups": [{k: v for k, v in g.items() if k != "names"} for g in groups]}
