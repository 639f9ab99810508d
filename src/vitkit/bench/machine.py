"""The machine a benchmark ran on: CPU model and features, devices, load, the practical matmul peak."""

import os
import platform
import re
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from vitkit.errors import VitkitError
from vitkit.utils.devices import is_device_name
from vitkit.version import __version__

# /proc/cpuinfo flags that decide which CPU path is fastest (oneDNN vs MKL linear, bf16 dot products, AMX tiles)
CPU_FEATURES = {
    "avx2": "avx2",
    "avx512": "avx512f",
    "avx512_bf16": "avx512_bf16",
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
    "neon": "asimd",
}

# Environment variables that cap the instructions a library may use, so that one machine can stand in for a
# smaller CPU (oneDNN: the matmuls and fused linears; ATen: PyTorch's vector kernels; MKL; vitkit's C kernels).
# They are recorded with every result, and the features above are reported as the capped libraries see them.
ISA_LIMITS = (
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "VITKIT_KERNEL_ARCH",
)
# oneDNN's ISA names, in rising order (aliases share a rank), and the lowest one that lets it use each feature
_ONEDNN_RANK = {
    **dict.fromkeys(("SSE41", "AVX"), 0),
    **dict.fromkeys(("AVX2", "AVX2_VNNI", "AVX2_VNNI_2"), 1),
    **dict.fromkeys(("AVX512_CORE", "AVX512_CORE_VNNI"), 2),
    "AVX512_CORE_BF16": 3,
    **dict.fromkeys(("AVX512_CORE_FP16", "AVX10_1_512"), 4),
    **dict.fromkeys(("AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16"), 5),
}
_ONEDNN_NEEDS = {"avx2": 1, "avx512": 2, "avx512_bf16": 3, "amx_bf16": 5, "amx_int8": 5}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not is_device_name(name) or name == "mps":
        raise VitkitError(f"--device must be cpu, cuda[:N] or auto, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VitkitError(f"--device {name}: CUDA is not available in this torch ({torch.__version__})")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    m = re.search(r"^(flags|Features)\s*:\s*(.*)$", text, re.M)
    return set(m.group(2).split()) if m else set()


def isa_limits() -> dict[str, str]:
    """The instruction-set caps set in the environment (:data:`ISA_LIMITS`), by variable."""
    return {name: value for name in ISA_LIMITS if (value := os.environ.get(name, "").strip())}


def cpu_features() -> dict[str, bool]:
    """The CPU's features as the libraries may use them: its flags, less what an ISA cap in the environment hides."""
    flags = cpu_flags()
    features = {name: flag in flags for name, flag in CPU_FEATURES.items()}
    limits = isa_limits()
    onednn = limits.get("ONEDNN_MAX_CPU_ISA", limits.get("DNNL_MAX_CPU_ISA", "")).upper()
    if onednn in _ONEDNN_RANK:
        for name, rank in _ONEDNN_NEEDS.items():
            features[name] = features[name] and _ONEDNN_RANK[onednn] >= rank
    if limits.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2"):
        features["avx512"] = False
    return features


def cpu_supports_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX); without them bf16 autocast on CPU is emulated and slow."""
    features = cpu_features()
    return features["avx512_bf16"] or features["amx_bf16"]


def cpu_name() -> str:
    try:
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_features": cpu_features(),
        "cpu_bf16": cpu_supports_bf16(),
        "isa_limits": isa_limits(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "vitkit": __version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def device_tag(info: dict[str, Any]) -> str:
    """A short file-name-safe name of the device, e.g. ``cpu-amd-epyc-2c``, ``cuda-nvidia-h100``; an ISA cap is
    appended (``...-2c-isa-avx2``) so that capped runs do not overwrite the machine's own."""
    cap = ""
    if str(info["device"]).startswith("cuda"):
        name, prefix = info.get("gpu", "gpu"), "cuda"
    else:
        name, prefix = f"{info['cpu']} {info['cpu_count']}c", "cpu"
        limits = info.get("isa_limits") or {}
        if limits:
            value = limits.get("ONEDNN_MAX_CPU_ISA") or limits.get("DNNL_MAX_CPU_ISA") or next(iter(limits.values()))
            cap = "-isa-" + re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{prefix}-{slug}"[: 60 - len(cap)] + cap


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Dense ``torch.mm`` GFLOP/s (median of repeats): the machine's practical peak for this dtype."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)
