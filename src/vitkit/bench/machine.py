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


def cpu_features() -> dict[str, bool]:
    flags = cpu_flags()
    return {name: flag in flags for name, flag in CPU_FEATURES.items()}


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
    """A short file-name-safe name of the device, e.g. ``cpu-amd-epyc-2c`` or ``cuda-nvidia-h100``."""
    if str(info["device"]).startswith("cuda"):
        name, prefix = info.get("gpu", "gpu"), "cuda"
    else:
        name, prefix = f"{info['cpu']} {info['cpu_count']}c", "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{prefix}-{slug}"[:60]


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
