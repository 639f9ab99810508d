import pytest
import torch

import vitkit
from vitkit.models.vit import ViTConfig, resample_pos_embed

REFERENCE_PARAMS = {  # timm / the paper, 1000 classes
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_base_patch32_224": 88_224_232,
    "vit_large_patch16_224": 304_326_632,
    "vit_base_patch16_384": 86_859_496,
}


@pytest.mark.parametrize("name,expected", REFERENCE_PARAMS.items())
def test_parameter_counts(name, expected):
    with torch.device("meta"):
        model = vitkit.create_model(name)
    assert model.num_params() == expected


def test_patches_in_raster_order_with_cls_first():
    model = vitkit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, embed_dim=8, depth=1, num_heads=2)
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, :16, 16:] = 1.0  # only the top-right patch is non-zero -> raster index 1
    tokens = model.patch_embed(x)
    bias = model.patch_embed.proj.bias
    changed = [(tokens[0, i] - bias).abs().sum().item() > 0 for i in range(4)]
    assert changed == [False, True, False, False]


def test_any_multiple_of_patch_and_non_square():
    model = vitkit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    for size in [(32, 32), (40, 24), (8, 64)]:
        assert model(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_bad_input_sizes_are_clear_errors():
    model = vitkit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
        model(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="1 channels, the model expects 3"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        ViTConfig(img_size=30, patch_size=8)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        ViTConfig(embed_dim=30, num_heads=4)


def test_resample_pos_embed_identity_and_shape():
    pe = torch.randn(1, 1 + 16, 8)
    assert resample_pos_embed(pe, (4, 4)) is pe
    out = resample_pos_embed(pe, (6, 2))
    assert out.shape == (1, 1 + 12, 8)
    torch.testing.assert_close(out[:, :1], pe[:, :1])


def test_in_chans_1_and_avg_pool():
    model = vitkit.create_model("vit_nano_patch4_28", global_pool="avg", class_token=False, depth=1)
    assert model.cls_token is None and model.pos_embed.shape[1] == 49
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert model.data_config["input_size"] == (1, 28, 28)
    assert len(model.data_config["mean"]) == 1


def test_qkv_bias_off_and_drop_path_ramp():
    model = vitkit.create_model("vit_small_patch16_224", qkv_bias=False, drop_path_rate=0.3, depth=4)
    assert model.blocks[0].attn.qkv.bias is None
    rates = [b.drop_path1.drop_prob for b in model.blocks]
    assert rates[0] == 0.0 and abs(rates[-1] - 0.3) < 1e-6 and rates == sorted(rates)


def test_layer_ids_and_no_weight_decay():
    model = vitkit.create_model("vit_tiny_patch16_224", depth=3)
    assert model.layer_id("pos_embed") == 0
    assert model.layer_id("blocks.2.mlp.fc1.weight") == 3
    assert model.layer_id("head.weight") == model.num_layers() + 1
    assert {"pos_embed", "cls_token"} <= model.no_weight_decay()
