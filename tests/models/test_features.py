"""Intermediate features (forward_intermediates) and features_only backbones, for every family."""

import pytest
import torch

import vitkit
from tests.tiny import TINY, tiny_overrides
from vitkit.errors import VitkitError
from vitkit.models.features import FeatureInfo, FeatureModel, feature_take_indices

FAMILIES = list(TINY)


def tiny(family: str, **kw):
    name, overrides, size, _ = TINY[family]
    return vitkit.create_model(name, **(overrides | kw)).eval(), size


@pytest.mark.parametrize("name", vitkit.list_models())
def test_every_model_gives_its_levels_as_maps(name):
    model = vitkit.create_model(name, **tiny_overrides(name)).eval()
    c, h, w = model.data_config["input_size"]
    info = model.feature_info
    x = torch.randn(2, c, h + info.reduction(0), w)  # not the native size: any size the model accepts
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=0, atol=0)
    assert len(maps) == len(info) == len(info.channels())
    for m, chs in zip(maps, info.channels(), strict=True):
        assert m.ndim == 4 and m.shape[:2] == (2, chs) and m.is_contiguous()


@pytest.mark.parametrize("family", FAMILIES)
def test_nlc_prefix_tokens_and_indices(family):
    model, size = tiny(family)
    x = torch.randn(2, 3, size, size)
    n = len(model.feature_info)
    with torch.no_grad():
        maps = model.forward_intermediates(x, intermediates_only=True)
        tokens = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True)
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        picked = model.forward_intermediates(x, indices=[-1, 0], intermediates_only=True)
    for m, (t, prefix) in zip(maps, tokens, strict=True):
        assert t.shape == (2, m.shape[2] * m.shape[3], m.shape[1])
        torch.testing.assert_close(t, m.flatten(2).transpose(1, 2), rtol=0, atol=0)
        assert prefix.shape[0] == 2 and prefix.shape[2] == m.shape[1]
    prefixes = [p.shape[1] for _, p in tokens]
    expected = {"vit": [1] * n, "swin": [0] * n, "cvt": [0] * (n - 1) + [1]}[family]  # [CLS]: ViT, CvT's last stage
    assert prefixes == expected
    assert [m.shape for m in last_two] == [m.shape for m in maps[-2:]]
    assert len(picked) == 2  # in the order the levels run, as timm
    torch.testing.assert_close(picked[0], maps[0], rtol=0, atol=0)
    torch.testing.assert_close(picked[1], maps[-1], rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_stop_early_and_norm(family):
    model, size = tiny(family)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        stopped, (first,) = model.forward_intermediates(x, indices=[0], stop_early=True)
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
    torch.testing.assert_close(first, maps[0], rtol=0, atol=0)
    if family == "vit":  # every block fits the final norm, which is applied to the truncated output too (timm)
        assert stopped.shape == final.shape and not torch.allclose(stopped, final)
        assert all(not torch.allclose(a, b) for a, b in zip(normed, maps, strict=True))
    else:  # only the last stage fits the final norm; a run stopped before it is not normed
        assert stopped.shape[-1] == model.feature_info.channels(0)
        torch.testing.assert_close(normed[0], maps[0], rtol=0, atol=0)
        assert not torch.allclose(normed[-1], maps[-1])


@pytest.mark.parametrize("family", FAMILIES)
def test_bad_arguments_are_one_line_errors(family):
    model, size = tiny(family)
    x = torch.randn(1, 3, size, size)
    n = len(model.feature_info)
    with pytest.raises(VitkitError, match="out of range"):
        model.forward_intermediates(x, indices=[n])
    with pytest.raises(VitkitError, match="last-n"):
        model.forward_intermediates(x, indices=n + 1)
    with pytest.raises(VitkitError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NHWC")
    with pytest.raises(VitkitError, match="out_indices"):
        vitkit.create_model(TINY[family][0], out_indices=(0,))


def test_feature_take_indices_is_timms():
    assert feature_take_indices(4) == ([0, 1, 2, 3], 3)
    assert feature_take_indices(12, 3) == ([9, 10, 11], 11)
    assert feature_take_indices(4, [-1, 1]) == ([3, 1], 3)


@pytest.mark.parametrize("family", FAMILIES)
def test_features_only_backbone(family):
    name, overrides, size, _ = TINY[family]
    backbone = vitkit.create_model(name, features_only=True, out_indices=(0, -1), **overrides)
    assert isinstance(backbone, FeatureModel) and isinstance(backbone.feature_info, FeatureInfo)
    n = len(backbone.feature_info)
    assert backbone.out_indices == (0, n - 1)
    assert backbone.feature_info.channels() == [
        backbone.feature_info.channels(0),
        backbone.feature_info.channels(n - 1),
    ]
    x = torch.randn(2, 3, size, size)
    maps = backbone(x)
    for m, chs, red in zip(maps, backbone.feature_info.channels(), backbone.feature_info.reduction(), strict=True):
        assert m.shape[:2] == (2, chs)
        assert m.shape[2] == -(-size // red) or family == "cvt"  # CvT's padded convs round down
    sum(m.square().mean() for m in maps).backward()
    assert backbone.model.get_classifier().__class__.__name__ == "Identity"
    assert all(p.grad is not None for n_, p in backbone.named_parameters() if ".blocks.0." in n_ or "blocks.0." in n_)


def test_default_out_indices_follow_timm():
    vit = vitkit.create_model("vit_tiny_patch16_224", features_only=True, depth=4, embed_dim=32, num_heads=2)
    assert vit.out_indices == (1, 2, 3)  # ViT: the last three blocks
    swin = vitkit.create_model("swin_tiny_patch4_window7_224", features_only=True, **TINY["swin"][1])
    assert swin.out_indices == (0, 1, 2, 3)  # hierarchical: every stage
    assert swin.feature_info.reduction() == [4, 8, 16, 32]
    assert swin.feature_info.module_name() == ["layers.0", "layers.1", "layers.2", "layers.3"]
    cvt = vitkit.create_model("cvt_13_224", features_only=True, **TINY["cvt"][1])
    assert cvt.feature_info.reduction() == [4, 8, 16] and cvt.feature_info.channels() == [16, 24, 32]


@pytest.mark.parametrize("family", FAMILIES)
def test_grad_checkpointing_gives_the_same_feature_gradients(family):
    name, overrides, size, _ = TINY[family]
    backbone = vitkit.create_model(name, features_only=True, **overrides).train()
    x = torch.randn(2, 3, size, size)

    def grads(enabled):
        backbone.zero_grad()
        backbone.set_grad_checkpointing(enabled)
        torch.manual_seed(7)  # the same drop-path decisions in both runs
        sum(m.square().sum() for m in backbone(x)).backward()
        return [p.grad.clone() for p in backbone.parameters() if p.grad is not None]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_optimized_models_give_the_same_intermediates(name):
    model = vitkit.create_model(name, **tiny_overrides(name, head_width=16)).eval()
    fast = vitkit.optimize(model)
    c, h, w = model.data_config["input_size"]
    x = torch.randn(3, c, h, w)
    with torch.inference_mode():
        ref_final, ref = model.forward_intermediates(x, norm=True)
        final, maps = fast.forward_intermediates(x, norm=True)
    torch.testing.assert_close(final, ref_final, atol=1e-5, rtol=1e-5)
    for a, b in zip(maps, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # a features_only backbone is optimized through the model inside it
    backbone = FeatureModel(model, out_indices=(0, -1))
    fast_backbone = vitkit.optimize(backbone)
    assert vitkit.is_optimized(fast_backbone.model) and not vitkit.is_optimized(backbone.model)
    with torch.no_grad():  # autograd on, no gradient needed: the engine still runs its fast paths
        for a, b in zip(fast_backbone(x), backbone(x), strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_backbone_saves_as_its_model_without_classifier(tmp_path):
    name, overrides, size, _ = TINY["swin"]
    backbone = vitkit.create_model(name, features_only=True, **overrides).eval()
    vitkit.save_pretrained(backbone, tmp_path)
    loaded = vitkit.create_model(name, pretrained=str(tmp_path), features_only=True, **overrides).eval()
    assert loaded.model.num_classes == 0
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        for a, b in zip(loaded(x), backbone(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
