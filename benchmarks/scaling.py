"""How inference time and memory grow with the image: ViT vs Swin vs CvT from 224 px up to 1024 px.

The study note claims: ViT's global attention is quadratic in the number of patches, Swin's windowed attention
is linear in the pixels, CvT is cheaper than ViT because its keys/values are computed on a strided (4x fewer)
grid. This script measures batch-1 inference time and peak memory per resolution and fits the exponent k of
``time ~ pixels^k`` on a log-log scale (k = 1: linear, k = 2: quadratic), over all points and over the largest
three (where the asymptotic term dominates).

Each (model, resolution) runs in a fresh subprocess, so memory cannot leak from one configuration into the next:
the child builds the model, records its RSS, resets the kernel's high-water mark (``/proc/self/clear_refs``),
runs the forward passes and reads ``VmHWM``. ``activation_mb`` = peak - RSS after building (what the forward
pass needs on top of the weights); ``peak_mb`` = peak - RSS after imports (weights included).

    python benchmarks/scaling.py --threads 2 --out benchmarks/results
"""

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODELS = ["vit_base_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"]
DEFAULT_SIZES = [224, 320, 448, 640, 896, 1024]


def child(model_name: str, size: int, threads: int, repeats: int) -> dict:
    import torch

    from vitkit.bench import memory
    from vitkit.engine import optimize
    from vitkit.eval.flops import count_flops
    from vitkit.factory import create_model

    torch.set_num_threads(threads)
    base = memory._rss_kb()
    reference = create_model(model_name, img_size=size).eval()
    model = optimize(reference, inplace=True)
    built = memory._rss_kb()
    memory._reset_hwm()
    x = torch.randn(1, model.config.in_chans, size, size)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first pass is the warm-up
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    hwm = memory._hwm_kb()
    flops = count_flops(model, (model.config.in_chans, size, size))
    return {
        "model": model_name,
        "size": size,
        "pixels": size * size,
        "seconds": statistics.median(times[1:]),
        "all_seconds": times,
        "gmacs": flops["gmacs"],
        "peak_mb": round((hwm - base) / 1024, 1),
        "activation_mb": round((hwm - built) / 1024, 1),
        "weights_rss_mb": round((built - base) / 1024, 1),
    }


def run_child(model: str, size: int, threads: int, repeats: int, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = [sys.executable, __file__, "--child", model, str(size), str(threads), str(repeats)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "size": size, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"model": model, "size": size, "error": tail[:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit_exponent(points: list[dict], key: str = "seconds") -> float | None:
    """Least-squares slope of log(key) against log(pixels)."""
    pts = [(math.log(p["pixels"]), math.log(p[key])) for p in points if p.get(key, 0) > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / sxx, 3)


def plot(rows: list[dict], fits: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    panels = [
        (axes[0], "seconds", "inference time, batch 1 (s)"),
        (axes[1], "activation_mb", "activation MiB (peak - weights)"),
    ]
    for ax, key, label in panels:
        for model in fits:
            pts = [r for r in rows if r["model"] == model and "error" not in r and r.get(key, 0) > 0]
            if not pts:
                continue
            k = fits[model][key + "_all"]
            ax.plot([p["pixels"] for p in pts], [p[key] for p in pts], "o-", label=f"{model} (k={k})")
        xs = sorted({r["pixels"] for r in rows})
        if xs and ax.lines:
            y0 = min(line.get_ydata()[0] for line in ax.lines)
            for slope, style in ((1, ":"), (2, "--")):
                ax.plot(xs, [y0 * (x / xs[0]) ** slope for x in xs], "k" + style, lw=0.8, label=f"pixels^{slope}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pixels per image (224^2 ... 1024^2)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("vitkit scaling with image size (CPU, batch 1); k = fitted log-log exponent")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        name, size, threads, repeats = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        print(json.dumps(child(name, size, threads, repeats)))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from vitkit.bench import machine as bench
    from vitkit.models.registry import list_models
    from vitkit.utils.io import atomic_write_json, atomic_write_text

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--sizes", nargs="+", type=int, default=DEFAULT_SIZES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-seconds", type=float, default=60, help="skip larger sizes of a model after a slower pass")
    p.add_argument("--budget", type=float, default=600, help="total wall-clock budget in seconds")
    p.add_argument("--out", default=None, help="directory for scaling_<device>_<date>.json/.md/.png")
    args = p.parse_args(argv)
    models = [m for m in args.models if m in list_models()]
    skipped = sorted(set(args.models) - set(models))
    if skipped:
        print(f"not registered (skipped): {', '.join(skipped)}", file=sys.stderr)
    start = time.perf_counter()
    rows: list[dict] = []
    for model in models:
        for size in sorted(args.sizes):
            left = args.budget - (time.perf_counter() - start)
            if left < 5:
                rows.append({"model": model, "size": size, "error": "skipped: over the time budget"})
                continue
            r = run_child(model, size, args.threads, args.repeats, timeout=left)
            rows.append(r)
            if "error" in r:
                print(f"{model} {size}: {r['error']}", file=sys.stderr)
                continue
            print(
                f"{model:<30} {size:>5} px  {r['seconds']:8.3f} s  {r['gmacs']:8.1f} GMACs  "
                f"act {r['activation_mb']:8.1f} MiB  peak {r['peak_mb']:8.1f} MiB",
                file=sys.stderr,
                flush=True,
            )
            if r["seconds"] > args.max_seconds:
                break
    fits = {}
    for model in models:
        pts = sorted((r for r in rows if r["model"] == model and "error" not in r), key=lambda r: r["pixels"])
        fits[model] = {
            "seconds_all": fit_exponent(pts, "seconds"),
            "seconds_top3": fit_exponent(pts[-3:], "seconds"),
            "gmacs_all": fit_exponent(pts, "gmacs"),
            "gmacs_top3": fit_exponent(pts[-3:], "gmacs"),
            "activation_mb_all": fit_exponent(pts, "activation_mb"),
            "activation_mb_top3": fit_exponent(pts[-3:], "activation_mb"),
            "largest_size": pts[-1]["size"] if pts else None,
        }
    import torch

    torch.set_num_threads(args.threads)
    info = bench.machine_info(torch.device("cpu"))
    result = {
        "schema": "vitkit.bench.scaling/1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": info | {"load_avg_after": bench.load_avg()},
        "settings": vars(args),
        "rows": rows,
        "exponents": fits,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    lines = [
        f"### Scaling with image size · batch 1 · {args.threads} threads · {info['cpu']} · torch {info['torch']}",
        "",
        "| model | px | time s | GMACs | activation MiB | peak MiB (with weights) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['size']} | {r['error']} | | | |")
        else:
            lines.append(
                f"| {r['model']} | {r['size']} | {r['seconds']:.3f} | {r['gmacs']:.1f} | {r['activation_mb']:.0f} | "
                f"{r['peak_mb']:.0f} |"
            )
    head = "| model | k time (all) | k time (largest 3) | k GMACs (all) | k GMACs (largest 3) | k memory (all) |"
    lines += ["", head + " k memory (largest 3) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for m, f in fits.items():
        lines.append(
            f"| {m} | {f['seconds_all']} | {f['seconds_top3']} | {f['gmacs_all']} | {f['gmacs_top3']} | "
            f"{f['activation_mb_all']} | {f['activation_mb_top3']} |"
        )
    lines.append(f"\nload average after: {result['machine']['load_avg_after']}; wall time {result['wall_s']} s")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        stem = Path(args.out) / f"scaling_{bench.device_tag(info)}_t{args.threads}_{result['created'][:10]}"
        atomic_write_json(stem.with_suffix(".json"), result)
        atomic_write_text(stem.with_suffix(".md"), text)
        plot(rows, fits, stem.with_suffix(".png"))
        print(f"wrote {stem}.json/.md/.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
