"""Where the time goes: torch.profiler op tables for vitkit (optimized and reference) and transformers on the same
model and weights.

    python benchmarks/profile_ops.py swin_tiny_patch4_window7_224 --threads 2 --batch-size 8 --task infer

Prints, per implementation, the top aten ops by self CPU time, and a side-by-side table of op groups
(matmul, attention, norm, activation, copies, other), which is what the README's findings are based on.
"""

import argparse
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from vitkit.bench import TASKS
from vitkit.bench import contenders as bench
from vitkit.engine import optimize

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
    p.add_argument("--task", choices=TASKS, default="infer")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--full", action="store_true", help="print the per-op tables too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device("cpu")
    vk, hf = bench.build_hf_pair(args.model, None, {})
    input_size = tuple(vk.data_config["input_size"])
    x, y = bench.inputs(args.batch_size, input_size, vk.config.num_classes, dev)
    contenders = [
        bench.Contender("vitkit[reference]", "vitkit", "reference", "fp32", vk.eval()),
        bench.Contender("transformers", "transformers", "eager", "fp32", hf.eval()),
    ]
    if args.task == "infer":  # an optimized model is inference-only
        contenders.insert(0, bench.Contender("vitkit", "vitkit", "optimized", "fp32", optimize(vk)))
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
    cols = [c.name for c in contenders]
    print("\n| op group | " + " | ".join(f"{n} ms" for n in cols) + " |\n|---|" + "---:|" * len(cols))
    for g in [*names, "**total**"]:
        ms = [sum(results[n].values()) if g == "**total**" else results[n].get(g, 0.0) for n in cols]
        print(f"| {g} | " + " | ".join(f"{v:.1f}" for v in ms) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
