"""Micro-batches for CPU inference: keep every temporary small enough to be recycled, not page-faulted in.

glibc serves an allocation above its mmap threshold (which adapts up to 32 MiB) with fresh pages from the OS and
gives them back on free, so a stage whose temporaries are that large pays a page fault per 4 KiB on every call.
Where the images of a batch are independent (inference: no batch statistics), running the widest part of a model
over slices of the batch gives the same result with temporaries that stay in the allocator's free lists. The
engine slices what is wide and no more: the ViT encoder, each Swin / CvT stage on its own.
"""

import math
from collections.abc import Callable

import torch
from torch import nn

from vitkit.engine.conditions import inference_call


def num_micro_batches(module: nn.Module, x: torch.Tensor, widest_bytes: int, limit: int) -> int:
    """How many slices of ``x`` keep ``widest_bytes`` (the whole batch's widest temporary) under ``limit``.

    1 (the batch stays whole) unless this is CPU inference without autograd or tracing; also 1 while attention maps
    are recorded or hooks watch ``module``: they would see slices.
    """
    B = x.shape[0]
    if limit <= 0 or B == 1 or widest_bytes <= limit or x.device.type != "cpu" or not inference_call():
        return 1
    if any(m._forward_hooks or m._forward_pre_hooks or getattr(m, "record_attention", False) for m in module.modules()):
        return 1
    return min(B, math.ceil(widest_bytes / limit))


def sliced(forward: Callable, x: torch.Tensor, n: int, *args):
    """``forward(x, *args)`` over ``n`` slices of the batch, outputs concatenated (tuples: the first item)."""
    if n <= 1:
        return forward(x, *args)
    outs = [forward(part, *args) for part in x.tensor_split(n)]
    if isinstance(outs[0], tuple):
        return (torch.cat([o[0] for o in outs]), *outs[0][1:])
    return torch.cat(outs)
