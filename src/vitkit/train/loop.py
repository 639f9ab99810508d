"""The training loop, read top to bottom: data -> model -> optimizer -> (resume) -> epochs -> result.

Exactness on resume comes from three things: the data order and augmentations are pure functions of
(seed, epoch, batch) (see ``vitkit.data.loader``), the checkpoint carries every other piece of state
(weights, AdamW moments, schedule step, EMA, grad scaler, torch/numpy/python RNG, position in the
epoch and the epoch's running sums), and nothing else touches the global RNG.
"""

import dataclasses
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from vitkit.data import DataSpec, Loader, build_dataset, mixup_cutmix
from vitkit.data.loader import _mix
from vitkit.engine.training import training_path
from vitkit.errors import CheckpointError, VitkitError
from vitkit.factory import create_model
from vitkit.hub import from_pretrained
from vitkit.models.registry import parse_overrides
from vitkit.train import dcp, distributed, sharding
from vitkit.train.budget import TrainingClock, budget_text, build_schedule, expected_epochs, planned_epochs
from vitkit.train.config import TrainConfig, TrainResult
from vitkit.train.optim import ModelEma, adamw, param_groups
from vitkit.train.progress import MetricsLog, Progress
from vitkit.train.state import (
    STATE_JSON,
    find_checkpoint,
    load_checkpoint,
    load_model_weights,
    load_optimizer_state,
    optimizer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from vitkit.utils.io import atomic_write_json

Callback = Callable[[str, dict[str, Any]], Any]  # callback(event, info); events: "step", "epoch", "end"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- pieces the loop uses --------------------------------------------------------------------------
def build_datasets(cfg: TrainConfig):
    train_ds = build_dataset(cfg.data, "train", val_fraction=cfg.val_fraction, seed=cfg.seed, download=cfg.download)
    if cfg.val_data:
        val_ds = build_dataset(cfg.val_data, "all", download=cfg.download)
    else:
        val_ds = build_dataset(cfg.data, "val", val_fraction=cfg.val_fraction, seed=cfg.seed, download=cfg.download)
    if val_ds.classes != train_ds.classes:
        raise VitkitError(
            f"validation classes {val_ds.classes[:5]}... differ from training classes {train_ds.classes[:5]}..."
        )
    if cfg.val_data and hasattr(train_ds, "samples") and hasattr(val_ds, "samples"):
        train_files = {os.path.realpath(p) for p, _ in train_ds.samples}
        shared = [p for p, _ in val_ds.samples if os.path.realpath(p) in train_files]
        if shared:
            warnings.warn(
                f"--val-data: {len(shared)} of {len(val_ds)} validation files are also training files "
                f"(e.g. {shared[0]}); the validation score will be optimistic",
                stacklevel=2,
            )
    rng = np.random.default_rng(_mix(cfg.seed, 7))
    if cfg.max_train_samples and cfg.max_train_samples < len(train_ds):
        train_ds = train_ds.subset(np.sort(rng.permutation(len(train_ds))[: cfg.max_train_samples]))
    if cfg.max_val_samples and cfg.max_val_samples < len(val_ds):
        val_ds = val_ds.subset(np.sort(rng.permutation(len(val_ds))[: cfg.max_val_samples]))
    return train_ds, val_ds


def model_for_training(cfg: TrainConfig, num_classes: int, in_chans: int):
    """A registered model (random init), or a pretrained one with a new head / channels / resolution."""
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans, "drop_path_rate": cfg.drop_path_rate}
    if cfg.img_size:
        kwargs["img_size"] = cfg.img_size
    kwargs |= parse_overrides(cfg.model_args)
    if cfg.pretrained and not cfg.model:
        return from_pretrained(cfg.pretrained, **kwargs).train()
    return create_model(cfg.model, pretrained=cfg.pretrained or None, **kwargs)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def validate(model, loader: Loader, device: torch.device, amp: str, info) -> dict[str, float]:
    """Loss (plain cross-entropy), top-1 and top-5 accuracy over the whole split, summed across ranks.

    A split of which no image could be read is an error: its scores would be those of no data at all.
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)  # loss, correct@1, correct@5, count, skipped
    sharded = sharding.is_sharded(model)
    for x, y, skipped in sharding.lockstep_batches(loader, info) if sharded else loader.batches(0):
        sums[4] += skipped
        if len(y) == 0 and not sharded:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        if len(y) == 0:  # a stand-in batch that kept this process in step with the others
            continue
        logits = logits.float()
        k = min(5, logits.shape[-1])
        top = logits.topk(k, dim=-1).indices
        sums[:4] += torch.tensor(
            [
                F.cross_entropy(logits, y, reduction="sum").item(),
                (top[:, 0] == y).sum().item(),
                (top == y[:, None]).any(dim=-1).sum().item(),
                len(y),
            ],
            dtype=torch.float64,
        )
    sums = distributed.all_reduce_sum(sums, info)
    model.train(was_training)
    if sums[3] == 0:
        raise VitkitError(
            f"validation saw no image: every one of the {int(sums[4].item())} validation images was unreadable "
            f"({getattr(loader.dataset, 'source', '')}); no score, so no best/ checkpoint"
        )
    n = sums[3].item()
    return {"loss": sums[0].item() / n, "acc": sums[1].item() / n, "top5": sums[2].item() / n}


def check_images(dataset, info: distributed.DistInfo, skip_bad_images: bool) -> tuple[Any, list[str]]:
    """Decode every image of a file data set once (in threads, each rank a share), before any training step.

    A bad file in the validation split would otherwise stop a run at its first evaluation, after a whole epoch of
    training. Without ``skip_bad_images`` the first bad file is an error; with it, the bad files are dropped and their
    errors returned. In-memory arrays need no check.
    """
    if getattr(dataset, "in_memory", True) or not hasattr(dataset, "samples"):
        return dataset, []

    def problem(i: int) -> tuple[int, str] | None:
        try:
            dataset[i]
        except VitkitError as e:
            return i, (str(e).splitlines() or [type(e).__name__])[0]
        return None

    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        bad = [r for r in pool.map(problem, range(info.rank, len(dataset), info.world_size)) if r is not None]
    finally:  # on Ctrl-C, do not wait for the images still queued
        pool.shutdown(wait=False, cancel_futures=True)
    if info.enabled:
        shares: list[Any] = [None] * info.world_size
        torch.distributed.all_gather_object(shares, bad)
        bad = sorted(r for share in shares for r in share)
    if not bad:
        return dataset, []
    source = getattr(dataset, "source", "") or "the validation data"
    if not skip_bad_images:
        raise VitkitError(
            f"{bad[0][1]} (validation data {source}: {len(bad)} unreadable of {len(dataset)}, found before "
            "training; skip_bad_images (--skip-bad-images) drops them)"
        )
    if len(bad) == len(dataset):
        raise VitkitError(
            f"every image of the validation data {source} is unreadable ({len(bad)} files), e.g. {bad[0][1]}"
        )
    dropped = {i for i, _ in bad}
    keep = np.array([i for i in range(len(dataset)) if i not in dropped], dtype=np.int64)
    return dataset.subset(keep), [msg for _, msg in bad]


_RUN_FILES = ("metrics.jsonl", "train_config.json")
_RUN_DIRS = ("best", "last", "final", "plots", "tensorboard")


def remove_run(out: Path) -> None:
    """Delete what an earlier training run wrote in ``out`` (``overwrite_output_dir``), and nothing else, so the new
    run's files are never mixed with the old run's."""
    if not out.is_dir():
        return
    for name in _RUN_FILES:
        (out / name).unlink(missing_ok=True)
    checkpoints = [f".{d}.{suffix}" for d in ("best", "last", "final") for suffix in ("tmp", "old", "shards.tmp")]
    for path in out.iterdir():
        if path.name in _RUN_DIRS or path.name in checkpoints or (path.name.startswith("eval") and path.is_dir()):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


# --- the loop --------------------------------------------------------------------------------------
def train(
    cfg: TrainConfig, *, callbacks: list[Callback] | None = None, clock: Callable[[], float] | None = None
) -> TrainResult:
    """Train (or fine-tune) ``cfg.model`` on ``cfg.data``; under torchrun, one process per device.

    ``clock`` (seconds, default ``time.perf_counter``) measures the training time a time budget counts; tests pass
    a fake one.
    """
    info = distributed.setup(cfg.device)
    try:
        with warnings.catch_warnings():
            if info.enabled and cfg.strategy == "ddp":
                # DDP's reducer compares every stride of a gradient with its bucket's; a depthwise conv weight
                # (C, 1, k, k) fed a channels-last map gets gradients whose strides differ only in the size-1
                # dimension, the same layout to autograd. DDP copies them into its buckets either way.
                warnings.filterwarnings("ignore", "Grad strides do not match bucket view strides", UserWarning)
            result = _train(cfg, info, callbacks or [], TrainingClock(clock))
        # every rank done (the main one writes the last files) before any closes its connections: a gloo peer whose
        # connection closes under it can abort its process
        distributed.barrier(info)
        return result
    finally:
        distributed.teardown(info)


def _train(
    cfg: TrainConfig, info: distributed.DistInfo, callbacks: list[Callback], clock: TrainingClock
) -> TrainResult:
    device, main = info.device, info.is_main
    out = Path(cfg.output_dir)
    say = (lambda msg: print(msg, flush=True)) if main and cfg.progress != "none" else (lambda msg: None)
    if cfg.amp == "fp16" and device.type != "cuda":
        raise VitkitError("amp='fp16' needs a CUDA device (it uses a gradient scaler); use amp='bf16' on CPU")
    torch.use_deterministic_algorithms(cfg.deterministic, warn_only=True)

    # 1. where to resume from (decided before anything is written)
    resume_dir = None
    if not cfg.resume and distributed.restart_count() > 0:  # torchrun restarted the job: continue where it was
        cfg = cfg.replace(resume="auto")
    if cfg.resume:
        wanted = out / "last" if cfg.resume in ("auto", "last") else Path(cfg.resume)
        if not (wanted / STATE_JSON).is_file() and ((wanted / "last").is_dir() or (wanted / ".last.old").is_dir()):
            wanted = wanted / "last"  # an output directory was given
        resume_dir = find_checkpoint(wanted)
        if resume_dir is None and cfg.resume not in ("auto", "last"):
            raise CheckpointError(f"cannot resume: {wanted} is not a complete training checkpoint")
    elif not cfg.overwrite_output_dir and find_checkpoint(out / "last") is not None:
        raise VitkitError(
            f"{out} already holds a training run; pass resume='auto' (--resume auto) to continue it, "
            "overwrite_output_dir=True to start again, or another output_dir"
        )

    # 2. data (every validation image decoded once, so a bad file shows up before any training)
    seed_everything(cfg.seed)
    train_ds, val_ds = build_datasets(cfg)
    val_ds, bad_val = check_images(val_ds, info, cfg.skip_bad_images)
    if bad_val:
        say(f"skipped {len(bad_val)} unreadable validation image(s), e.g. {bad_val[0]}")
    classes = list(train_ds.classes)
    in_chans = cfg.in_chans or train_ds.channels

    # 3. model (same initial weights on every rank: same seed; DDP also broadcasts rank 0's)
    model = model_for_training(cfg, len(classes), in_chans)
    model.class_names = classes
    if cfg.freeze_backbone:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.get_classifier().parameters():
            p.requires_grad_(True)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.to(device)
    spec = DataSpec.from_model(model, in_chans)
    seed_everything(cfg.seed + info.rank)  # per-rank dropout / drop-path noise

    common = dict(rank=info.rank, world_size=info.world_size, num_workers=cfg.num_workers, seed=cfg.seed)
    common |= dict(skip_bad_images=cfg.skip_bad_images, pin_memory=device.type == "cuda")
    train_loader = Loader(
        train_ds,
        spec,
        batch_size=cfg.batch_size,
        train=True,
        aug=cfg.aug,
        random_resized_crop=cfg.random_resized_crop,
        crop_padding=cfg.crop_padding,
        random_erasing=cfg.random_erasing,
        **common,
    )
    val_loader = Loader(val_ds, spec, batch_size=cfg.batch_size * 2, train=False, **common)

    # 4. optimizer, schedule (per optimizer step), EMA, grad scaler
    batches_per_epoch = len(train_loader)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accum_steps)
    epochs = planned_epochs(cfg)  # None: the budget ends the run
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    net = sharding.distribute(model, ema.module if ema is not None else None, cfg, info)  # DDP, or FSDP in place
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay)
    if not groups:
        raise VitkitError("no trainable parameters (is everything frozen?)")
    optimizer = adamw(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    scheduler, budget = build_schedule(cfg, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None
    fwd = torch.compile(net) if cfg.compile else net

    # 5. state that a checkpoint restores
    epoch, batch_in_epoch, step = 0, 0, 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"acc": -1.0, "epoch": -1, "bad_epochs": 0}
    running = [0.0, 0.0, 0.0, 0.0]  # this epoch: loss sum, correct, images, skipped images
    crops_on: bool | None = None  # with crop_min_epochs: whether this run is long enough for the random crop
    if resume_dir is not None:
        state, tensors, _ = load_checkpoint(resume_dir)
        _check_compatible(state, cfg, resume_dir, info.world_size)
        if dcp.has_shards(resume_dir) or sharding.is_sharded(model):
            dcp.load(resume_dir, state, tensors, model, optimizer, ema.module if ema is not None else None, info)
        else:
            model.load_state_dict(load_model_weights(resume_dir))
            load_optimizer_state(optimizer, state["optimizer"], tensors)
            if ema is not None:
                ema.module.load_state_dict({k[4:]: v.to(device) for k, v in tensors.items() if k.startswith("ema.")})
        if ema is not None:
            ema.updates = state["ema_updates"]
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], tensors)
        if info.rank and f"rng.torch.rank{info.rank}" in tensors:
            torch.set_rng_state(tensors[f"rng.torch.rank{info.rank}"])
        epoch, batch_in_epoch, step = state["epoch"], state["batch_in_epoch"], state["step"]
        budget.load_state_dict(state.get("budget", {}), step)
        clock = TrainingClock(clock.now, budget.train_time_s)
        scheduler.load_state_dict(state["scheduler"])
        history, best, running = state["history"], state["best"], _running_share(state, info)
        crops_on = state.get("crops_on")
        say(f"resumed from {resume_dir}: epoch {epoch + 1}, batch {batch_in_epoch}, step {step}")

    # Everything that can fail early (settings, data, model, the checkpoint to resume) has been checked: only now is
    # the output directory touched, so a run that cannot start leaves an earlier run there as it was.
    if main:
        if resume_dir is None and cfg.overwrite_output_dir:
            remove_run(out)
        out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(out, cfg.tensorboard, enabled=main)
    if main:
        log.truncate_after(step)
        atomic_write_json(out / "train_config.json", cfg.to_dict())
    first_record: dict[str, Any] = {"skipped_val_images": len(bad_val)} if bad_val else {}

    def write_record(record: dict[str, Any]) -> None:
        """A metrics line; the first one of the run also carries what the start-up checks found."""
        log.write({**record, **first_record})
        first_record.clear()

    say(
        f"model {getattr(model, 'model_name', None) or cfg.pretrained}: {model.num_params() / 1e6:.2f}M params "
        f"({model.num_params(trainable_only=True) / 1e6:.2f}M trainable), input {spec.in_chans}x{spec.img_size}; "
        f"data {len(train_ds)} train / {len(val_ds)} val, {len(classes)} classes; device {device}"
        + (f" x {info.world_size} processes ({cfg.strategy})" if info.enabled else "")
        + f"; global batch {cfg.batch_size * info.world_size * cfg.accum_steps}"
    )

    def checkpoint(name: str, *, at_epoch: int, at_batch: int, weights=None, full: bool = True) -> Path | None:
        """Everything needed to continue from (epoch, batch); written on rank 0 only."""
        rng_json, rng_tensors = rng_state()
        if info.enabled:  # every rank's torch RNG, so drop-path noise continues per rank
            states = distributed.gather_objects(rng_tensors["rng.torch"], info)
            rng_tensors |= {f"rng.torch.rank{r}": s for r, s in enumerate(states) if r}
        # collectives first (every rank): each rank's running sums, the shards of a Distributed Checkpoint, the full
        # weights of a sharded model
        running_by_rank = distributed.gather_objects(list(running), info)
        ema_model = ema.module if ema is not None else None
        shards = dcp.save(out / name, model, optimizer, ema_model, info) if full and cfg.strategy == "fsdp" else None
        full_weights = sharding.full_state_dict(weights if weights is not None else model)
        if not main:
            return None
        opt_json, tensors = optimizer_state(optimizer) if full and shards is None else ({}, {})
        if full:
            tensors |= rng_tensors
            if ema is not None and shards is None:
                tensors |= {f"ema.{k}": v for k, v in ema.module.state_dict().items()}
        state = {
            "config": cfg.to_dict(),
            "epoch": at_epoch,
            "batch_in_epoch": at_batch,
            "step": step,
            "metrics": history[-1] if history else {},
            "history": history,
            "best": best,
            "running": [sum(v) for v in zip(*running_by_rank, strict=True)],  # over every rank
            "running_by_rank": running_by_rank,
            "scheduler": scheduler.state_dict(),
            "budget": budget.state_dict(),
            "optimizer": opt_json,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_json,
            "classes": classes,
            "world_size": info.world_size,
            "ema_updates": ema.updates if ema is not None else 0,
            "crops_on": crops_on,
        }
        return save_checkpoint(
            out / name, model, state=state, tensors=tensors, weights=weights, state_dict=full_weights, shards=shards
        )

    def emit(event: str, payload: dict[str, Any]) -> None:
        for cb in callbacks:
            cb(event, payload)

    # 6. epochs
    start_time = time.perf_counter()
    stop_reason = budget.exhausted()  # a resumed run whose budget was already used up trains no further
    last_dir = find_checkpoint(out / "last") if resume_dir is not None else None
    metrics: dict[str, float] = history[-1] if history else {}
    if budget.active:
        say(f"budget: {budget_text(cfg)}; the lr schedule follows the fraction of it used")
    while (epochs is None or epoch < epochs) and stop_reason is None:
        if cfg.crop_padding and cfg.crop_min_epochs:
            images_per_epoch = batches_per_epoch * cfg.batch_size * info.world_size
            if crops_on is None and (length := expected_epochs(budget, epochs, images_per_epoch)) is not None:
                crops_on = length >= cfg.crop_min_epochs  # every rank: the budget's numbers are rank 0's
                say(
                    f"random crop {'on' if crops_on else 'off'} from epoch {epoch + 1}: the run lasts about "
                    f"{length:.1f} epochs ({'at least' if crops_on else 'under'} crop_min_epochs="
                    f"{cfg.crop_min_epochs:g})"
                )
            train_loader.set_crop_padding(cfg.crop_padding if crops_on else 0)
        net.train()
        bar = Progress(
            steps_per_epoch,
            f"epoch {epoch + 1}" + (f"/{epochs}" if epochs else ""),
            mode=cfg.progress if main else "none",
            log_every=cfg.log_every,
        )
        bar.n = batch_in_epoch // cfg.accum_steps
        group_loss = torch.zeros(3, dtype=torch.float64)  # loss sum, images, non-finite flag
        group_ran = False  # a batch of this accumulation group went through backward
        b = batch_in_epoch - 1
        clock.start()
        for b, (x, y, skipped) in enumerate(train_loader.batches(epoch, start=batch_in_epoch), start=batch_in_epoch):
            group_start = b - b % cfg.accum_steps
            group_size = min(cfg.accum_steps, batches_per_epoch - group_start)
            last_in_group = b - group_start == group_size - 1
            running[3] += skipped
            usable = len(y) > 0
            if cfg.skip_bad_images and info.enabled:
                # DDP's backward waits for every rank: a batch all of whose images one rank had to skip is
                # dropped on every rank, or the ranks that have images would wait for that one forever
                usable = distributed.all_reduce_min(torch.tensor([float(len(y))]), info).item() > 0
            if usable:
                group_ran = True
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                mix_rng = np.random.default_rng(_mix(cfg.seed, epoch, b, info.rank, 11))
                x, target = mixup_cutmix(
                    x,
                    y,
                    len(classes),
                    mixup=cfg.mixup,
                    cutmix=cfg.cutmix,
                    smoothing=cfg.label_smoothing,
                    rng=mix_rng,
                )
                # DDP all-reduces once per group; FSDP reduce-scatters every batch into the gradient shards
                ddp = isinstance(net, DistributedDataParallel)
                sync = net.no_sync() if ddp and not last_in_group else nullcontext()
                with sync:
                    # the engine's training shortcuts (vitkit.engine.training); a compiled model traces its own
                    with autocast(device, cfg.amp), training_path(model) if not cfg.compile else nullcontext():
                        logits = fwd(x)
                    loss = soft_cross_entropy(logits, target)
                    scaled = loss / group_size
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    group_loss[2] += 1
                group_loss[0] += loss_value * len(y)
                group_loss[1] += len(y)
                running[0] += loss_value * len(y) if math.isfinite(loss_value) else 0.0
                running[1] += (logits.argmax(-1) == target.argmax(-1)).sum().item()
                running[2] += len(y)
            if not last_in_group:
                continue

            # one optimizer step per accumulation group
            if isinstance(net, DistributedDataParallel) and group_ran and not usable:  # the syncing batch was dropped
                distributed.average_gradients(model, info)
            group_ran = False
            elapsed = clock.elapsed() if info.rank == 0 else 0.0  # one clock: rank 0's (the others add 0)
            flags = distributed.all_reduce_sum(torch.cat([group_loss, torch.tensor([elapsed])]), info)
            if flags[2] > 0:
                good = find_checkpoint(out / "last")
                raise VitkitError(
                    f"loss is not finite (nan/inf) at step {step + 1} (epoch {epoch + 1}, batch {b + 1}); "
                    f"stopped without updating the weights. Last good checkpoint: {good or 'none yet'}. "
                    "Try a lower lr, clip_grad, or amp='none'/'bf16'"
                )
            if scaler is not None:
                scaler.unscale_(optimizer)
            if cfg.clip_grad > 0:
                grad_norm = sharding.clip_grad_norm(model.parameters(), cfg.clip_grad)
            else:
                grad_norm = float("nan")
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            budget.update(flags[3].item(), int(flags[1].item()), step)
            scheduler.step()
            if ema is not None:
                ema.update(model)
            loss_avg = flags[0].item() / max(flags[1].item(), 1.0)
            group_loss.zero_()
            bar.update(
                int(flags[1].item()),
                loss=loss_avg,
                acc=running[1] / max(running[2], 1),
                lr=scheduler.get_last_lr(),
            )
            if step % cfg.log_every == 0:
                write_record(
                    {
                        "type": "train",
                        "step": step,
                        "epoch": epoch + (b + 1) / batches_per_epoch,
                        "loss": loss_avg,
                        "lr": scheduler.get_last_lr(),
                        "grad_norm": grad_norm,
                        "images_per_s": bar.images / max(time.perf_counter() - bar.start, 1e-9),
                    }
                )
            if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 and b + 1 < batches_per_epoch:
                with clock.paused():
                    last_dir = checkpoint("last", at_epoch=epoch, at_batch=b + 1)
            emit("step", {"step": step, "epoch": epoch, "batch": b, "loss": loss_avg, "lr": scheduler.get_last_lr()})
            if stop_reason := budget.exhausted():
                break
        clock.pause()
        bar.close()

        # end of epoch (or early stop): evaluate, record, checkpoint
        finished_epoch = stop_reason is None or b + 1 >= batches_per_epoch
        sums = distributed.all_reduce_sum(torch.tensor(running, dtype=torch.float64), info)
        if sums[2] == 0:
            raise VitkitError(
                f"epoch {epoch + 1} trained on no image: every image was unreadable ({int(sums[3].item())} skipped "
                f"with skip_bad_images) in {cfg.data}; nothing was learned, so no best/ checkpoint is written"
            )
        record: dict[str, Any] = {
            "type": "epoch",
            "epoch": epoch + 1 if finished_epoch else epoch + (b + 1) / batches_per_epoch,
            "step": step,
            "train_loss": sums[0].item() / max(sums[2].item(), 1),
            "train_acc": sums[1].item() / max(sums[2].item(), 1),
            "lr": scheduler.get_last_lr(),
            "time_s": time.perf_counter() - start_time,
            "images_seen": budget.images_seen,
        }
        if budget.active:
            record |= {"train_time_s": budget.train_time_s, "budget_fraction": budget.fraction}
        if sums[3] > 0:
            record["skipped_images"] = int(sums[3].item())
        record["param_optimizer_bytes"] = sharding.param_optimizer_bytes(model, optimizer, info)
        if (epoch + 1) % cfg.eval_every_epochs == 0 or epoch + 1 == epochs or stop_reason is not None:
            val = validate(model, val_loader, device, cfg.amp, info)
            record |= {f"val_{k}": v for k, v in val.items()}
            score, source = val["acc"], "model"
            if ema is not None:  # the better of the raw and the averaged weights competes for best/
                val_ema = validate(ema.module, val_loader, device, cfg.amp, info)
                record |= {f"val_ema_{k}": v for k, v in val_ema.items()}
                if val_ema["acc"] >= score:
                    score, source = val_ema["acc"], "ema"
            improved = score > best["acc"]
            if improved:
                best = {"acc": score, "epoch": epoch + 1, "bad_epochs": 0, "source": source}
            else:
                best["bad_epochs"] += 1
            record["best_val_acc"] = best["acc"]
            if improved:
                weights = ema.module if source == "ema" else None
                checkpoint("best", at_epoch=epoch + 1, at_batch=0, weights=weights, full=False)
            if cfg.early_stopping_patience and best["bad_epochs"] >= cfg.early_stopping_patience:
                stop_reason = f"early stopping: no better val accuracy for {best['bad_epochs']} evaluations"
        history.append(record)
        metrics = record
        write_record(record)
        say(
            f"epoch {record['epoch']:.4g}: "
            + " ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith(("train_", "val_")))
        )
        if finished_epoch:
            epoch, batch_in_epoch, running = epoch + 1, 0, [0.0, 0.0, 0.0, 0.0]
            last_dir = checkpoint("last", at_epoch=epoch, at_batch=0)
        else:
            last_dir = checkpoint("last", at_epoch=epoch, at_batch=b + 1)
        emit("epoch", record)

    if stop_reason:
        after = clock.since_pause()
        say(f"stopped: {stop_reason}" + (f"; the last evaluation and checkpoint took {after:.1f} s" if after else ""))
    log.close()
    distributed.barrier(info)
    best_dir = out / "best" if (out / "best" / "config.json").is_file() else None
    result = TrainResult(
        output_dir=out,
        best_checkpoint=best_dir,
        last_checkpoint=last_dir or find_checkpoint(out / "last"),
        final_model=best_dir or last_dir,
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        history=history,
        stopped_early=stop_reason,
    )
    emit("end", dataclasses.asdict(result))
    return result


# Settings that may differ when resuming (they do not change what the saved state means).
_RESUME_MAY_CHANGE = {
    "resume",
    "epochs",
    "num_workers",
    "log_every",
    "progress",
    "tensorboard",
    "checkpoint_every_steps",
    "time_limit_minutes",
    "budget_images",
    "early_stopping_patience",
    "device",
    "overwrite_output_dir",
    "output_dir",
    "eval_every_epochs",
    "compile",
    "strategy",
    "batch_size",  # per process: what must stay is the global batch, checked on its own
}


def _check_compatible(state: dict[str, Any], cfg: TrainConfig, where: Path, world_size: int) -> None:
    """The settings that shape the saved state are those of the checkpoint; the number of processes may change
    when the global batch (``batch_size`` x processes) does not."""
    saved, now = state["config"], cfg.to_dict()
    diff = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}"
        for k in now
        if k not in _RESUME_MAY_CHANGE and k in saved and _norm(saved[k]) != _norm(now[k])
    ]
    saved_world = state.get("world_size", 1)
    if "batch_size" in saved and saved["batch_size"] * saved_world != cfg.batch_size * world_size:
        diff.append(
            f"global batch: checkpoint {saved['batch_size']} x {saved_world} process(es) vs now "
            f"{cfg.batch_size} x {world_size} (set batch_size so that batch_size x processes stays "
            f"{saved['batch_size'] * saved_world})"
        )
    if diff:
        raise CheckpointError(f"cannot resume from {where}: settings changed ({'; '.join(diff)})")


def _running_share(state: dict[str, Any], info: distributed.DistInfo) -> list[float]:
    """This rank's part of the epoch's running sums in a checkpoint: its own when the number of processes is the
    same, else the total on rank 0 (they are summed over ranks at the end of the epoch)."""
    shares = state.get("running_by_rank") or [state["running"]]
    if len(shares) == info.world_size:
        return list(shares[info.rank])
    return list(state["running"]) if info.is_main else [0.0] * len(state["running"])


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
