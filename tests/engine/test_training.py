"""The engine's training shortcuts: the same logits and gradients as the reference model, which they leave as it was."""

import copy
import types

import pytest
import torch

from tests.tiny import TINY, tiny_overrides
from vitkit import create_model
from vitkit.engine import training_path
from vitkit.kernels import call_counts, compiler

needs_kernel = pytest.mark.skipif(compiler() is None, reason="no C compiler: the Swin shortcut needs its kernel")


def tiny(family: str, **changes) -> torch.nn.Module:
    name, overrides, img, _ = TINY[family]
    return create_model(name, **{**overrides, "img_size": img, **changes}).train()


def step(model: torch.nn.Module, x: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and every parameter's gradient of one forward / backward, dropout drawn from ``seed``."""
    torch.manual_seed(seed)
    logits = model(x)
    logits.square().sum().backward()
    return logits.detach(), [p.grad for p in model.parameters()]


def distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Euclidean distance between two lists of tensors taken as one vector (``a`` may be bf16)."""
    return float(torch.cat([t.float().flatten() for t in a]).sub(torch.cat([t.flatten() for t in b])).norm())


def same_step_both_ways(model: torch.nn.Module, x: torch.Tensor, atol: float = 1e-6) -> bool:
    """One step of ``model`` and of a copy on the training path give the same logits and every gradient; returns
    whether a shortcut applied. Leaves the copy's ``forward`` methods as they were."""
    shortcut = copy.deepcopy(model)
    ref_logits, ref_grads = step(model, x)
    with training_path(shortcut) as applies:
        logits, grads = step(shortcut, x)
    torch.testing.assert_close(logits, ref_logits, atol=atol, rtol=1e-5)
    assert all(g is not None for g in grads)  # every parameter still gets its gradient (DDP needs them all)
    for g, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, ref, atol=atol, rtol=1e-4)
    for b, ref in zip(shortcut.buffers(), model.buffers(), strict=True):  # BatchNorm's running statistics
        torch.testing.assert_close(b, ref, atol=atol, rtol=1e-5)
    assert not any("forward" in vars(m) for m in shortcut.modules())  # the reference model again
    return applies


@pytest.mark.parametrize(
    "changes",
    [dict(), dict(drop_path_rate=0.3), dict(qkv_bias=False), dict(depth=1)],
    ids=["plain", "drop-path", "no-qkv-bias", "one-block"],  # drop path draws one number per image either way
)
def test_vit_cls_head_trains_through_the_last_blocks_cls_row_with_the_same_numbers(changes):
    assert same_step_both_ways(tiny("vit", **changes), torch.randn(3, 3, 32, 32))


def test_a_replaced_qkv_layer_still_gives_the_same_numbers():
    """A layer that is not a plain ``nn.Linear`` (a quantised or adapted one) runs whole; the [CLS] query is kept."""

    class Adapted(torch.nn.Linear):
        def forward(self, x):
            return super().forward(x) * 1.5

    model = tiny("vit")
    old = model.blocks[-1].attn.qkv
    model.blocks[-1].attn.qkv = Adapted(old.in_features, old.out_features)
    assert same_step_both_ways(model, torch.randn(2, 3, 32, 32))


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
    assert same_step_both_ways(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16), training_path(model):
        assert model(x).shape == (2, 5)


@pytest.mark.parametrize(
    "model",
    [tiny("vit", global_pool="avg"), tiny("vit", class_token=False, global_pool="avg")],
    ids=["vit-avg-pool", "vit-no-cls"],
)
def test_models_without_a_shortcut_keep_their_forward(model):
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


def tiny_swin(**changes) -> torch.nn.Module:
    """Heads 16 wide (the kernel's unit); 16 px: a 4 x 4 map of 2 x 2 windows, then a shifted block."""
    name = "swin_tiny_patch4_window7_224"
    return create_model(name, **{**tiny_overrides(name, head_width=16), "num_classes": 5, **changes}).train()


def kernel_calls() -> tuple[int, int]:
    counts = call_counts()
    return counts.get("window_attention", 0), counts.get("window_attention_backward", 0)


@needs_kernel
@pytest.mark.parametrize(
    "changes, img",
    [(dict(), 16), (dict(drop_path_rate=0.3, proj_drop_rate=0.0), 16), (dict(window_size=4, img_size=24), 24)],
    ids=["plain", "drop-path", "padded-windows"],  # 24 px: a 6 x 6 map in 4 x 4 windows, padded to 8 x 8
)
def test_swin_trains_through_the_window_kernel_with_the_same_numbers(changes, img):
    model = tiny_swin(**changes)
    for m in model.modules():  # a bias that matters
        if hasattr(m, "relative_position_bias_table"):
            torch.nn.init.normal_(m.relative_position_bias_table, std=0.5)
    before = kernel_calls()
    assert same_step_both_ways(model, torch.randn(2, 3, img, img), atol=1e-5)
    after = kernel_calls()
    assert after[0] > before[0] and after[1] > before[1]  # the kernel ran, both ways


@needs_kernel
def test_swin_blocks_fall_back_where_the_kernel_does_not_fit():
    x = torch.randn(2, 3, 16, 16)
    model = tiny_swin(attn_drop_rate=0.2)  # the kernel has no dropout: the reference block runs, same noise
    shortcut = copy.deepcopy(model)
    ref_logits, _ = step(model, x)
    before = kernel_calls()
    with training_path(shortcut):
        logits, _ = step(shortcut, x)
        assert kernel_calls() == before
        shortcut.eval()  # dropout off: the kernel again
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert shortcut(x).shape == (2, 5)  # bf16: the reference path
        assert kernel_calls() == before
        shortcut(x)
        assert kernel_calls()[0] > before[0]
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)


@needs_kernel
def test_swin_hooks_and_attention_maps_see_the_reference_block():
    model = tiny_swin()
    x = torch.randn(1, 3, 16, 16)
    attn = model.layers[0].blocks[1].attn
    seen = []
    handle = attn.register_forward_hook(lambda m, args, out: seen.append(out.shape))
    with training_path(model):
        model(x)
        maps = model.get_attention_maps(x)
    handle.remove()
    assert seen and seen[0] == (1, 4, 4, 32)  # windows x tokens x channels, as the reference computes it
    assert maps[0].weights.shape == (1, 4, 2, 4, 4)


def test_swin_with_gradient_checkpointing_or_without_native_kernels_keeps_its_forward(monkeypatch):
    model = tiny_swin()
    model.set_grad_checkpointing(True)
    with training_path(model) as applies:
        assert not applies
    monkeypatch.setenv("VITKIT_NATIVE", "0")
    with training_path(tiny_swin()) as applies:
        assert not applies


@needs_kernel
def test_swin_keeps_its_forward_where_the_kernel_probes_slower_than_pytorch(monkeypatch):
    from vitkit.engine import probe

    monkeypatch.setattr(probe, "probe_window_attention", lambda *a: probe.KernelProbe("window_attention", "s", 9, 1))
    with training_path(tiny_swin()) as applies:
        assert not applies


def test_cvt_strided_projections_run_in_float32_under_bf16_autocast_only():
    """Without autocast the path is the plain pass. Under bf16 autocast the strided projections run in float32, the
    more precise of the two: logits and gradients are no farther from the float32 pass's than the plain bf16 pass's
    (a tiny CvT's BatchNorm over two images makes every bf16 gradient noisy, so the test compares distances)."""
    model = tiny("cvt")
    x = torch.randn(2, 3, 32, 32)
    assert same_step_both_ways(model, x)  # float32: nothing changes
    strided = [m for m in model.modules() if type(m).__name__ == "ConvProj" and max(m.conv.stride) > 1]
    seen: list[torch.dtype] = []
    for m in strided:  # the copies below carry these hooks too
        m.conv.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    fp32, plain, shortcut = (copy.deepcopy(model) for _ in range(3))
    ref_logits, ref_grads = step(fp32, x)
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_logits, plain_grads = step(plain, x)
        plain_dtypes, seen[:] = list(seen), []
        with training_path(shortcut) as applies:
            logits, grads = step(shortcut, x)
    assert applies and strided
    assert set(plain_dtypes) == {torch.bfloat16} and set(seen) == {torch.float32} and len(seen) == len(plain_dtypes)

    assert distance([logits], [ref_logits]) <= 1.5 * distance([plain_logits], [ref_logits]) + 1e-3
    assert distance(grads, ref_grads) <= 1.5 * distance(plain_grads, ref_grads) + 1e-3


@pytest.mark.parametrize(
    "changes",
    [dict(), dict(drop_path_rate=0.3), dict(qkv_bias=False), dict(depths=(1, 1, 1))],
    ids=["plain", "drop-path", "no-qkv-bias", "one-block"],
)
def test_cvt_cls_head_trains_through_the_last_blocks_cls_row_with_the_same_numbers(changes):
    """The last block's [CLS] row alone: the same logits, gradients and BatchNorm statistics; the query convolution,
    whose output only the other rows read, still runs for its BatchNorm and gets its (zero) gradients."""
    from vitkit.engine.training import _cvt_cls_row_forward, shortcuts

    model = tiny("cvt", **changes)
    assert _cvt_cls_row_forward in [fn for _, fn in shortcuts(model)]
    shortcut = copy.deepcopy(model)
    rows = []
    shortcut.stages[-1].blocks[-1].mlp.fc2.register_forward_hook(lambda m, args, out: rows.append(out.shape[1]))
    with training_path(shortcut):
        step(shortcut, torch.randn(3, 3, 32, 32))
    assert rows == [1 + (32 // 16) ** 2]  # a hook on the last block: every token

    assert same_step_both_ways(model, torch.randn(3, 3, 32, 32))
    q_conv = model.stages[-1].blocks[-1].attn.conv_proj_q
    assert all(p.grad is not None and not p.grad.any() for p in q_conv.parameters())  # zeros, as in the full pass


def test_cvt_cls_row_is_what_the_head_reads_and_nothing_else_changes():
    from vitkit.engine.training import _cvt_last_block_forward

    model = tiny("cvt")
    x = torch.randn(2, 3, 32, 32)
    last = model.stages[-1].blocks[-1]
    seen = []
    real = _cvt_last_block_forward

    def spy(self, x, H, W):
        out = real(self, x, H, W)
        seen.append(out.shape[1])
        return out

    tokens = 1 + (32 // 16) ** 2
    with training_path(model):
        last.forward = types.MethodType(spy, last)  # the swap the path made, watched
        model(x)
        assert model.forward_features(x).shape == (2, tokens, 32)
        assert model.get_attention_maps(x)[-1].weights.shape[-2] == tokens
    assert seen == [1, tokens, tokens]  # logits: the [CLS] row; features and recorded maps: every token
    no_cls = tiny("cvt", cls_token=False)
    with training_path(no_cls):
        assert "forward" not in vars(no_cls)  # mean-pooled head: the strided projections only


def test_cvt_with_bf16_weights_keeps_the_plain_projections():
    """Weights already in bf16 (a cast model, or FSDP's mixed precision): the reference projection, no dtype clash."""
    model = tiny("cvt").to(torch.bfloat16)
    x = torch.randn(2, 3, 32, 32, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)
        ref = model(x)
        with training_path(model) as applies:
            torch.manual_seed(0)
            out = model(x)
    assert applies
    torch.testing.assert_close(out, ref)


def test_cvt_with_gradient_checkpointing_keeps_its_forward():
    model = tiny("cvt")
    model.set_grad_checkpointing(True)
    with training_path(model) as applies:
        assert not applies


# --- bf16 linears as float32 products, where float32 matmuls are faster (CPUs without AMX) ----------------------
@pytest.fixture
def float32_faster(monkeypatch):
    from vitkit.engine import probe

    monkeypatch.setattr(probe, "probe_bf16_matmul", lambda *a: probe.Bf16Probe("s", bf16_ms=3.0, float32_ms=1.0))


def test_a_bf16_linear_as_float32_products_gives_autocasts_numbers_and_gradients():
    from vitkit.engine.training import _bf16_linear_forward

    layer = torch.nn.Linear(64, 48)
    x = torch.randn(6, 64, requires_grad=True)
    results, saved = [], []
    for forward in (None, _bf16_linear_forward):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t)
        with hooks, torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x) if forward is None else forward(layer, x)
        assert y.dtype == torch.bfloat16 and set(saved) == {torch.bfloat16}  # autocast's memory for what it keeps
        saved.clear()
        y.float().square().sum().backward()
        results.append([y.float(), layer.weight.grad, layer.bias.grad, x.grad])
    one_ulp = dict(atol=1e-5, rtol=2**-7)  # the same bf16 products, summed in another order, then rounded
    for ours, autocast in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, autocast, **one_ulp)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_a_bf16_linear_over_slices_of_rows_gives_the_whole_batchs_numbers(monkeypatch, x_dtype):
    """Past ``WHOLE_BYTES`` the float32 copies are made a slice of rows at a time (the last one short): the output
    and the input's gradient row for row the same as in one piece, the weight's and bias's to float32 summation
    order before their bf16 rounding."""
    from vitkit.engine import training

    layer = torch.nn.Linear(24, 40)
    x = torch.randn(3, 37, 24, dtype=x_dtype, requires_grad=True)  # 111 rows
    results = []
    for whole, slice_bytes in ((2**30, 2**20), (0, 40 * 4 * 10)):  # one piece; slices of 10 rows
        monkeypatch.setattr(training, "WHOLE_BYTES", whole)
        monkeypatch.setattr(training, "SLICE_BYTES", slice_bytes)
        assert len(list(training._row_slices(111, 40))) == (1 if whole else 12)
        layer.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = training._bf16_linear_forward(layer, x)
        y.float().square().sum().backward()
        assert y.dtype == torch.bfloat16 and x.grad.dtype == x_dtype and layer.weight.grad.dtype == torch.float32
        results.append([y, x.grad, layer.weight.grad, layer.bias.grad])
    (y, gx, gw, gb), (y_sliced, gx_sliced, gw_sliced, gb_sliced) = results
    assert torch.equal(y_sliced, y) and torch.equal(gx_sliced, gx)
    torch.testing.assert_close(gw_sliced, gw, atol=1e-5, rtol=2**-7)  # at most one bf16 step apart
    torch.testing.assert_close(gb_sliced, gb, atol=1e-5, rtol=2**-7)


@pytest.mark.parametrize("family", ["vit", "swin", "cvt"])
def test_bf16_training_runs_every_linear_as_float32_products_where_that_is_faster(family, float32_faster):
    from vitkit.engine.training import _bf16_linear_forward, shortcuts

    model = tiny(family)
    x = torch.randn(2, 3, *model.data_config["input_size"][1:])
    assert not any(fn is _bf16_linear_forward for _, fn in shortcuts(model))  # float32 step: not this one
    fp32, plain, shortcut = (copy.deepcopy(model) for _ in range(3))
    ref_logits, ref_grads = step(fp32, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain_logits, plain_grads = step(plain, x)
        linears = [m for m in shortcut.modules() if type(m) is torch.nn.Linear]
        assert {m for m, fn in shortcuts(shortcut) if fn is _bf16_linear_forward} == set(linears)
        with training_path(shortcut) as applies:
            logits, grads = step(shortcut, x)
        checkpointed = copy.deepcopy(model)
        checkpointed.set_grad_checkpointing(True)
        assert not any(fn is _bf16_linear_forward for _, fn in shortcuts(checkpointed))
    assert applies and logits.dtype == plain_logits.dtype == torch.bfloat16
    assert all(g is not None for g in grads)

    assert distance([logits], [ref_logits]) <= 1.5 * distance([plain_logits], [ref_logits]) + 1e-3
    assert distance(grads, ref_grads) <= 1.5 * distance(plain_grads, ref_grads) + 1e-3


def test_bf16_training_keeps_bf16_linears_where_bf16_is_faster():
    from vitkit.engine.training import _bf16_linear_forward, shortcuts

    with torch.autocast("cpu", dtype=torch.bfloat16):  # the untimed probe of the tests says bf16 (as with AMX)
        assert not any(fn is _bf16_linear_forward for _, fn in shortcuts(tiny("swin")))
