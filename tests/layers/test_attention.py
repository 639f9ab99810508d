import pytest
import torch

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
