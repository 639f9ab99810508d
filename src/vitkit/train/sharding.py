"""How several processes share a model: DDP (each a full copy) or FSDP2 (each a shard of every parameter).

``strategy="fsdp"`` applies ``torch.distributed.fsdp.fully_shard`` to every transformer block (the modules of each
``blocks`` list: ViT's, each Swin stage's, each CvT stage's) and then to the model, so one block's parameters are
gathered just before it runs and freed after; gradients are reduce-scattered and AdamW keeps only its shard of the
moments. With ``amp="bf16"`` the gathered parameters are cast by a ``MixedPrecisionPolicy`` (bf16 compute, float32
gradient reduction); gradient checkpointing recomputes a block, and its gather, in the backward pass.
"""

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vitkit.train import distributed
from vitkit.train.sync_bn import convert_batchnorm


def is_sharded(model: nn.Module) -> bool:
    if not torch.distributed.is_available():  # a torch built without torch.distributed has no FSDP either
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _is_dtensor(t: Any) -> bool:
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def distribute(model: nn.Module, ema_model: nn.Module | None, cfg: Any, info: distributed.DistInfo) -> nn.Module:
    """Prepare ``model`` (in place) for ``info.world_size`` processes; return the module a training step calls.

    On one process nothing changes (``strategy="fsdp"`` then trains the whole model and still writes sharded
    checkpoints). The EMA copy, when there is one, is sharded like the model so that its update stays local.
    """
    if not info.enabled:
        return model
    if cfg.sync_bn:
        convert_batchnorm(model, info.device)
    if cfg.strategy == "fsdp":
        shard(model, cfg.amp)
        if ema_model is not None:
            shard(ema_model, cfg.amp)
        return model
    return DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)


def shard(model: nn.Module, amp: str) -> None:
    """``fully_shard`` each block, then the model (its stem, norms and head form the last group).

    With bf16, each BatchNorm is a group of its own that stays in float32: its running statistics are float32
    buffers, which BatchNorm cannot combine with bf16 weights.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs = {}
    if amp == "bf16":
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        float32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
        for module in list(model.modules()):
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                fully_shard(module, mp_policy=float32)
    for name, module in list(model.named_modules()):
        if name.rpartition(".")[2] == "blocks" and isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """A sharded model's full weights on rank 0 (CPU; a collective every rank calls), ``{}`` on the others; None
    for a model that is not sharded (its own ``state_dict()`` is whole)."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def clip_grad_norm(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """``clip_grad_norm_``, returning the total norm as a number (over all shards for FSDP's DTensors)."""
    norm = torch.nn.utils.clip_grad_norm_(list(parameters), max_norm)
    if _is_dtensor(norm):
        norm = norm.full_tensor()
    return norm.item()


def _local_bytes(t: torch.Tensor) -> int:
    if _is_dtensor(t):
        t = t.to_local()
    return t.numel() * t.element_size()


def param_optimizer_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, info: distributed.DistInfo) -> int:
    """The most bytes any process holds in parameters + optimizer state (its local shards under FSDP)."""
    local = sum(_local_bytes(p) for p in model.parameters())
    local += sum(_local_bytes(v) for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v))
    return int(distributed.all_reduce_max(torch.tensor([float(local)]), info).item())


def lockstep_batches(loader: Any, info: distributed.DistInfo) -> Iterator[Any]:
    """The loader's evaluation batches, made the same number on every process and none empty.

    Each forward pass of a sharded model gathers parameters from every process, so a process with fewer batches
    (evaluation shards are not padded) or an empty one (unreadable images skipped) still runs one, on a stand-in
    image whose result is not counted (its batch has no labels).
    """
    total = int(distributed.all_reduce_max(torch.tensor([float(len(loader))]), info).item())
    stand_in = torch.zeros(1, loader.spec.in_chans, *loader.spec.img_size)
    no_labels = torch.zeros(0, dtype=torch.long)
    n = 0
    for x, y, skipped in loader.batches(0):
        n += 1
        yield (x if len(y) else stand_in), y, skipped
    for _ in range(total - n):
        yield stand_in, no_labels, 0
