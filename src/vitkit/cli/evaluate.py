"""``vitkit eval SOURCE --data DATA``: metrics, confusion matrix, misclassified examples, JSON report."""

import argparse
import json
import sys
from pathlib import Path

from vitkit.cli._args import (
    add_device,
    add_model_name,
    add_reference,
    add_threads,
    add_tta,
    apply_threads,
    inference_model,
    non_negative_int,
    positive_int,
    resolve_device,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        help="a training output_dir (uses final/, best/ or last/), a checkpoint directory, hf-hub:org/name, "
        "or a registered model name with default weights",
    )
    p.add_argument(
        "--data",
        default="sample",
        help="data source, as for training: sample | fashion-mnist:DIR | mnist:DIR | cifar10:DIR | "
        "cifar100:DIR | folder:DIR | csv:FILE (default: sample)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test", "all"],
        help="which split (default: test); 'val' is the part the training run held out; 'all' every image",
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (default: 256)")
    p.add_argument("--max-samples", type=non_negative_int, default=0, help="evaluate only the first N images (0 = all)")
    p.add_argument(
        "--output-dir",
        default=None,
        help="where report.json and the PNGs go (default: SOURCE/eval-SPLIT for a local checkpoint, else runs/eval)",
    )
    p.add_argument(
        "--num-misclassified", type=non_negative_int, default=32, help="images in the misclassified grid (default: 32)"
    )
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    add_device(p)
    add_tta(p)
    add_threads(p)
    add_reference(p)
    add_model_name(p)


def default_output_dir(source: str, split: str) -> Path:
    path = Path(source).expanduser()
    return path / f"eval-{split}" if path.is_dir() else Path("runs") / "eval"


def run(args: argparse.Namespace) -> int:
    from vitkit.eval.evaluate import evaluate, format_report, load_dataset, run_split_settings, write_eval_outputs

    device = resolve_device(args.device)
    apply_threads(args.threads)
    model = inference_model(args.source, args.reference, args.model)
    val_fraction, seed = run_split_settings(args.source, args.data)
    dataset = load_dataset(args.data, args.split, val_fraction=val_fraction, seed=seed)
    result = evaluate(
        model,
        dataset,
        batch_size=args.batch_size,
        device=device,
        max_samples=args.max_samples,
        source=args.data,
        tta=args.tta,
    )
    out = Path(args.output_dir) if args.output_dir else default_output_dir(args.source, args.split)
    extra = {"model": getattr(model, "model_name", None), "checkpoint": str(args.source), "split": args.split}
    report = write_eval_outputs(
        result,
        out,
        model=model,
        dataset=dataset,
        num_misclassified=args.num_misclassified,
        title=str(extra["model"] or ""),
        extra=extra,
    )
    from vitkit.publish import write_card_for

    card = write_card_for(args.source, model, report=report, report_dir=out, fallback=out)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if "plots" in report:
            print(f"note: {report['plots']}", file=sys.stderr)
        print(
            f"report: {out / 'report.json'}"
            + "".join(f"\n{k}: {v}" for k, v in report["files"].items() if k != "report")
            + (f"\nmodel card: {card}" if card else "")
        )
    return 0
