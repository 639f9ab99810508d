"""The engine's training shortcuts: the same logits and gradients as the reference model, which they leave as it was."""

import copy

import pytest
import torch

from tests.tiny import TINY
from vitkit import create_model
from vitkit.engine import training_path


def tiny(family: str, **changes) -> torch.nn.Module:
    name, overrides, img, _ = TINY[family]
    return create_model(name, **{**overrides, "img_size": img, **changes}).train()


def step(model: torch.nn.Module, x: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and every parameter's gradient of one forward / backward, dropout drawn from ``seed``."""
    torch.manual_seed(seed)
    logits = model(x)
    logits.square().sum().backward()
    return logits.detach(), [p.grad for p in model.parameters()]


@pytest.mark.parametrize(
    "changes",
    [dict(), dict(drop_path_rate=0.3), dict(qkv_bias=False), dict(depth=1)],
    ids=["plain", "drop-path", "no-qkv-bias", "one-block"],  # drop path draws one number per image either way
)
def test_vit_cls_head_trains_through_the_last_blocks_cls_row_with_the_same_numbers(changes):
    model = tiny("vit", **changes)
    x = torch.randn(3, 3, 32, 32)
    shortcut = copy.deepcopy(model)
    ref_logits, ref_grads = step(model, x)
    with training_path(shortcut) as applies:
        logits, grads = step(shortcut, x)
    assert applies
    torch.testing.assert_close(logits, ref_logits, atol=1e-6, rtol=1e-5)
    assert all(g is not None for g in grads)  # every parameter still gets its gradient (DDP needs them all)
    for g, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, ref, atol=1e-6, rtol=1e-4)
    assert "forward" not in vars(shortcut)  # the model is the reference model again


def test_dropout_stays_on_in_training_and_off_in_eval():
    """Dropout draws masks of the rows it sees, so its noise differs from the full pass; its switch does not."""
    model = tiny("vit", proj_drop_rate=0.5, attn_drop_rate=0.5)
    x = torch.randn(3, 3, 32, 32)
    with training_path(model):
        torch.manual_seed(0)
        a = model(x)
        b = model(x)
        assert not torch.allclose(a, b)
        model.eval()
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))


def test_gradient_checkpointing_and_autocast_follow_the_shortcut():
    model = tiny("vit")
    model.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 32, 32)
    shortcut = copy.deepcopy(model)
    ref_logits, ref_grads = step(model, x)
    with training_path(shortcut):
        logits, grads = step(shortcut, x)
    torch.testing.assert_close(logits, ref_logits, atol=1e-6, rtol=1e-5)
    for g, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, ref, atol=1e-6, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16), training_path(shortcut):
        assert shortcut(x).shape == (2, 5)


@pytest.mark.parametrize(
    "model",
    [tiny("vit", global_pool="avg"), tiny("vit", class_token=False, global_pool="avg"), tiny("swin"), tiny("cvt")],
    ids=["vit-avg-pool", "vit-no-cls", "swin", "cvt"],
)
def test_models_that_read_more_than_cls_keep_their_forward(model):
    with training_path(model) as applies:
        assert not applies
        assert "forward" not in vars(model)


def test_hooks_and_recorded_attention_see_every_token_and_features_are_whole():
    model = tiny("vit")
    x = torch.randn(2, 3, 32, 32)
    tokens = 1 + (32 // 8) ** 2
    with training_path(model):
        assert model.forward_features(x).shape == (2, tokens, 32)
        for watched in (model.blocks[-1], model.blocks[-1].mlp.fc2, model.norm):
            seen = []
            handle = watched.register_forward_hook(lambda m, args, out, seen=seen: seen.append(out.shape[1]))
            model(x)
            handle.remove()
            assert seen == [tokens], watched
        maps = model.get_attention_maps(x)
        assert maps[-1].weights.shape == (2, 2, tokens, tokens)
        seen = []
        handle = model.blocks[0].register_forward_hook(lambda m, args, out: seen.append(out.shape[1]))
        model(x)  # a hook on an earlier block does not stop the shortcut
        handle.remove()
        assert seen == [tokens]


def test_the_model_is_restored_after_an_error():
    model = tiny("vit")
    with pytest.raises(ValueError, match="channels"), training_path(model):
        model(torch.randn(1, 1, 32, 32))
    assert "forward" not in vars(model)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_a_training_run_takes_the_shortcut(tmp_path, monkeypatch):
    from tests.train.helpers import tiny as tiny_run
    from vitkit.train import loop, train

    taken = []
    real = loop.training_path

    def spy(model):
        cm = real(model)

        class Spy:
            def __enter__(self):
                taken.append(cm.__enter__())

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Spy()

    monkeypatch.setattr(loop, "training_path", spy)
    train(tiny_run(tmp_path, epochs=1))
    assert taken and all(taken)
