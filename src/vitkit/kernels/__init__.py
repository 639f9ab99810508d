"""Native CPU kernels, compiled from C on first use and loaded with ctypes: the bottom layer of vitkit.

Only where PyTorch has no fast op for a hot loop (Swin's window attention, in inference and with a backward pass for
training; small multi-head attention in inference). Each kernel is one C file beside this package (with the shared
``vec.h``: vectors and register blocks of the width the build targets), built with the system C compiler at ``-O3
-march=native`` (``-fopenmp`` where PyTorch runs on GNU OpenMP, so the kernel shares its threads) into the user's
private cache (:mod:`vitkit.kernels.library` says how the cache is trusted and each file verified). The Python
wrappers check every shape before a pointer reaches C and count their calls (:func:`call_counts`), so a benchmark can
say what actually ran. Which kernel runs when is decided by the engine (:mod:`vitkit.engine`: ``optimize`` and
``training_path``).
"""

from collections import Counter

from vitkit.kernels.library import compiler, forget, load, trusted_cache, unavailable_reason

_calls: Counter[str] = Counter()


def count_call(name: str) -> None:
    _calls[name] += 1


def call_counts() -> dict[str, int]:
    """How many times each kernel ran in this process (since the last :func:`reset_call_counts`)."""
    return dict(_calls)


def reset_call_counts() -> None:
    _calls.clear()


__all__ = [
    "call_counts",
    "compiler",
    "count_call",
    "forget",
    "load",
    "reset_call_counts",
    "trusted_cache",
    "unavailable_reason",
]
