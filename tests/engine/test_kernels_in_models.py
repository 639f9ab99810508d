"""Where the optimized models call the native kernels: plain CPU float32 inference only, every block, same logits."""

import pytest
import torch

import vitkit
from vitkit.engine import attention as engine_attention
from vitkit.engine import optimize
from vitkit.kernels import attention as native_attention
from vitkit.kernels import compiler
from vitkit.kernels import window_attention as native_window

pytestmark = pytest.mark.skipif(compiler() is None, reason="no C compiler (the PyTorch paths are tested elsewhere)")


def swin_with_kernel_heads(**kw):
    """Head width 16 / 32 (the kernel's), small otherwise."""
    args = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 2, 2, 2), drop_path_rate=0.0) | kw
    return vitkit.create_model("swin_tiny_patch4_window7_224", **args).eval()


@pytest.fixture
def window_calls(monkeypatch):
    count = []
    original = native_window.window_attention

    def counted(*args):
        count.append(args[3:5])  # (window, shift)
        return original(*args)

    monkeypatch.setattr(native_window, "window_attention", counted)
    return count


@pytest.fixture
def attention_calls(monkeypatch):
    count = []
    original = native_attention.attention

    def counted(q, k, v, scale):
        count.append(tuple(q.shape))
        return original(q, k, v, scale)

    monkeypatch.setattr(native_attention, "attention", counted)
    return count


@pytest.mark.parametrize("size", [(224, 224), (200, 232)])  # the second pads feature maps to the window
def test_swin_runs_the_kernel_in_every_block(size, window_calls):
    model = swin_with_kernel_heads()
    fast = optimize(model)
    x = torch.randn(2, 3, *size)
    with torch.inference_mode():
        out = fast(x)
        assert len(window_calls) == 8 and {shift for _, shift in window_calls} == {0, 3}  # shifted blocks too
        plain = optimize(model, native_kernels=False)(x)
        ref = model(x)
    assert len(window_calls) == 8  # the switch turns it off
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_swin_small_maps_use_one_window_without_shift(window_calls):
    fast = optimize(swin_with_kernel_heads())
    with torch.inference_mode():
        fast(torch.randn(1, 3, 96, 96))  # stage maps 24, 12, 6, 3: the last two are one window of their side
    assert (6, 0) in window_calls and (3, 0) in window_calls and all(s < w for w, s in window_calls)


def test_kernels_not_used_for_autograd_attention_maps_or_autocast(window_calls):
    fast = optimize(swin_with_kernel_heads())
    x = torch.randn(1, 3, 64, 64)
    fast(x.requires_grad_()).sum().backward()  # gradients w.r.t. the input: the reference path
    with torch.no_grad():
        fast.get_attention_maps(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast(x)
    assert window_calls == []
    with torch.no_grad():
        fast(x)
    assert window_calls  # the same model, plain inference


def test_attention_kernel_only_where_it_beats_sdpa(attention_calls):
    q = torch.randn(1, 2, 8, 32)
    with torch.no_grad():
        engine_attention.multi_head_attention(q[..., :8], q[..., :8], q[..., :8], 1.0, native=True)  # head width 8
        many = torch.randn(1, 2, engine_attention.MAX_KEY_ELEMENTS // 32 + 1, 32)  # K, V would outgrow L2: SDPA
        engine_attention.multi_head_attention(q, many, many, 1.0, native=True)
        engine_attention.multi_head_attention(q, q, q, 1.0, native=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            engine_attention.multi_head_attention(q, q, q, 1.0, native=True)
        assert attention_calls == []
        engine_attention.multi_head_attention(q, q, q, 1.0, native=True)
    assert attention_calls == [(1, 2, 8, 32)]


@pytest.mark.parametrize(
    "name, kw",
    [
        ("vit_base_patch16_224", dict(embed_dim=64, depth=2, num_heads=2, img_size=64)),
        ("cvt_13_224", dict(embed_dims=(32, 64, 64), depths=(1, 1, 2), num_heads=(1, 2, 2))),
    ],
)
def test_vit_and_cvt_run_the_attention_kernel_in_every_block(name, kw, attention_calls):
    model = vitkit.create_model(name, num_classes=7, **kw).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = optimize(model)(x)
        assert len(attention_calls) == sum(1 for m in model.modules() if hasattr(m, "record_attention"))
        ref = model(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
