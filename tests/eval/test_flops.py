"""FLOP/MAC counts: the papers' numbers for the standard variants, and the counting convention on a tiny ViT."""

import math

import pytest
import torch

import vitkit
from vitkit.errors import VitkitError
from vitkit.eval.flops import count_flops

# name: (params exactly, GMACs at 224 as the paper prints them, how the paper went to one decimal)
# ViT-B/16: DeiT / Swin tables 17.6 (17.56 rounded); Swin-T: 4.5 (4.49 rounded). The CvT paper truncates its
# 224-px numbers (CvT-13 4.566 -> 4.5, CvT-21 7.178 -> 7.1) but rounds its 384-px ones (16.27 -> 16.3,
# 24.85 -> 24.9); the parameter count 19,997,480 is the released model's (the paper says 20M).
PAPER = {
    "vit_base_patch16_224": (86_567_656, 17.6, round),
    "swin_tiny_patch4_window7_224": (28_288_354, 4.5, round),
    "cvt_13_224": (19_997_480, 4.5, lambda g, n: math.floor(g * 10) / 10),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_standard_variants_match_papers(name):
    params, gmacs, to_one_decimal = PAPER[name]
    model = vitkit.create_model(name)
    r = count_flops(model, (3, 224, 224))
    assert r["params"] == params
    assert to_one_decimal(r["gmacs"], 1) == gmacs
    assert abs(r["gmacs"] - gmacs) < 0.07
    assert r["flops"] == 2 * r["macs"]


def test_cvt_384_numbers_of_the_paper():
    r = count_flops(vitkit.create_model("cvt_13_384"))
    assert r["input_shape"] == [1, 3, 384, 384]
    assert round(r["gmacs"], 1) == 16.3


def test_convention_counts_matmuls_convs_and_attention_products():
    # ViT, D=32, 2 blocks, patch 8 on 32x32 -> N = 16 patches + [CLS] = 17 tokens, 5 classes
    d, depth, n, classes, mlp = 32, 2, 17, 5, 128
    model = vitkit.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=d, depth=depth, num_heads=2, num_classes=classes
    )
    linear = n * d * 3 * d + n * d * d + 2 * n * d * mlp  # qkv, proj, fc1 + fc2
    attention = 2 * n * n * d  # q @ k^T and attn @ v, all heads together
    patch = 16 * (3 * 8 * 8) * d
    expected = depth * (linear + attention) + patch + d * classes
    r = count_flops(model, 32, batch_size=3)
    assert r["input_shape"] == [3, 3, 32, 32]
    assert r["macs"] == 3 * expected
    assert any("scaled_dot_product" in op for op in r["by_op"])  # fused CPU attention is counted


@pytest.mark.parametrize("name", ["vit_nano_patch4_28", "cvt_nano_28"])  # cvt: depthwise (grouped) convs
def test_backward_counts_about_three_times_the_forward_and_keeps_mode(name):
    model = vitkit.create_model(name).train()
    fwd = count_flops(model)  # input size from the model's data_config
    both = count_flops(model, backward=True)
    assert fwd["input_shape"] == [1, 1, 28, 28]
    assert 2.5 < both["flops"] / fwd["flops"] < 3.1
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_autocast_does_not_change_the_count():
    model = vitkit.create_model("vit_nano_patch4_28")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert count_flops(model)["flops"] == count_flops(model)["flops"]


def test_bad_input_size_is_a_clear_error():
    with pytest.raises(VitkitError, match="input_size"):
        count_flops(vitkit.create_model("vit_nano_patch4_28"), (1, 2, 3, 4, 5))


def test_model_stats_for_the_model_listing():
    from vitkit.eval.complexity import registered_model_stats

    s = registered_model_stats("cvt_nano_28")
    assert s.family == "cvt" and s.input_size == (1, 28, 28)
    assert s.params == vitkit.create_model("cvt_nano_28").num_params()
    assert s.gmacs == pytest.approx(count_flops(vitkit.create_model("cvt_nano_28"))["gmacs"]) and s.gmacs > 0


@pytest.mark.parametrize("family", ["vit", "swin", "cvt"])
def test_an_optimized_model_counts_like_the_reference(family):
    """Fused oneDNN linears count like the addmm they replace; native kernels never run under the counter."""
    from tests.tiny import TINY
    from vitkit.engine import optimize
    from vitkit.engine.linear import HAS_FUSED_LINEAR

    name, overrides, size, _ = TINY[family]
    model = vitkit.create_model(name, img_size=size, **overrides)
    plain = count_flops(model)
    fast = count_flops(optimize(model, probe=False))  # oneDNN's path whatever a probe would measure
    assert fast["flops"] == plain["flops"] > 0
    if HAS_FUSED_LINEAR:
        assert any("linear_pointwise" in op for op in fast["by_op"])
