"""Swin's (shifted) window attention as one native kernel for CPU float32 inference (``window_attention.c``).

Measured on a 2-core AMD EPYC (AVX-512), batch 8, Swin-T's stage shapes: 2.2-3.8x faster than SDPA on the
windows plus the roll / partition / reverse copies it replaces (``benchmarks/kernels.py``), 1.16x on the whole
Swin-T (benchmarks/README.md). Used only where
nothing but rounding can differ from the PyTorch path: eval mode, autograd off, CPU float32 without autocast, not
while tracing / compiling / exporting or under a dispatch mode (FLOP counting), not while attention maps are
recorded, head width a multiple of 16. The profiler sees it as ``vitkit::window_attention``. Set
``vitkit.kernels.window_attention.NATIVE_WINDOW_ATTENTION = False`` (or ``VITKIT_NATIVE=0``) to compare.
"""

import ctypes

import torch
from torch import nn

from vitkit.kernels import load, plain_cpu_inference

NATIVE_WINDOW_ATTENTION = True
MAX_TOKENS = 1024  # tokens per window (32 x 32): a thread's scratch holds a window's scores, 4 MiB at this size

_P, _I = ctypes.c_void_p, ctypes.c_int
_SIGNATURE = {"vk_window_attention": [_P, _P, _P, _I, _I, _I, _I, _I, _I, _I, _I, ctypes.c_float, _I]}


def library() -> ctypes.CDLL | None:
    return load("window_attention", _SIGNATURE)


def padded_width(tokens: int) -> int:
    """Columns per row of the kernel's bias: past ``tokens`` to a multiple of 16 (one spare column at least)."""
    return tokens // 16 * 16 + 16


def usable(x: torch.Tensor, module: nn.Module, num_heads: int, window: int) -> bool:
    """True when ``module`` may run its window attention for input ``x`` through the kernel."""
    return (
        NATIVE_WINDOW_ATTENTION
        and not module.training
        and plain_cpu_inference(x)
        and (x.shape[-1] // num_heads) % 16 == 0
        and window * window <= MAX_TOKENS
        and not getattr(module, "record_attention", False)
        and library() is not None
    )


def window_attention(
    qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, window: int, shift: int, scale: float
) -> torch.Tensor:
    """softmax(scale q k^T + bias) v inside each window of the map rolled by ``-shift``; the output unrolled.

    qkv: (B, H, W, 3C), the qkv linear's output per token; bias: (heads, n, padded_width(n)) shared by every
    window or (nW * heads, n, padded_width(n)) per window, columns past n = window**2 at -inf. Returns (B, H, W, C).
    """
    lib = library()
    if lib is None:
        raise RuntimeError("the native window-attention kernel is not available here (see vitkit.kernels)")
    if qkv.dim() != 4 or qkv.shape[-1] % 3 or qkv.dtype != torch.float32 or qkv.device.type != "cpu":
        raise ValueError(f"qkv must be a CPU float32 (B, H, W, 3C) tensor, got {qkv.dtype} {tuple(qkv.shape)}")
    B, H, W, C3 = qkv.shape
    C, n = C3 // 3, window * window
    if C % num_heads or (C // num_heads) % 16:
        raise ValueError(f"{C} channels over {num_heads} heads: the kernel needs a head width that is a multiple of 16")
    if window <= 0 or H % window or W % window or not 0 <= shift < window or n > MAX_TOKENS:
        raise ValueError(f"a {H} x {W} map does not split into {window} x {window} windows (shift {shift})")
    if B * H * W >= 2**31:
        raise ValueError(f"{B} x {H} x {W} tokens: the kernel indexes tokens with 32-bit integers; split the batch")
    windows = (H // window) * (W // window)
    expected = [(num_heads, n, padded_width(n))] + ([(windows * num_heads, n, padded_width(n))] if shift else [])
    if tuple(bias.shape) not in expected or bias.dtype != torch.float32 or bias.device.type != "cpu":
        raise ValueError(f"bias must be float32 of shape {' or '.join(map(str, expected))}, got {tuple(bias.shape)}")
    qkv, bias = qkv.contiguous(), bias.contiguous()
    out = torch.empty(B, H, W, C, dtype=qkv.dtype)
    per_window = int(bias.shape[0] != num_heads)
    with torch.profiler.record_function("vitkit::window_attention"):
        rc = lib.vk_window_attention(qkv.data_ptr(), out.data_ptr(), bias.data_ptr(), per_window,
                                     B, H, W, C, num_heads, window, shift, scale, torch.get_num_threads())  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"native window attention failed ({'unsupported shape' if rc == 1 else 'out of memory'})")
    return out
