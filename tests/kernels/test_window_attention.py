"""The native window-attention kernel: the same numbers as the PyTorch path, used only where it may be."""

import pytest
import torch
import torch.nn.functional as F

import vitkit
from vitkit.kernels import compiler
from vitkit.kernels import window_attention as native
from vitkit.models import swin

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C compiler (test_build checks the fallback)")


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


# --- inside Swin ------------------------------------------------------------------------------------------


def kernel_width_model(**kw):
    """Head width 16 / 32 (the kernel's), small otherwise."""
    args = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 2, 2, 2), drop_path_rate=0.0) | kw
    return vitkit.create_model("swin_tiny_patch4_window7_224", **args).eval()


@pytest.fixture
def calls(monkeypatch):
    count = []
    original = native.window_attention

    def counted(*args):
        count.append(args[3:5])  # (window, shift)
        return original(*args)

    monkeypatch.setattr(native, "window_attention", counted)
    return count


@pytest.mark.parametrize("size", [(224, 224), (200, 232)])  # the second pads feature maps to the window
def test_swin_logits_equal_with_and_without_the_kernel(size, calls, monkeypatch):
    model = kernel_width_model()
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        fast = model(x)
        assert len(calls) == 8 and {shift for _, shift in calls} == {0, 3}  # every block, shifted ones too
        monkeypatch.setattr(native, "NATIVE_WINDOW_ATTENTION", False)
        plain = model(x)
    assert len(calls) == 8  # the switch turns it off
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


def test_swin_small_maps_use_one_window_without_shift(calls):
    model = kernel_width_model()
    with torch.inference_mode():
        model(torch.randn(1, 3, 96, 96))  # stage maps 24, 12, 6, 3: the last two are one window of their side
    assert (6, 0) in calls and (3, 0) in calls and all(shift < window for window, shift in calls)


def test_not_used_for_training_autograd_or_attention_maps(calls):
    model = kernel_width_model()
    x = torch.randn(1, 3, 64, 64)
    model(x)  # eval, autograd on
    model.train()(x).sum().backward()
    model.eval()
    with torch.no_grad():
        model.get_attention_maps(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
    assert calls == []
    with torch.no_grad():
        model(x)
    assert calls  # the same model, plain inference


def test_cached_padded_bias_follows_the_table(calls):
    model = kernel_width_model(depths=(2, 2, 2, 2))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        for block in model.modules():
            if isinstance(block, swin.WindowAttention):
                block.relative_position_bias_table.add_(0.5)  # in place: the cached bias must be rebuilt
        after = model(x)
        native.NATIVE_WINDOW_ATTENTION = False
        try:
            plain = model(x)
        finally:
            native.NATIVE_WINDOW_ATTENTION = True
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, plain, atol=1e-5, rtol=1e-5)
