"""Accuracy cost and speed-up of vitkit's faster modes, measured on Fashion-MNIST.

A small ViT is trained for a few epochs on a few thousand Fashion-MNIST images with a minimal loop (the real
training engine lives elsewhere; this only needs a model whose predictions mean something), then the full 10k test
set is evaluated in every mode: the reference model in fp32 (the baseline), ``vitkit.optimize`` (fp32, bf16
autocast, and the whole model in bf16: ``bf16_weights``), torch.compile, ONNX Runtime (fp32, and int8 from its
quantiser) and PyTorch's dynamic int8. Per mode: accuracy, its delta to fp32, how many
predictions change, the largest logit difference, evaluation images/s (median of repeats, modes alternating) and
setup time (export / quantise / compile).

    python benchmarks/modes.py --threads 2 --out benchmarks/results

A model with a larger input (e.g. ``--model vit_tiny_patch16_224 --set in_chans=1``: an ImageNet-style 224-px
architecture) sees the 28-px images upsampled (bilinear) to its input size, batch by batch.

Data: the gzipped IDX files in /work/shared/data/fashion-mnist/ (or --data DIR).
"""

import argparse
import datetime
import gzip
import statistics
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vitkit.bench import contenders as bench
from vitkit.bench.machine import cpu_supports_bf16, device_tag, load_avg, machine_info
from vitkit.cli.bench import _csv, _override
from vitkit.factory import create_model
from vitkit.utils.io import atomic_write_json, atomic_write_text

DATA = Path("/work/shared/data/fashion-mnist")
SPECS = {  # row name: (vitkit mode, dtype); "fp32" is the reference model, the baseline of every ratio
    "fp32": ("reference", "fp32"),
    "optimized": ("optimized", "fp32"),
    "bf16": ("optimized", "bf16"),
    "bf16-weights": ("bf16-weights", "bf16"),
    "compile": ("compile", "fp32"),
    "onnx": ("onnx", "fp32"),
    "onnx-int8": ("onnx-int8", "fp32"),
    "int8": ("int8", "fp32"),
}


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (the MNIST format) as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_split(root: Path, split: str, mean: float, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    xt = (torch.from_numpy(x.copy()).float().div_(255).unsqueeze(1) - mean) / std  # (N, 1, 28, 28)
    return xt, torch.from_numpy(y.astype(np.int64))


def resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """A batch of 28-px images at the model's input size (bilinear), or as it is."""
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def train(model, x, y, *, epochs: int, batch_size: int, lr: float, log) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(0)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        t0, total, correct = time.perf_counter(), 0.0, 0
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = resized(x[idx], model.data_config["input_size"][-1]), y[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5  # horizontal flips: the only augmentation
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(-1) == yb).sum().item()
        took = time.perf_counter() - t0
        log(f"epoch {epoch + 1}: loss {total / len(x):.3f}, train acc {correct / len(x):.3f}, {took:.0f} s")
    model.eval()


def predict(c: bench.Contender, x: torch.Tensor, batch_size: int, size: int) -> torch.Tensor:
    dev = torch.device("cpu")
    batches = (resized(x[i : i + batch_size], size) for i in range(0, len(x), batch_size))
    return torch.cat([bench.infer_step(c, xb, dev).float() for xb in batches])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--model", default="vit_nano_patch4_28")
    p.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-batch-size", type=int, default=250)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed passes per mode")
    p.add_argument("--timing-images", type=int, default=2000, help="test images per timed pass")
    p.add_argument("--modes", type=_csv(tuple(SPECS)), default=tuple(SPECS))
    p.add_argument("--out", default=None, help="directory for modes_fashion_mnist_<device>_<date>.json/.md")
    args = p.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device("cpu")
    # 7x7 patches -> 16 tokens: small enough to train in a couple of minutes on 2 cores
    overrides = dict(args.set) or {"patch_size": 7, "embed_dim": 96, "depth": 4, "num_heads": 4}
    model = create_model(args.model, num_classes=10, **overrides)
    mean, std = model.config.mean[0], model.config.std[0]
    xtr, ytr = load_split(args.data, "train", mean, std)
    xte, yte = load_split(args.data, "test", mean, std)
    xtr, ytr = xtr[: args.train_images], ytr[: args.train_images]
    log(f"training {args.model} {overrides} on {len(xtr)} images for {args.epochs} epochs")
    t0 = time.perf_counter()
    train(model, xtr, ytr, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, log=log)
    train_s = time.perf_counter() - t0

    input_size = tuple(model.data_config["input_size"])
    size = input_size[-1]
    contenders = {}
    for key in args.modes:
        mode, dtype = SPECS[key]
        wrapped, setup, _ = bench.make_mode(model, mode, threads=args.threads, input_size=input_size)
        c = bench.Contender(key, "vitkit", mode, dtype, wrapped, trainable=False, setup_s=setup)
        t0 = time.perf_counter()
        bench.infer_step(c, resized(xte[: args.eval_batch_size], size), dev)  # compile happens here
        c.setup_s += time.perf_counter() - t0
        contenders[key] = c
    if "bf16" in contenders and not cpu_supports_bf16():
        log("note: this CPU has no native bf16; bf16 autocast is emulated")

    # accuracy: one pass over the whole test set per mode; speed: modes alternate over the first
    # --timing-images test images, median of --repeats passes
    logits = {k: predict(c, xte, args.eval_batch_size, size) for k, c in contenders.items()}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    keys = list(contenders)
    xt = xte[: args.timing_images]
    for r in range(args.repeats):
        for j in range(len(keys)):
            k = keys[(r + j) % len(keys)]
            t0 = time.perf_counter()
            predict(contenders[k], xt, args.eval_batch_size, size)
            times[k].append(time.perf_counter() - t0)
    ref = logits.get("fp32")
    rows = []
    for k in keys:
        pred = logits[k].argmax(-1)
        acc = (pred == yte).float().mean().item()
        sec = statistics.median(times[k])
        row = {
            "mode": k,
            "accuracy": round(acc, 4),
            "eval_img_per_s": round(len(xt) / sec, 1),
            "setup_s": round(contenders[k].setup_s, 2),
        }
        if ref is not None:
            row["accuracy_delta_vs_fp32"] = round(acc - (ref.argmax(-1) == yte).float().mean().item(), 4)
            row["predictions_changed_vs_fp32"] = int((pred != ref.argmax(-1)).sum())
            row["max_abs_logit_diff_vs_fp32"] = float((logits[k] - ref).abs().max())
            row["speedup_vs_fp32"] = round(statistics.median(times["fp32"]) / sec, 3)
        rows.append(row)
        log(f"{k:<8} acc {acc:.4f}  {row['eval_img_per_s']:.0f} img/s  setup {row['setup_s']:.1f} s")

    info = machine_info(dev)
    result = {
        "schema": "vitkit.bench.modes/2",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": info | {"load_avg_after": load_avg()},
        "settings": vars(args) | {"data": str(args.data), "overrides": overrides, "set": None},
        "model": {"name": args.model, "params": model.num_params(), "train_s": round(train_s, 1)},
        "test_images": len(xte),
        "results": rows,
    }
    lines = [
        f"### Faster modes on Fashion-MNIST · {args.model} {overrides} · {size} px · "
        f"{model.num_params() / 1e6:.2f} M params · trained {args.epochs} epochs on {len(xtr)} images · "
        f"{args.threads} threads · {info['cpu']}",
        "",
        "| mode | test accuracy | Δ vs fp32 | predictions changed | max logit diff | eval img/s | speed-up | setup s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['accuracy']:.4f} | {r.get('accuracy_delta_vs_fp32', 0):+.4f} | "
            f"{r.get('predictions_changed_vs_fp32', '-')} / {len(xte)} | "
            f"{r.get('max_abs_logit_diff_vs_fp32', 0):.2e} | "
            f"{r['eval_img_per_s']:.0f} | {r.get('speedup_vs_fp32', 1):.2f}x | {r['setup_s']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        path = Path(args.out) / f"modes_fashion_mnist_{device_tag(info)}_{result['created'][:10]}.json"
        atomic_write_json(path, result)
        atomic_write_text(path.with_suffix(".md"), text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
