"""glibc's malloc thresholds, which decide how often a CPU process page-faults its large tensors in again.

glibc serves a block above ``M_MMAP_THRESHOLD`` with fresh pages from the OS and returns them on free; heap memory
above ``M_TRIM_THRESHOLD`` at the top is returned too. Both thresholds adapt at run time (the mmap one grows to the
largest block freed so far, at most 32 MiB; trim follows at twice that), so how many page faults a forward pass
costs depends on what the process did before, and two implementations timed in one process change each other's
history (benchmarks/README.md has the measurements). Presets:

* ``default``: leave glibc alone (what a user's process does).
* ``pinned``: 32 MiB / 64 MiB fixed, the values the adaptive thresholds end at, so they stop moving with what ran
  before (the heap's layout still does). Blocks above 32 MiB still fault on every call.
* ``tuned``: 1 GiB / 2 GiB: freed memory stays with the process, so a steady inference loop stops faulting (the
  process keeps its peak memory resident). The ``vitkit`` command applies it to itself (``VITKIT_MALLOC``).

Fixed values switch glibc's adaptation off for the rest of the process. No effect (and ``False``) elsewhere than
Linux with glibc. Same idea as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment or an
LD_PRELOADed jemalloc, but from inside a running process.
"""

import ctypes
import platform

PRESETS: dict[str, tuple[int, int] | None] = {
    "default": None,
    "pinned": (32 * 2**20, 64 * 2**20),
    "tuned": (2**30, 2**31 - 1),
}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>


def set_malloc(preset: str) -> bool:
    """Apply a preset from :data:`PRESETS`; True when glibc took the values (``default`` changes nothing)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown malloc preset {preset!r}; choose from {', '.join(PRESETS)}")
    values = PRESETS[preset]
    if values is None:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    mmap_bytes, trim_bytes = values
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_bytes))
