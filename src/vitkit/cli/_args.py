"""argparse helpers: flags generated from a config dataclass, one-line errors, shared options."""

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

from vitkit.errors import VitkitError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit 2), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _typed(kind: type, name: str):
    """An argparse ``type`` whose error names the flag and the expected kind."""

    def convert(text: str) -> Any:
        try:
            return kind(text)
        except ValueError:
            article = "an" if kind.__name__[0] in "aeiou" else "a"
            raise argparse.ArgumentTypeError(f"expected {article} {kind.__name__}, got {text!r}") from None

    convert.__name__ = kind.__name__
    return convert


def whole_number(minimum: int):
    """An argparse ``type``: a whole number >= ``minimum``, checked while the command line is parsed."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    convert.__name__ = "int"
    return convert


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def device_name(text: str) -> str:
    """An argparse ``type`` for ``--device``: a name torch knows (whether that device exists is checked later)."""
    from vitkit.utils.devices import DEVICE_NAMES, is_device_name

    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"must be {DEVICE_NAMES}, got {text!r}")
    return text


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, exclude: set[str] | None = None) -> list[str]:
    """One flag per field of ``cls`` (``--drop-path-rate``), help from ``metadata['help']``.

    Defaults are suppressed so that ``vars(args)`` holds only the flags the user typed: they override
    a config file, which overrides the dataclass defaults. Booleans get ``--x`` / ``--no-x``.
    """
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        if exclude and f.name in exclude:
            continue
        tp = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if "choices" in f.metadata:
            kw["choices"] = list(f.metadata["choices"])
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
            kw["help"] = f"{help_text} (default: {'on' if default else 'off'})"
        else:
            shown = '""' if default == "" else "unset" if default is None else default
            kw["help"] = f"{help_text} (default: {shown})"
            origin = typing.get_origin(tp)
            if origin in (tuple, list):
                args = [a for a in typing.get_args(tp) if a is not Ellipsis]
                item = args[0] if args else str
                kw["type"] = _typed(item, flag_name(f.name))
                kw["nargs"] = (
                    len(typing.get_args(tp)) if origin is tuple and Ellipsis not in typing.get_args(tp) else "+"
                )
                kw["metavar"] = item.__name__.upper()
            elif tp in (int, float, str):
                kw["type"] = _typed(tp, flag_name(f.name))
                kw["metavar"] = {int: "N", float: "X", str: "STR"}[tp]
            else:
                kw["type"] = str
        parser.add_argument(flag_name(f.name), **kw)
        names.append(f.name)
    return names


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml), TOML (.toml) or JSON file whose top level is a mapping of settings."""
    path = Path(path)
    if not path.is_file():
        raise VitkitError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise VitkitError(f"{path}: reading YAML needs pyyaml: pip install 'vitkit[yaml]'") from None
            values = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                try:
                    import tomli as tomllib  # type: ignore[no-redef]
                except ImportError:
                    raise VitkitError(f"{path}: reading TOML on Python 3.10 needs tomli: pip install tomli") from None
            values = tomllib.loads(text)
        elif suffix == ".json":
            import json

            values = json.loads(text)
        else:
            raise VitkitError(f"{path}: unknown config format {suffix!r}; use .yaml, .yml, .toml or .json")
    except VitkitError:
        raise
    except Exception as e:  # a syntax error in the file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VitkitError(f"{path}: cannot parse ({type(e).__name__}: {first})") from None
    if not isinstance(values, dict):
        raise VitkitError(f"{path}: expected a mapping of settings at the top level, got {type(values).__name__}")
    if len(values) == 1 and isinstance(next(iter(values.values())), dict) and next(iter(values)) == "train":
        values = values["train"]  # allow a [train] table / train: section
    return values


def given_settings(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The settings the user gave: the ``--config`` file's, then the flags typed on the command line."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(read_settings_file(args.config))
    values.update({n: getattr(args, n) for n in names if hasattr(args, n)})
    return values


def merged_config(
    cls: type, args: argparse.Namespace, names: list[str], base: dict[str, Any] | None = None, **fixed: Any
) -> Any:
    """``cls`` from dataclass defaults <- ``base`` <- ``--config`` file <- flags on the command line <- ``fixed``."""
    values: dict[str, Any] = dict(base or {})
    values.update(given_settings(args, names))
    values.update(fixed)
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        src = f" in {args.config}" if getattr(args, "config", None) else ""
        raise VitkitError(f"unknown setting(s){src}: {', '.join(unknown)} (see --help for the valid ones)")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        values[key] = _coerce(key, value, _unwrap_optional(hints[key]))
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise VitkitError(f"invalid setting: {e}") from None


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check a config file's value against the field type (int where a float is wanted is fine)."""
    origin = typing.get_origin(tp)
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        return tuple(value) if origin is tuple else list(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (tp in (int, float, str, bool) and not isinstance(value, tp)) or (tp is int and isinstance(value, bool)):
        if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise VitkitError(f"setting {key}: expected {tp.__name__}, got {value!r}")
    return value


def add_debug(parser: argparse.ArgumentParser, suppress_default: bool = True) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress_default else False,
        help="show the full traceback on errors",
    )


def add_reference(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reference",
        action="store_true",
        help="run the reference model as written, without vitkit.optimize (same results up to float rounding, slower)",
    )


def add_tta(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tta",
        default="none",
        choices=["none", "flip"],
        help="test-time augmentation: flip averages the predictions for each image and its mirror image (two "
        "forward passes; for models trained with flips; the report gives the top-1 without it too) (default: none)",
    )


def add_model_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="the registered architecture of SOURCE when it is a bare weights file (.pth/.bin/.safetensors, e.g. the "
        "official Swin / CvT releases); for a directory or hub id, the family it must hold",
    )


def inference_model(source: str, reference: bool = False, model_name: str | None = None) -> Any:
    """The model a source names (a bare weights file with ``model_name``), in eval mode, optimized for inference
    unless ``reference``."""
    from vitkit.engine import optimize
    from vitkit.factory import create_model
    from vitkit.hub import from_pretrained

    model = create_model(model_name, pretrained=source).eval() if model_name else from_pretrained(source)
    return model if reference else optimize(model, inplace=True)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", type=device_name, help="auto | cpu | cuda | cuda:N | mps (default: auto)"
    )


def add_threads(parser: argparse.ArgumentParser, default: str = "0") -> None:
    parser.add_argument(
        "--threads",
        default=default,
        metavar="N",
        help="CPU threads for torch: N, 0 = torch's default (all cores), auto = 1 when the machine is already busy "
        f"(load average >= cores; small models then run many times faster) else all (default: {default})",
    )


def apply_threads(value: str) -> int:
    """Set torch's intra-op threads from a --threads value; returns the number in use."""
    import os

    import torch

    if value == "auto":
        cores = os.cpu_count() or 1
        busy = hasattr(os, "getloadavg") and os.getloadavg()[0] >= cores
        if busy:
            torch.set_num_threads(1)
        return torch.get_num_threads()
    try:
        n = int(value)
    except ValueError:
        raise VitkitError(f"--threads must be a number or 'auto', got {value!r}") from None
    if n < 0:
        raise VitkitError(f"--threads must be >= 0, got {n}")
    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VitkitError(f"--device {name}: CUDA is not available on this machine")
    return name


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], file=None) -> None:
    """A plain aligned text table; ``columns`` = [(key, header)], right-aligned numbers."""
    file = file or sys.stdout
    cells = [[_cell(r.get(k)) for k, _ in columns] for r in rows]
    headers = [h for _, h in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    numeric = [
        any(_is_number(r.get(k)) for r in rows) and all(_is_number(r.get(k)) for r in rows if r.get(k) is not None)
        for k, _ in columns
    ]

    def fmt(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    print(fmt(headers), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for c in cells:
        print(fmt(c), file=file)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)
