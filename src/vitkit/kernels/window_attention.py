"""Swin's (shifted) window attention as one native kernel for CPU float32 (``window_attention.c``).

Per window, q / k / v are read straight from the qkv linear's output with the cyclic shift and the window partition
done as index arithmetic; q k^T + relative-position bias (+ shift mask) -> softmax -> p v stay in L1, and each output
row is written where its token sits in the unshifted map. So it replaces SDPA on the windows and the roll /
partition / reverse copies around it. :func:`window_attention` is the inference call (no autograd);
:func:`window_attention_trainable` also keeps the softmax weights and has a backward pass in the same kernel file
(gradients of q / k / v in place, and of the bias). No dropout. The engine (``vitkit.engine``) decides when either
runs. The profiler sees ``vitkit::window_attention`` and ``vitkit::window_attention_backward``.
"""

import ctypes

import torch
import torch.nn.functional as F

from vitkit.kernels import count_call, load

HEAD_MULTIPLE = 16  # head width must be a multiple of this (one 16-float vector)
MAX_TOKENS = 1024  # tokens per window (32 x 32): a thread's scratch holds one window's scores

_P, _I = ctypes.c_void_p, ctypes.c_int
_SIGNATURE = {
    "vk_window_attention": [_P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _I, _I, ctypes.c_float, _I],
    "vk_window_attention_backward": [_P, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _I, ctypes.c_float, _I],
}


def padded_width(tokens: int) -> int:
    """Columns per row of the kernel's bias: past ``tokens`` to a multiple of 16 (one spare column at least)."""
    return tokens // 16 * 16 + 16


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise RuntimeError(f"native {what} failed ({'unsupported shape' if rc == 1 else 'out of memory'})")


def _call(lib, qkv, bias, num_heads: int, window: int, shift: int, scale: float, keep_probs: bool = False):
    """(out, the softmax weights (B * nW, heads, n, n) or None)."""
    B, H, W, C3 = qkv.shape
    out = torch.empty(B, H, W, C3 // 3, dtype=qkv.dtype)
    n = window * window
    probs = torch.empty(B * (H // window) * (W // window), num_heads, n, n) if keep_probs else None
    per_window = int(bias.shape[0] != num_heads)
    threads = torch.get_num_threads()
    rc = lib.vk_window_attention(qkv.data_ptr(), out.data_ptr(), None if probs is None else probs.data_ptr(),
                                 bias.data_ptr(), per_window, B, H, W, C3 // 3, num_heads, window, shift, scale,
                                 threads)  # fmt: skip
    _check(rc, "window attention")
    return out, probs


def _call_backward(lib, qkv, probs, dout, num_heads: int, window: int, shift: int, scale: float):
    """(d qkv (B, H, W, 3C), d scores (B * nW, heads, n, n))."""
    B, H, W, C3 = qkv.shape
    dqkv, dscores = torch.empty_like(qkv), torch.empty_like(probs)
    rc = lib.vk_window_attention_backward(qkv.data_ptr(), probs.data_ptr(), dout.data_ptr(), dqkv.data_ptr(),
                                          dscores.data_ptr(), B, H, W, C3 // 3, num_heads, window, shift, scale,
                                          torch.get_num_threads())  # fmt: skip
    _check(rc, "window attention backward")
    return dqkv, dscores


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
    """Forward and backward against float64 autograd of :func:`_reference` on a small shifted problem."""
    g = torch.Generator().manual_seed(0)
    heads, window, shift = 2, 2, 1
    qkv = torch.randn(2, 4, 6, 3 * heads * 16, generator=g)
    n = window * window
    bias = torch.full((6 * heads, n, padded_width(n)), float("-inf"))
    bias[..., :n] = torch.randn(6 * heads, n, n, generator=g)
    dout = torch.randn(2, 4, 6, heads * 16, generator=g)
    out, probs = _call(lib, qkv, bias, heads, window, shift, 0.25, keep_probs=True)
    dqkv, dscores = _call_backward(lib, qkv, probs, dout, heads, window, shift, 0.25)
    q64, b64 = qkv.double().requires_grad_(), bias.double().requires_grad_()
    ref = _reference(q64, b64, heads, window, shift, 0.25)
    ref.backward(dout.double())
    dbias = dscores.view(2, 6 * heads, n, n).sum(0).double()  # per window: summed over the batch
    errors = {
        "output": (out.double() - ref).abs().max(),
        "q / k / v gradient": (dqkv.double() - q64.grad).abs().max(),
        "bias gradient": (dbias - b64.grad[..., :n]).abs().max(),
    }
    bad = [f"{what}: largest error {float(e):.2e}" for what, e in errors.items() if not e < 1e-4]
    return "; ".join(bad) + " on a small problem" if bad else None


def library() -> ctypes.CDLL | None:
    return load("window_attention", _SIGNATURE, _selftest)


def supports(channels: int, num_heads: int, window: int) -> bool:
    """Whether the kernel handles this layer at all (head width, tokens per window)."""
    return channels % num_heads == 0 and (channels // num_heads) % HEAD_MULTIPLE == 0 and window * window <= MAX_TOKENS


def window_attention_checks(qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, window: int, shift: int) -> None:
    """Every shape, dtype and size the kernel relies on, before a pointer reaches C (ValueError / RuntimeError)."""
    if library() is None:
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


def window_attention(
    qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, window: int, shift: int, scale: float
) -> torch.Tensor:
    """softmax(scale q k^T + bias) v inside each window of the map rolled by ``-shift``; the output unrolled.

    qkv: (B, H, W, 3C), the qkv linear's output per token; bias: (heads, n, padded_width(n)) shared by every window
    or (nW * heads, n, padded_width(n)) per window, columns past n = window**2 at -inf. Returns (B, H, W, C).
    """
    window_attention_checks(qkv, bias, num_heads, window, shift)
    lib = library()
    count_call("window_attention")
    with torch.profiler.record_function("vitkit::window_attention"):
        return _call(lib, qkv.contiguous(), bias.contiguous(), num_heads, window, shift, scale)[0]


class _WindowAttention(torch.autograd.Function):
    """The kernel's forward pass keeping the softmax weights, and its backward pass."""

    @staticmethod
    def forward(ctx, qkv, bias, num_heads: int, window: int, shift: int, scale: float):
        qkv = qkv.contiguous()
        with torch.profiler.record_function("vitkit::window_attention"):
            out, probs = _call(library(), qkv, bias.contiguous(), num_heads, window, shift, scale, keep_probs=True)
        ctx.save_for_backward(qkv, probs)
        ctx.args, ctx.bias_shape = (num_heads, window, shift, scale), bias.shape
        return out

    @staticmethod
    def backward(ctx, dout):
        qkv, probs = ctx.saved_tensors
        count_call("window_attention_backward")
        with torch.profiler.record_function("vitkit::window_attention_backward"):
            dqkv, dscores = _call_backward(library(), qkv, probs, dout.contiguous(), *ctx.args)
        dbias = None
        if ctx.needs_input_grad[1]:  # the scores' gradient summed over what shares a bias: images (and windows)
            rows, n = ctx.bias_shape[0], probs.shape[-1]
            dbias = F.pad(dscores.view(-1, rows, n, n).sum(0), (0, ctx.bias_shape[-1] - n))
        return dqkv, dbias, None, None, None, None


def window_attention_trainable(
    qkv: torch.Tensor, bias: torch.Tensor, num_heads: int, window: int, shift: int, scale: float
) -> torch.Tensor:
    """:func:`window_attention` with autograd: gradients reach ``qkv`` and ``bias`` (whose -inf columns get 0).

    Keeps the softmax weights for the backward pass, (B * nW, heads, n, n) floats, as the PyTorch path does.
    """
    window_attention_checks(qkv, bias, num_heads, window, shift)
    count_call("window_attention")
    return _WindowAttention.apply(qkv, bias, num_heads, window, shift, scale)
