"""Parity with timm's ViT through golden fixtures (timm cannot be installed beside the CPU torch here).

tests/fixtures/timm/<name>/ holds what ``timm.models.save_for_hf`` wrote for a tiny random-weight timm
ViT (config.json + model.safetensors) and timm's logits on fixed inputs (io.safetensors), made by
scripts/make_timm_fixtures.py; see tests/fixtures/timm/README.md.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import vitkit
from tests.convert.timm_fixtures import FIXTURES, assert_matches_timm, cases, io_keys_expected, io_of, load_models
from vitkit.errors import CheckpointError

VIT_FIXTURES = ["vit_token", "vit_avg", "vit_avg_noclass", "vit_noqkvbias_mlp2"]


@pytest.fixture(scope="module")
def loaded():
    return load_models(VIT_FIXTURES)


@pytest.fixture(scope="module")
def io():
    return {name: io_of(name) for name in VIT_FIXTURES}


def test_every_fixture_and_size_is_tested():
    """The parametrisation reads meta.json; make sure it found what the README promises."""
    assert len(list(cases(VIT_FIXTURES))) == 10
    for name in VIT_FIXTURES:
        assert sorted(io_of(name).keys()) == io_keys_expected(name)


@pytest.mark.parametrize(("name", "size"), list(cases(VIT_FIXTURES)))
def test_logits_match_timm(loaded, io, name, size):
    assert_matches_timm(loaded[name], io[name], size)


def test_config_from_timm_model_args(loaded):
    cfg = loaded["vit_token"].config
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads) == ((32, 32), 8, 48, 2, 4)
    assert (cfg.num_classes, cfg.global_pool, cfg.class_token, cfg.qkv_bias) == (7, "token", True, True)
    assert cfg.pos_embed_antialias and cfg.norm_eps == 1e-6
    assert (cfg.mean, cfg.std, cfg.interpolation, cfg.crop_pct) == ((0.5,) * 3, (0.5,) * 3, "bicubic", 0.9)
    assert loaded["vit_avg_noclass"].cls_token is None
    assert isinstance(loaded["vit_avg"].fc_norm, torch.nn.LayerNorm)
    noqkv = loaded["vit_noqkvbias_mlp2"]
    assert noqkv.blocks[0].attn.qkv.bias is None and noqkv.config.mlp_ratio == 2.0


def test_new_num_classes_reinitialises_head_with_warning(io):
    name = "vit_token"
    weights = load_file(str(FIXTURES / name / "model.safetensors"))
    with pytest.warns(UserWarning, match="re-initialised for 3 classes"):
        model = vitkit.from_pretrained(FIXTURES / name, num_classes=3)
    assert model.head.weight.shape == (3, 48) and model.num_classes == 3
    assert not torch.equal(model.head.weight[:3], weights["head.weight"][:3])
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            torch.testing.assert_close(value, weights[key], atol=0, rtol=0, msg=key)
    x = io[name]["input_32x32"]
    with torch.no_grad():  # the backbone is timm's: same pre-logits, 3 outputs
        torch.testing.assert_close(
            model.forward_head(model.forward_features(x), pre_logits=True), io[name]["pre_logits_32x32"]
        )
        assert model(x).shape == (2, 3)


def test_grayscale_sums_patch_embedding_filters(loaded):
    name = "vit_token"
    weights = load_file(str(FIXTURES / name / "model.safetensors"))
    gray = vitkit.from_pretrained(FIXTURES / name, in_chans=1)
    assert gray.patch_embed.proj.weight.shape == (48, 1, 8, 8)
    torch.testing.assert_close(
        gray.patch_embed.proj.weight, weights["patch_embed.proj.weight"].sum(1, keepdim=True), atol=0, rtol=0
    )
    # a gray image through the 1-channel model = the same image as RGB (R = G = B) through timm's weights
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), loaded[name](x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-5)


def _edited_copy(tmp_path, edit):
    dst = tmp_path / "ckpt"
    shutil.copytree(FIXTURES / "vit_token", dst)
    cfg = json.loads((dst / "config.json").read_text())
    edit(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["model_args"].update(qk_norm=True), "qk_norm=True"),
        (lambda c: c["model_args"].update(reg_tokens=4), "reg_tokens=4"),
        (lambda c: c["model_args"].update(global_pool="map"), "global_pool='map'"),
        (lambda c: c["model_args"].update(fc_norm=True), "fc_norm=True"),
        (lambda c: c["model_args"].update(layer_scale_v3=1), "model_args layer_scale_v3 unknown"),
        (lambda c: c["model_args"].update(patch_size=[8, 4]), "non-square patch_size"),
        (lambda c: c.update(architecture="vit_unheard_of_224", model_args={}), "no model_args"),
    ],
)
def test_unsupported_timm_options_fail_clearly(tmp_path, edit, match):
    with pytest.raises(CheckpointError, match=match):
        vitkit.from_pretrained(_edited_copy(tmp_path, edit))


def test_config_without_model_args_uses_the_registered_architecture(tmp_path):
    """timm hub configs written before model_args existed name only the architecture and pretrained_cfg."""

    def edit(cfg):
        del cfg["model_args"]
        cfg["pretrained_cfg"]["label_names"] = {str(i): f"c{i}" for i in range(7)}

    with pytest.raises(CheckpointError, match=r"cls_token: checkpoint \(1, 1, 48\) vs model \(1, 1, 192\)"):
        vitkit.from_pretrained(_edited_copy(tmp_path, edit))  # vit_tiny_patch16_224 is 192 wide, the weights 48
    from vitkit.convert.vit import class_names_from_timm, config_from_timm

    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    vit_cfg = config_from_timm(cfg, {})
    assert (vit_cfg.embed_dim, vit_cfg.img_size, vit_cfg.num_classes) == (192, (32, 32), 7)  # from pretrained_cfg
    assert class_names_from_timm(cfg) == [f"c{i}" for i in range(7)]


def test_unregistered_architecture_builds_from_model_args(tmp_path, io):
    edit = lambda c: c.update(architecture="vit_custom_thing.my_tag", label_names=list("abcdefg"))
    model = vitkit.from_pretrained(_edited_copy(tmp_path, edit))
    assert model.class_names == list("abcdefg")
    x = io["vit_token"]["input_32x32"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), io["vit_token"]["logits_32x32"], atol=1e-5, rtol=1e-5)
