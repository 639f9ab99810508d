"""Training step with the reference attention as it chooses against SDPA for every call, alternating, same model.

    PYTHONPATH=src python benchmarks/attention_training.py cvt_13_224 vit_small_patch16_224 --batch-size 8 \
        --rounds 5 --threads 2

A training step (forward, cross-entropy, backward; no optimizer: it is the same for both) of the reference model in
float32 and under bf16 autocast, once as ``vitkit.layers.attention`` decides (the explicit path for CPU bf16 training
up to ``EXPLICIT_TRAINING_ELEMENTS`` weights, and for a learned bias) and once with that limit at 0 (SDPA wherever the
bias is not learned). The numbers behind the limit's comment and the "Attention in training" paragraph of
benchmarks/README.md.
"""

import argparse
import importlib
import statistics
import time

import torch
import torch.nn.functional as F

from vitkit import create_model
from vitkit.bench.machine import cpu_name, load_avg

attention_module = importlib.import_module("vitkit.layers.attention")


def step(model, x, y, amp: bool, explicit_limit: int) -> float:
    """Seconds of one forward + backward with ``EXPLICIT_TRAINING_ELEMENTS`` set to ``explicit_limit``."""
    limit = attention_module.EXPLICIT_TRAINING_ELEMENTS
    attention_module.EXPLICIT_TRAINING_ELEMENTS = explicit_limit
    try:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t0
    finally:
        attention_module.EXPLICIT_TRAINING_ELEMENTS = limit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    limit = attention_module.EXPLICIT_TRAINING_ELEMENTS
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, load {load_avg()}")
    print("| model | batch | dtype | as chosen ms | SDPA ms | SDPA / as chosen (per round) |")
    print("|---|---:|---|---:|---:|---|")
    for name in a.models:
        model = create_model(name).train()
        x = torch.randn(a.batch_size, *model.data_config["input_size"])
        y = torch.randint(0, model.config.num_classes, (a.batch_size,))
        for amp in (False, True):
            step(model, x, y, amp, limit), step(model, x, y, amp, 0)  # warm-up
            chosen, sdpa = [], []
            for _ in range(a.rounds):
                chosen.append(step(model, x, y, amp, limit))
                sdpa.append(step(model, x, y, amp, 0))
            ratios = [s / c for s, c in zip(sdpa, chosen, strict=True)]
            print(
                f"| {name} | {a.batch_size} | {'bf16' if amp else 'fp32'} | {statistics.median(chosen) * 1e3:.0f} | "
                f"{statistics.median(sdpa) * 1e3:.0f} | {statistics.median(sdpa) / statistics.median(chosen):.3f}x "
                f"({min(ratios):.2f}-{max(ratios):.2f}) |",
                flush=True,
            )
    print(f"load after: {load_avg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
