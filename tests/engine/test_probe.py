"""The probe that picks oneDNN's fused linear or the plain ops from a measurement on this CPU."""

import pytest
import torch

import vitkit
from tests.conftest import randomize_
from tests.tiny import tiny_overrides
from vitkit.engine import optimize
from vitkit.engine import probe as probe_module
from vitkit.engine.linear import HAS_BF16_FUSED_LINEAR, HAS_FUSED_LINEAR, EngineLinear
from vitkit.engine.probe import KERNEL_MARGIN, MARGIN, Bf16Probe, KernelProbe, LinearProbe, probe_linear
from vitkit.kernels import call_counts, compiler, reset_call_counts

needs_onednn = pytest.mark.skipif(not HAS_FUSED_LINEAR, reason="PyTorch built without oneDNN")
needs_cc = pytest.mark.skipif(compiler() is None, reason="no C compiler: no native kernels to probe")


def tiny(name: str) -> torch.nn.Module:
    return randomize_(vitkit.create_model(name, num_classes=5, **tiny_overrides(name, 16))).eval()


def test_the_plain_ops_must_be_clearly_faster_to_be_chosen():
    assert LinearProbe("float32", "s", onednn_ms=1.0, plain_ms=1.0, after_ms=2.0).use_onednn
    assert LinearProbe("float32", "s", onednn_ms=1.0, plain_ms=1.0 / MARGIN + 1e-9, after_ms=2.0).use_onednn
    assert not LinearProbe("float32", "s", onednn_ms=1.0, plain_ms=0.5, after_ms=2.0).use_onednn
    line = LinearProbe("bfloat16", "256x8 -> 16 + GELU", onednn_ms=1.0, plain_ms=0.5, after_ms=2.0).line()
    assert "bfloat16 256x8 -> 16 + GELU" in line and line.endswith("-> plain F.linear")


def test_gelu_runs_after_onednns_matmul_only_where_that_is_clearly_faster():
    assert LinearProbe("float32", "s", onednn_ms=1.0, plain_ms=2.0, after_ms=1.0).gelu_epilogue
    assert LinearProbe("float32", "s", onednn_ms=1.0, plain_ms=2.0, after_ms=1.0 / MARGIN + 1e-9).gelu_epilogue
    after = LinearProbe("float32", "256x8 -> 16 + GELU", onednn_ms=1.3, plain_ms=1.2, after_ms=1.0)
    assert not after.gelu_epilogue and after.use_onednn  # oneDNN then GELU beats the plain ops, which beat the fused
    assert after.line().endswith("-> oneDNN, GELU after it") and after.record()["gelu_epilogue"] is False
    assert not LinearProbe("float32", "s", onednn_ms=1.3, plain_ms=0.9, after_ms=1.0).use_onednn


@needs_onednn
def test_a_probe_times_the_three_paths_and_is_kept_for_the_process():
    result = probe_linear(torch.float32, 24, 40, torch.get_num_threads())
    assert result.dtype == "float32" and result.shape == "256x24 -> 40 + GELU"
    assert 0 < result.onednn_ms < 1e3 and 0 < result.plain_ms < 1e3 and 0 < result.after_ms < 1e3
    assert probe_linear(torch.float32, 24, 40, torch.get_num_threads()) is result


@needs_onednn
@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_optimize_records_the_probe_and_follows_its_choice(name, monkeypatch):
    model = tiny(name)
    x = torch.randn(2, *model.data_config["input_size"])
    with torch.no_grad():
        ref = model(x)
    fast = optimize(model)
    fc1 = max((m for n, m in model.named_modules() if n.endswith("mlp.fc1")), key=lambda m: m.in_features)
    linears = linear_probes(fast)
    assert [p.dtype for p in linears] == ["float32", "bfloat16"][: 1 + HAS_BF16_FUSED_LINEAR]
    assert all(p.shape == f"256x{fc1.in_features} -> {fc1.out_features} + GELU" for p in linears)  # the widest
    assert any(line.startswith("probe float32") for line in fast.optimization.lines())
    assert fast.optimization.to_dict()["probes"][0]["use_onednn"] in (True, False)

    # a CPU where the plain ops win: the blocks and the linears take them, with the same numbers
    slow = lambda dtype, i, o, threads: LinearProbe(str(dtype).removeprefix("torch."), "s", 2.0, 1.0, 2.0)
    monkeypatch.setattr(vitkit.engine, "probe_linear", slow)
    plain = optimize(model)
    assert all(not getattr(m, "fused", False) for m in plain.modules())
    assert all(not m.onednn and m.packed is None for m in plain.modules() if isinstance(m, EngineLinear))
    assert plain.engine_settings.fused_linear  # the user's settings stay as given; the report says what ran
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ref, atol=1e-5, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(plain(x).float(), ref, atol=0.1, rtol=0.05)

    unprobed = optimize(model, probe=False)
    assert unprobed.optimization.probes == []
    assert all(m.fused for m in unprobed.modules() if hasattr(m, "fused"))


def linear_probes(model: torch.nn.Module) -> list[LinearProbe]:
    return [p for p in model.optimization.probes if isinstance(p, LinearProbe)]


def test_no_probe_without_oneDNN_or_with_fused_linear_off(monkeypatch):
    model = tiny("vit_small_patch16_224")
    assert linear_probes(optimize(model, fused_linear=False)) == []
    assert optimize(model, fused_linear=False, native_kernels=False, bf16_in_float32=False).optimization.probes == []

    def fail(*args):
        raise AssertionError("no probe expected")

    monkeypatch.setattr(vitkit.engine, "probe_linear", fail)
    monkeypatch.setattr(vitkit.engine, "HAS_FUSED_LINEAR", False)
    assert linear_probes(optimize(model)) == []


def test_probe_module_measures_only_where_onednn_exists(monkeypatch):
    monkeypatch.setattr(probe_module, "HAS_FUSED_LINEAR", False)
    probe_linear.cache_clear()
    with pytest.raises(RuntimeError, match="not available"):
        probe_linear(torch.float32, 8, 8, 1)
    probe_linear.cache_clear()


# --- the native kernels' probes ------------------------------------------------------------------------------------
def test_a_kernel_is_dropped_only_where_pytorch_is_clearly_faster():
    assert KernelProbe("attention", "s", kernel_ms=1.05, torch_ms=1.0).use_kernel  # near: the kernel stays
    assert KernelProbe("attention", "s", kernel_ms=KERNEL_MARGIN, torch_ms=1.0).use_kernel
    slow = KernelProbe("window_attention", "2 x 3 heads", kernel_ms=20.0, torch_ms=1.0)
    assert not slow.use_kernel and slow.line().endswith("-> PyTorch") and "window_attention 2 x 3 heads" in slow.line()
    assert slow.record() == {
        "kernel": "window_attention",
        "shape": "2 x 3 heads",
        "kernel_ms": 20.0,
        "torch_ms": 1.0,
        "use_kernel": False,
    }


@needs_cc
@pytest.mark.real_probes
def test_kernel_probes_time_both_paths_on_the_models_head_shape():
    probes = probe_module.kernel_probes(tiny("vit_small_patch16_224"))  # heads 16 wide
    vit_blocks = tiny("vit_small_patch16_224").blocks
    (p,) = probes
    assert p.kernel == "attention" and p.shape == f"2 x {vit_blocks[0].attn.num_heads} heads x 197 tokens x 16"
    assert 0 < p.kernel_ms < 1e3 and 0 < p.torch_ms < 1e3
    assert probe_module.kernel_probes(tiny("vit_small_patch16_224"))[0] is p  # kept for the process
    (w,) = probe_module.kernel_probes(tiny("swin_tiny_patch4_window7_224"))
    assert w.kernel == "window_attention" and "windows of" in w.shape and w.kernel_ms > 0 and w.torch_ms > 0
    narrow = vitkit.create_model("vit_small_patch16_224", embed_dim=24, num_heads=3, depth=1)  # heads 8 wide
    assert probe_module.kernel_probes(narrow) == []  # a shape the kernel does not take: nothing to probe


@needs_cc
@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_a_kernel_slower_than_pytorch_here_is_left_out(name, monkeypatch):
    """What a build for a CPU without AVX-512 gets: the report says why, PyTorch's attention runs, same numbers."""
    model = tiny(name)
    x = torch.randn(2, *model.data_config["input_size"])
    slow = lambda kernel: lambda *args: KernelProbe(kernel, "s", kernel_ms=30.0, torch_ms=1.0)
    monkeypatch.setattr(probe_module, "probe_attention", slow("attention"))
    monkeypatch.setattr(probe_module, "probe_window_attention", slow("window_attention"))
    fast = optimize(model)
    (state,) = fast.optimization.kernels.values()
    assert state.startswith("not used (slower than PyTorch")
    assert [p.kernel for p in fast.optimization.probes if isinstance(p, KernelProbe)] == list(fast.optimization.kernels)
    assert any(line.endswith("-> PyTorch") for line in fast.optimization.lines())
    reset_call_counts()
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), atol=1e-5, rtol=1e-5)
    assert call_counts() == {}
    assert all(p.kernel_ms == 30.0 for p in optimize(model, probe=True).optimization.probes if hasattr(p, "kernel"))
    unprobed = optimize(model, probe=False)  # no probe: the kernels run
    assert all(state == "ready" for state in unprobed.optimization.kernels.values())
    with torch.no_grad():
        unprobed(x)
    assert sum(call_counts().values()) > 0


# --- bf16 as float32 products of bf16 values ---------------------------------------------------------------------
def test_float32_must_be_clearly_faster_to_compute_bf16():
    assert Bf16Probe("s", bf16_ms=1.0, float32_ms=0.5).use_float32
    assert not Bf16Probe("s", bf16_ms=1.0, float32_ms=1.0).use_float32
    line = Bf16Probe("256x8 -> 16 + GELU", bf16_ms=2.0, float32_ms=1.0).line()
    assert line.startswith("probe bf16 matmul 256x8 -> 16 + GELU") and line.endswith(
        "-> float32 products of bf16 values"
    )


@pytest.mark.real_probes
def test_the_bf16_probe_times_both_paths():
    p = probe_module.probe_bf16_matmul(24, 40, torch.get_num_threads(), HAS_BF16_FUSED_LINEAR, HAS_FUSED_LINEAR)
    assert p.shape == "256x24 -> 40 + GELU" and 0 < p.bf16_ms < 1e3 and 0 < p.float32_ms < 1e3
    assert p.record()["use_float32"] == p.use_float32


@needs_cc
@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_where_float32_is_faster_bf16_runs_as_float32_products(name, monkeypatch):
    """A CPU without AMX: bf16 linears (and Swin's window attention, in its kernel) as float32 products of the bf16
    values; logits as close to the float32 ones as autocast's own (bf16 values either way)."""
    model = tiny(name)
    x = torch.randn(2, *model.data_config["input_size"])
    swin = name.startswith("swin")
    monkeypatch.setattr(probe_module, "probe_bf16_matmul", lambda *a: Bf16Probe("s", bf16_ms=3.0, float32_ms=1.0))
    fast, weights16 = optimize(model), optimize(model, bf16_weights=True)
    assert any(isinstance(p, Bf16Probe) and p.use_float32 for p in fast.optimization.probes)
    linears = [m for m in fast.modules() if isinstance(m, EngineLinear)]
    assert linears and all(m.bf16_in_float32 for m in linears)
    with torch.no_grad():
        ref = model(x)
        reset_call_counts()
        fast(x)
        in_float32 = call_counts()  # the kernel calls of a float32 pass
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast_error = (model(x).float() - ref).abs().max()
            reset_call_counts()
            out = fast(x)
            assert call_counts() == (in_float32 if swin else {})  # Swin: every kernel call; ViT / CvT: SDPA in bf16
            assert out.dtype == torch.bfloat16
            assert all(m.prepared(torch.bfloat16, x.device)[3] == torch.float32 for m in linears)
        reset_call_counts()
        out16 = weights16(x)
        assert (sum(call_counts().values()) > 0) == swin and out16.dtype == torch.float32
    assert (out.float() - ref).abs().max() <= 2 * autocast_error + 1e-3
    assert (out16 - ref).abs().max() <= 4 * autocast_error + 1e-2  # bf16 rounding in the residual stream too

    monkeypatch.setattr(probe_module, "probe_bf16_matmul", lambda *a: Bf16Probe("s", bf16_ms=1.0, float32_ms=3.0))
    for plain in (optimize(model), optimize(model, bf16_in_float32=False)):  # bf16 faster, or switched off
        assert not any(m.bf16_in_float32 for m in plain.modules() if isinstance(m, EngineLinear))
        reset_call_counts()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            plain(x)
        assert call_counts() == {}  # the kernels are float32-only: bf16 runs PyTorch's attention


# --- GELU in oneDNN's epilogue or after the matmul -----------------------------------------------------------------
def gelu_calls(model: torch.nn.Module, x: torch.Tensor) -> int:
    """How many times a forward pass runs PyTorch's in-place GELU."""
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(x)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::gelu_")


@needs_onednn
@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_where_pytorchs_gelu_is_faster_it_runs_after_onednns_matmul(name, monkeypatch):
    """A CPU whose oneDNN GELU epilogue is slow (AVX2): oneDNN's matmul, then PyTorch's GELU in place; same numbers."""
    model = tiny(name)
    x = torch.randn(2, *model.data_config["input_size"])
    fc1s = [m for n, m in model.named_modules() if n.endswith("mlp.fc1")]
    with torch.no_grad():
        ref = model(x)

    def probe(after_ms):
        return lambda dtype, *a: LinearProbe(str(dtype).removeprefix("torch."), "s", 1.0, 2.0, after_ms)

    monkeypatch.setattr(vitkit.engine, "probe_linear", probe(after_ms=1.0))
    assert gelu_calls(optimize(model), x) == 0  # GELU in the epilogue
    monkeypatch.setattr(vitkit.engine, "probe_linear", probe(after_ms=0.5))
    after = optimize(model)
    linears = [m for m in after.modules() if isinstance(m, EngineLinear)]
    assert linears and all(torch.float32 in m.gelu_after and m.packed is not None for m in linears)
    assert "oneDNN, GELU after it" in "\n".join(after.optimization.lines())
    # every MLP but a [CLS]-only last block's (that one runs on one row per image)
    assert len(fc1s) - 1 <= gelu_calls(after, x) <= len(fc1s)
    with torch.no_grad():
        torch.testing.assert_close(after(x), ref, atol=1e-5, rtol=1e-5)
