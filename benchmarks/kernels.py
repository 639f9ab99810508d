"""vitkit's native CPU kernels against the PyTorch ops they replace, per problem shape (fp32 inference).

    python benchmarks/kernels.py --threads 2 --batch-size 8 --rounds 7 [--out benchmarks/results]

Window attention: Swin-T's four stage shapes at 224 px, W-MSA and SW-MSA; the PyTorch side is what
``swin.WindowAttention`` does without the kernel after the qkv linear (roll, partition into windows, SDPA with the
bias (+ mask), reverse, roll back). Multi-head attention: CvT-13's three stages and ViT-B/16 at 224 and 448 px;
the PyTorch side is SDPA plus the head merge ``(B, heads, N, d) -> (B, N, C)``. Alternating, median ms of
``--rounds`` rounds; both sides are checked to agree (max |difference| in the table).
"""

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from vitkit.kernels import attention as native_attention
from vitkit.kernels import window_attention as native_window
from vitkit.utils.io import atomic_write_json, atomic_write_text

SWIN_T = [(96, 3, 56), (192, 6, 28), (384, 12, 14), (768, 24, 7)]  # channels, heads, map side at 224 px
ATTENTION = [  # name, queries, keys, heads, head width, batch factor
    ("CvT-13 stage 1", 3136, 784, 1, 64),
    ("CvT-13 stage 2", 784, 196, 3, 64),
    ("CvT-13 stage 3", 197, 50, 6, 64),
    ("ViT-B/16 224 px", 197, 197, 12, 64),
    ("ViT-B/16 448 px", 785, 785, 12, 64),
]


def window_reference(qkv, bias, heads, window, shift, scale):
    B, H, W, C3 = qkv.shape
    C, n = C3 // 3, window * window
    nh, nw, hd = H // window, W // window, C // heads
    x = torch.roll(qkv, (-shift, -shift), (1, 2)) if shift else qkv
    x = x.view(B, nh, window, nw, window, 3, heads, hd).permute(5, 0, 1, 3, 6, 2, 4, 7)
    # as swin.WindowAttention: windows as batch for W-MSA, (B, nW * heads) for SW-MSA's per-window mask
    q, k, v = x.reshape(3, B * nh * nw, heads, n, hd) if not shift else x.reshape(3, B, nh * nw * heads, n, hd)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[..., :n].unsqueeze(0), scale=scale)
    out = out.reshape(B, nh, nw, heads, window, window, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, H, W, C)
    return torch.roll(out, (shift, shift), (1, 2)) if shift else out


def alternate(fns, rounds: int) -> list[float]:
    times = [[] for _ in fns]
    for f in fns:
        f()
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1e3 for t in times]


def compare(kernel: str, shape: str, ours, ref, gflop: float, rounds: int) -> dict:
    diff = (ours() - ref()).abs().max().item()
    t_ref, t_ours = alternate([ref, ours], rounds)
    return {"kernel": kernel, "shape": shape, "torch_ms": t_ref, "native_ms": t_ours, "gflops": gflop, "max_diff": diff}


def window_case(B: int, C: int, heads: int, side: int, shift: int, rounds: int) -> dict:
    window, hd, n = 7, C // heads, 49
    windows = (side // window) ** 2
    bias = torch.randn(windows if shift else 1, heads, n, n)
    if shift:
        bias = bias + torch.where(torch.rand(windows, 1, n, n) < 0.3, -100.0, 0.0)
    bias = bias.flatten(0, 1) if shift else bias[0]
    bias = F.pad(bias, (0, native_window.padded_width(n) - n), value=float("-inf")).contiguous()
    qkv = torch.randn(B, side, side, 3 * C)
    args = (qkv, bias, heads, window, shift, hd**-0.5)
    shape = f"Swin-T {side}x{side}, C {C}, {'SW' if shift else 'W'}-MSA"
    gflop = 2 * 2 * B * windows * heads * n * n * hd / 1e9
    return compare("window_attention", shape, partial(native_window.window_attention, *args),
                   partial(window_reference, *args), gflop, rounds)  # fmt: skip


def attention_case(B: int, name: str, N: int, Nk: int, heads: int, d: int, rounds: int) -> dict:
    q, k, v = (torch.randn(B, t, heads * d).view(B, t, heads, d).transpose(1, 2) for t in (N, Nk, Nk))

    def ours():
        return native_attention.attention(q, k, v, d**-0.5).transpose(1, 2).reshape(B, N, heads * d)

    def ref():
        return F.scaled_dot_product_attention(q, k, v, scale=d**-0.5).transpose(1, 2).reshape(B, N, heads * d)

    gflop = 2 * 2 * B * heads * N * Nk * d / 1e9
    return compare("attention", f"{name}: {N} x {Nk}, {heads} heads x {d}", ours, ref, gflop, rounds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default=None, help="folder for kernels_cpu_t<threads>_b<batch>.json / .md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if native_window.library() is None or native_attention.library() is None:
        raise SystemExit("the native kernels are not available here (no C compiler?)")
    B = args.batch_size
    with torch.inference_mode():
        rows = [window_case(B, C, heads, side, shift, args.rounds) for C, heads, side in SWIN_T for shift in (0, 3)]
        rows += [attention_case(B, *case, args.rounds) for case in ATTENTION]
    lines = [f"### native kernels vs PyTorch · batch {B} · {args.threads} threads · torch {torch.__version__}", "",
             "| kernel | shape | PyTorch ms | native ms | speed-up | PyTorch GFLOP/s | native GFLOP/s | max diff |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['kernel']} | {r['shape']} | {r['torch_ms']:.2f} | {r['native_ms']:.2f} | "
                     f"{r['torch_ms'] / r['native_ms']:.2f}x | {r['gflops'] / r['torch_ms'] * 1e3:.0f} | "
                     f"{r['gflops'] / r['native_ms'] * 1e3:.0f} | {r['max_diff']:.1e} |")  # fmt: skip
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        stem = Path(args.out) / f"kernels_cpu_t{args.threads}_b{B}"
        atomic_write_json(stem.with_suffix(".json"), {"threads": args.threads, "batch_size": B, "rows": rows})
        atomic_write_text(stem.with_suffix(".md"), table)
        print(f"wrote {stem}.json/.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
