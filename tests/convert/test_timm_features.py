"""Intermediate features equal timm's ``forward_intermediates`` / ``features_only`` (golden fixtures).

tests/fixtures/timm_features/<name>/ holds timm's outputs for the weights and inputs of tests/fixtures/timm/<name>/
(see tests/fixtures/timm_features/README.md): every level as NCHW maps, ViT's prefix tokens and final-normed NLC
tokens, Swin's normed last stage, the final features, and the final features of a run stopped after level 0.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

import vitkit
from tests.convert.timm_fixtures import FIXTURES, io_of
from vitkit.models.features import FeatureModel

FEATURES = FIXTURES.parent / "timm_features"
NAMES = [
    "vit_token",
    "vit_avg",
    "vit_avg_noclass",
    "vit_noqkvbias_mlp2",
    "swin_2stage",
    "swin_3stage_clamp",
    "swin_3stage",
]


def meta(name: str) -> dict:
    return json.loads((FEATURES / name / "meta.json").read_text())


def cases():
    for name in NAMES:
        for entry in meta(name)["sizes"]:
            h, w = entry["size"]
            yield pytest.param(name, f"{h}x{w}", id=f"{name}-{h}x{w}")


@pytest.fixture(scope="module")
def models():
    return {name: vitkit.from_pretrained(FIXTURES / name) for name in NAMES}


@pytest.fixture(scope="module")
def expected():
    return {name: load_file(str(FEATURES / name / "features.safetensors")) for name in NAMES}


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_every_fixture_and_size_is_covered():
    assert len(list(cases())) == 16
    for name in NAMES:
        assert meta(name)["model_fixture"] == f"tests/fixtures/timm/{name}"


@pytest.mark.parametrize(("name", "key"), list(cases()))
def test_intermediates_match_timm(models, expected, name, key):
    model, want, n = models[name], expected[name], meta(name)["num_levels"]
    x = io_of(name)[f"input_{key}"]
    with torch.no_grad():
        final, levels = model.forward_intermediates(x, return_prefix_tokens=True)
        stopped, _ = model.forward_intermediates(x, indices=[0], stop_early=True)
        if model.family == "vit":
            normed = model.forward_intermediates(x, norm=True, output_fmt="NLC", intermediates_only=True)
        else:
            normed = model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)
    assert len(levels) == n
    for i, (spatial, prefix) in enumerate(levels):
        close(spatial, want[f"nchw_{key}_{i}"])
        if f"prefix_{key}_{i}" in want:
            close(prefix, want[f"prefix_{key}_{i}"])
        else:  # timm returns no prefix tokens when there are none; vitkit an empty (B, 0, C)
            assert prefix.shape[1] == 0
    if model.family == "vit":
        for i, tokens in enumerate(normed):
            close(tokens, want[f"norm_nlc_{key}_{i}"])
    else:
        close(normed[0], want[f"norm_nchw_{key}_{n - 1}"])
    close(final, want[f"final_{key}"])
    close(stopped, want[f"stop_early_final_{key}"])


@pytest.mark.parametrize(("name", "key"), list(cases()))
def test_features_only_matches_timm(models, expected, name, key):
    """timm's features_only backbone gives the NCHW maps (Swin's after moving its channels first)."""
    info = meta(name)
    backbone = FeatureModel(vitkit.from_pretrained(FIXTURES / name), out_indices=info["features_only"]["out_indices"])
    assert backbone.feature_info.channels() == info["features_only"]["channels"]
    assert backbone.feature_info.reduction() == info["features_only"]["reduction"]
    assert backbone.feature_info.module_name() == [d["module"] for d in info["feature_info"]]
    with torch.no_grad():
        maps = backbone(io_of(name)[f"input_{key}"])
    for i, m in enumerate(maps):
        close(m, expected[name][f"nchw_{key}_{i}"])


@pytest.mark.parametrize("name", ["vit_token", "swin_3stage"])
def test_optimized_model_matches_timm(expected, name):
    model = vitkit.optimize(vitkit.from_pretrained(FIXTURES / name))
    key = "{}x{}".format(*meta(name)["sizes"][0]["size"])
    with torch.inference_mode():
        levels = model.forward_intermediates(io_of(name)[f"input_{key}"], intermediates_only=True)
    for i, m in enumerate(levels):
        close(m, expected[name][f"nchw_{key}_{i}"])
