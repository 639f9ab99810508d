"""The native window-attention kernel: the same numbers as plain torch (shifted, padded, odd shapes); bad shapes
refused."""

import pytest
import torch
import torch.nn.functional as F

from vitkit.kernels import compiler
from vitkit.kernels import window_attention as native

pytestmark = [
    pytest.mark.skipif(compiler() is None, reason="no C compiler (test_library checks the fallback)"),
    pytest.mark.usefixtures("kernel_build"),  # every vector width this CPU runs (conftest)
]


def reference(qkv, bias, heads, window, shift, scale):
    """Roll, partition, softmax(scale q k^T + bias) v per window, reverse, roll back: plain torch, float64."""
    qkv, bias = qkv.double(), bias.double()
    B, H, W, C3 = qkv.shape
    C, n, hd = C3 // 3, window * window, C3 // 3 // heads
    nh, nw = H // window, W // window
    x = torch.roll(qkv, (-shift, -shift), (1, 2)) if shift else qkv
    x = x.view(B, nh, window, nw, window, 3, heads, hd).permute(5, 0, 1, 3, 6, 2, 4, 7)
    q, k, v = x.reshape(3, B, nh * nw, heads, n, hd).unbind(0)
    logits = scale * q @ k.transpose(-1, -2) + bias[..., :n].view(-1, heads, n, n)  # shared or per window
    out = logits.softmax(-1) @ v  # (B, nW, heads, n, hd)
    out = out.view(B, nh, nw, heads, window, window, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, C)
    return torch.roll(out, (shift, shift), (1, 2)) if shift else out


def padded_bias(heads, window, windows=0, magnitude=1.0):
    n = window * window
    bias = torch.randn(windows or 1, heads, n, n) * magnitude
    if windows:  # a shift mask: -100 between tokens that are not neighbours in the image
        bias = bias + torch.where(torch.rand(windows, 1, n, n) < 0.3, -100.0, 0.0)
    bias = bias.flatten(0, 1) if windows else bias[0]
    return F.pad(bias, (0, native.padded_width(n) - n), value=float("-inf"))


@pytest.mark.parametrize(
    "B, H, W, heads, hd, window, shift",
    [
        (2, 14, 14, 3, 32, 7, 0),  # Swin-T's shapes
        (2, 14, 21, 3, 32, 7, 3),  # not square, shifted, 6 windows
        (1, 8, 8, 2, 16, 4, 2),  # 16 tokens: padded to 32 columns
        (3, 7, 7, 1, 48, 7, 0),  # a head width of 3 x 16: the odd block of 16 channels
        (1, 12, 12, 2, 64, 12, 6),  # 144 tokens per window (Swin at 384 px)
        (2, 4, 4, 1, 16, 2, 1),  # tiny windows
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_the_reference(B, H, W, heads, hd, window, shift, threads):
    C = heads * hd
    qkv = torch.randn(B, H, W, 3 * C)
    windows = (H // window) * (W // window) if shift else 0
    bias = padded_bias(heads, window, windows)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = native.window_attention(qkv, bias, heads, window, shift, hd**-0.5)
    finally:
        torch.set_num_threads(before)
    assert out.shape == (B, H, W, C) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(qkv, bias, heads, window, shift, hd**-0.5), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "B, H, W, heads, hd, window, shift",
    [
        (2, 14, 14, 3, 32, 7, 0),  # Swin-T's shapes: one bias for every window
        (2, 14, 21, 3, 32, 7, 3),  # shifted: a bias per window, not square
        (1, 8, 8, 2, 16, 4, 2),  # 16 tokens: padded to 32 columns
        (3, 7, 7, 1, 48, 7, 0),  # the odd block of 16 channels
        (1, 12, 12, 2, 64, 12, 6),  # 144 tokens per window
        (2, 6, 6, 1, 16, 3, 1),  # 9 tokens: every row block and column block partial
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_the_trainable_kernel_gives_the_gradients_of_the_reference(B, H, W, heads, hd, window, shift, threads):
    """Gradients of q / k / v and of the bias (its -inf padding columns get 0) against float64 autograd."""
    C = heads * hd
    qkv = torch.randn(B, H, W, 3 * C, requires_grad=True)
    windows = (H // window) * (W // window) if shift else 0
    bias = padded_bias(heads, window, windows, magnitude=2.0).requires_grad_()
    dout = torch.randn(B, H, W, C)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = native.window_attention_trainable(qkv, bias, heads, window, shift, hd**-0.5)
        out.backward(dout)
    finally:
        torch.set_num_threads(before)
    qkv64 = qkv.detach().double().requires_grad_()
    bias64 = bias.detach().double().requires_grad_()
    ref = reference(qkv64, bias64, heads, window, shift, hd**-0.5)
    ref.backward(dout.double())
    torch.testing.assert_close(out.double(), ref, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(qkv.grad.double(), qkv64.grad, atol=5e-5, rtol=1e-4)
    n = window * window
    torch.testing.assert_close(bias.grad[..., :n].double(), bias64.grad[..., :n], atol=5e-5, rtol=1e-4)
    assert not bias.grad[..., n:].any()


def test_the_trainable_kernel_refuses_what_the_inference_one_refuses():
    with pytest.raises(ValueError, match="head width"):
        native.window_attention_trainable(torch.randn(1, 7, 7, 96), torch.zeros(4, 49, 64), 4, 7, 0, 1.0)


def test_denormals_flushed_inside_the_kernel_only():
    """Masked scores (-100) weigh exactly 0, not a denormal that slows every product; on its way out the kernel
    gives the calling thread its floating-point mode back (denormals still work there)."""
    qkv = torch.randn(1, 14, 14, 3 * 32) * 0.01  # tiny values: weight x value would land below float32's normals
    bias = padded_bias(1, 7, windows=4)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the kernel runs on this thread
    try:
        out = native.window_attention(qkv, bias, 1, 7, 3, 32**-0.5)
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out.double(), reference(qkv, bias, 1, 7, 3, 32**-0.5), atol=1e-7, rtol=1e-5)
    assert (torch.tensor([1e-40]) * 1.5).item() > 0  # not flushed here


def test_large_logits_stay_finite_and_exact():
    qkv = torch.randn(1, 7, 7, 3 * 32) * 30  # logits in the thousands: the max subtraction must hold
    bias = padded_bias(1, 7, magnitude=50.0)
    out = native.window_attention(qkv, bias, 1, 7, 0, 1.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference(qkv, bias, 1, 7, 0, 1.0), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize(
    "qkv_shape, bias_shape, heads, window, match",
    [
        ((1, 7, 7, 96), (4, 49, 64), 4, 7, "head width"),  # 8 channels per head
        ((1, 7, 7, 144), (2, 49, 64), 2, 7, "head width"),  # 24
        ((1, 9, 7, 96), (1, 49, 64), 1, 7, "does not split"),
        ((1, 7, 7, 96), (1, 49, 49), 1, 7, "bias must be"),
        ((7, 7, 96), (1, 49, 64), 1, 7, "must be a CPU float32"),
    ],
)
def test_bad_shapes_are_refused_before_the_kernel_runs(qkv_shape, bias_shape, heads, window, match):
    with pytest.raises(ValueError, match=match):
        native.window_attention(torch.randn(qkv_shape), torch.zeros(bias_shape), heads, window, 0, 1.0)


def test_other_dtypes_are_refused():
    with pytest.raises(ValueError, match="float32"):
        native.window_attention(torch.randn(1, 7, 7, 96, dtype=torch.float64), padded_bias(1, 7), 1, 7, 0, 1.0)
