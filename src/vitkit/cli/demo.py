"""``vitkit demo``: offline, about two minutes on 2 CPU cores.

Trains a small ViT from scratch on the Fashion-MNIST sample that ships with vitkit (5,000 training and
1,000 test images, data source ``sample``), evaluates it on the sample's test images, writes the training
curves, the confusion matrix and the most confident mistakes, and prints the accuracy it reached.
Any training setting can be changed with the usual ``vitkit train`` flags or a ``--config`` file.
"""

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from vitkit.cli._args import add_threads, apply_threads
from vitkit.cli.train import add_config_flags, checkpoint_for_test, config_from_args, plot_run

# A 4-block ViT on 7x7 patches (4x4 tokens + [CLS], 0.46 M parameters): on the 5,000-image sample it learns
# faster per second than 4x4 patches (50 tokens), measured in docs/CLI.md. 15 epochs = 75k images.
DEMO_SETTINGS: dict[str, Any] = {
    "model": "vit_nano_patch4_28",
    "model_args": "patch_size=7,depth=4,embed_dim=96,num_heads=4",
    "data": "sample",
    "epochs": 15,
    "batch_size": 64,
    "lr": 2e-3,
    "warmup_epochs": 1.0,
    "weight_decay": 0.05,
    "drop_path_rate": 0.0,
    "label_smoothing": 0.1,
    "aug": "flip",
    "num_workers": 0,
    "time_limit_minutes": 5.0,  # a bound on a much slower (or busy) machine; normally the demo ends well before
    "output_dir": "runs/demo",
    "overwrite_output_dir": True,  # the demo is a throwaway run: running it again starts afresh
    "log_every": 20,
    "tensorboard": False,
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p)
    add_threads(p, default="auto")
    p.set_defaults(demo_settings=DEMO_SETTINGS)


def run(args: argparse.Namespace) -> int:
    from vitkit.engine import optimize
    from vitkit.eval.evaluate import evaluate, load_dataset, write_eval_outputs
    from vitkit.hub import from_pretrained
    from vitkit.train import train

    cfg = config_from_args(args, base=args.demo_settings)
    threads = apply_threads(args.threads)
    print(
        f"vitkit demo: training {cfg.model} ({cfg.model_args or 'registered config'}) from scratch on "
        f"{cfg.data!r}{' (the bundled Fashion-MNIST sample)' if cfg.data == 'sample' else ''} for {cfg.epochs} "
        f"epochs on {threads} CPU thread(s)...",
        file=sys.stderr,
    )
    start = time.perf_counter()
    result = train(cfg)
    train_seconds = time.perf_counter() - start
    ckpt, selection = checkpoint_for_test(cfg, result)
    model = optimize(from_pretrained(ckpt), inplace=True)
    dataset = load_dataset(cfg.val_data or cfg.data, "test")
    ev = evaluate(model, dataset, source=cfg.val_data or cfg.data)
    out = Path(result.output_dir)
    report = write_eval_outputs(
        ev,
        out / "eval",
        model=model,
        dataset=dataset,
        title=str(cfg.model),
        extra={
            "model": cfg.model,
            "checkpoint": str(ckpt),
            "checkpoint_selection": selection,
            "train_seconds": round(train_seconds, 1),
            "epochs": len(result.history),
        },
    )
    curves = plot_run(out, quiet=True)
    total = time.perf_counter() - start
    print()
    print(
        f"demo finished in {total / 60:.1f} min ({train_seconds:.0f} s training, {len(result.history)} epochs"
        + (f", stopped early: {result.stopped_early}" if result.stopped_early else "")
        + ")"
    )
    print(f"test accuracy (top-1) on {len(dataset)} sample test images: {ev.top1:.2%}   macro-F1 {ev.macro_f1:.4f}")
    print(f"model:            {ckpt}")
    print(f"report:           {out / 'eval' / 'report.json'}")
    for key, label in (("confusion_matrix", "confusion matrix"), ("misclassified", "mistakes")):
        if key in report["files"]:
            print(f"{label + ':':<17} {report['files'][key]}")
    if curves is not None:
        print(f"training curves:  {curves}")
    if result.stopped_early and "time limit" in result.stopped_early:
        print(
            f"note: the demo's {cfg.time_limit_minutes:g}-minute limit stopped training early (a slow or busy "
            "machine), so the accuracy is lower than a complete run reaches; --time-limit-minutes 0 lifts it"
        )
    if "plots" in report:
        print(f"note: {report['plots']}")
    print(f"next: vitkit predict {ckpt} IMAGE.png   |   vitkit eval {ckpt} --data sample")
    return 0
