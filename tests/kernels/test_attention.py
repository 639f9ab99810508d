"""The native multi-head attention kernel: the same numbers as SDPA, any strides, bad shapes refused, calls counted."""

import pytest
import torch
import torch.nn.functional as F

from vitkit.kernels import attention as native
from vitkit.kernels import call_counts, compiler, reset_call_counts

pytestmark = [
    pytest.mark.skipif(compiler() is None, reason="no C compiler (test_library checks the fallback)"),
    pytest.mark.usefixtures("kernel_build"),  # every vector width this CPU runs (conftest)
]


def reference(q, k, v, scale):
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=scale)


@pytest.mark.parametrize(
    "B, heads, N, Nk, d",
    [
        (2, 6, 197, 50, 64),  # CvT-13's last stage ([CLS] + 14 x 14 queries, 1 + 7 x 7 keys)
        (1, 3, 197, 197, 64),  # ViT
        (3, 1, 61, 17, 16),  # odd everything, keys not a multiple of 16
        (1, 2, 5, 300, 48),  # few queries, many keys, a head width of 3 x 16
        (2, 1, 9, 1, 80),  # one key; 64 + 16 channels
    ],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_matches_sdpa(B, heads, N, Nk, d, threads):
    q, k, v = torch.randn(B, heads, N, d), torch.randn(B, heads, Nk, d), torch.randn(B, heads, Nk, d)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = native.attention(q, k, v, d**-0.5)
    finally:
        torch.set_num_threads(before)
    assert out.shape == (B, heads, N, d) and out.transpose(1, 2).is_contiguous()  # (B, N, heads, d) underneath
    torch.testing.assert_close(out.double(), reference(q, k, v, d**-0.5), atol=2e-5, rtol=1e-5)


def test_strided_views_of_a_fused_projection():
    B, N, heads, d = 2, 33, 4, 32
    qkv = torch.randn(B, N, 3 * heads * d) * 4  # large logits too
    q, k, v = qkv.view(B, N, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)  # no copies: token stride 3C
    out, exact = native.attention(q, k, v, 0.3).double(), reference(q, k, v, 0.3)
    sdpa = F.scaled_dot_product_attention(q, k, v, scale=0.3).double()
    assert (out - exact).abs().max() <= 2 * (sdpa - exact).abs().max() + 1e-6  # float32 rounding, as SDPA's
    torch.testing.assert_close(out, exact, atol=1e-4, rtol=1e-5)  # values up to ~4 * 4


def test_bad_inputs_are_refused_before_the_kernel_runs():
    q = torch.randn(1, 2, 8, 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        native.attention(torch.randn(1, 2, 8, 24), torch.randn(1, 2, 8, 24), torch.randn(1, 2, 8, 24), 1.0)
    with pytest.raises(ValueError, match="expected"):
        native.attention(q, torch.randn(1, 2, 8, 32), torch.randn(1, 2, 9, 32), 1.0)
    with pytest.raises(ValueError, match="unit channel stride"):
        native.attention(q, q.transpose(-1, -2), q, 1.0)
    with pytest.raises(ValueError, match="float32"):
        native.attention(q.double(), q.double(), q.double(), 1.0)


def test_calls_are_counted():
    q = torch.randn(1, 2, 8, 32)
    reset_call_counts()
    native.attention(q, q, q, 1.0)
    native.attention(q, q, q, 1.0)
    assert call_counts() == {"attention": 2}
