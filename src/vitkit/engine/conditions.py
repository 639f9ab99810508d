"""When the engine's fast paths may run: one place for every condition.

A fast path must give the reference's numbers up to float rounding, so it runs only where nothing else could
differ: no autograd (gradients flow through the reference ops), not while tracing / compiling / exporting (those
must see plain torch ops), not while attention maps are recorded. The fused oneDNN ops and the native kernels
further need CPU float32 without autocast, and the kernels no dispatch mode (a FLOP counter must see every op).
"""

import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from vitkit.utils.autocast import autocast_dtype

_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def is_tracing() -> bool:
    """True while ``torch.jit`` traces, ``torch.compile`` compiles or ``torch.export`` / ONNX export exports."""
    return torch.jit.is_tracing() or _is_compiling() or _is_exporting()


def autocast_on() -> bool:
    return autocast_dtype("cpu") is not None


def inference_call(attn: nn.Module | None = None) -> bool:
    """May an engine module leave the reference path for this call (any device)?"""
    return not torch.is_grad_enabled() and not is_tracing() and not getattr(attn, "record_attention", False)


def cpu_float32(x: torch.Tensor) -> bool:
    """May the fused oneDNN ops run on ``x`` (CPU float32, autocast off)?"""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not autocast_on()


def native_call(x: torch.Tensor) -> bool:
    """May a native kernel run on ``x``: CPU float32, autocast off, and no dispatch mode watching the ops."""
    return cpu_float32(x) and _get_current_dispatch_mode() is None


def bf16_cpu_call(x: torch.Tensor) -> bool:
    """May a bf16 computation on ``x`` run as float32 products of its bf16 values (CPU, bf16 autocast or a bf16
    tensor, no dispatch mode watching the ops)?"""
    bf16 = x.dtype == torch.bfloat16 or autocast_dtype("cpu") == torch.bfloat16
    return x.device.type == "cpu" and bf16 and _get_current_dispatch_mode() is None
