"""Multi-head attention ``softmax(scale q k^T) v`` as one native kernel for CPU float32 (``attention.c``).

K is transposed once per (image, head) into an aligned panel and four query rows at a time go through q k^T ->
softmax -> p v in cache; q, k and v may have any strides (they are read where the projections left them) and the
output is written as (B, N, heads, d), so merging the heads afterwards costs no copy. No mask, no dropout, no
autograd: the inference engine (``vitkit.engine``) decides when it runs. The profiler sees ``vitkit::attention``.
"""

import ctypes

import torch

from vitkit.kernels import count_call, load

HEAD_MULTIPLE = 16  # head width must be a multiple of this (one 16-float vector)

_P, _I, _STRIDES = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_long)
_SIGNATURE = {"vk_attention": [_P, _P, _P, _P, _STRIDES, _STRIDES, _STRIDES, _STRIDES, _I, _I, _I, _I, _I,
                               ctypes.c_float, _I]}  # fmt: skip


def _call(lib: ctypes.CDLL, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    B, heads, N, d = q.shape
    out = torch.empty(B, N, heads, d, dtype=q.dtype)
    strides = [(ctypes.c_long * 3)(t.stride(0), t.stride(1), t.stride(2)) for t in (q, k, v)]
    strides.append((ctypes.c_long * 3)(out.stride(0), out.stride(2), out.stride(1)))
    rc = lib.vk_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), *strides,
                          B, heads, N, k.shape[2], d, scale, torch.get_num_threads())  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"native attention failed ({'unsupported shape' if rc == 1 else 'out of memory'})")
    return out.transpose(1, 2)


def _selftest(lib: ctypes.CDLL) -> str | None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, n, 32, generator=g) for n in (5, 9, 9))
    want = torch.softmax(q.double() @ k.double().transpose(-2, -1) * 0.3, -1) @ v.double()
    got = _call(lib, q, k, v, 0.3)
    err = float((got.double() - want).abs().max())
    return None if err < 1e-4 else f"largest error {err:.2e} on a small problem"


def library() -> ctypes.CDLL | None:
    return load("attention", _SIGNATURE, _selftest)


def supports(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether the kernel handles these tensors at all (CPU float32, (B, heads, N, d), unit channel stride)."""
    return all(
        t.dim() == 4 and t.dtype == torch.float32 and t.device.type == "cpu" and t.stride(-1) == 1 for t in (q, k, v)
    ) and (k.shape == v.shape and k.shape[:2] == q.shape[:2] and k.shape[-1] == q.shape[-1])


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale q k^T) v for q (B, heads, N, d), k / v (B, heads, Nk, d) with unit channel stride.

    Returns (B, heads, N, d) as a view of a (B, N, heads, d) tensor, so ``out.transpose(1, 2).reshape(B, N, C)``
    costs no copy.
    """
    lib = library()
    if lib is None:
        raise RuntimeError("the native attention kernel is not available here (see vitkit.kernels)")
    if not supports(q, k, v) or q.shape[-1] % HEAD_MULTIPLE:
        raise ValueError(
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}: expected CPU float32 (B, heads, N, d) and "
            f"(B, heads, Nk, d) with unit channel stride and d a multiple of {HEAD_MULTIPLE}"
        )
    count_call("attention")
    with torch.profiler.record_function("vitkit::attention"):
        return _call(lib, q, k, v, scale)
