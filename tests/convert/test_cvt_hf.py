"""Parity: transformers' CvtForImageClassification with random weights vs vitkit loading its checkpoint."""

import pytest
import torch

import vitkit
from tests.conftest import randomize_
from vitkit.convert.cvt import config_from_hf
from vitkit.errors import CheckpointError
from vitkit.models.registry import get_entry, replace_config

transformers = pytest.importorskip("transformers")

# transformers indexes its drop-path list by stage, so it needs depth[i] > i: (1, 2, 3) at least
SMALL = dict(embed_dim=[16, 24, 32], num_heads=[1, 2, 2], depth=[1, 2, 3], num_labels=7)


def _randomize(model: torch.nn.Module) -> torch.nn.Module:
    """randomize_, then BatchNorm / embedding-LayerNorm scales around 1 so no branch is squashed."""
    randomize_(model)
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("normalization.weight"):
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.2)
    return model


def _hf_cvt(tmp_path, cls=None, **kw):
    cfg = transformers.CvtConfig(**{**SMALL, **kw})
    hf = _randomize((cls or transformers.CvtForImageClassification)(cfg)).eval()
    hf.save_pretrained(tmp_path / "hf")
    return hf


@pytest.fixture(scope="module")
def hf_default(tmp_path_factory):
    """(transformers model, directory holding its checkpoint) with the default CvT layout at small width."""
    tmp = tmp_path_factory.mktemp("cvt")
    return _hf_cvt(tmp), tmp / "hf"


@pytest.mark.parametrize("batch, size", [(1, (224, 224)), (2, (160, 96)), (2, (33, 47))])
def test_logits_match_transformers(hf_default, batch, size):
    hf, path = hf_default
    model = vitkit.from_pretrained(path)
    assert isinstance(model, vitkit.models.CvT) and not model.training
    x = torch.randn(batch, 3, *size)
    with torch.no_grad():
        ref = hf(pixel_values=x).logits
        out = model(x)
    assert out.shape == (batch, 7)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_mean_pooling_no_qkv_bias_and_class_names(tmp_path):
    hf = _hf_cvt(
        tmp_path,
        cls_token=[False, False, False],
        qkv_bias=[False, False, False],
        id2label={i: f"c{i}" for i in range(7)},
    )
    model = vitkit.from_pretrained(tmp_path / "hf")
    assert model.class_names == [f"c{i}" for i in range(7)]
    assert model.stage1.blocks[0].attn.proj_q.bias is None and model.no_weight_decay() == set()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        # transformers' own forward fails without a [CLS] token (outputs[1] is gone); its pooling branch by hand
        tokens = hf.cvt(pixel_values=x).last_hidden_state.flatten(2).transpose(1, 2)  # (B, N, D)
        ref = hf.classifier(hf.layernorm(tokens).mean(dim=1))
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)


def test_per_stage_values_vitkit_keeps_uniform_are_a_clear_error(tmp_path):
    """Every released CvT uses one qkv_bias / mlp_ratio and a [CLS] token only in the last stage."""
    _hf_cvt(tmp_path, qkv_bias=[True, False, True])
    with pytest.raises(CheckpointError, match=r"config.json: CvT config qkv_bias=\[True, False, True\]"):
        vitkit.from_pretrained(tmp_path / "hf")


def test_grayscale_adaptation_sums_the_stem_filters(hf_default):
    hf, path = hf_default
    model = vitkit.from_pretrained(path, in_chans=1, mean=(0.5,), std=(0.5,))
    w = hf.cvt.encoder.stages[0].embedding.convolution_embeddings.projection.weight
    torch.testing.assert_close(model.stage0.patch_embed.proj.weight, w.sum(1, keepdim=True))
    gray = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # a gray image seen as R = G = B gives the same logits
        ref = hf(pixel_values=gray.expand(-1, 3, -1, -1)).logits
        torch.testing.assert_close(model(gray), ref, atol=1e-5, rtol=1e-5)


def test_new_head_and_overrides(hf_default):
    with pytest.warns(UserWarning, match="re-initialised for 3 classes"):
        model = vitkit.from_pretrained(hf_default[1], num_classes=3, drop_path_rate=0.1)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert model.stage2.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


def test_backbone_checkpoint(tmp_path):
    hf = _hf_cvt(tmp_path, cls=transformers.CvtModel)
    with pytest.warns(UserWarning, match="no final LayerNorm"):
        model = vitkit.from_pretrained(tmp_path / "hf")
    assert model.num_classes == 0
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        ref = hf(pixel_values=x).cls_token_value[:, 0]  # (B, D)
        out = model(x)
    torch.testing.assert_close(out, torch.nn.functional.layer_norm(ref, (32,), eps=1e-5), atol=1e-5, rtol=1e-5)


def test_config_reading():
    cfg = config_from_hf({"model_type": "cvt", "num_labels": 1000, "layer_norm_eps": 1e-12})
    cvt_13 = get_entry("cvt_13_224").config  # transformers' defaults are CvT-13
    assert cfg == replace_config(cvt_13, drop_path_rate=0.1)  # its training default
    w24 = config_from_hf({"embed_dim": [192, 768, 1024], "num_heads": [3, 12, 16], "depth": [2, 2, 20]})
    assert w24.img_size == 384 and w24.crop_pct == 1.0 and w24.drop_path_rate == pytest.approx(0.1)
    with pytest.raises(CheckpointError, match="kernel_qkv"):
        config_from_hf({"kernel_qkv": [3, 5, 3]})
    with pytest.raises(CheckpointError, match="qkv_projection_method"):
        config_from_hf({"qkv_projection_method": ["avg", "avg", "avg"]})
    with pytest.raises(CheckpointError, match="num_heads"):
        config_from_hf({"num_heads": [1, 5, 6]})


def test_missing_key_names_the_key(tmp_path):
    from safetensors.torch import load_file, save_file

    _hf_cvt(tmp_path)
    path = tmp_path / "hf" / "model.safetensors"
    sd = load_file(str(path))
    key = "cvt.encoder.stages.1.layers.0.attention.attention.projection_key.weight"
    del sd[key]
    save_file(sd, str(path))
    with pytest.raises(CheckpointError, match=r"projection_key\.weight"):
        vitkit.from_pretrained(tmp_path / "hf")
