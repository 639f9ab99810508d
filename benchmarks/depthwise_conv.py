"""CvT's depthwise convolutions, forward and forward + backward, float32 against bfloat16, on this CPU.

    PYTHONPATH=src python benchmarks/depthwise_conv.py --batch-size 32 --threads 2

The shapes of CvT-13's query (stride 1) and key / value (stride 2) projections at 224 px, channels-last as the
model lays its token maps out. The reason the training path (``vitkit.engine.training_path``) runs the strided ones
in float32 under CPU bf16 autocast: PyTorch's bf16 backward of a strided depthwise convolution is far slower there.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from vitkit.bench.machine import cpu_name, load_avg

SHAPES = [(64, 56, 1), (64, 56, 2), (192, 28, 1), (192, 28, 2), (384, 14, 1), (384, 14, 2)]  # channels, side, stride


def median_ms(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--shapes", type=int, default=len(SHAPES), help="the first N shapes (a quick check)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, load {load_avg()}\n")
    print("| channels, side, stride | fp32 fwd ms | fp32 fwd+bwd ms | bf16 fwd ms | bf16 fwd+bwd ms | bf16 / fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for channels, side, stride in SHAPES[: a.shapes]:
        ms = {}
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(a.batch_size, channels, side, side, dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
            w = torch.randn(channels, 1, 3, 3, dtype=dtype, requires_grad=True)

            def conv(x=x, w=w, stride=stride, groups=channels):
                return F.conv2d(x, w, None, stride, 1, 1, groups)

            grad = torch.randn_like(conv())
            ms[dtype] = (
                median_ms(conv, a.repeats),
                median_ms(lambda conv=conv, x=x, w=w, grad=grad: torch.autograd.grad(conv(), (x, w), grad), a.repeats),
            )
        (f32, f32b), (b16, b16b) = ms[torch.float32], ms[torch.bfloat16]
        cells = f"{f32:.2f} | {f32b:.2f} | {b16:.2f} | {b16b:.2f} | {b16b / f32b:.1f}x"
        print(f"| {channels}, {side}, {stride} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
