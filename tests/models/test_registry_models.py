"""Every registered model, built tiny: the uniform API works the same way for all of them."""

import pytest
import torch

import vitkit
from tests.tiny import tiny_overrides

ALL = vitkit.list_models()


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_and_api(name):
    model = vitkit.create_model(name, num_classes=5, **tiny_overrides(name))
    c, h, w = model.data_config["input_size"]
    x = torch.randn(2, c, h, w)
    out = model(x)
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)

    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feats.shape == (2, model.num_features)

    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.config.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize("name", ALL)
def test_grad_checkpointing_gives_same_gradients(name):
    model = vitkit.create_model(name, num_classes=4, drop_path_rate=0.1, **tiny_overrides(name)).train()
    c, h, w = model.data_config["input_size"]
    x = torch.randn(2, c, h, w)

    def grads(enabled: bool) -> list[torch.Tensor]:
        model.zero_grad()
        model.set_grad_checkpointing(enabled)
        torch.manual_seed(7)  # same drop-path decisions in both runs
        model(x).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(grads(False), grads(True), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_attention_maps_cover_every_layer(name):
    model = vitkit.create_model(name, **tiny_overrides(name)).eval()
    c, h, w = model.data_config["input_size"]
    x = torch.randn(1, c, h, w)
    with torch.no_grad():
        maps = model.get_attention_maps(x)
        ref = model(x)
        # recording takes the explicit path; results must not change
        torch.testing.assert_close(model(x), ref)
    assert len(maps) >= 1
    for m in maps:
        torch.testing.assert_close(m.weights.sum(-1), torch.ones_like(m.weights.sum(-1)), atol=1e-5, rtol=0)
    # the flag is cleared afterwards: no maps are kept around
    assert all(getattr(mod, "attention_map", None) is None for mod in model.modules())


def test_config_is_frozen_dataclass():
    model = vitkit.create_model("vit_tiny_patch16_224")
    with pytest.raises(AttributeError):
        model.config.depth = 3


@pytest.mark.parametrize("name", ALL)
def test_training_after_inference_mode(name):
    """Nothing built during a first call under torch.inference_mode may break a later training step."""
    model = vitkit.create_model(name, num_classes=5, **tiny_overrides(name))
    c, h, w = model.data_config["input_size"]
    x = torch.randn(2, c, h, w)  # the same size: size-keyed caches are filled by the first call
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
