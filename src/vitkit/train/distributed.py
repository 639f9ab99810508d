"""DistributedDataParallel set-up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

One process: nothing happens. Several (``torchrun --nproc_per_node N -m vitkit train ...``; multi-node with
``--nnodes M --node_rank R --rdzv_backend c10d --rdzv_endpoint HOST:PORT``): the process group uses NCCL
on GPUs and Gloo on CPUs; each process owns GPU ``LOCAL_RANK``.
"""

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vitkit.errors import VitkitError

_CPU = torch.device("cpu")
_groups_created = 0  # process groups this process has created (each train() call under torchrun creates one)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = _CPU
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise VitkitError(f"device {name!r} requested but CUDA is not available (this torch: {torch.__version__})")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise VitkitError("device 'mps' requested but MPS is not available")
    return dev


def setup(device: str = "auto") -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, **_store_for_this_attempt(rank, world))
        created = True
    return DistInfo(rank, world, local_rank, dev, created)


def _store_for_this_attempt(rank: int, world: int) -> dict[str, Any]:
    """``init_process_group`` arguments that keep the rendezvous keys of each torchrun attempt (and of each process
    group a process creates, one per ``train()`` call) apart.

    torchrun (c10d rendezvous) hands its processes its own key-value store and keeps it when ``--max-restarts``
    starts them again; without a prefix of their own, a restarted process can read the address that a process of the
    failed attempt published, and wait on a dead peer (pytorch/pytorch#135712).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    from torch.distributed.constants import default_pg_timeout

    global _groups_created
    _groups_created += 1
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False, timeout=default_pg_timeout
    )
    prefix = f"vitkit/attempt{restart_count()}/group{_groups_created}"
    return {"store": dist.PrefixStore(prefix, store), "rank": rank, "world_size": world}


def teardown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def _all_reduce(t: torch.Tensor, info: DistInfo, op) -> torch.Tensor:
    """``op`` over ranks on a float64 copy (gloo and nccl both take float64); the tensor itself with one process."""
    if not info.enabled:
        return t
    t = t.to(info.device, torch.float64)
    dist.all_reduce(t, op=op)
    return t.cpu()


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks."""
    return _all_reduce(t, info, dist.ReduceOp.SUM)


def all_reduce_min(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Minimum over ranks (e.g. whether every rank has images in its share of a batch)."""
    return _all_reduce(t, info, dist.ReduceOp.MIN)


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Maximum over ranks (e.g. the largest number of batches any rank has)."""
    return _all_reduce(t, info, dist.ReduceOp.MAX)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def restart_count() -> int:
    """How often torchrun has restarted the job's processes (``--max-restarts``) after one of them failed."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def average_gradients(model: torch.nn.Module, info: DistInfo) -> None:
    """Average ``.grad`` over ranks by hand, as DDP's backward would have (for a group whose last batch was dropped on
    every rank, so no backward synchronised the gradients accumulated under ``no_sync``)."""
    if not info.enabled:
        return
    for p in model.parameters():
        if p.grad is not None:  # the same parameters on every rank: they all ran the same batches
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(info.world_size)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
