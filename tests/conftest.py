import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _untimed_probes(request, monkeypatch):
    """The engine's kernel probes say "kernel" and its bf16 probe "bf16" without timing anything: which path a test
    sees must not depend on this machine or its load. Tests marked ``real_probes`` time them."""
    if request.node.get_closest_marker("real_probes"):
        return
    from vitkit.engine import probe

    def fake(kernel):
        return lambda *args: probe.KernelProbe(kernel, "not timed", 1.0, 1.0)

    monkeypatch.setattr(probe, "probe_attention", fake("attention"))
    monkeypatch.setattr(probe, "probe_window_attention", fake("window_attention"))
    monkeypatch.setattr(probe, "probe_bf16_matmul", lambda *args: probe.Bf16Probe("not timed", 1.0, 1.0))


def randomize_(module: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Random values in every parameter and float buffer (norm weights/biases and BN statistics too)."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("norm.weight", "norm1.weight", "norm2.weight")) or "layernorm" in name:
                t.copy_(1 + torch.randn(t.shape, generator=g) * 0.2)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * std)
    return module


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny models: no OpenMP spin-waiting when the CPU is shared (10x faster here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
