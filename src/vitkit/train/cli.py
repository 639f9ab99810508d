"""Command-line arguments generated from :class:`TrainConfig` (one ``--flag`` per field).

``cli_entry(argv)`` is what ``python -m vitkit train ...`` and ``torchrun --nproc_per_node N -m vitkit train ...``
run; ``--config FILE`` (YAML / TOML / JSON) supplies defaults that flags on the command line override.
"""

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence

from vitkit.errors import VitkitError
from vitkit.train.config import TrainConfig


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--config`` and one option per TrainConfig field (defaults left as None = 'not given')."""
    parser.add_argument("--config", help="YAML/TOML/JSON file of settings; command-line flags override it")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {f.default!r})"
        kind = hints[f.name]
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(kind) is tuple:
            elem = typing.get_args(kind)[0]
            parser.add_argument(
                flag, dest=f.name, type=elem, nargs=len(typing.get_args(kind)), default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag, dest=f.name, type=kind, choices=f.metadata.get("choices"), default=None, help=help_text
            )
    return parser


def config_from_args(ns: argparse.Namespace) -> TrainConfig:
    base = TrainConfig.from_file(ns.config) if getattr(ns, "config", None) else TrainConfig()
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(ns).items() if k in names and v is not None}
    return base.replace(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


def cli_entry(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (without the 'train' word), train, print the result; 0 on success, 2 on a user error."""
    from vitkit.train.loop import train

    parser = add_train_arguments(argparse.ArgumentParser(prog="vitkit train", description=__doc__.split("\n")[0]))
    ns = parser.parse_args(argv)
    try:
        result = train(config_from_args(ns))
    except VitkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = result.metrics
    print(
        f"done: {result.output_dir} best={result.best_checkpoint} "
        + " ".join(f"{k}={v:.4f}" for k, v in m.items() if k.startswith("val_"))
    )
    return 0
