"""Timing several contenders fairly on a noisy machine: warm-up each, then rotate the order every repeat."""

import math
import resource
import time
from collections.abc import Callable
from typing import Any

import torch

from vitkit.bench.machine import synchronize
from vitkit.kernels import call_counts


def time_once(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def minor_faults() -> int:
    """Page faults of this process so far (fresh pages from the OS; see :mod:`vitkit.engine.malloc`)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def time_alternating(
    contenders: list[Any],
    step: Callable[[Any], Any],
    *,
    device: torch.device,
    warmup: int,
    iters: int,
    repeats: int,
) -> dict[str, dict[str, Any]]:
    """Per contender: per-repeat mean seconds per batch, every iteration's seconds, page faults and native kernel
    calls, run in rotating order (repeat 1: A, B, C; repeat 2: B, C, A; ...) so drift hits all alike."""
    out: dict[str, dict[str, Any]] = {}
    for c in contenders:  # warm-up (and compile) each one before anything is timed
        first = time_once(lambda c=c: step(c), device)
        for _ in range(max(0, warmup - 1)):
            time_once(lambda c=c: step(c), device)
        out[c.name] = {"first_call_s": first, "repeat_s": [], "iter_s": [], "page_faults": 0, "kernel_calls": {}}
    n = len(contenders)
    for r in range(repeats):
        for j in range(n):
            c = contenders[(r + j) % n]
            faults, calls = minor_faults(), call_counts()
            times = [time_once(lambda c=c: step(c), device) for _ in range(iters)]
            rec = out[c.name]
            rec["page_faults"] += minor_faults() - faults
            for name, count in call_counts().items():
                rec["kernel_calls"][name] = rec["kernel_calls"].get(name, 0) + count - calls.get(name, 0)
            rec["repeat_s"].append(sum(times) / len(times))
            rec["iter_s"].extend(times)
    return out


def alternate_calls(runs: dict[str, Callable[[], Any]], rounds: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds of every round and mean page faults per call, for each named call; two warm-up calls each first.

    The simple form of :func:`time_alternating` for the A/B scripts in ``benchmarks/``.
    """
    times: dict[str, list[float]] = {k: [] for k in runs}
    faults = dict.fromkeys(runs, 0.0)
    for f in runs.values():
        f(), f()
    for _ in range(rounds):
        for k, f in runs.items():
            f0 = minor_faults()
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
            faults[k] += (minor_faults() - f0) / rounds
    return times, faults
