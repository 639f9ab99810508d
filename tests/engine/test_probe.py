"""The probe that picks oneDNN's fused linear or the plain ops from a measurement on this CPU."""

import pytest
import torch

import vitkit
from tests.conftest import randomize_
from tests.tiny import tiny_overrides
from vitkit.engine import optimize
from vitkit.engine import probe as probe_module
from vitkit.engine.linear import HAS_BF16_FUSED_LINEAR, HAS_FUSED_LINEAR, EngineLinear
from vitkit.engine.probe import MARGIN, LinearProbe, probe_linear

needs_onednn = pytest.mark.skipif(not HAS_FUSED_LINEAR, reason="PyTorch built without oneDNN")


def tiny(name: str) -> torch.nn.Module:
    return randomize_(vitkit.create_model(name, num_classes=5, **tiny_overrides(name, 16))).eval()


def test_the_plain_ops_must_be_clearly_faster_to_be_chosen():
    assert LinearProbe("float32", "s", onednn_ms=1.0, plain_ms=1.0).use_onednn
    assert LinearProbe("float32", "s", onednn_ms=1.0, plain_ms=1.0 / MARGIN + 1e-9).use_onednn
    assert not LinearProbe("float32", "s", onednn_ms=1.0, plain_ms=0.5).use_onednn
    line = LinearProbe("bfloat16", "256x8 -> 16 + GELU", onednn_ms=1.0, plain_ms=0.5).line()
    assert "bfloat16 256x8 -> 16 + GELU" in line and line.endswith("-> plain F.linear")


@needs_onednn
def test_a_probe_times_both_paths_and_is_kept_for_the_process():
    result = probe_linear(torch.float32, 24, 40, torch.get_num_threads())
    assert result.dtype == "float32" and result.shape == "256x24 -> 40 + GELU"
    assert 0 < result.onednn_ms < 1e3 and 0 < result.plain_ms < 1e3
    assert probe_linear(torch.float32, 24, 40, torch.get_num_threads()) is result


@needs_onednn
@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"])
def test_optimize_records_the_probe_and_follows_its_choice(name, monkeypatch):
    model = tiny(name)
    x = torch.randn(2, *model.data_config["input_size"])
    with torch.no_grad():
        ref = model(x)
    fast = optimize(model)
    fc1 = next(m for n, m in model.named_modules() if n.endswith("mlp.fc1"))
    assert [p.dtype for p in fast.optimization.probes] == ["float32", "bfloat16"][: 1 + HAS_BF16_FUSED_LINEAR]
    assert all(f"-> {fc1.out_features} + GELU" in p.shape for p in fast.optimization.probes)
    assert any(line.startswith("probe float32") for line in fast.optimization.lines())
    assert fast.optimization.to_dict()["probes"][0]["use_onednn"] in (True, False)

    # a CPU where the plain ops win: the blocks and the linears take them, with the same numbers
    slow = lambda dtype, i, o, threads: LinearProbe(str(dtype).removeprefix("torch."), "s", 2.0, 1.0)
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


def test_no_probe_without_oneDNN_or_with_fused_linear_off(monkeypatch):
    model = tiny("vit_small_patch16_224")
    assert optimize(model, fused_linear=False).optimization.probes == []

    def fail(*args):
        raise AssertionError("no probe expected")

    monkeypatch.setattr(vitkit.engine, "probe_linear", fail)
    monkeypatch.setattr(vitkit.engine, "HAS_FUSED_LINEAR", False)
    assert optimize(model).optimization.probes == []


def test_probe_module_measures_only_where_onednn_exists(monkeypatch):
    monkeypatch.setattr(probe_module, "HAS_FUSED_LINEAR", False)
    probe_linear.cache_clear()
    with pytest.raises(RuntimeError, match="not available"):
        probe_linear(torch.float32, 8, 8, 1)
    probe_linear.cache_clear()
