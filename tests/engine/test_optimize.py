"""vitkit.optimize over the whole registry: the same logits as the reference, with and without the C compiler, at the
native size, at a size that needs padding, batch 1 and batch > 1; and an optimized model stays inference-only."""

import copy
import pickle

import pytest
import torch

import vitkit
from tests.conftest import randomize_
from tests.tiny import tiny_overrides
from vitkit import kernels
from vitkit.engine import is_optimized, optimize
from vitkit.engine.linear import HAS_FUSED_LINEAR, EngineLinear
from vitkit.errors import VitkitError
from vitkit.models.registry import get_entry

ALL = vitkit.list_models()


def build(name: str, head_width: int | None = 16) -> torch.nn.Module:
    """A tiny randomised model whose heads the native kernels accept (head width 16)."""
    return randomize_(vitkit.create_model(name, num_classes=5, **tiny_overrides(name, head_width))).eval()


def odd_size(name: str, h: int, w: int) -> tuple[int, int]:
    """A size that needs padding (Swin: windows and merging; CvT: convs that round down; ViT: another grid)."""
    family = get_entry(name).family
    if family == "vit":
        p = get_entry(name).config.patch_size
        return h + p, w + 2 * p
    return h + 3, w + 5


@pytest.fixture(params=["kernels", "no compiler"])
def compiler(request, monkeypatch, tmp_path):
    """Run each test with the native kernels, and as on a machine without a C compiler (PyTorch paths)."""
    if request.param == "no compiler":
        monkeypatch.setenv("CC", "/nonexistent/cc")
        monkeypatch.setenv("VITKIT_CACHE", str(tmp_path))
        kernels.forget()
    yield request.param
    kernels.forget()


@pytest.mark.parametrize("name", ALL)
def test_optimized_equals_reference(name, compiler):
    model = build(name)
    c, h, w = model.data_config["input_size"]
    with pytest.warns(UserWarning, match="not used") if compiler == "no compiler" else _nothing():
        fast = optimize(model)
    assert is_optimized(fast) and not is_optimized(model)
    for size in ((h, w), odd_size(name, h, w)):
        for batch in (1, 3):
            x = torch.randn(batch, c, *size)
            with torch.no_grad():
                ref = model(x)
                out = fast(x)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5, msg=f"{name} {size} batch {batch}")
    ready = [s == "ready" for s in fast.optimization.kernels.values()]
    assert all(ready) if compiler == "kernels" and kernels.compiler() is not None else not any(ready)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("family", ["vit", "swin", "cvt"])
def test_fast_paths_really_run(family):
    """The native kernels run for CPU float32 inference and not under autograd (where the reference runs)."""
    name = {"vit": "vit_small_patch16_224", "swin": "swin_tiny_patch4_window7_224", "cvt": "cvt_13_224"}[family]
    if kernels.compiler() is None:
        pytest.skip("no C compiler here")
    fast = optimize(build(name))
    x = torch.randn(2, *fast.data_config["input_size"])
    kernels.reset_call_counts()
    with torch.no_grad():
        fast(x)
    assert sum(kernels.call_counts().values()) > 0
    kernels.reset_call_counts()
    x.requires_grad_(True)
    fast(x).sum().backward()  # a saliency map: gradients w.r.t. the input flow through the reference ops
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert kernels.call_counts() == {}


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_without_no_grad_the_fast_path_still_runs(name):
    """An optimized model's parameters need no gradient, so a plain call (no torch.no_grad) runs the fast path."""
    model = build(name)
    fast = optimize(model)
    x = torch.randn(2, *fast.data_config["input_size"])
    out = fast(x)
    assert not out.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_switches_each_give_the_same_logits(name):
    model = build(name)
    x = torch.randn(2, *model.data_config["input_size"])
    with torch.no_grad():
        ref = model(x)
        for switches in (
            dict(native_kernels=False),
            dict(fused_linear=False),
            dict(fold_batchnorm=False, precompute_bias=False),
            dict(micro_batch_bytes=1),
            dict(pack_weights=False),
            dict(cls_only_head=False),
        ):
            torch.testing.assert_close(optimize(model, **switches)(x), ref, atol=1e-5, rtol=1e-5, msg=str(switches))


@pytest.mark.parametrize("name", ALL)
def test_a_cls_head_lets_the_last_block_compute_its_cls_row_alone(name):
    """Logits of a model whose head reads [CLS] only: the last block's [CLS] row alone, the same numbers; the
    features, intermediates and any forward hook still see every token."""
    model = build(name)
    fast = optimize(model)
    cls_head = get_entry(name).family != "swin" and (
        model.config.cls_token if get_entry(name).family == "cvt" else model.config.global_pool == "token"
    )
    assert any("[CLS] row only" in line for line in fast.optimization.lines()) == cls_head
    x = torch.randn(2, *model.data_config["input_size"])
    with torch.no_grad():
        torch.testing.assert_close(fast(x), optimize(model, cls_only_head=False)(x), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(fast.forward_features(x), model.forward_features(x), atol=1e-5, rtol=1e-5)
    if not cls_head:
        return
    last = fast.blocks[-1] if get_entry(name).family == "vit" else fast.stages[-1].blocks[-1]
    for watched in (last, last.norm2, fast.norm):
        seen: list[torch.Size] = []
        handle = watched.register_forward_hook(lambda m, args, out, seen=seen: seen.append(out.shape))
        with torch.no_grad():
            torch.testing.assert_close(fast(x), model(x), atol=1e-5, rtol=1e-5)
        handle.remove()
        assert seen and seen[0][1] > 1  # the hook saw every token


def test_autocast_and_other_dtypes_take_the_reference_math():
    model = build("swin_tiny_patch4_window7_224")
    fast = optimize(model)
    x = torch.randn(2, *model.data_config["input_size"])
    kernels.reset_call_counts()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(x)
        ref = model(x)
    assert out.dtype == torch.bfloat16 and kernels.call_counts() == {}
    torch.testing.assert_close(out.float(), ref.float(), atol=0.1, rtol=0.05)
    assert any("cast once" in line for line in fast.optimization.lines())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # weights cast at every call instead
        plain = optimize(model, lowp_linear=False)
        assert not any("cast once" in line for line in plain.optimization.lines())
        torch.testing.assert_close(plain(x).float(), ref.float(), atol=0.1, rtol=0.05)
    fast64, model64 = optimize(copy.deepcopy(model).double()), copy.deepcopy(model).double()
    with torch.no_grad():
        torch.testing.assert_close(fast64(x.double()), model64(x.double()))


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_bf16_weights_run_the_model_in_bfloat16_and_return_float32(name):
    model = build(name)
    fast = optimize(model, bf16_weights=True)
    assert all(p.dtype == torch.bfloat16 for p in fast.parameters())
    assert all(b.dtype == torch.bfloat16 for b in fast.buffers() if b.is_floating_point())  # folded BN included
    x = torch.randn(3, *model.data_config["input_size"])
    with torch.no_grad():
        out, ref = fast(x), model(x)
        feats = fast.forward_intermediates(x, intermediates_only=True)  # float32 in, bf16 maps out
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.15, rtol=0.05)  # bf16 rounding all the way through
    assert all(f.dtype == torch.bfloat16 for f in feats)
    assert "bfloat16" in fast.optimization.summary()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the reference model is left as it was


@pytest.mark.skipif(not HAS_FUSED_LINEAR, reason="PyTorch without oneDNN: nothing is packed")
def test_packed_weights_replace_the_plain_ones_and_read_back_exactly():
    model = build("vit_small_patch16_224")
    fast = optimize(model, probe=False)  # oneDNN taken without timing it (on tiny shapes either may win)
    linears = [m for m in fast.modules() if isinstance(m, EngineLinear)]
    assert linears and all(m.packed is not None for m in linears)
    assert any("oneDNN's layout only" in line for line in fast.optimization.lines())
    # no second copy: the plain weights are no longer parameters, but read back (and save) exactly
    linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert sum(p.numel() for p in fast.parameters()) == sum(p.numel() for p in model.parameters()) - linear_weights
    ref_state, state = model.state_dict(), fast.state_dict()
    assert list(state) == list(ref_state) and all(torch.equal(state[k], v) for k, v in ref_state.items())
    x = torch.randn(2, *model.data_config["input_size"])
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(fast(x), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(copy.deepcopy(fast)(x), ref, atol=1e-5, rtol=1e-5)  # copies pack again
        torch.testing.assert_close(pickle.loads(pickle.dumps(fast))(x), ref, atol=1e-5, rtol=1e-5)
        fast64 = copy.deepcopy(fast).double()  # moved: plain weights in the new dtype
        torch.testing.assert_close(fast64(x.double()), copy.deepcopy(model).double()(x.double()))
    assert all(m.packed is None for m in fast64.modules() if isinstance(m, EngineLinear))
    assert all(m.packed is not None for m in copy.deepcopy(fast).modules() if isinstance(m, EngineLinear))
    # neither in bf16 nor with shared weights
    for other in (optimize(model, probe=False, bf16_weights=True), optimize(model, probe=False, share_weights=True)):
        assert all(m.packed is None for m in other.modules() if isinstance(m, EngineLinear))


def test_optimize_returns_a_copy_and_the_original_still_trains():
    model = build("cvt_13_224").train()
    fast = optimize(model)
    assert fast is not model and model.training and not fast.training
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in fast.parameters())
    model(torch.randn(2, *model.data_config["input_size"])).sum().backward()  # training the original works


def test_share_weights_reads_the_original_tensors():
    model = build("vit_small_patch16_224")
    fast = optimize(model, share_weights=True)
    assert fast.blocks[0].attn.qkv.weight is model.blocks[0].attn.qkv.weight
    assert model.blocks[0].attn.qkv.weight.requires_grad  # the original can go on training


def test_inplace_rewrites_the_model_itself():
    model = build("swin_tiny_patch4_window7_224")
    assert optimize(model, inplace=True) is model and is_optimized(model)


def test_an_optimized_model_refuses_training_and_new_weights():
    model = build("swin_tiny_patch4_window7_224")
    fast = optimize(model)
    with pytest.raises(VitkitError, match="cannot be trained"):
        fast.train()
    fast.eval()  # allowed
    with pytest.raises(VitkitError, match="load the weights into the reference model"):
        fast.load_state_dict(model.state_dict())
    with pytest.raises(VitkitError, match="already optimized"):
        optimize(fast)
    with pytest.raises(VitkitError, match="unknown switch"):
        optimize(model, turbo=True)
    with pytest.raises(VitkitError, match="not one of vitkit's models"):
        optimize(torch.nn.Linear(2, 2))


def test_state_dict_is_the_reference_one(tmp_path):
    """Saving an optimized model writes the reference's weights (folded tensors are not part of the state)."""
    model = build("cvt_13_224")
    fast = optimize(model)
    assert fast.state_dict().keys() == model.state_dict().keys()
    vitkit.save_pretrained(fast, tmp_path / "ck")
    loaded = vitkit.from_pretrained(tmp_path / "ck")
    x = torch.randn(1, *model.data_config["input_size"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_a_new_resolution_is_handled():
    """Precomputed bias + mask and micro-batch sizes follow the input size (any size the model accepts)."""
    model = build("swin_tiny_patch4_window7_224")
    fast = optimize(model)
    with torch.no_grad():
        for size in ((16, 16), (24, 40), (16, 16)):
            x = torch.randn(2, 3, *size)
            torch.testing.assert_close(fast(x), model(x), atol=1e-5, rtol=1e-5)


def test_attention_maps_of_an_optimized_model_equal_the_reference():
    model = build("swin_tiny_patch4_window7_224")
    fast = optimize(model)
    x = torch.randn(2, *model.data_config["input_size"])
    with torch.no_grad():
        ours, ref = fast.get_attention_maps(x), model.get_attention_maps(x)
    assert [m.name for m in ours] == [m.name for m in ref]
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.weights, b.weights)
        assert a.meta == b.meta


def test_report_says_what_was_swapped():
    fast = optimize(build("cvt_13_224"))
    text = fast.optimization.summary()
    assert "ConvProj -> vitkit.engine.cvt.FoldedConvProj" in text and "Block -> vitkit.engine.cvt.FastBlock" in text
    assert fast.optimization.to_dict()["swaps"][0]["modules"] > 0
    off = optimize(build("cvt_13_224"), fold_batchnorm=False, native_kernels=False)
    assert "FoldedConvProj" not in off.optimization.summary() and "switched off" in off.optimization.summary()


def test_swin_bias_and_mask_are_built_once_per_resolution(monkeypatch):
    from vitkit.models import swin

    fast = optimize(build("swin_tiny_patch4_window7_224"), native_kernels=False)
    calls = []
    real = swin.shift_mask
    monkeypatch.setattr(swin, "shift_mask", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    with torch.no_grad():
        fast(torch.randn(1, 3, 16, 16))
        first = len(calls)
        fast(torch.randn(2, 3, 16, 16))
        assert first > 0 and len(calls) == first  # the same resolution: nothing rebuilt
        fast(torch.randn(1, 3, 24, 24))
        assert len(calls) > first  # a new resolution gets its own
