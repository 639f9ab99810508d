"""The machine record: CPU features as the libraries may use them, and ISA caps in the file names."""

import pytest
import torch

from vitkit.bench import machine
from vitkit.bench.report import _features

ALL_FLAGS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"}


@pytest.fixture
def amx_cpu(monkeypatch):
    """A CPU with every x86 feature vitkit looks at, and no ISA cap set."""
    monkeypatch.setattr(machine, "cpu_flags", lambda: set(ALL_FLAGS))
    for name in machine.ISA_LIMITS:
        monkeypatch.delenv(name, raising=False)


def test_without_caps_the_flags_are_the_features(amx_cpu):
    assert machine.cpu_features() == {
        "avx2": True,
        "avx512": True,
        "avx512_bf16": True,
        "amx_bf16": True,
        "amx_int8": True,
        "neon": False,
    }
    assert machine.isa_limits() == {} and machine.cpu_supports_bf16()


@pytest.mark.parametrize(
    ("env", "off"),
    [
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, {"amx_bf16", "amx_int8"}),  # an AVX-512 CPU without AMX
        ({"DNNL_MAX_CPU_ISA": "avx512_core"}, {"avx512_bf16", "amx_bf16", "amx_int8"}),  # the older name, any case
        (
            {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
            {"avx512", "avx512_bf16", "amx_bf16", "amx_int8"},
        ),
        ({"ATEN_CPU_CAPABILITY": "default"}, {"avx512"}),
        ({"ONEDNN_MAX_CPU_ISA": "AVX10_1_512_AMX"}, set()),
        ({"ONEDNN_MAX_CPU_ISA": "NOT_AN_ISA"}, set()),  # unknown to us: recorded, nothing hidden
    ],
)
def test_isa_caps_hide_the_features_they_cap(amx_cpu, monkeypatch, env, off):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    features = machine.cpu_features()
    assert {name for name, on in features.items() if not on} == off | {"neon"}
    assert machine.cpu_supports_bf16() == ("avx512_bf16" not in off)
    info = machine.machine_info(torch.device("cpu"))
    assert info["isa_limits"] == env and info["cpu_features"] == features
    assert info["aten_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "capped: " + " ".join(f"{k}={v}" for k, v in env.items()) in _features(info)


def test_capped_runs_get_their_own_file_names(amx_cpu, monkeypatch):
    info = {"device": "cpu", "cpu": "Intel(R) Xeon(R) Processor", "cpu_count": 2}
    assert machine.device_tag(info) == "cpu-intel-r-xeon-r-processor-2c"
    info["isa_limits"] = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert machine.device_tag(info) == "cpu-intel-r-xeon-r-processor-2c-isa-avx2"
    info["cpu"] = "a CPU whose name is much longer than any file name should carry " * 2
    tag = machine.device_tag({**info, "isa_limits": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}})
    assert len(tag) == 60 and tag.endswith("-isa-avx512-core-bf16")
    assert machine.device_tag({**info, "device": "cuda", "gpu": "NVIDIA H100"}) == "cuda-nvidia-h100"
