"""Multi-head attention as one native kernel for CPU float32 inference (``attention.c``), used by
:func:`vitkit.layers.attention` for ViT and CvT.

PyTorch's CPU SDPA is slow on small problems (CvT-13's last stage: 197 queries x 50 keys, head width 64, at
~55 GFLOP/s). Used only where nothing but rounding can differ: autograd off, CPU float32 without autocast, no
mask, no dropout, no weights requested, not while tracing / compiling / exporting or under a dispatch mode (FLOP
counting), head width a multiple of 16, at most ``MAX_KEY_ELEMENTS`` keys x head width (CvT-13 at 224 px,
ViT-B/16 up to 448 px; larger problems take SDPA). Set ``vitkit.kernels.attention.NATIVE_ATTENTION = False`` (or
``VITKIT_NATIVE=0``) to compare. The profiler sees it as ``vitkit::attention``.
"""

import ctypes

import torch

from vitkit.kernels import load, plain_cpu_inference

NATIVE_ATTENTION = True
# keys x head width of one problem: up to here K and V of one head (2 x 256 KiB) stay in L2 while every block of
# query rows streams over them. Beyond it SDPA's blocked kernel wins (CvT-13's stage 1 at 1024 px, 65536 queries x
# 16384 keys: 3.09 s vs SDPA's 2.08 s; ViT-B at 1024 px, 4097 keys: 0.378 vs 0.359 s; par at 1025 keys).
MAX_KEY_ELEMENTS = 65536

_P, _I, _STRIDES = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_long)
_SIGNATURE = {"vk_attention": [_P, _P, _P, _P, _STRIDES, _STRIDES, _STRIDES, _STRIDES, _I, _I, _I, _I, _I,
                               ctypes.c_float, _I]}  # fmt: skip


def library() -> ctypes.CDLL | None:
    return load("attention", _SIGNATURE)


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """True when softmax(scale q k^T) v of these (B, heads, N, d) tensors may run through the kernel."""
    return (
        NATIVE_ATTENTION
        and plain_cpu_inference(q)
        and k.dtype == v.dtype == torch.float32
        and q.dim() == 4
        and q.shape[-1] % 16 == 0
        and k.shape[-2] * k.shape[-1] <= MAX_KEY_ELEMENTS
        and q.stride(-1) == k.stride(-1) == v.stride(-1) == 1
        and library() is not None
    )


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale q k^T) v for q (B, heads, N, d), k / v (B, heads, Nk, d) with unit channel stride.

    Returns (B, heads, N, d) as a view of a (B, N, heads, d) tensor, so ``out.transpose(1, 2).reshape(B, N, C)``
    costs no copy.
    """
    lib = library()
    if lib is None:
        raise RuntimeError("the native attention kernel is not available here (see vitkit.kernels)")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4 or t.dtype != torch.float32 or t.device.type != "cpu" or t.stride(-1) != 1:
            raise ValueError(f"{name} must be a CPU float32 (B, heads, tokens, d) tensor with unit channel stride, "
                             f"got {t.dtype} {tuple(t.shape)} strides {t.stride()}")  # fmt: skip
    B, heads, N, d = q.shape
    if k.shape != v.shape or k.shape[:2] != (B, heads) or k.shape[-1] != d or d % 16:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: expected (B, heads, N, d) "
                         "and (B, heads, Nk, d) with d a multiple of 16")  # fmt: skip
    Nk = k.shape[2]
    out = torch.empty(B, N, heads, d, dtype=q.dtype)
    strides = [(ctypes.c_long * 3)(t.stride(0), t.stride(1), t.stride(2)) for t in (q, k, v)]
    strides.append((ctypes.c_long * 3)(out.stride(0), out.stride(2), out.stride(1)))
    with torch.profiler.record_function("vitkit::attention"):
        rc = lib.vk_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), *strides,
                              B, heads, N, Nk, d, scale, torch.get_num_threads())  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"native attention failed ({'unsupported shape' if rc == 1 else 'out of memory'})")
    return out.transpose(1, 2)
