"""A/B of one inference-engine switch, alternating with the reference model and transformers, same weights.

    python benchmarks/engine_ab.py swin_tiny_patch4_window7_224 native_kernels=False \\
        --batch-size 8 --rounds 10 --threads 2 [--malloc default|pinned|tuned]

Each round times one batch of: ``vitkit.optimize(model)`` (every switch on its default), the same with the switch
changed, the reference model and transformers (inference, no autograd). Prints median ms per batch, page faults per
batch and the per-round ratios. The switches are the fields of :class:`vitkit.settings.EngineSettings`; the A/B
numbers of each engine swap in benchmarks/README.md come from this script.
"""

import argparse
import ast

import torch

from vitkit.bench.contenders import build_hf_pair
from vitkit.bench.report import alternation_table, round_ratio
from vitkit.bench.timing import alternate_calls
from vitkit.cli.bench import _override
from vitkit.engine import optimize
from vitkit.engine.malloc import PRESETS, set_malloc
from vitkit.errors import VitkitError


def _switch(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected switch=value, e.g. native_kernels=False")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"{text!r}: the value must be a Python literal") from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("switch", type=_switch, help="an EngineSettings field and its B value, e.g. fused_linear=False")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--malloc", choices=tuple(PRESETS), default="default")
    p.add_argument("--img-size", type=int, default=None, help="default: the model's")
    p.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. depth=2")  # fmt: skip
    args = p.parse_args(argv)
    name, value = args.switch
    set_malloc(args.malloc)
    torch.set_num_threads(args.threads)
    reference, hf = build_hf_pair(args.model, args.img_size, dict(args.set))
    try:
        a, b = optimize(reference), optimize(reference, **{name: value})
    except VitkitError as e:
        p.error(str(e))
    x = torch.randn(args.batch_size, *reference.data_config["input_size"])
    label = f"{name}={value!r}"
    runs = {"optimized": lambda: a(x), label: lambda: b(x), "reference": lambda: reference(x),
            "transformers": lambda: hf(pixel_values=x).logits}  # fmt: skip
    with torch.inference_mode():
        diff = (runs["optimized"]() - runs[label]()).abs().max().item()
        times, faults = alternate_calls(runs, args.rounds)

    print(f"{args.model} · batch {args.batch_size} · {args.threads} threads · malloc {args.malloc} · "
          f"A: optimize() · B: optimize({label}) · max |logits A - B| {diff:.1e}")  # fmt: skip
    print(alternation_table(times, faults))
    pairs = ((label, "optimized", "B/A"), ("transformers", "optimized", "transformers/A"),
             ("transformers", label, "transformers/B"), ("reference", "optimized", "reference/A"))  # fmt: skip
    print("per-round median ratios: " + ", ".join(f"{n} {round_ratio(times, a, b):.3f}" for a, b, n in pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
