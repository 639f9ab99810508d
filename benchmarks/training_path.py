"""A training step with the engine's training shortcuts against the same step without them, alternating, same model.

    PYTHONPATH=src python benchmarks/training_path.py vit_base_patch16_224 vit_small_patch16_224 \
        swin_tiny_patch4_window7_224 --batch-size 4 --rounds 6 --threads 2 --out benchmarks/results/training-path

One step = forward, cross-entropy, backward and PyTorch's fused AdamW (what ``vitkit train`` runs), in float32 and
under bf16 autocast; "shortcut" wraps the forward pass in ``vitkit.engine.training_path`` (a ViT with a [CLS] head
computes its last block's [CLS] row alone; Swin's window attention runs in the native kernel, CPU float32 only),
"plain" does not. Two copies of one model, one per way, so each keeps its own optimizer state; the first step's
logits are compared (same random draws for stochastic depth) before timing. Writes a table (.md) and the raw times
(.json); the numbers behind the "training shortcuts" paragraph of benchmarks/README.md.
"""

import argparse
import copy
import json
import statistics
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from vitkit import create_model
from vitkit.bench.machine import cpu_name, load_avg
from vitkit.engine import training_path
from vitkit.train.optim import adamw


def step(model, optimizer, x, y, amp: bool, shortcut: bool) -> tuple[float, torch.Tensor]:
    """Seconds of one training step, and its logits."""
    t0 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp), training_path(model) if shortcut else nullcontext():
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    optimizer.step()
    return time.perf_counter() - t0, logits.detach().float()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None, help="a directory for the .md table and the .json times")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    head = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, load before {load_avg()}"
    columns = "| model | batch | dtype | plain ms | shortcut ms | plain / shortcut (per round) | max logit diff |"
    lines = [head, "", columns, "|---|---:|---|---:|---:|---|---:|"]
    print("\n".join(lines), flush=True)
    raw = {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(), "results": []}
    for name in a.models:
        torch.manual_seed(0)
        base = create_model(name).train()
        x = torch.randn(a.batch_size, *base.data_config["input_size"])
        y = torch.randint(0, base.config.num_classes, (a.batch_size,))
        for amp in (False, True):
            models = {way: copy.deepcopy(base) for way in ("plain", "shortcut")}
            opts = {way: adamw(m.parameters(), lr=1e-4) for way, m in models.items()}
            torch.manual_seed(1)
            _, ref = step(models["plain"], opts["plain"], x, y, amp, False)
            torch.manual_seed(1)
            _, got = step(models["shortcut"], opts["shortcut"], x, y, amp, True)
            diff = (ref - got).abs().max().item()
            step(models["plain"], opts["plain"], x, y, amp, False)  # warm-up
            step(models["shortcut"], opts["shortcut"], x, y, amp, True)
            times: dict[str, list[float]] = {"plain": [], "shortcut": []}
            for r in range(a.rounds):
                for way in ("plain", "shortcut") if r % 2 == 0 else ("shortcut", "plain"):
                    times[way].append(step(models[way], opts[way], x, y, amp, way == "shortcut")[0])
            ratios = [pl / sc for pl, sc in zip(times["plain"], times["shortcut"], strict=True)]
            plain, short = statistics.median(times["plain"]), statistics.median(times["shortcut"])
            dtype = "bf16" if amp else "fp32"
            line = (
                f"| {name} | {a.batch_size} | {dtype} | {plain * 1e3:,.0f} | {short * 1e3:,.0f} | "
                f"{plain / short:.3f}x ({min(ratios):.3f}-{max(ratios):.3f}) | {diff:.1e} |"
            )
            print(line, flush=True)
            lines.append(line)
            raw["results"].append(dict(model=name, batch=a.batch_size, dtype=dtype, max_logit_diff=diff, **times))
    lines += ["", f"load after {load_avg()}"]
    raw["load_after"] = load_avg()
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"training_path_t{torch.get_num_threads()}_b{a.batch_size}_{date.today().isoformat()}"
        (out / f"{stem}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (out / f"{stem}.json").write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
