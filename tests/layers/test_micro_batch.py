"""Micro-batches in CPU inference: the same logits as the whole batch, and only where nothing can tell."""

import pytest
import torch

import vitkit
from tests.conftest import randomize_
from tests.models.test_registry_models import tiny_overrides
from vitkit.layers import micro_batch
from vitkit.layers.micro_batch import num_micro_batches

FAMILIES = ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"]


def build(name: str) -> torch.nn.Module:
    return randomize_(vitkit.create_model(name, num_classes=5, **tiny_overrides(name))).eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_slices_of_the_batch_give_the_same_logits(monkeypatch, name):
    model = build(name)
    c, h, w = model.data_config["input_size"]
    odd = (0, 0) if name.startswith("vit") else (3, 5)  # Swin pads, CvT's convs round down
    x = torch.randn(5, c, h + odd[0], w + odd[1])
    seen = []  # the batch size of every attention call
    for module in model.modules():
        if hasattr(module, "record_attention"):
            orig = module.forward
            module.forward = lambda *a, _orig=orig, **k: (seen.append(a[0].shape[0]), _orig(*a, **k))[1]
    with torch.no_grad():
        monkeypatch.setattr(micro_batch, "MICRO_BATCH_BYTES", 0)
        whole = model(x)
        assert set(seen) == {5}
        seen.clear()
        monkeypatch.setattr(micro_batch, "MICRO_BATCH_BYTES", 1)  # one image at a time
        sliced = model(x)
    assert set(seen) == {1}
    torch.testing.assert_close(sliced, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_attention_maps_and_hooks_see_the_whole_batch(monkeypatch, name):
    monkeypatch.setattr(micro_batch, "MICRO_BATCH_BYTES", 1)
    model = build(name)
    c, h, w = model.data_config["input_size"]
    x = torch.randn(3, c, h, w)
    with torch.no_grad():
        maps = model.get_attention_maps(x)
        batches = []
        first_block = next(m for n, m in model.named_modules() if n.endswith("blocks.0"))
        handle = first_block.register_forward_hook(lambda m, i, o: batches.append(o.shape[0]))
        model(x)
        handle.remove()
    assert maps and all(m.weights.shape[0] == 3 for m in maps)
    assert batches == [3]


def test_only_cpu_inference_is_sliced(monkeypatch):
    monkeypatch.setattr(micro_batch, "MICRO_BATCH_BYTES", 10)
    module, x = torch.nn.Linear(2, 2).eval(), torch.zeros(4, 2)
    assert num_micro_batches(module, x, 100) == 1  # autograd on: training keeps the batch whole
    with torch.no_grad():
        assert num_micro_batches(module, x, 100) == 4  # at most one image per slice
        assert num_micro_batches(module, x, 25) == 3
        assert num_micro_batches(module, x, 10) == 1  # small enough already
        assert num_micro_batches(module, x[:1], 100) == 1
        assert num_micro_batches(module.train(), x, 100) == 1  # batch statistics (CvT's BatchNorm) in training
        monkeypatch.setattr(micro_batch, "MICRO_BATCH_BYTES", 0)
        assert num_micro_batches(module.eval(), x, 100) == 1  # switched off


def test_swin_t_batch_8_slices_its_first_stage():
    """Swin-T at 224 px, batch 8: stage 1's MLP hidden is 8 x 56 x 56 x 384 floats = 38.5 MB -> 2 slices."""
    model = vitkit.create_model("swin_tiny_patch4_window7_224").eval()
    inputs = [torch.zeros(8, side, side, 1) for side in (56, 56, 28, 14)]  # each stage's input, before merging
    with torch.no_grad():
        assert [stage.num_micro_batches(x) for stage, x in zip(model.layers, inputs, strict=True)] == [2, 1, 1, 1]
