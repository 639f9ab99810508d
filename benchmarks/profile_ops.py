"""Where the time goes: torch.profiler op tables for vitkit and transformers on the same model and weights.

    python benchmarks/profile_ops.py swin_tiny_patch4_window7_224 --threads 2 --batch-size 8 --task infer

Prints, per implementation, the top aten ops by self CPU time, and a side-by-side table of op groups
(matmul, attention, norm, activation, copies, other), which is what the README's findings are based on.
"""

import argparse
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from vitkit.tools import bench

GROUPS = {  # first match wins
    "attention": ("scaled_dot_product", "softmax", "bmm", "baddbmm", "vitkit::"),  # vitkit:: = native kernels
    "matmul (linear)": ("addmm", "aten::mm", "aten::matmul", "aten::linear", "linear_pointwise"),
    "convolution": ("convolution", "conv2d", "mkldnn_convolution", "_convolution", "conv_depthwise"),
    "norm": ("layer_norm", "batch_norm", "native_layer_norm", "native_batch_norm"),
    "activation": ("gelu",),
    "copies / layout": ("copy_", "clone", "contiguous", "cat", "roll", "pad", "constant_pad", "index", "gather"),
    "elementwise": ("add", "mul", "div", "sub", "masked_fill", "where"),
}


def group_of(name: str) -> str:
    for g, keys in GROUPS.items():
        if any(k in name for k in keys):
            return g
    return "other"


def profile_one(c: bench.Contender, step, iters: int) -> tuple[dict[str, float], str]:
    step(c)  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            step(c)
    groups: dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        if e.key.startswith(("aten::", "mkldnn", "vitkit::")):
            groups[group_of(e.key)] += e.self_cpu_time_total / 1e3 / iters  # ms per step
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return dict(groups), table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--task", choices=bench.TASKS, default="infer")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--full", action="store_true", help="print the per-op tables too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    vk, hf = bench.build_hf_pair(args.model, None, {})
    input_size = tuple(vk.data_config["input_size"])
    x, y = bench._inputs(args.batch_size, input_size, vk.config.num_classes, dev)
    contenders = [
        bench.Contender("vitkit", "vitkit", "eager", "fp32", vk.eval()),
        bench.Contender("transformers", "transformers", "eager", "fp32", hf.eval()),
    ]
    if args.task == "infer":
        step = lambda c: bench.infer_step(c, x, dev)
    else:
        step = lambda c: bench.train_step(c, x, y, dev)
    results = {}
    for c in contenders:
        groups, table = profile_one(c, step, args.iters)
        results[c.name] = groups
        if args.full:
            print(f"## {c.name}\n{table}", file=sys.stderr)
    names = sorted(set().union(*results.values()), key=lambda g: -results["transformers"].get(g, 0))
    print(f"### {args.model} · {args.task} · batch {args.batch_size} · {args.threads} threads · ms/step (self time)")
    print("\n| op group | vitkit ms | transformers ms | difference ms |\n|---|---:|---:|---:|")
    for g in names:
        a, b = results["vitkit"].get(g, 0.0), results["transformers"].get(g, 0.0)
        print(f"| {g} | {a:.1f} | {b:.1f} | {a - b:+.1f} |")
    ta, tb = sum(results["vitkit"].values()), sum(results["transformers"].values())
    print(f"| **total** | {ta:.1f} | {tb:.1f} | {ta - tb:+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
