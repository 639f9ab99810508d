"""A/B of one module-level switch of vitkit, alternating with transformers in the same process, same weights.

    python benchmarks/switch_ab.py swin_tiny_patch4_window7_224 vitkit.layers.micro_batch MICRO_BATCH_BYTES \\
        --on 33554432 --off 0 --batch-size 8 --rounds 10 --threads 2 [--malloc default|pinned|tuned]

Each round times one batch of: vitkit with the switch on, vitkit with it off, transformers (inference, no
autograd). Prints median ms per batch, page faults per batch and the per-round ratios; the switch is restored
afterwards. The micro-batch and page-fault A/B numbers in benchmarks/README.md come from this script.
"""

import argparse
import ast
import importlib
import resource
import statistics
import time
from collections.abc import Callable

import torch

from vitkit.tools import bench
from vitkit.tools.malloc import PRESETS, set_malloc


def alternate(runs: dict[str, Callable[[], object]], rounds: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Seconds of every round and mean page faults per call, for each run; two warm-up calls each first."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    faults = dict.fromkeys(runs, 0.0)
    for f in runs.values():
        f(), f()
    for _ in range(rounds):
        for k, f in runs.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
            faults[k] += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / rounds
    return times, faults


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("module", help="module that holds the switch, e.g. vitkit.layers.micro_batch")
    p.add_argument("name", help="the switch, e.g. MICRO_BATCH_BYTES")
    p.add_argument("--on", required=True, help="a Python literal")
    p.add_argument("--off", required=True, help="a Python literal")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--malloc", choices=tuple(PRESETS), default="default")
    p.add_argument("--img-size", type=int, default=None, help="default: the model's")
    p.add_argument("--set", type=bench._override, action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. depth=2")  # fmt: skip
    args = p.parse_args(argv)
    module = importlib.import_module(args.module)
    if not hasattr(module, args.name):
        p.error(f"{args.module} has no {args.name}")
    on, off = ast.literal_eval(args.on), ast.literal_eval(args.off)
    set_malloc(args.malloc)
    torch.set_num_threads(args.threads)
    vk, hf = bench.build_hf_pair(args.model, args.img_size, dict(args.set))
    x = torch.randn(args.batch_size, *vk.data_config["input_size"])

    def vitkit_with(value):
        def run():
            setattr(module, args.name, value)
            return vk(x)

        return run

    runs = {"on": vitkit_with(on), "off": vitkit_with(off), "transformers": lambda: hf(pixel_values=x).logits}
    original = getattr(module, args.name)
    try:
        with torch.no_grad():
            diff = (runs["on"]() - runs["off"]()).abs().max().item()
            times, faults = alternate(runs, args.rounds)
    finally:
        setattr(module, args.name, original)

    print(f"{args.model} · batch {args.batch_size} · {args.threads} threads · malloc {args.malloc} · "
          f"{args.module}.{args.name} on={on!r} off={off!r} · max |logits on - off| {diff:.1e}")  # fmt: skip
    print("| contender | ms / batch (median) | page faults / batch |")
    print("|---|---:|---:|")
    for k in runs:
        print(f"| {k} | {1e3 * statistics.median(times[k]):.1f} | {faults[k]:.0f} |")

    def per_round(a: str, b: str) -> float:
        return statistics.median(t / u for t, u in zip(times[a], times[b], strict=True))

    print(
        f"per-round median ratios: transformers/on {per_round('transformers', 'on'):.3f}, "
        f"transformers/off {per_round('transformers', 'off'):.3f}, off/on {per_round('off', 'on'):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
