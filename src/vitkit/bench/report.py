"""What a benchmark result says: speed and memory ratios against the fastest peer, tables, files."""

import os
import statistics
from pathlib import Path
from typing import Any

from vitkit.bench.contenders import DTYPES
from vitkit.bench.machine import device_tag
from vitkit.utils.io import atomic_write_json, atomic_write_text

SCHEMA = "vitkit.bench/2"
TASKS = ("infer", "train")


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each vitkit contender of plain fp32 / bf16 (optimized; reference; bf16 weights) against the fastest peer of
    the same dtype and task: speed ratio of the medians, the ratio of every back-to-back round, and the memory ratio."""
    rows = []
    for task in TASKS:
        for dtype in DTYPES:
            here = [r for r in results if r["task"] == task and r["dtype"] == dtype]
            peers = [r for r in here if r["impl"] != "vitkit"]
            if not peers:
                continue
            best = max(peers, key=lambda r: r["img_per_s"])
            mem = [r["peak_mem_mb"] for r in peers if r["peak_mem_mb"] is not None]
            for ours in (
                r for r in here if r["impl"] == "vitkit" and r["mode"] in ("optimized", "reference", "bf16-weights")
            ):
                rounds = [a / b for a, b in zip(ours["repeat_img_per_s"], best["repeat_img_per_s"], strict=False) if b]
                rows.append(
                    {
                        "task": task,
                        "dtype": dtype,
                        "vitkit": ours["name"],
                        "mode": ours["mode"],
                        "vitkit_img_per_s": ours["img_per_s"],
                        "fastest_peer": best["name"],
                        "peer_img_per_s": best["img_per_s"],
                        "speed_ratio": round(ours["img_per_s"] / best["img_per_s"], 3),
                        "round_ratios": [round(q, 3) for q in rounds],
                        "round_ratio_median": round(statistics.median(rounds), 3) if rounds else None,
                        "vitkit_peak_mem_mb": ours["peak_mem_mb"],
                        "lowest_peer_mem_mb": min(mem) if mem else None,
                        "mem_ratio": round(ours["peak_mem_mb"] / min(mem), 3) if mem and ours["peak_mem_mb"] else None,
                    }
                )
    return rows


def alternation_table(times: dict[str, list[float]], faults: dict[str, float]) -> str:
    """Median ms per batch and page faults per batch of each run of :func:`vitkit.bench.timing.alternate_calls`."""
    lines = ["| contender | ms / batch (median) | page faults / batch |", "|---|---:|---:|"]
    lines += [f"| {k} | {1e3 * statistics.median(v):.1f} | {faults[k]:.0f} |" for k, v in times.items()]
    return "\n".join(lines)


def round_ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of time(a) / time(b): each round ran a and b back to back."""
    return statistics.median(t / u for t, u in zip(times[a], times[b], strict=True))


def fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def round_range(q: dict[str, Any]) -> str:
    """'median (min-max)' of the per-round speed ratios of a ratio row ('-' for files without them)."""
    rounds = q.get("round_ratios") or []
    if not rounds:
        return "-"
    return f"{q['round_ratio_median']:.2f} ({min(rounds):.2f}-{max(rounds):.2f})"


def _features(machine: dict[str, Any]) -> str:
    on = [name for name, present in (machine.get("cpu_features") or {}).items() if present]
    limits = [f"{k}={v}" for k, v in (machine.get("isa_limits") or {}).items()]
    return (", ".join(on) or "none listed") + (f"; capped: {' '.join(limits)}" if limits else "")


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of one benchmark result (what ``vitkit bench`` prints)."""
    s, m = result["settings"], result["machine"]
    device = m["cpu"] + f" ({_features(m)})" if s["device"] == "cpu" else m.get("gpu")
    lines = [
        f"### {s['model']} · {s['device']} · {s['threads']} threads · input {'x'.join(map(str, s['input_size']))}",
        "",
        f"{device} · torch {m['torch']} · "
        f"matmul {', '.join(f'{k} {v} GFLOP/s' for k, v in result['matmul_gflops'].items())} · "
        f"{result['flops']['gmacs_per_image']:.2f} GMACs/img · {result['flops']['params'] / 1e6:.2f} M params · "
        f"load avg {m.get('load_avg_before')} -> {m.get('load_avg_after')} · malloc {s.get('malloc', 'default')}",
        "",
        "| contender | task | batch | img/s | vs vitkit | p50 ms | p90 ms | GFLOP/s | of matmul peak | peak MiB "
        "| page faults / batch | native kernel calls / batch | first call s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    base = {r["task"]: r["img_per_s"] for r in result["results"] if r["name"] in ("vitkit", "vitkit[reference]")}
    for r in result["results"]:
        rel = f"{r['img_per_s'] / base[r['task']]:.2f}x" if r["task"] in base else "-"
        calls = ", ".join(f"{k} {v:g}" for k, v in (r.get("kernel_calls_per_batch") or {}).items()) or "-"
        lines.append(
            f"| {r['name']} | {r['task']} | {r['batch_size']} | {r['img_per_s']:.2f} | {rel} | "
            f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p90']:.1f} | {r['gflops_per_s']:.1f} | "
            f"{100 * r['frac_of_matmul_peak']:.0f}% | {fmt(r['peak_mem_mb'], '.0f')} | "
            f"{fmt(r.get('page_faults_per_batch'), 'd')} | {calls} | {r['first_call_s']:.2f} |"
        )
    if result["ratios"]:
        lines += [
            "",
            "| task | dtype | vitkit | img/s | fastest peer | peer img/s | speed ratio | per-round ratios "
            "| memory ratio |",
            "|---|---|---|---:|---|---:|---:|---:|---:|",
        ]
        for q in result["ratios"]:
            lines.append(
                f"| {q['task']} | {q['dtype']} | {q['vitkit']} | {q['vitkit_img_per_s']:.2f} | {q['fastest_peer']} | "
                f"{q['peer_img_per_s']:.2f} | {q['speed_ratio']:.3f}x | {round_range(q)} | "
                f"{fmt(q['mem_ratio'], '.3f')} |"
            )
    diffs = {r["name"]: r["max_abs_logit_diff_vs_first"] for r in result["results"] if r["task"] == "infer"}
    if len(diffs) > 1:
        lines += ["", "max |logit difference| vs the first contender: " + ", ".join(
            f"{k} {fmt(v, '.2e')}" for k, v in diffs.items())]  # fmt: skip
    if result.get("optimization"):
        lines += ["", "vitkit.optimize: " + "; ".join(result["optimization"])]
    for n in result["notes"]:
        lines.append(f"- note: {n}")
    return "\n".join(lines) + "\n"


def default_output_name(result: dict[str, Any]) -> str:
    day = result["created"][:10]
    s = result["settings"]
    return f"{s['model']}_{device_tag(result['machine'])}_t{s['threads']}_b{s['batch_size']}_{day}"


def write_result(result: dict[str, Any], out: str | os.PathLike) -> Path:
    """``out`` ending in .json is the JSON file (a .md table beside it); otherwise a directory for both."""
    out = Path(out)
    path = out if out.suffix == ".json" else out / (default_output_name(result) + ".json")
    atomic_write_json(path, result)
    atomic_write_text(path.with_suffix(".md"), format_table(result))
    return path
