"""Swin's (shifted) window attention as one native kernel for CPU float32 (``window_attention.c``).

Per window, q / k / v are read straight from the qkv linear's output with the cyclic shift and the window partition
done as index arithmetic; q k^T + relative-position bias (+ shift mask) -> softmax -> p v stay in L1, and each output
row is written where its token sits in the unshifted map. So it replaces SDPA on the windows and the roll /
partition / reverse copies around it. No dropout, no autograd: the inference engine (``vitkit.engine``) decides when
it runs. The profiler sees ``vitkit::window_attention``.
"""

import ctypes

import torch

from vitkit.kernels import count_call, load

HEAD_MULTIPLE = 16  # head width must be a multiple of this (one 16-float vector)
MAX_TOKENS = 1024  # tokens per window (32 x 32): a thread's scratch holds one window's scores

_P, _I = ctypes.c_void_p, ctypes.c_int
_SIGNATURE = {"vk_window_attention": [_P, _P, _P, _I, _I, _I, _I, _I, _I, _I, _I, ctypes.c_float, _I]}


def padded_width(tokens: int) -> int:
    """Columns per row of the kernel's bias: past ``tokens`` to a multiple of 16 (one spare column at least)."""
    return tokens // 16 * 16 + 16


def _call(lib, qkv, bias, num_heads: int, window: int, shift: int, scale: float) -> torch.Tensor:
    B, H, W, C3 = qkv.shape
    out = torch.empty(B, H, W, C3 // 3, dtype=qkv.dtype)
    per_window = int(bias.shape[0] != num_heads)
    threads = torch.get_num_threads()
    rc = lib.vk_window_attention(qkv.data_ptr(), out.data_ptr(), bias.data_ptr(), per_window,
                                 B, H, W, C3 // 3, num_heads, window, shift, scale, threads)  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"native window attention failed ({'unsupported shape' if rc == 1 else 'out of memory'})")
    return out


def _reference(qkv, bias, heads: int, window: int, shift: int, scale: float) -> torch.Tensor:
    """The same computation in plain torch, float64 (for the self-test)."""
    B, H, W, C3 = qkv.shape
    C, n = C3 // 3, window * window
    x = torch.roll(qkv.double(), (-shift, -shift), (1, 2))
    x = x.view(B, H // window, window, W // window, window, 3, heads, C // heads)
    q, k, v = x.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B, -1, heads, n, C // heads).unbind(0)
    b = bias[..., :n].double().view(-1, heads, n, n)  # (1 or nW, heads, n, n)
    out = torch.softmax(q @ k.transpose(-2, -1) * scale + b, -1) @ v  # (B, nW, heads, n, d)
    out = out.view(B, H // window, W // window, heads, window, window, -1).permute(0, 1, 4, 2, 5, 3, 6)
    return torch.roll(out.reshape(B, H, W, C), (shift, shift), (1, 2))


def _selftest(lib: ctypes.CDLL) -> str | None:
    g = torch.Generator().manual_seed(0)
    heads, window, shift = 2, 2, 1
    qkv = torch.randn(2, 4, 6, 3 * heads * 16, generator=g)
    n = window * window
    bias = torch.full((6 * heads, n, padded_width(n)), float("-inf"))
    bias[..., :n] = torch.randn(6 * heads, n, n, generator=g)
    err = float((_call(lib, qkv, bias, heads, window, shift, 0.25).double() -
                 _reference(qkv, bias, heads, window, shift, 0.25)).abs().max())  # fmt: skip
    return None if err < 1e-4 else f"largest error {err:.2e} on a small problem"


def library() -> ctypes.CDLL | None:
    return load("window_attention", _SIGNATURE, _selftest)


def supports(channels: int, num_heads: int, window: int) -> bool:
    """Whether the kernel handles this layer at all (head width, tokens per window)."""
    return channels % num_heads == 0 and (channels // num_heads) % HEAD_MULTIPLE == 0 and window * window <= MAX_TOKENS


def window_attention(
    qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, window: int, shift: int, scale: float
) -> torch.Tensor:
    """softmax(scale q k^T + bias) v inside each window of the map rolled by ``-shift``; the output unrolled.

    qkv: (B, H, W, 3C), the qkv linear's output per token; bias: (heads, n, padded_width(n)) shared by every window
    or (nW * heads, n, padded_width(n)) per window, columns past n = window**2 at -inf. Returns (B, H, W, C).
    """
    lib = library()
    if lib is None:
        raise RuntimeError("the native window-attention kernel is not available here (see vitkit.kernels)")
    if qkv.dim() != 4 or qkv.shape[-1] % 3 or qkv.dtype != torch.float32 or qkv.device.type != "cpu":
        raise ValueError(f"qkv must be a CPU float32 (B, H, W, 3C) tensor, got {qkv.dtype} {tuple(qkv.shape)}")
    B, H, W, C3 = qkv.shape
    C, n = C3 // 3, window * window
    if not supports(C, num_heads, window):
        raise ValueError(
            f"{C} channels over {num_heads} heads in {window} x {window} windows: the kernel needs a head width that "
            f"is a multiple of {HEAD_MULTIPLE} and at most {MAX_TOKENS} tokens per window"
        )
    if window <= 0 or H % window or W % window or not 0 <= shift < window:
        raise ValueError(f"a {H} x {W} map does not split into {window} x {window} windows (shift {shift})")
    if B * H * W >= 2**31:
        raise ValueError(f"{B} x {H} x {W} tokens: the kernel indexes tokens with 32-bit integers; split the batch")
    windows = (H // window) * (W // window)
    expected = [(num_heads, n, padded_width(n))] + ([(windows * num_heads, n, padded_width(n))] if shift else [])
    if tuple(bias.shape) not in expected or bias.dtype != torch.float32 or bias.device.type != "cpu":
        raise ValueError(f"bias must be float32 of shape {' or '.join(map(str, expected))}, got {tuple(bias.shape)}")
    count_call("window_attention")
    with torch.profiler.record_function("vitkit::window_attention"):
        return _call(lib, qkv.contiguous(), bias.contiguous(), num_heads, window, shift, scale)
