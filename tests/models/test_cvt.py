"""CvT: parameter counts, every registered name at tiny width, checkpointing with BatchNorm, attention maps."""

import copy

import pytest
import torch

import vitkit
from tests.conftest import randomize_
from vitkit.errors import VitkitError
from vitkit.models.cvt import Block, CvT, CvTConfig
from vitkit.models.registry import get_entry

CVT_NAMES = vitkit.list_models("cvt_*")
TINY = dict(embed_dims=(16, 24, 32), depths=(1, 1, 2), num_heads=(1, 2, 2), num_classes=5)


def _tiny(name: str, **kw) -> CvT:
    return vitkit.create_model(name, **{**TINY, **kw})


def _input(model: CvT, batch: int = 2) -> torch.Tensor:
    c = model.config
    size = c.img_size if c.img_size <= 64 else 64  # ImageNet configs run at any size; keep tests fast
    return torch.randn(batch, c.in_chans, size, size)


def test_registered_names():
    assert {"cvt_13_224", "cvt_13_384", "cvt_21_224", "cvt_21_384", "cvt_w24_384"} <= set(CVT_NAMES)
    assert get_entry("cvt_13_224").hub_id == "hf-hub:microsoft/cvt-13"
    assert get_entry("cvt_w24_384").hub_id == "hf-hub:microsoft/cvt-w24-384-22k"
    small = [n for n in CVT_NAMES if get_entry(n).config.img_size <= 64]
    assert {get_entry(n).config.img_size for n in small} == {28, 32, 64}


@pytest.mark.parametrize(
    "name, expected",
    # transformers' CvtForImageClassification with the same configs has exactly these counts
    [("cvt_13_224", 19_997_480), ("cvt_13_384", 19_997_480), ("cvt_21_224", 31_622_696), ("cvt_w24_384", 277_196_392)],
)
def test_param_counts(name, expected):
    with torch.device("meta"):  # no memory, no init cost
        model = vitkit.create_model(name)
    assert model.num_params() == expected


@pytest.mark.parametrize("name", CVT_NAMES)
def test_every_registered_model_forward_backward(name):
    model = _tiny(name)
    x = _input(model)
    out = model(x)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_non_square_and_odd_sizes_run():
    model = _tiny("cvt_13_224").eval()
    with torch.no_grad():
        for h, w in [(50, 37), (64, 96), (17, 17)]:
            assert model(torch.randn(1, 3, h, w)).shape == (1, 5)


def test_wrong_channels_is_a_clear_error():
    model = _tiny("cvt_nano_28")
    with pytest.raises(ValueError, match=r"expected input \(B, 1, H, W\)"):
        model(torch.randn(1, 3, 28, 28))


def test_config_validation():
    with pytest.raises(ValueError, match="num_heads"):
        CvTConfig(embed_dims=(64, 192, 384), num_heads=(1, 5, 6))
    with pytest.raises(ValueError, match="depths has 3 stages"):
        CvTConfig(embed_dims=(64, 192))
    with pytest.raises(ValueError, match="stride_q"):
        CvTConfig(stride_q=2)
    with pytest.raises(VitkitError, match="invalid CvTConfig"):
        vitkit.create_model("cvt_13_224", depths=(1, 2))
    assert CvTConfig(depths=[1, 2, 3]).depths == (1, 2, 3)  # lists (JSON, CLI) become tuples
    gray = vitkit.create_model("cvt_nano_28", in_chans=3).config  # statistics follow the channel count
    assert gray.mean == (0.286,) * 3 and len(vitkit.create_model("cvt_tiny_32", in_chans=1).config.std) == 1


def test_attention_scale_is_full_width_like_the_original():
    model = _tiny("cvt_13_224")
    attn = model.stage2.blocks[0].attn
    assert attn.scale == pytest.approx(32**-0.5)  # embed_dim of the stage, not the head width 16


def test_eval_gradients_reach_conv_and_bn_parameters():
    """Eval mode with autograd (saliency, fine-tuning with frozen BN statistics) reaches every parameter."""
    model = randomize_(_tiny("cvt_13_224")).eval()
    model(torch.randn(1, 3, 32, 32)).sum().backward()
    proj = model.stage0.blocks[0].attn.conv_proj_k
    assert proj.conv.weight.grad is not None and proj.bn.weight.grad is not None


def test_grad_checkpointing_same_grads_and_batchnorm_statistics():
    model = randomize_(_tiny("cvt_13_224", drop_path_rate=0.2)).train()
    twin = copy.deepcopy(model)
    twin.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 48, 48)
    torch.manual_seed(1)
    loss = model(x).square().mean()
    loss.backward()
    torch.manual_seed(1)
    loss_ckpt = twin(x).square().mean()
    loss_ckpt.backward()
    torch.testing.assert_close(loss_ckpt, loss)
    for (n, p), (_, q) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=n)
    for (n, b), (_, c) in zip(model.named_buffers(), twin.named_buffers(), strict=True):
        torch.testing.assert_close(c, b, msg=n)  # recomputation must not update running stats twice


def test_drop_path_ramps_over_all_blocks():
    model = _tiny("cvt_13_224", depths=(1, 2, 3), drop_path_rate=0.25)
    blocks = [b for s in (model.stage0, model.stage1, model.stage2) for b in s.blocks]
    rates = [b.drop_path1.drop_prob for b in blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert [b.drop_path2.drop_prob for b in blocks] == rates


def test_drop_path_sits_on_the_residual_branches():
    """Dropping both branches must leave the identity (transformers drops the whole MLP-residual sum)."""
    cfg = CvTConfig(**TINY)
    block = Block(cfg, 1, 0, with_cls_token=False, drop_path=0.5).train()
    block.drop_path1 = block.drop_path2 = _Zero()
    x = torch.randn(2, 16, 24)
    torch.testing.assert_close(block(x, 4, 4), x)


class _Zero(torch.nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def test_attention_maps_shapes_and_meta():
    model = randomize_(_tiny("cvt_13_224")).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        maps = model.get_attention_maps(x)
        plain = model(x)
        # the explicit path that records the weights computes the same logits as SDPA
        for m in model.modules():
            if hasattr(m, "record_attention"):
                m.record_attention = True
        recorded = model(x)
        for m in model.modules():
            if hasattr(m, "record_attention"):
                m.record_attention = False
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-5)
    assert len(maps) == sum(model.config.depths)
    first, last = maps[0], maps[-1]
    assert first.name == "stage0.blocks.0.attn"
    assert first.meta == {
        "stage": 0,
        "block": 0,
        "q_grid": (16, 12),
        "kv_grid": (8, 6),
        "grid": (16, 12),
        "cls_token": False,
        "num_prefix_tokens": 0,
    }
    assert first.weights.shape == (2, 1, 16 * 12, 8 * 6)
    assert last.meta["stage"] == 2 and last.meta["block"] == 1 and last.meta["cls_token"]
    assert last.meta["q_grid"] == (4, 3) and last.meta["kv_grid"] == (2, 2)
    assert last.weights.shape == (2, 2, 1 + 12, 1 + 4)
    for m in maps:
        torch.testing.assert_close(m.weights.sum(-1), torch.ones(m.weights.shape[:-1]))


def test_mean_pooling_without_cls_token():
    model = _tiny("cvt_13_224", cls_token=False)
    assert model.no_weight_decay() == set()
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 2 * 2, 32)
    torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean(1))


def test_no_weight_decay_and_layer_ids():
    model = _tiny("cvt_13_224")
    assert model.no_weight_decay() == {"stage2.cls_token"}
    names = dict(model.named_parameters())
    assert set(model.no_weight_decay()) <= set(names)
    assert model.num_layers() == 4
    assert model.layer_id("stage0.patch_embed.proj.weight") == 0
    assert model.layer_id("stage0.blocks.0.attn.proj_q.weight") == 1
    assert model.layer_id("stage1.patch_embed.norm.weight") == 1
    assert model.layer_id("stage1.blocks.0.mlp.fc1.weight") == 2
    assert model.layer_id("stage2.cls_token") == 2
    assert model.layer_id("stage2.blocks.1.norm2.bias") == 4
    assert model.layer_id("norm.weight") == model.layer_id("head.bias") == 5
    ids = [model.layer_id(n) for n in names]
    assert ids == sorted(ids)  # parameters are registered in depth order


def test_adapt_state_dict_sums_stem_filters():
    rgb = _tiny("cvt_13_224")
    gray = _tiny("cvt_13_224", in_chans=1, mean=(0.5,), std=(0.5,))
    sd = gray.adapt_state_dict(rgb.state_dict())
    w = rgb.stage0.patch_embed.proj.weight
    torch.testing.assert_close(sd["stage0.patch_embed.proj.weight"], w.sum(1, keepdim=True))
    gray.load_state_dict(sd)


def test_save_and_load_roundtrip(tmp_path):
    model = randomize_(_tiny("cvt_tiny_32")).eval()
    vitkit.save_pretrained(model, tmp_path / "ck")
    loaded = vitkit.from_pretrained(tmp_path / "ck")
    assert loaded.config == model.config and loaded.model_name == "cvt_tiny_32"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert model.data_config == {
        "input_size": (3, 32, 32),
        "mean": model.config.mean,
        "std": model.config.std,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
    }
