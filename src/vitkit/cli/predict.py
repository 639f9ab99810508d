"""``vitkit predict SOURCE IMAGES...``: top-k classes for image files, folders or globs."""

import argparse
import json
import sys

from vitkit.cli._args import (
    add_device,
    add_model_name,
    add_reference,
    add_threads,
    apply_threads,
    inference_model,
    positive_int,
    resolve_device,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a training output_dir, a checkpoint directory, hf-hub:org/name or a model name")
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or glob patterns ('*.png')")
    p.add_argument("--topk", "-k", type=positive_int, default=5, help="how many classes per image (default: 5)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per image) instead of a table")
    add_device(p)
    add_threads(p)
    add_reference(p)
    add_model_name(p)


def run(args: argparse.Namespace) -> int:
    from vitkit.predict import format_table, predict

    apply_threads(args.threads)
    model = inference_model(args.source, args.reference, args.model)
    results = predict(
        model, args.inputs, topk=args.topk, batch_size=args.batch_size, device=resolve_device(args.device)
    )
    failed = [r for r in results if r.error is not None]
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        ok = [r for r in results if r.error is None]
        if ok:
            print(format_table(ok))
    for r in failed:  # one line per bad file on stderr; the others already have their answers
        print(f"vitkit predict: error: {r.path}: {r.error}", file=sys.stderr)
    if failed:
        print(f"vitkit predict: {len(failed)} of {len(results)} inputs failed", file=sys.stderr)
    return 1 if failed else 0
