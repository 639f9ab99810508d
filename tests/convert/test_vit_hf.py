"""Parity: transformers' ViTForImageClassification with random weights vs vitkit loading its checkpoint."""

import pytest
import torch

import vitkit
from tests.conftest import randomize_

transformers = pytest.importorskip("transformers")


def _hf_vit(tmp_path, **kw):
    cfg = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        num_labels=7,
        **kw,
    )
    hf = randomize_(transformers.ViTForImageClassification(cfg)).eval()
    hf.save_pretrained(tmp_path / "hf")
    return hf


@pytest.mark.parametrize("size", [(32, 32), (48, 64), (16, 24)])
def test_logits_match_transformers(tmp_path, size):
    hf = _hf_vit(tmp_path)
    model = vitkit.from_pretrained(tmp_path / "hf")
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = hf(pixel_values=x, interpolate_pos_encoding=True).logits
        out = model(x)
    assert out.shape == (2, 7)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_qkv_bias_off_and_class_names(tmp_path):
    hf = _hf_vit(tmp_path, qkv_bias=False, id2label={i: f"c{i}" for i in range(7)})
    model = vitkit.from_pretrained(tmp_path / "hf")
    assert model.class_names == [f"c{i}" for i in range(7)]
    assert model.blocks[0].attn.qkv.bias is None
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x).logits, atol=1e-5, rtol=1e-5)


def test_resized_at_load_equals_reference_interpolation(tmp_path):
    hf = _hf_vit(tmp_path)
    model = vitkit.from_pretrained(tmp_path / "hf", img_size=48)
    assert model.pos_embed.shape[1] == 1 + 36
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(
            model(x), hf(pixel_values=x, interpolate_pos_encoding=True).logits, atol=1e-5, rtol=1e-5
        )
