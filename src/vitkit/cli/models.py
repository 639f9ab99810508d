"""``vitkit models [PATTERN]``: every registered name with parameters, GFLOPs and default resolution."""

import argparse
import json

from vitkit.cli._args import print_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default=None, help="shell wildcard such as 'swin_*' (default: all)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--no-flops", action="store_true", help="skip counting FLOPs (only names and parameters)")


def run(args: argparse.Namespace) -> int:
    from vitkit.eval.complexity import build_on_meta, registered_model_stats
    from vitkit.models.registry import get_entry, list_models

    names = list_models(args.pattern)
    if not names:
        from vitkit.errors import VitkitError

        raise VitkitError(f"no registered model matches {args.pattern!r}; `vitkit models` lists them all")
    rows = []
    for name in names:
        entry = get_entry(name)
        if args.no_flops:
            params = sum(p.numel() for p in build_on_meta(entry.config, name).parameters())
            c = entry.config
            row = {"name": name, "family": entry.family, "params": params, "params_m": round(params / 1e6, 3)}
            row["input_size"] = list(c.input_size)
        else:
            row = registered_model_stats(name).to_dict()
        row["resolution"] = "x".join(str(s) for s in row["input_size"][1:])
        row["pretrained"] = entry.hub_id
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = [("name", "model"), ("family", "family"), ("params_m", "params (M)")]
    if not args.no_flops:
        cols += [("gflops", "GFLOPs"), ("gmacs", "GMACs")]
    cols += [("resolution", "resolution"), ("pretrained", "default weights")]
    print_table(rows, cols)
    return 0
