"""Micro-batches in CPU inference: the same logits as the whole batch, and only where nothing can tell."""

import pytest
import torch

import vitkit
from tests.conftest import randomize_
from tests.tiny import tiny_overrides
from vitkit.engine import optimize
from vitkit.engine.micro_batch import num_micro_batches

FAMILIES = ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"]


def build(name: str) -> torch.nn.Module:
    return randomize_(vitkit.create_model(name, num_classes=5, **tiny_overrides(name))).eval()


def attention_batches(model: torch.nn.Module) -> list[int]:
    """Record the batch size of every block call (through a patched forward: hooks would stop the slicing)."""
    seen = []
    for m in model.modules():
        if type(m).__name__.startswith("Fast") and hasattr(m, "attn"):
            m.forward = (lambda orig: lambda x, *a: (seen.append(x.shape[0]), orig(x, *a))[1])(m.forward)
    return seen


@pytest.mark.parametrize("name", FAMILIES)
def test_slices_of_the_batch_give_the_same_logits(name):
    model = build(name)
    c, h, w = model.data_config["input_size"]
    odd = (0, 0) if name.startswith("vit") else (3, 5)  # Swin pads, CvT's convs round down
    x = torch.randn(5, c, h + odd[0], w + odd[1])
    whole, sliced = optimize(model, micro_batch_bytes=0), optimize(model, micro_batch_bytes=1)  # 1: one image each
    seen_whole, seen_sliced = attention_batches(whole), attention_batches(sliced)
    with torch.no_grad():
        a, b = whole(x), sliced(x)
    assert set(seen_whole) == {5} and set(seen_sliced) == {1}
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(b, model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FAMILIES)
def test_attention_maps_and_hooks_see_the_whole_batch(name):
    fast = optimize(build(name), micro_batch_bytes=1)
    c, h, w = fast.data_config["input_size"]
    x = torch.randn(3, c, h, w)
    with torch.no_grad():
        maps = fast.get_attention_maps(x)
        batches = []
        first_block = next(m for n, m in fast.named_modules() if n.endswith("blocks.0"))
        handle = first_block.register_forward_hook(lambda m, i, o: batches.append(o.shape[0]))
        fast(x)
        handle.remove()
    assert maps and all(m.weights.shape[0] == 3 for m in maps)
    assert batches == [3]


def test_only_cpu_inference_without_gradients_is_sliced():
    module, x = torch.nn.Linear(2, 2), torch.zeros(4, 2)
    assert num_micro_batches(module, x, 100, 10) == 1  # autograd on: never sliced
    with torch.no_grad():
        assert num_micro_batches(module, x, 100, 10) == 4  # at most one image per slice
        assert num_micro_batches(module, x, 25, 10) == 3
        assert num_micro_batches(module, x, 10, 10) == 1  # small enough already
        assert num_micro_batches(module, x[:1], 100, 10) == 1
        assert num_micro_batches(module, x, 100, 0) == 1  # switched off
        handle = module.register_forward_hook(lambda *a: None)
        assert num_micro_batches(module, x, 100, 10) == 1  # a hook watches: it must see the whole batch
        handle.remove()


def test_swin_t_batch_8_slices_its_first_stage_only():
    """Swin-T at 224 px, batch 8: stage 1's MLP hidden is 8 x 56 x 56 x 384 floats = 38.5 MB -> 2 slices."""
    fast = optimize(vitkit.create_model("swin_tiny_patch4_window7_224"), inplace=True)
    inputs = [torch.zeros(8, 56, 56, 96), torch.zeros(8, 56, 56, 96), torch.zeros(8, 28, 28, 192),
              torch.zeros(8, 14, 14, 384)]  # each stage's input, before merging  # fmt: skip
    with torch.no_grad():
        assert [stage.slices(x) for stage, x in zip(fast.layers, inputs, strict=True)] == [2, 1, 1, 1]


def test_vit_b_slices_its_encoder_at_batch_32_not_8():
    fast = optimize(vitkit.create_model("vit_base_patch16_224"), inplace=True)
    with torch.no_grad():
        assert fast.slices(torch.zeros(8, 3, 224, 224)) == 1  # 8 x 197 x 3072 floats = 19 MB
        assert fast.slices(torch.zeros(32, 3, 224, 224)) == 3
