"""Parity: transformers' SwinForImageClassification with random weights vs vitkit loading its checkpoint."""

import pytest
import torch
import torch.nn.functional as F

import vitkit
from tests.conftest import randomize_
from vitkit.errors import CheckpointError

transformers = pytest.importorskip("transformers")

# 32 px, patch 2 -> 16 (2x2 windows of 4, shifted) -> 8 (shifted) -> 4 (one window, no shift)
_BASE = dict(
    image_size=32,
    patch_size=2,
    num_channels=3,
    embed_dim=16,
    depths=[2, 2, 2],
    num_heads=[2, 4, 4],
    window_size=4,
    num_labels=7,
)


def _hf_swin(tmp_path, cls=None, **kw):
    cfg = transformers.SwinConfig(**(_BASE | kw))
    hf = randomize_((cls or transformers.SwinForImageClassification)(cfg)).eval()
    hf.save_pretrained(tmp_path / "hf")
    return hf


@pytest.mark.parametrize(
    "size",
    [
        (32, 32),  # native
        (30, 30),  # patch grid 15: window padding, odd side at merging
        (27, 41),  # padding at the patch embedding too, non-square
        (32, 48),  # non-square: the last stage is 4 x 6 -> one row of windows of 4, padded, no shift
        (48, 40),
    ],
)
def test_logits_match_transformers(tmp_path, size):
    hf = _hf_swin(tmp_path)  # fresh per size: transformers' blocks remember a clamped window size
    model = vitkit.from_pretrained(tmp_path / "hf")
    assert model.family == "swin" and model.num_classes == 7
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = hf(pixel_values=x).logits
        out = model(x)
    assert out.shape == (2, 7)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_qkv_bias_off_odd_window_and_class_names(tmp_path):
    names = {i: f"c{i}" for i in range(7)}
    hf = _hf_swin(
        tmp_path, qkv_bias=False, window_size=3, image_size=36, depths=[2, 2], num_heads=[2, 2], id2label=names
    )
    model = vitkit.from_pretrained(tmp_path / "hf")
    assert model.class_names == [f"c{i}" for i in range(7)]
    assert model.layers[0].blocks[0].attn.qkv.bias is None
    x = torch.randn(2, 3, 36, 36)  # 18 -> 9: windows of 3, shift 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x).logits, atol=1e-5, rtol=1e-5)


def test_swin_model_checkpoint_is_a_backbone(tmp_path):
    hf = _hf_swin(tmp_path, cls=transformers.SwinModel)
    model = vitkit.from_pretrained(tmp_path / "hf")
    assert model.num_classes == 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=x)
        torch.testing.assert_close(model(x), ref.pooler_output, atol=1e-5, rtol=1e-5)
        feats = model.forward_features(x)
        torch.testing.assert_close(feats.flatten(1, 2), ref.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_window_size_change_at_load_resizes_tables(tmp_path):
    hf = _hf_swin(tmp_path)
    model = vitkit.from_pretrained(tmp_path / "hf", window_size=6)
    key = "layers.1.blocks.0.attn.relative_position_bias_table"
    assert model.state_dict()[key].shape == (11 * 11, 4)
    # reference: transformers' model at window 6 with its tables resized the official repo's way
    ref = transformers.SwinForImageClassification(transformers.SwinConfig(**(_BASE | dict(window_size=6)))).eval()
    sd = hf.state_dict()
    for k, v in sd.items():
        if k.endswith("relative_position_bias_table"):
            grid = v.T.reshape(1, v.shape[1], 7, 7)
            sd[k] = F.interpolate(grid, size=(11, 11), mode="bicubic", align_corners=False).reshape(v.shape[1], -1).T
    ref.load_state_dict(sd)
    torch.testing.assert_close(
        model.state_dict()[key],
        sd["swin.encoder.layers.1.blocks.0.attention.relative_position_bias.relative_position_bias_table"],
    )
    x = torch.randn(2, 3, 48, 48)  # 24 (windows of 6, shifted) -> 12 (shifted) -> 6 (one window)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(pixel_values=x).logits, atol=1e-5, rtol=1e-5)


def test_grayscale_and_new_head_at_load(tmp_path):
    _hf_swin(tmp_path)
    with pytest.warns(UserWarning, match="re-initialised"):
        model = vitkit.from_pretrained(tmp_path / "hf", in_chans=1, num_classes=3)
    assert model.patch_embed.proj.in_channels == 1
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 3)


def test_unsupported_config_is_a_clear_error(tmp_path):
    _hf_swin(tmp_path, use_absolute_embeddings=True)
    with pytest.raises(CheckpointError, match="use_absolute_embeddings"):
        vitkit.from_pretrained(tmp_path / "hf")


def test_missing_key_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    _hf_swin(tmp_path)
    path = tmp_path / "hf" / "model.safetensors"
    sd = load_file(path)
    del sd["swin.encoder.layers.1.blocks.1.attention.self.key.weight"]
    save_file(sd, path)
    with pytest.raises(CheckpointError, match=r"layers\.1\.blocks\.1\.attention\.self\.key\.weight"):
        vitkit.from_pretrained(tmp_path / "hf")


def test_transformers_4_clamped_tables_load(tmp_path):
    """transformers 4.x sized a stage's table for its clamped window; such checkpoints still load."""
    from safetensors.torch import load_file, save_file

    _hf_swin(tmp_path, image_size=16)  # 8 -> 4 -> 2: the last stage is one 2x2 window
    path = tmp_path / "hf" / "model.safetensors"
    sd = load_file(path)
    key = "swin.encoder.layers.2.blocks.0.attention.self.relative_position_bias_table"
    sd[key] = torch.randn(9, 4)  # (2 * 2 - 1)^2 rows
    save_file(sd, path)
    model = vitkit.from_pretrained(tmp_path / "hf")
    table = model.state_dict()["layers.2.blocks.0.attn.relative_position_bias_table"]
    assert table.shape == (49, 4)
    torch.testing.assert_close(table.view(7, 7, 4)[2:5, 2:5].reshape(9, 4), sd[key])
    bias = model.layers[2].blocks[0].attn.relative_position_bias(2)  # the 2x2 window reads exactly those rows
    torch.testing.assert_close(
        bias.permute(1, 2, 0).reshape(16, 4), sd[key][vitkit.models.swin.relative_position_index(2).flatten()]
    )
