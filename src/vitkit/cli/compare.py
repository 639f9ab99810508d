"""``vitkit compare``: one small model per family, same data, same budget, one table.

Each model is trained with the same :class:`~vitkit.train.TrainConfig` (the recipe for the data, a ``--config``
file and/or the usual training flags), then evaluated on the test split. The budget is the same for every family:
with ``--budget 10m`` (``--time-limit-minutes``) or ``--budget-images`` each model's learning-rate schedule is laid
over it (``vitkit.train.budget``), so every model ends annealed and the table answers which family is best for the
data at equal cost; ``--epochs`` alone gives equal epochs instead. Output: a side-by-side table (parameters, GFLOPs,
epochs, optimizer steps and images the budget bought, training minutes, top-1, macro-F1), ``compare.json``, and per
model ``MODEL/eval/confusion_matrix.png`` (+ ``report.json``, ``misclassified.png``).
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from vitkit.cli._args import add_threads, add_tta, apply_threads, positive_int, print_table
from vitkit.cli.train import add_config_flags, checkpoint_for_test, is_main_process, plot_run, resolve_config

FAMILIES = ("vit", "swin", "cvt")
# the small 28 px configuration of each family, when registered; else the family's smallest *_28 model
PREFERRED = ("vit_nano_patch4_28", "swin_nano_patch2_window7_28", "cvt_nano_28")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        default=None,
        help="comma-separated model names (default: the small 28 px configuration of each family: "
        + ", ".join(PREFERRED)
        + "; a family without a registered 28 px model is skipped with a note)",
    )
    p.add_argument("--eval-data", default=None, help="data source to evaluate on (default: the training --data)")
    p.add_argument("--eval-split", default="test", choices=["val", "test"], help="split to evaluate (default: test)")
    p.add_argument("--batch-size-eval", type=positive_int, default=256, help="evaluation batch size (default: 256)")
    add_tta(p)
    add_config_flags(p, exclude={"model"})
    add_threads(p)
    p.set_defaults(output_dir_default="runs/compare")


def default_models(out=None) -> list[str]:
    """The preferred small model of each family; families without one get their smallest 28 px model."""
    from vitkit.eval.complexity import build_on_meta
    from vitkit.models.registry import get_entry, list_models

    out = out or sys.stderr
    names = set(list_models())
    chosen = []
    for family in FAMILIES:
        preferred = [n for n in PREFERRED if n.startswith(family + "_")]
        found = [n for n in preferred if n in names]
        if found:
            chosen.append(found[0])
            continue
        small = [n for n in sorted(names) if get_entry(n).family == family and n.endswith("_28")]
        if small:
            pick = min(small, key=lambda n: sum(p.numel() for p in build_on_meta(get_entry(n).config).parameters()))
            print(f"compare: {', '.join(preferred)} not registered; using {pick} for {family}", file=out)
            chosen.append(pick)
        else:
            print(f"compare: skipping {family}: no 28 px {family} model is registered (yet)", file=out)
    return chosen


def _seconds_per_epoch(history: list[dict[str, Any]], wall: float) -> float | None:
    """Training wall-clock per epoch from the last epoch record's ``time_s`` (taken before its validation pass)."""
    if not history:
        return None
    last = history[-1]
    epochs = last.get("epoch")
    if isinstance(last.get("time_s"), (int, float)) and isinstance(epochs, (int, float)) and epochs > 0:
        return last["time_s"] / epochs
    return wall / len(history)


def run(args: argparse.Namespace) -> int:
    from vitkit.engine import optimize
    from vitkit.errors import VitkitError
    from vitkit.eval.complexity import model_stats
    from vitkit.eval.evaluate import evaluate, load_dataset, write_eval_outputs
    from vitkit.hub import from_pretrained
    from vitkit.models.registry import list_models
    from vitkit.train import train
    from vitkit.train.budget import budget_text
    from vitkit.utils.io import atomic_write_json

    if args.models:
        requested = [m.strip() for m in args.models.split(",") if m.strip()]
        registered = set(list_models())
        models = [m for m in requested if m in registered]
        for m in requested:
            if m not in registered:
                print(f"compare: skipping {m}: not a registered model (see `vitkit models`)", file=sys.stderr)
    else:
        models = default_models()
    if not models:
        raise VitkitError("compare: no model to train (none of the requested names is registered)")
    # the same recipe for every family; --model-args is checked against the models it is given to
    base, recipe = resolve_config(args, drop=("model", "model_args"), model=models[0])
    threads = apply_threads(args.threads)
    if base.output_dir == type(base)().output_dir:  # the training default; compare gets its own folder
        base = base.replace(output_dir=args.output_dir_default)
    root = Path(base.output_dir)
    eval_data = args.eval_data or base.data
    dataset = None
    rows: list[dict[str, Any]] = []
    budget = budget_text(base)
    if recipe is not None:
        print(recipe.line(), file=sys.stderr)
    print(
        f"compare: {', '.join(models)} on {base.data}, budget {budget} each, {threads} CPU thread(s), "
        f"outputs in {root}",
        file=sys.stderr,
    )
    for name in models:
        cfg = base.replace(model=name, output_dir=str(root / name))
        start = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - start
        if not is_main_process():
            continue
        plot_run(result.output_dir, quiet=True)
        ckpt, selection = checkpoint_for_test(cfg, result)
        model = optimize(from_pretrained(ckpt), inplace=True)
        if dataset is None:
            dataset = load_dataset(eval_data, args.eval_split)
        ev = evaluate(model, dataset, batch_size=args.batch_size_eval, source=eval_data, tta=args.tta)
        stats = model_stats(model)
        report = write_eval_outputs(
            ev, root / name / "eval", model=model, dataset=dataset, title=name, extra={"model": name}
        )
        rows.append(
            {
                "model": name,
                "family": stats.family,
                "params_m": round(stats.params / 1e6, 3),
                "gflops": round(stats.gflops, 4),
                "epochs": round(float(result.history[-1]["epoch"]), 2) if result.history else 0,
                "steps": result.history[-1]["step"] if result.history else 0,
                "images_seen": result.history[-1].get("images_seen") if result.history else 0,
                "sec_per_epoch": round(s, 3) if (s := _seconds_per_epoch(result.history, wall)) else None,
                "train_minutes": round(result.history[-1].get("train_time_s", wall) / 60, 2) if result.history else 0,
                "top1": round(ev.top1 * 100, 2),
                **({"top1_without_tta": round(ev.extra["top1_without_tta"] * 100, 2)} if args.tta != "none" else {}),
                "macro_f1": round(ev.macro_f1, 4),
                "stopped_early": result.stopped_early,
                "confusion_matrix": report["files"].get("confusion_matrix"),
                "checkpoint": str(ckpt),
                "checkpoint_selection": selection,
            }
        )
        print(
            f"compare: {name}: top-1 {ev.top1:.2%}, macro-F1 {ev.macro_f1:.4f} ({wall / 60:.1f} min)", file=sys.stderr
        )
    if not is_main_process():
        return 0
    summary = {
        "data": base.data,
        "eval_data": f"{eval_data} ({args.eval_split})",
        "budget": budget,
        "threads": threads,
        "tta": args.tta,
        "config": base.to_dict(),
        "results": rows,
    }
    atomic_write_json(root / "compare.json", summary)
    print()
    print_table(
        rows,
        [
            ("model", "model"),
            ("params_m", "params (M)"),
            ("gflops", "GFLOPs"),
            ("epochs", "epochs"),
            ("steps", "steps"),
            ("images_seen", "images"),
            ("sec_per_epoch", "s/epoch"),
            ("train_minutes", "train min"),
            ("top1", "top-1 %"),
            *([("top1_without_tta", "without TTA %")] if args.tta != "none" else []),
            ("macro_f1", "macro-F1"),
        ],
    )
    tta = f"; test-time augmentation: {args.tta}" if args.tta != "none" else ""
    print(f"budget per model: {budget}; test split: {eval_data} ({args.eval_split}){tta}")
    print(f"\nresults: {root / 'compare.json'}")
    for r in rows:
        if r["confusion_matrix"]:
            print(f"confusion matrix ({r['model']}): {r['confusion_matrix']}")
    return 0
