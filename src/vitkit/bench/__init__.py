"""Speed and memory benchmarks: ``vitkit bench MODEL`` and the scripts in ``benchmarks/`` share this package.

``machine`` (CPU model and features, matmul peak) <- ``contenders`` (vitkit optimized / reference / faster modes,
transformers, timm with the same weights) <- ``timing`` (alternating repeats) and ``memory`` (peak in a fresh
process) <- ``runner`` (:func:`benchmark`) <- ``report`` (ratios, tables, files).
"""

from vitkit.bench.contenders import DTYPES, MODES
from vitkit.bench.machine import device_tag, machine_info
from vitkit.bench.report import TASKS, format_table, ratios, round_range, write_result
from vitkit.bench.runner import benchmark

__all__ = [
    "DTYPES",
    "MODES",
    "TASKS",
    "benchmark",
    "device_tag",
    "format_table",
    "machine_info",
    "ratios",
    "round_range",
    "write_result",
]
