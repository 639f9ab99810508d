"""The ``vitkit`` command line: ``vitkit <command> [options]`` (also ``python -m vitkit``).

Each command lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``; modules are
imported only when their command runs. Errors the user can fix (unknown model, missing data, a bad
value: :class:`vitkit.errors.VitkitError`) are printed as one line on stderr with exit status 2;
``--debug`` (or ``VITKIT_DEBUG=1``) shows the traceback instead.
"""

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from vitkit.cli._args import Parser, add_debug
from vitkit.engine.malloc import PRESETS, set_malloc
from vitkit.errors import VitkitError
from vitkit.settings import debug_enabled, malloc_preset

# name: (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("vitkit.cli.train", "train or fine-tune a model (settings from flags and/or a YAML/TOML file)"),
    "eval": ("vitkit.cli.evaluate", "evaluate a checkpoint: top-1/top-5, macro-F1, confusion matrix, report"),
    "predict": ("vitkit.cli.predict", "classify image files, folders or globs (top-k with class names)"),
    "explain": ("vitkit.cli.explain", "heat maps of what a model looked at (rollout, Grad-CAM); --mechanism figures"),
    "models": ("vitkit.cli.models", "list registered models with parameters, GFLOPs and resolution"),
    "info": ("vitkit.cli.info", "architecture summary of one model, stage by stage"),
    "demo": ("vitkit.cli.demo", "offline demo: train + evaluate a small ViT on the bundled Fashion-MNIST sample"),
    "compare": ("vitkit.cli.compare", "train + evaluate one small model per family on the same data and budget"),
    "bench": ("vitkit.cli.bench", "speed and memory against transformers and timm with the same weights"),
    "export": ("vitkit.cli.export", "export a model to ONNX (checked with onnxruntime), transformers or timm"),
    "push": ("vitkit.cli.push", "upload a checkpoint with its model card and evaluation to the Hugging Face Hub"),
    "serve": ("vitkit.cli.serve", "an HTTP API and web page for a model, with dynamic batching and metrics"),
}


def _command_in(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser; only the command named in ``argv`` (if any) imports its module's options."""
    from vitkit.version import __version__

    parser = Parser(
        prog="vitkit",
        description="ViT, Swin Transformer and CvT from first principles: train, evaluate, predict, compare.",
        epilog="Run `vitkit <command> --help` for a command's options. Start with `vitkit demo`.",
    )
    parser.add_argument("--version", action="version", version=f"vitkit {__version__}")
    add_debug(parser, suppress_default=False)
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)
    chosen = _command_in(argv)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_debug(p)
        if name != chosen:
            continue  # options are added only for the command that runs (keeps `vitkit models` fast)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def console_main() -> int:
    """The ``vitkit`` command (and ``python -m vitkit``): the process is ours, so tune glibc's malloc first.

    ``VITKIT_MALLOC`` = ``tuned`` (default), ``pinned`` or ``default`` (:mod:`vitkit.engine.malloc`): with ``tuned``
    freed tensors stay with the process instead of being page-faulted in again on the next batch. ``vitkit bench``
    leaves the allocator to its own ``--malloc`` option (default: untouched), so its comparisons measure what a
    user's process does.
    """
    preset = malloc_preset()
    if preset not in PRESETS:
        print(f"vitkit: error: VITKIT_MALLOC={preset!r}; choose from {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    if _command_in(sys.argv[1:]) != "bench":
        set_malloc(preset)
    return main()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line each (``vitkit: warning: ...``), not a file / line / source-code block."""
    text = str(message).removeprefix("vitkit: ")
    print(f"vitkit: warning: {text}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (without the allocator setting of :func:`console_main`); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or debug_enabled()
    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = _one_line_warning
        return _run(argv, debug)


def _run(argv: list[str], debug: bool) -> int:
    try:
        parser = build_parser(argv)
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, --version, or a usage error already printed as one line
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except VitkitError as e:
        if debug:
            raise
        print(f"vitkit: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vitkit models | head`: the reader left, nothing to report
        with contextlib.suppress(OSError):  # keep the interpreter's final flush quiet
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except KeyboardInterrupt:
        print("vitkit: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a missing file, no permission, a full disk: the system's own one-line reason
        if debug:
            raise
        print(f"vitkit: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not a user error: still one line unless --debug
        if debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(
            f"vitkit: internal error: {type(e).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr
        )
        return 1


__all__ = ["COMMANDS", "build_parser", "main"]
