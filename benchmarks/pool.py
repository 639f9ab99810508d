"""Pool the per-round speed ratios of several ``speed.py`` / ``vitkit bench`` result files into one table.

    python benchmarks/pool.py run1/*.json run2/*.json run3/*.json

One run's ratio moves by +-10 % on a shared 2-core VM; every alternation round is a back-to-back pair, so pooling
the rounds of several runs gives the median and quartiles the README quotes.
"""

import argparse
import json
import statistics
from collections import defaultdict


def pooled(paths: list[str]) -> dict[tuple[str, str, str, str], dict]:
    rounds: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    runs: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for path in paths:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
        for q in result.get("ratios", []):
            key = (result["settings"]["model"], q["task"], q["dtype"], q.get("vitkit", "vitkit"))
            rounds[key].extend(q.get("round_ratios") or [])
            runs[key] += 1
    out = {}
    for key, values in rounds.items():
        if len(values) < 2:
            continue
        q1, median, q3 = statistics.quantiles(values, n=4)
        out[key] = {"runs": runs[key], "rounds": len(values), "median": median, "q1": q1, "q3": q3,
                    "min": min(values), "max": max(values)}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    args = p.parse_args(argv)
    print("| model | task | dtype | vitkit | runs | rounds | median ratio | quartiles | min-max |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for (model, task, dtype, ours), s in sorted(pooled(args.files).items()):
        print(
            f"| {model} | {task} | {dtype} | {ours} | {s['runs']} | {s['rounds']} | {s['median']:.3f}x | "
            f"{s['q1']:.2f}-{s['q3']:.2f} | {s['min']:.2f}-{s['max']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
