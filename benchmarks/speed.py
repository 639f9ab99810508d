"""Speed / memory of several models side by side with transformers (and timm), using :mod:`vitkit.bench`.

    python benchmarks/speed.py --threads 2 --batch-size 8 --train-batch-size 4 --compare \
        --out benchmarks/results

writes one ``<model>_<device>_t<threads>_b<batch>_<date>.json`` (+ ``.md``) per model and a summary
``speed_summary_<device>_<date>.md`` with the ratio table. Any ``vitkit bench`` option can be given; it applies to
every model. Run from the repository root (``PYTHONPATH=src`` if vitkit is not installed).
"""

import argparse
import sys
from pathlib import Path

from vitkit import bench
from vitkit.bench.report import fmt
from vitkit.cli.bench import add_arguments, benchmark_from_args
from vitkit.models.registry import list_models
from vitkit.utils.io import atomic_write_text

DEFAULT_MODELS = ["vit_base_patch16_224", "vit_small_patch16_224", "swin_tiny_patch4_window7_224", "cvt_13_224"]
INFER_TARGETS = {  # inference speed ratio of vitkit (optimized) vs the fastest peer, every batch size and dtype
    "vit_base_patch16_224": 1.1,
    "vit_small_patch16_224": 1.1,
    "swin_tiny_patch4_window7_224": 1.3,
    "cvt_13_224": 1.3,
}
TRAIN_TARGET = 1.1  # training step (forward, backward, AdamW) vs the fastest peer


def summary(results: list[dict]) -> str:
    lines = [
        "| model | task | dtype | vitkit | img/s | fastest peer | peer img/s | speed ratio | per-round ratios | target "
        "| met | vitkit MiB | peer MiB | memory ratio |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        model = r["settings"]["model"]
        for q in r["ratios"]:
            if q["task"] == "train":
                target = TRAIN_TARGET
            else:
                target = INFER_TARGETS.get(model, 1.0) if q["mode"] in ("optimized", "bf16-weights") else 1.0
            mem_ok = q["mem_ratio"] is None or q["mem_ratio"] <= 1.0
            met = "yes" if q["speed_ratio"] >= target and mem_ok else "no"
            batch = r["settings"]["batch_size" if q["task"] == "infer" else "train_batch_size"]
            lines.append(
                f"| {model} | {q['task']} (b{batch}) | {q['dtype']} | {q['vitkit']} | {q['vitkit_img_per_s']:.2f} | "
                f"{q['fastest_peer']} | {q['peer_img_per_s']:.2f} | "
                f"{q['speed_ratio']:.3f}x | {bench.round_range(q)} | {target:.1f}x | {met} | "
                f"{fmt(q['vitkit_peak_mem_mb'], '.0f')} | {fmt(q['lowest_peer_mem_mb'], '.0f')} | "
                f"{fmt(q['mem_ratio'], '.3f')} |"
            )
    loads = [(r["machine"]["load_avg_before"], r["machine"]["load_avg_after"]) for r in results]
    lines += [
        "",
        "load average (1, 5, 15 min) before -> after each model: " + "; ".join(f"{a} -> {b}" for a, b in loads),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser, several_models=True)
    args = parser.parse_args(argv)
    models = (
        [m for m in args.models if m in list_models()]
        if args.models
        else [m for m in DEFAULT_MODELS if m in list_models()]
    )
    missing = sorted(set(args.models or DEFAULT_MODELS) - set(list_models()))
    if missing:
        print(f"not registered (skipped): {', '.join(missing)}", file=sys.stderr)
    results = []
    for name in models:
        result = benchmark_from_args(name, args)
        print(bench.format_table(result))
        if args.out:
            print(f"wrote {bench.write_result(result, args.out)}")
        results.append(result)
    text = summary(results)
    print(text)
    if args.out and results and not args.out.endswith(".json"):
        tag = bench.device_tag(results[0]["machine"])
        path = (
            Path(args.out) / f"speed_summary_{tag}_t{results[0]['settings']['threads']}_{results[0]['created'][:10]}.md"
        )
        atomic_write_text(path, text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
