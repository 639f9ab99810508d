"""``vitkit train``: every :class:`vitkit.train.TrainConfig` field is a flag; ``--config`` reads a file first.

Precedence: the dataclass defaults < the recipe for the data (``vitkit.train.recipe``) < the ``--config`` file
(YAML/TOML/JSON) < flags on the command line. With ``--resume``, the settings saved in the checkpoint take the place
of the defaults and the recipe, so ``vitkit train --output-dir X --resume auto`` continues run X as it was started.
After training, the training curves (loss, accuracy, learning rate) are drawn from the run's metrics.jsonl.
Under ``torchrun`` every process trains; only rank 0 prints the summary and draws the plots.
"""

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from vitkit.cli._args import add_dataclass_flags, add_threads, apply_threads, flag_name, given_settings, merged_config
from vitkit.errors import VitkitError


def add_config_flags(p: argparse.ArgumentParser, exclude: set[str] | None = None) -> None:
    from vitkit.train.config import TrainConfig

    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="read settings from a .yaml/.yml/.toml/.json file (its keys are the flag names with underscores); "
        "flags given on the command line override it",
    )
    group = p.add_argument_group("training settings (TrainConfig)")
    p.set_defaults(_config_fields=add_dataclass_flags(group, TrainConfig, exclude=exclude))
    p.add_argument(
        "--budget",
        metavar="AMOUNT",
        default=None,
        help="training budget that the lr schedule is laid over: a time such as 90s, 10m, 1.5h (the same as "
        "--time-limit-minutes) or a number of images such as 500kimg (--budget-images)",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p)
    p.add_argument(
        "--print-config", action="store_true", help="print the merged settings as JSON and exit without training"
    )
    p.add_argument("--no-plots", action="store_true", help="do not draw the training curves at the end")
    add_threads(p)


def budget_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--budget`` as the setting it stands for (``time_limit_minutes`` or ``budget_images``)."""
    text = getattr(args, "budget", None)
    if not text:
        return {}
    from vitkit.train.budget import parse_budget

    minutes, images = parse_budget(text)
    key = "time_limit_minutes" if minutes else "budget_images"
    if hasattr(args, key):
        raise VitkitError(f"--budget and {flag_name(key)} say the same thing: give one of them")
    return {key: minutes or images}


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None, **fixed: Any):
    from vitkit.train.config import TrainConfig

    return merged_config(TrainConfig, args, args._config_fields, base, **{**budget_settings(args), **fixed})


def resolve_config(args: argparse.Namespace, drop: tuple[str, ...] = (), **fixed: Any) -> tuple[Any, Any]:
    """(TrainConfig, Recipe or None): the settings given over the recipe for the data, or over a resumed run's.

    ``drop`` names recipe settings not to use (``vitkit compare`` chooses the models itself); ``fixed`` settings
    win over everything (compare checks ``--model-args`` against the first model it trains).
    """
    from vitkit.train.recipe import choose, describe_data

    cfg = config_from_args(args, **fixed)
    if cfg.resume and (saved := saved_settings(cfg)) is not None:
        return config_from_args(args, base=saved, **fixed), None
    given = given_settings(args, args._config_fields) | budget_settings(args)
    recipe = choose(describe_data(cfg.data, cfg.download), given)
    base = {k: v for k, v in recipe.settings.items() if k not in drop}
    return config_from_args(args, base=base, **fixed), recipe


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def plot_run(output_dir: str | Path, quiet: bool = False) -> Path | None:
    """training_curves.png from output_dir/metrics.jsonl; without matplotlib a note, not a failure."""
    from vitkit.eval.plots import PlotsUnavailable, plot_training_curves

    metrics = Path(output_dir) / "metrics.jsonl"
    if not metrics.is_file():
        print(f"note: no {metrics} to plot", file=sys.stderr)
        return None
    try:
        path = plot_training_curves(metrics, Path(output_dir) / "plots" / "training_curves.png", str(output_dir))
    except PlotsUnavailable as e:
        print(f"note: training curves not drawn: {e}", file=sys.stderr)
        return None
    if not quiet:
        print(f"training curves: {path}")
    return path


def checkpoint_for_test(cfg: Any, result: Any) -> tuple[Path, str]:
    """The weights to report a *test* score for, and why.

    Without a held-out validation split the engine validates on the test split, so its ``best`` checkpoint was
    chosen by looking at the test set; the weights at the end of the budget are then the honest choice.
    """
    held_out = bool(cfg.val_data) or cfg.val_fraction > 0
    if held_out and result.best_checkpoint is not None:
        return Path(result.best_checkpoint), "best on the held-out validation split"
    if result.last_checkpoint is not None:
        why = "last (end of the budget; the test split is not used to pick a checkpoint)"
        return Path(result.last_checkpoint), why
    return Path(result.final_model or result.best_checkpoint or result.output_dir), "final"


def _fmt_metrics(metrics: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def saved_settings(cfg: Any) -> dict[str, Any] | None:
    """The settings of the run ``cfg.resume`` continues (from its checkpoint), or None when there is none to read.

    They are the base that ``--config`` and the flags override, so ``vitkit train --output-dir X --resume auto``
    continues X with the settings it was started with.
    """
    from vitkit.train.config import TrainConfig
    from vitkit.train.state import STATE_JSON

    wanted = Path(cfg.output_dir) / "last" if cfg.resume in ("auto", "last") else Path(cfg.resume)
    for directory in (wanted, wanted / "last", wanted.parent / f".{wanted.name}.old"):
        try:
            saved = json.loads((directory / STATE_JSON).read_text(encoding="utf-8")).get("config")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(saved, dict):
            names = {f.name for f in dataclasses.fields(TrainConfig)} - {"resume", "overwrite_output_dir"}
            return {k: v for k, v in saved.items() if k in names}
    return None


def interrupted_message(cfg: Any) -> str:
    """Where the last complete checkpoint is and the command that continues from it."""
    from vitkit.train.state import STATE_JSON, find_checkpoint

    out = Path(cfg.output_dir)
    last = find_checkpoint(out / "last")
    if last is None:
        return f"vitkit: interrupted before the first checkpoint was written; nothing to resume in {out}"
    try:
        step = f" (step {json.loads((last / STATE_JSON).read_text(encoding='utf-8'))['step']})"
    except (OSError, ValueError, KeyError, TypeError):
        step = ""
    return (
        f"vitkit: interrupted; the last complete checkpoint is {last}{step}; "
        f"continue with: vitkit train --output-dir {shlex.quote(str(out))} --resume auto"
    )


def run(args: argparse.Namespace) -> int:
    cfg, recipe = resolve_config(args)
    if args.print_config:
        if recipe is not None:
            print(recipe.line(), file=sys.stderr)
        print(json.dumps(cfg.to_dict(), indent=2, default=list))
        return 0
    if recipe is not None and is_main_process():
        print(recipe.line(), flush=True)
    from vitkit.train import train

    apply_threads(args.threads)
    try:
        result = train(cfg)
    except KeyboardInterrupt:  # Ctrl-C: checkpoints are written whole, so say which one to continue from
        if is_main_process():
            print(interrupted_message(cfg), file=sys.stderr)
        return 130
    if not is_main_process():
        return 0
    print(
        f"\nfinished: {result.output_dir}"
        + (f" (stopped early: {result.stopped_early})" if result.stopped_early else "")
    )
    if result.metrics:
        print(f"metrics: {_fmt_metrics(result.metrics)}")
    for label, path in (
        ("model", result.final_model),
        ("best", result.best_checkpoint),
        ("last", result.last_checkpoint),
    ):
        if path is not None:
            print(f"{label}: {path}")
    if not args.no_plots:
        plot_run(result.output_dir)
    if result.final_model is not None:
        from vitkit.publish import write_card_for

        card = write_card_for(str(result.final_model), None)
        if card is not None:
            print(f"model card: {card}")
    return 0
