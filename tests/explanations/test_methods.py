"""Rollout, gradient-weighted rollout and Grad-CAM on every family: the properties an explanation must have, and
the token bookkeeping checked against dense matrices built from the documented layout."""

import pytest
import torch

from tests.conftest import randomize_
from tests.tiny import TINY
from vitkit.engine import optimize
from vitkit.errors import VitkitError
from vitkit.explanations import METHODS, explain
from vitkit.explanations.core import _explain_batch
from vitkit.explanations.geometry import spread, stages
from vitkit.explanations.integrated_gradients import attributions
from vitkit.explanations.rollout import layer_matrix, propagate, swin_window_step
from vitkit.factory import create_model

pytestmark = pytest.mark.usefixtures("one_thread")

# family -> input sizes: the native one and ones the model reaches only by resampling / padding / odd grids
SIZES = {"vit": [(32, 32), (48, 40)], "swin": [(16, 16), (30, 22)], "cvt": [(32, 32), (37, 29)]}


def tiny(family: str, **overrides) -> torch.nn.Module:
    name, base, _, _ = TINY[family]
    torch.manual_seed(0)
    return randomize_(create_model(name, **(base | overrides)), std=0.3).eval()


@pytest.fixture(scope="module")
def models():
    return {f: tiny(f) for f in TINY}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(("family", "size"), [(f, s) for f, sizes in SIZES.items() for s in sizes])
def test_maps_are_normalised_at_the_input_size(models, family, size, method):
    x = torch.randn(2, 3, *size)
    exp = explain(models[family], x, method=method)
    assert exp.heatmaps.shape == (2, *size)
    assert (exp.heatmaps >= 0).all() and torch.isfinite(exp.heatmaps).all()
    peak = exp.heatmaps.flatten(1).amax(1)
    if method == "gradcam":  # Grad-CAM is all 0 where no position has positive evidence for the class
        assert ((peak == 1) | (peak == 0)).all()
    else:
        assert torch.allclose(peak, torch.ones(2))  # the most relevant pixel is 1
    assert exp.logits.shape == (2, 5) and exp.targets.tolist() == exp.logits.argmax(1).tolist()


@pytest.mark.parametrize(
    ("family", "overrides", "size"),
    [
        ("swin", {}, (32, 32)),
        ("swin", {"window_size": 3}, (64, 64)),
        ("vit", {"global_pool": "avg", "class_token": False}, (32, 32)),
    ],
)
def test_rollout_keeps_the_total_when_the_head_averages(family, overrides, size):
    """Row-stochastic layers, window bookkeeping (padded windows at window 3), merging, patches: nothing is lost
    where no convolution reaches into padding."""
    model = tiny(family, **overrides)
    with torch.no_grad():
        maps, _ = model.forward_with_attention(torch.randn(2, 3, *size))
    relevance = propagate(model, maps, None, size)
    assert (relevance >= 0).all()
    assert torch.allclose(relevance.sum((1, 2)), torch.ones(2), atol=1e-5)


def test_vit_rollout_and_grad_rollout_equal_the_papers_dense_products(models):
    """Abnar & Zuidema: prod of (0.5 A + 0.5 I), [CLS] row. Chefer et al.: R = I; R += mean_h (dA * A)^+ R."""
    model = models["vit"]
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    maps, logits = model.forward_with_attention(x)
    target = logits.argmax(1)
    grads = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), [m.weights for m in maps])
    n = maps[0].weights.shape[-1]
    eye = torch.eye(n).expand(2, n, n)
    rollout, chefer = eye.clone(), eye.clone()
    for m, g in zip(maps, grads, strict=True):
        a = m.weights.detach().mean(1)
        rollout = (0.5 * a + 0.5 * eye) @ rollout
        chefer = chefer + (g * m.weights).clamp_min(0).mean(1).detach() @ chefer
    for dense, grads_ in ((rollout, None), (chefer, grads)):
        expected = spread(dense[:, 0, 1:].reshape(2, 4, 4), (32, 32), stages(model, (32, 32))[0].embed)
        assert torch.allclose(propagate(model, maps, grads_, (32, 32)), expected, atol=1e-6)


def test_swin_windows_go_back_where_the_docstring_says():
    """Window i * nw + j of a block holds tokens (i*ws + a, j*ws + b) of the padded, rolled grid, i.e. tokens
    ((i*ws + a + shift) % Hp, ...) of the stage; rows / columns beyond the stage are padding."""
    H, W, ws, shift = 5, 7, 3, 1
    Hp, Wp = 6, 9
    nh, nw = Hp // ws, Wp // ws
    mats = torch.rand(2, nh * nw, ws * ws, ws * ws)
    dense = torch.zeros(2, Hp * Wp, Hp * Wp)  # token -> token on the unshifted padded grid
    for i in range(nh):
        for j in range(nw):
            where = [((i * ws + a + shift) % Hp) * Wp + (j * ws + b + shift) % Wp for a in range(ws) for b in range(ws)]
            idx = torch.tensor(where)
            dense[:, idx[:, None], idx[None, :]] = mats[:, i * nw + j]
    r = torch.rand(2, H, W)
    padded = torch.zeros(2, Hp, Wp)
    padded[:, :H, :W] = r
    expected = (padded.flatten(1).unsqueeze(1) @ dense).squeeze(1).view(2, Hp, Wp)[:, :H, :W]
    meta = {"window_size": ws, "shift_size": shift, "grid": (Hp, Wp)}
    assert torch.allclose(swin_window_step(r, mats, meta), expected, atol=1e-6)


@pytest.mark.parametrize("method", ["grad-rollout", "gradcam", "integrated-gradients"])
@pytest.mark.parametrize("family", list(TINY))
def test_class_specific_methods_follow_the_target(models, family, method):
    size = SIZES[family][1]
    x = torch.randn(1, 3, *size)
    a = explain(models[family], x, method=method, target=0).heatmaps
    b = explain(models[family], x, method=method, target=3).heatmaps
    assert (a - b).abs().max() > 0.05


@pytest.mark.parametrize("family", list(TINY))
def test_integrated_gradients_add_up_to_the_change_of_the_target_logit(models, family):
    """Completeness (Sundararajan et al.): the attributions sum to f(x) - f(grey image), up to the midpoint rule."""
    model = models[family]
    x = torch.randn(2, 3, *SIZES[family][1])
    targets = torch.tensor([1, 3])
    attr = attributions(model, x, targets, steps=256)  # these random weights make a rough path: many steps
    with torch.no_grad():
        change = (model(x) - model(torch.zeros_like(x))).gather(1, targets.view(-1, 1)).flatten()
    assert attr.shape == x.shape
    assert torch.allclose(attr.sum(dim=(1, 2, 3)), change, atol=0.01 * change.abs().max().item())
    rel, _, _ = _explain_batch(model, x, "integrated-gradients", [1, 3], steps=256)
    assert torch.allclose(rel, attr.sum(1).clamp_min(0), atol=1e-5)  # the map: channels summed, positive part


def test_integrated_gradients_steps_are_checked(models):
    with pytest.raises(VitkitError, match="steps must be >= 1"):
        explain(models["vit"], torch.randn(1, 3, 32, 32), method="integrated-gradients", steps=0)


def test_rollout_does_not_depend_on_the_target(models):
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(
        explain(models["cvt"], x, "rollout", 0).heatmaps, explain(models["cvt"], x, "rollout", 4).heatmaps
    )


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", list(TINY))
def test_an_optimized_model_gives_the_reference_maps(models, family, method):
    size = SIZES[family][1]
    x = torch.randn(2, 3, *size)
    ref = explain(models[family], x, method=method)
    fast = explain(optimize(models[family]), x, method=method)
    assert torch.equal(ref.targets, fast.targets)
    assert torch.allclose(ref.logits, fast.logits, atol=1e-5)
    assert torch.allclose(ref.heatmaps, fast.heatmaps, atol=1e-4)


def test_swin_grad_rollout_sees_gradients_of_the_window_maps(models):
    """Swin stores its weights per window and head; the stored view must be the one on the path to the logits."""
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    maps, logits = models["swin"].forward_with_attention(x)
    grads = torch.autograd.grad(logits[0, 0], [m.weights for m in maps])
    assert all(g.abs().sum() > 0 for g in grads)


def test_layer_matrix_averages_heads():
    w = torch.rand(2, 3, 4, 5)
    assert torch.allclose(layer_matrix(type("M", (), {"weights": w})(), None), w.mean(1))


def test_targets_by_name_and_per_image(models):
    model = tiny("vit")
    model.class_names = ["cat", "dog", "bird", "fish", "frog"]
    x = torch.randn(2, 3, 32, 32)
    assert explain(model, x, target="Dog").targets.tolist() == [1, 1]
    assert explain(model, x, target=["frog", 2]).targets.tolist() == [4, 2]
    assert explain(model, x, target="3").targets.tolist() == [3, 3]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"method": "rolout"}, "did you mean 'rollout'"),
        ({"target": "cow"}, "unknown class 'cow'"),
        ({"target": 7}, "class 7 is out of range: the model has 5 classes"),
        ({"target": [1, 2, 3]}, "3 classes given for 2 images"),
    ],
)
def test_user_errors_are_one_line(kwargs, needle):
    model = tiny("vit")
    model.class_names = ["cat", "dog", "bird", "fish", "frog"]
    with pytest.raises(VitkitError, match=needle) as e:
        explain(model, torch.randn(2, 3, 32, 32), **kwargs)
    assert "\n" not in str(e.value)


def test_models_that_cannot_be_explained():
    with pytest.raises(VitkitError, match="not on a Linear"):
        explain(torch.nn.Linear(3, 3), torch.randn(1, 3, 8, 8))
    with pytest.raises(VitkitError, match="needs a classifier head"):
        explain(tiny("cvt", num_classes=0), torch.randn(1, 3, 32, 32))
    from vitkit.engine.quantize import quantize_dynamic_int8

    int8 = quantize_dynamic_int8(tiny("vit"))
    with pytest.raises(VitkitError, match="--method gradcam differentiates the target logit.*int8"):
        explain(int8, torch.randn(1, 3, 32, 32), method="gradcam")
    assert explain(int8, torch.randn(1, 3, 32, 32), method="rollout").heatmaps.shape == (1, 32, 32)


@pytest.mark.parametrize("method", list(METHODS))
def test_the_model_is_left_as_it_was(method):
    model = tiny("cvt").train()
    explain(model, torch.randn(1, 3, 32, 32), method=method)
    assert model.training
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated in the model
    assert not any(
        getattr(m, "record_attention", False) for m in model.modules()
    )  # flags reset (the engine reads them)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # Grad-CAM's hook removed


def test_batches_give_the_same_maps_as_one_pass(models):
    x = torch.randn(5, 3, 30, 22)
    one = explain(models["swin"], x, method="grad-rollout", batch_size=8)
    split = explain(models["swin"], x, method="grad-rollout", batch_size=2)
    assert torch.allclose(one.heatmaps, split.heatmaps, atol=1e-5)


def test_explain_batch_returns_relevance_before_normalisation(models):
    rel, logits, targets = _explain_batch(models["cvt"], torch.randn(2, 3, 32, 32), "rollout", None)
    assert rel.shape == (2, 32, 32) and logits.shape == (2, 5) and targets.shape == (2,)
