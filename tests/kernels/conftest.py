"""The kernels' numeric tests run on every vector width this CPU can execute: the native build and, on x86-64, the
AVX2 build (8 floats per vector, 16 registers) and the SSE one (4 floats), each with its own register blocking."""

import platform

import pytest

from vitkit import kernels


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return {word for line in f if line.startswith("flags") for word in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def _builds() -> list[str | None]:
    """None: the default (native) build; else a ``$VITKIT_KERNEL_ARCH`` value."""
    if platform.machine() != "x86_64" or kernels.compiler() is None:
        return [None]
    builds: list[str | None] = [None]
    if {"avx2", "fma", "bmi2", "movbe"} <= _cpu_flags():
        builds.append("-march=x86-64-v3")
    return [*builds, "-march=x86-64"]


@pytest.fixture(scope="module", params=_builds(), ids=lambda flags: flags or "native")
def kernel_build(request):
    """The kernels built (or taken from the cache) for one target, for every test of a module."""
    patch = pytest.MonkeyPatch()
    if request.param:
        patch.setenv("VITKIT_KERNEL_ARCH", request.param)
    kernels.forget()
    yield request.param
    patch.undo()
    kernels.forget()
