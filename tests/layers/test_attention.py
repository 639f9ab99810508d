import sys

import pytest
import torch
import torch.nn.functional as F

from vitkit.layers import attention


def _reference(q, k, v, scale, bias):
    logits = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        logits = logits + bias
    return logits.softmax(-1) @ v


@pytest.mark.parametrize("bias_shape", [None, (1, 3, 49, 49), (2, 3, 49, 49)])
@pytest.mark.parametrize("grad", [False, True])
def test_sdpa_and_recording_paths_equal_the_reference(bias_shape, grad):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 49, 8) for _ in range(3))
    bias = torch.randn(bias_shape) if bias_shape else None
    ref = _reference(q, k, v, 0.3, bias)
    with torch.set_grad_enabled(grad):
        out, weights = attention(q, k, v, scale=0.3, attn_bias=bias)
        recorded, w = attention(q, k, v, scale=0.3, attn_bias=bias, need_weights=True)
    assert weights is None and w.shape == (2, 3, 49, 49)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 49))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(recorded, ref, atol=1e-5, rtol=1e-5)


def _path(q, k, v, bias=None, autocast=False) -> tuple[str, torch.Tensor]:
    """Which path a call took ("sdpa" or "explicit") and the gradient of q."""
    q = q.detach().requires_grad_(torch.is_grad_enabled())
    calls, sdpa = [], F.scaled_dot_product_attention
    F.scaled_dot_product_attention = lambda *a, **kw: calls.append(1) or sdpa(*a, **kw)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, _ = attention(q, k, v, scale=0.3, attn_bias=bias)
    finally:
        F.scaled_dot_product_attention = sdpa
    if not q.requires_grad:
        return ("sdpa" if calls else "explicit"), None
    out.float().square().sum().backward()
    return ("sdpa" if calls else "explicit"), q.grad


def test_training_takes_the_explicit_path_where_it_is_faster(monkeypatch):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 49, 8) for _ in range(3))
    learned = torch.randn(1, 3, 49, 49, requires_grad=True)
    fixed = learned.detach()
    _, grad_ref = _path(q, k, v, fixed)  # float32 training: SDPA
    assert _path(q, k, v, fixed)[0] == "sdpa"
    path, grad = _path(q, k, v, learned)  # a learned bias (Swin): explicit, same gradient
    assert path == "explicit"
    torch.testing.assert_close(grad, grad_ref, atol=1e-5, rtol=1e-5)
    path, grad = _path(q, k, v, fixed, autocast=True)  # CPU bf16 autocast: explicit
    assert path == "explicit"
    torch.testing.assert_close(grad, grad_ref, atol=0.05, rtol=0.05)
    monkeypatch.setattr(sys.modules["vitkit.layers.attention"], "EXPLICIT_TRAINING_ELEMENTS", 2 * 3 * 49 * 49 - 1)
    assert _path(q, k, v, fixed, autocast=True)[0] == "sdpa"  # too many weights to keep: SDPA's kernel
    with torch.no_grad():
        assert _path(q, k, v, learned, autocast=True)[0] == "sdpa"  # inference: SDPA


def test_weights_viewed_as_another_shape_stay_on_the_gradient_path():
    q, k, v = (torch.randn(2, 6, 4, 8, requires_grad=True) for _ in range(3))
    out, w = attention(q, k, v, scale=0.3, need_weights=True, weights_shape=(2, 3, 2, 4, 4))
    assert w.shape == (2, 3, 2, 4, 4)
    (g,) = torch.autograd.grad(out.square().sum(), [w])  # w itself multiplied v
    assert g.shape == w.shape and g.abs().sum() > 0


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_record_attention_returns_the_maps_and_the_logits_of_one_pass(name):
    from tests.tiny import tiny_overrides
    from vitkit.factory import create_model
    from vitkit.layers import record_attention

    model = create_model(name, **tiny_overrides(name), num_classes=3).eval()
    size = model.config.img_size
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        maps, logits = record_attention(model, x)
        assert torch.allclose(logits, model(x), atol=1e-5)
    assert len(maps) == sum(1 for m in model.modules() if hasattr(m, "store_attention"))
    assert not any(getattr(m, "record_attention", False) for m in model.modules())
