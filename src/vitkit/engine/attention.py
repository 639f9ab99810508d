"""Multi-head attention for inference: the native kernel where it is faster than SDPA, SDPA elsewhere."""

import torch
import torch.nn.functional as F

from vitkit.engine.conditions import native_call
from vitkit.kernels import attention as kernel

# keys x head width of one problem: up to here K and V of one head stay in L2 while every block of query rows streams
# over them and the kernel beats SDPA; beyond it SDPA's blocked kernel wins (benchmarks/README.md, "Native kernels").
MAX_KEY_ELEMENTS = 65536


def use_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, native: bool) -> bool:
    return (
        native
        and native_call(q)
        and q.shape[-1] % kernel.HEAD_MULTIPLE == 0
        and k.shape[-2] * k.shape[-1] <= MAX_KEY_ELEMENTS
        and kernel.supports(q, k, v)
        and kernel.library() is not None
    )


def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, native: bool) -> torch.Tensor:
    """softmax(scale q k^T) v for (B, heads, N, d) tensors; the result may be a strided view."""
    if use_kernel(q, k, v, native):
        return kernel.attention(q, k, v, scale)
    return F.scaled_dot_product_attention(q, k, v, scale=scale)
