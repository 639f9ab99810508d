"""This vitkit against another version of it, in one process, alternating, same weights (with transformers beside).

    git worktree add /tmp/vitkit-old <commit>        # or any unpacked copy of another version
    python benchmarks/versions_ab.py swin_tiny_patch4_window7_224 --other /tmp/vitkit-old/src \\
        --batch-size 8 --rounds 10 --threads 2

The other version is imported as ``vitkit_other`` (its ``vitkit`` imports rewritten on the fly), so both live in
this process and run back to back in every round: the ratios are not at the mercy of a machine that is faster or
busier in one run than in the next. This version runs ``vitkit.optimize(model)``; the other version runs its model
in eval mode under ``torch.inference_mode`` (what versions without ``optimize`` did for inference). Both load the
same transformers checkpoint. Prints median ms per batch, page faults per batch and the per-round ratios.
"""

import argparse
import importlib.abc
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

from vitkit.bench.contenders import build_hf_pair
from vitkit.bench.report import alternation_table, round_ratio
from vitkit.bench.timing import alternate_calls
from vitkit.cli.bench import _override
from vitkit.engine import optimize
from vitkit.engine.malloc import PRESETS, set_malloc

ALIAS = "vitkit_other"


class _Renamed(importlib.abc.MetaPathFinder, importlib.abc.SourceLoader):
    """Finds ``vitkit_other[.x]`` in another checkout's ``src/vitkit`` and rewrites its ``vitkit`` imports."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, fullname: str) -> Path | None:
        rel = Path(*fullname.split(".")[1:])
        for candidate in (self.root / rel / "__init__.py", (self.root / rel).with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    def find_spec(self, fullname, path=None, target=None):
        if fullname != ALIAS and not fullname.startswith(ALIAS + "."):
            return None
        file = self._path(fullname)
        if file is None:
            return None
        is_package = file.name == "__init__.py"
        spec = importlib.util.spec_from_file_location(
            fullname, file, loader=self, submodule_search_locations=[str(file.parent)] if is_package else None
        )
        return spec

    def get_filename(self, fullname: str) -> str:
        return str(self._path(fullname))

    def get_data(self, path: str) -> bytes:
        text = Path(path).read_text(encoding="utf-8")
        for old, new in (("from vitkit", f"from {ALIAS}"), ("import vitkit", f"import {ALIAS}"),
                         ("vitkit.", f"{ALIAS}.")):  # fmt: skip
            text = text.replace(old, new)
        return text.encode()


def import_other(src: Path):
    sys.meta_path.insert(0, _Renamed(src / "vitkit"))
    return importlib.import_module(ALIAS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--other", type=Path, required=True, help="the src/ folder of the other version")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--malloc", choices=tuple(PRESETS), default="default")
    p.add_argument("--img-size", type=int, default=None, help="default: the model's")
    p.add_argument("--set", type=_override, action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. depth=2")  # fmt: skip
    args = p.parse_args(argv)
    set_malloc(args.malloc)
    torch.set_num_threads(args.threads)
    other = import_other(args.other.resolve())
    reference, hf = build_hf_pair(args.model, args.img_size, dict(args.set))
    with tempfile.TemporaryDirectory(prefix="vitkit-ab-") as tmp:
        hf.save_pretrained(tmp)
        old = other.from_pretrained(tmp).eval()
    fast = optimize(reference)
    x = torch.randn(args.batch_size, *reference.data_config["input_size"])
    runs = {"this (optimized)": lambda: fast(x), f"other ({other.__version__})": lambda: old(x),
            "transformers": lambda: hf(pixel_values=x).logits}  # fmt: skip
    with torch.inference_mode():
        outs = {k: f().float() for k, f in runs.items()}
        times, faults = alternate_calls(runs, args.rounds)
    this, that = list(runs)[:2]
    print(f"{args.model} · batch {args.batch_size} · {args.threads} threads · malloc {args.malloc} · "
          f"max |logits this - other| {(outs[this] - outs[that]).abs().max().item():.1e}")  # fmt: skip
    print(alternation_table(times, faults))
    pairs = ((that, this, "other/this"), ("transformers", this, "transformers/this"),
             ("transformers", that, "transformers/other"))  # fmt: skip
    print("per-round median ratios: " + ", ".join(f"{n} {round_ratio(times, a, b):.3f}" for a, b, n in pairs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
