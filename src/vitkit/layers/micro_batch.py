"""Micro-batches for CPU inference: keep every temporary small enough to be recycled, not page-faulted in.

glibc serves an allocation above its mmap threshold (which adapts up to 32 MiB) with fresh pages from the OS
and gives them back on free, so a layer whose temporaries are that large pays a page fault per 4 KiB on every
call: Swin-T's first stage at batch 8 (MLP hidden 8 x 3136 x 384 floats = 38.5 MB) took 35-50k faults, ~30 ms,
per forward; ViT-B at batch 32 ~400k. Where the images of a batch are independent (inference: no batch
statistics), running the widest part of a model over slices of the batch gives the same result with
temporaries that stay in the allocator's free lists. Measured (CPU, 2 threads, same process, alternating):
Swin-T 1.02-1.12x faster at batch 8 where the whole batch faulted, 1.15x at 32, ViT-B 1.06x at 32, CvT-13
unchanged; Swin-T's peak inference memory 373 -> 268 MiB (benchmarks/README.md).
"""

import math

import torch
from torch import nn

from vitkit.layers.fused import is_tracing

MICRO_BATCH_BYTES = 32 * 2**20  # widest temporary per micro-batch: glibc's largest mmap threshold. 0: off


def num_micro_batches(module: nn.Module, batch: torch.Tensor, widest_bytes: int) -> int:
    """How many slices of ``batch`` keep ``widest_bytes`` (the whole batch's widest temporary) under the limit.

    1 (the batch stays whole) unless this is CPU inference: eval mode, no autograd, not tracing / compiling /
    exporting; also 1 while attention maps are recorded or hooks watch ``module``: they would see slices.
    """
    B = batch.shape[0]
    if (
        MICRO_BATCH_BYTES <= 0
        or B == 1
        or widest_bytes <= MICRO_BATCH_BYTES
        or batch.device.type != "cpu"
        or module.training
        or torch.is_grad_enabled()
        or is_tracing()
    ):
        return 1
    if any(m._forward_hooks or m._forward_pre_hooks or getattr(m, "record_attention", False) for m in module.modules()):
        return 1
    return min(B, math.ceil(widest_bytes / MICRO_BATCH_BYTES))
