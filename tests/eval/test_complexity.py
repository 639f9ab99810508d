import pytest

import vitkit
from vitkit.eval.complexity import describe, model_stats, registered_model_stats


def test_vit_flops_match_the_formula():
    d, n, k = 32, 7 * 7 + 1, 10
    model = vitkit.create_model("vit_nano_patch4_28", depth=1, embed_dim=d, num_heads=2)
    stats = model_stats(model)
    macs = (
        49 * d * (1 * 4 * 4)  # patch embedding: one (1x4x4 -> d) projection per patch
        + 12 * n * d * d  # qkv (3), proj (1), MLP (4 + 4) per token
        + 2 * n * n * d  # q @ k^T and attn @ v
        + d * k  # head on [CLS]
    )
    assert stats.flops == 2 * macs
    assert stats.gmacs == pytest.approx(macs / 1e9)
    assert stats.params == sum(p.numel() for p in model.parameters())
    assert stats.input_size == (1, 28, 28)


def test_registered_stats_match_a_real_build():
    s = registered_model_stats("vit_nano_patch4_28")
    real = vitkit.create_model("vit_nano_patch4_28")
    assert s.params == real.num_params()
    assert s.flops == model_stats(real).flops
    # (counted on meta tensors on purpose: CPU's fused SDPA kernel is invisible to FlopCounterMode)


def test_large_model_stats_are_cheap():
    # a 300M-parameter model on the meta device: nothing is allocated or initialised
    s = registered_model_stats("vit_large_patch16_384")
    assert 300e6 < s.params < 310e6
    assert s.gmacs == pytest.approx(191.1, rel=0.01)  # timm reports ~191 GMACs


def test_describe_vit_stages():
    model = vitkit.create_model("vit_nano_patch4_28", depth=3, embed_dim=32, num_heads=2)
    stages = describe(model)
    assert len(stages) == 1
    s = stages[0]
    assert (s["blocks"], s["tokens"], s["channels"], s["heads"], s["window"]) == (3, 50, 32, 2, "global")
    # at another resolution the token count follows the grid
    assert describe(model, (1, 56, 56))[0]["tokens"] == 14 * 14 + 1
