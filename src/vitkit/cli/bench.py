"""``vitkit bench MODEL``: speed and memory of vitkit (optimized, and its reference model) against transformers and
timm with the same weights (:mod:`vitkit.bench`)."""

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

from vitkit.bench import DTYPES, MODES, TASKS, benchmark, format_table, write_result
from vitkit.cli._args import positive_int
from vitkit.engine.malloc import PRESETS


def _csv(choices: tuple[str, ...] | None = None) -> Callable[[str], tuple[str, ...]]:
    def parse(s: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in s.split(",") if x.strip())
        bad = [x for x in items if choices and x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{s!r}: choose from {', '.join(choices or ())} (comma-separated)")
        return items

    return parse


def _override(s: str) -> tuple[str, Any]:
    key, sep, value = s.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{s!r}: expected key=value, e.g. depth=2")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _device(text: str) -> str:
    if text not in ("auto", "cpu") and not re.fullmatch(r"cuda(:[0-9]+)?", text):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda, cuda:N or auto, got {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser, *, several_models: bool = False) -> None:
    """The options of ``vitkit bench``; ``several_models`` takes ``--models A B ...`` instead of one MODEL."""
    if several_models:
        parser.add_argument("--models", nargs="+", default=None, help="registered model names")
    else:
        parser.add_argument("model", help="registered model name, e.g. vit_base_patch16_224 (see `vitkit models`)")
    parser.add_argument("--batch-size", "-b", type=positive_int, default=8)
    parser.add_argument("--train-batch-size", type=positive_int, default=None, help="default: --batch-size")
    parser.add_argument("--img-size", type=positive_int, default=None, help="default: the model's")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="auto", type=_device, help="cpu, cuda[:N] or auto")
    parser.add_argument("--dtype", type=_csv(tuple(DTYPES)), default=("fp32",), help="fp32,bf16 (autocast)")
    parser.add_argument(
        "--mode", type=_csv(MODES), default=("optimized",), help=f"vitkit contenders: {','.join(MODES)}"
    )
    parser.add_argument("--task", type=_csv(TASKS), default=TASKS, help="infer,train")
    parser.add_argument(
        "--compare", action="store_true", help="also vitkit's reference model, transformers and timm (same weights)"
    )
    parser.add_argument("--warmup", type=positive_int, default=2)
    parser.add_argument("--iters", type=positive_int, default=3, help="timed iterations per repeat")
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--malloc",
        choices=tuple(PRESETS),
        default="default",
        help="glibc malloc thresholds for the whole run: default, pinned (32/64 MiB fixed) or tuned "
        "(no page faults after warm-up); see vitkit.engine.malloc",
    )
    parser.add_argument(
        "--peer-adamw",
        choices=("default", "fused"),
        default="default",
        help="the peers' optimizer in training steps: torch.optim.AdamW() as written in a plain loop (default) or "
        "the fused kernel vitkit's trainer uses",
    )
    parser.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set depth=2")  # fmt: skip
    parser.add_argument("--out", default=None, help="a .json file, or a directory for <model>_<device>_<date>.json")
    parser.add_argument("--quiet", "-q", action="store_true")


def benchmark_from_args(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """``benchmark(name)`` with the settings of ``add_arguments`` (shared by ``vitkit bench`` and benchmarks/)."""
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    return benchmark(
        name,
        batch_size=args.batch_size,
        train_batch_size=args.train_batch_size,
        img_size=args.img_size,
        threads=args.threads,
        device=args.device,
        dtypes=tuple(args.dtype),
        modes=tuple(args.mode),
        tasks=tuple(args.task),
        compare=args.compare,
        warmup=args.warmup,
        iters=args.iters,
        repeats=args.repeats,
        memory=not args.no_memory,
        overrides=dict(args.set),
        malloc=args.malloc,
        peer_adamw=args.peer_adamw,
        log=log,
    )


def run(args: argparse.Namespace) -> int:
    result = benchmark_from_args(args.model, args)
    print(format_table(result))
    if args.out:
        path = write_result(result, args.out)
        print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0
