"""``benchmark(model)``: time and measure vitkit against its peers with the same weights, in one process.

What is measured, per contender (vitkit optimized in a dtype and mode; with ``compare`` also vitkit's reference model,
transformers and timm): inference images/s and batch latency p50 / p90 (``torch.inference_mode``); training-step
images/s (forward, cross-entropy, backward, AdamW: vitkit's fused kernel, the peers' ``torch.optim.AdamW()`` or, with
``peer_adamw="fused"``, the same kernel) for the trainable ones; peak
memory in a fresh subprocess (:mod:`vitkit.bench.memory`); FLOPs per image (:mod:`vitkit.eval.flops`) and the
achieved rate as a fraction of this machine's dense matmul rate, measured in the same run; page faults and native
kernel calls per batch (what actually ran). Contenders alternate (:mod:`vitkit.bench.timing`); peers get the same
weights (the transformers model is saved with ``save_pretrained`` and loaded into vitkit) and the largest logit
difference is reported.
"""

import datetime as _dt
import statistics
from collections.abc import Callable
from typing import Any

import torch

from vitkit.bench.contenders import (
    CPU_ONLY,
    DTYPES,
    MODES,
    build_contender,
    build_hf_pair,
    build_vitkit,
    contender_specs,
    infer_step,
    inputs,
    spec_name,
    timm_available,
    train_step,
)
from vitkit.bench.machine import cpu_supports_bf16, load_avg, machine_info, matmul_rate, resolve_device
from vitkit.bench.memory import measure_memory
from vitkit.bench.report import SCHEMA, TASKS, ratios
from vitkit.bench.timing import percentile, time_alternating
from vitkit.convert import HF_CONFIGS
from vitkit.engine.malloc import PRESETS, set_malloc
from vitkit.errors import VitkitError
from vitkit.eval.flops import count_flops
from vitkit.models.registry import get_entry


def _check(kind: str, values, valid) -> None:
    for v in values:
        if v not in valid:
            raise VitkitError(f"unknown {kind} {v!r}; choose from {', '.join(valid)}")


def benchmark(
    model: str,
    *,
    batch_size: int = 8,
    train_batch_size: int | None = None,
    img_size: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    dtypes: tuple[str, ...] = ("fp32",),
    modes: tuple[str, ...] = ("optimized",),
    tasks: tuple[str, ...] = TASKS,
    compare: bool = False,
    warmup: int = 2,
    iters: int = 3,
    repeats: int = 5,
    memory: bool = True,
    overrides: dict[str, Any] | None = None,
    malloc: str = "default",
    peer_adamw: str = "default",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the JSON-ready result (see the module docstring for the method)."""
    log = log or (lambda s: None)
    _check("malloc preset", [malloc], tuple(PRESETS))
    _check("dtype", dtypes, tuple(DTYPES))
    _check("mode", modes, MODES)
    _check("task", tasks, TASKS)
    _check("peer AdamW", [peer_adamw], ("default", "fused"))
    if batch_size < 1 or (train_batch_size is not None and train_batch_size < 1):
        raise VitkitError("batch sizes must be >= 1")
    malloc_applied = set_malloc(malloc)  # the same allocator settings for every contender (process-wide)
    overrides = dict(overrides or {})
    family = get_entry(model).family  # a clear error for an unknown name
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    notes: list[str] = []
    if dev.type == "cpu" and "bf16" in dtypes and not cpu_supports_bf16():
        notes.append("this CPU has no native bf16 (avx512_bf16/amx): bf16 autocast is emulated and slow")
    train_batch_size = train_batch_size or batch_size
    info = machine_info(dev)
    load_before = load_avg()

    specs = contender_specs(list(modes), list(dtypes), compare, dev, peer_adamw)
    if compare and not timm_available():
        notes.append("timm is not importable here: no timm contender")
        specs = [s for s in specs if s["impl"] != "timm"]
    if compare and family not in HF_CONFIGS:
        notes.append(f"no transformers counterpart wired for family {family!r}")
        specs = [s for s in specs if s["impl"] != "transformers"]
    if any(s["impl"] == "transformers" for s in specs):
        pair = build_hf_pair(model, img_size, overrides)
    else:
        pair = (build_vitkit(model, img_size, overrides), None)
    reference = pair[0].eval()
    num_classes = reference.config.num_classes
    input_size = tuple(reference.data_config["input_size"])

    log(f"{model}: {', '.join(spec_name(s) for s in specs)} on {dev}, input {input_size}")
    fl = count_flops(reference, input_size)
    fl_train = count_flops(reference, input_size, backward=True) if "train" in tasks else None
    rates = {d: matmul_rate(dev, DTYPES[d]) for d in sorted(set(dtypes) | {"fp32"})}
    log("matmul GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))

    contenders = []
    for s in specs:
        try:
            contenders.append(build_contender(model, s, img_size, overrides, dev, threads, pair=pair))
        except Exception as e:  # a mode that fails on this model is reported, not fatal
            notes.append(f"{spec_name(s)}: could not be built ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    optimization = next((c.report for c in contenders if c.report is not None), None)

    # same weights, same input: how far apart are the outputs?
    x_check, _ = inputs(2, input_size, num_classes, dev, seed=1)
    ref = None
    diffs = {}
    for c in contenders:
        with torch.inference_mode():
            out = infer_step(c, x_check, dev).float()
        if ref is None:
            ref = out
        diffs[c.name] = float((out - ref).abs().max())

    results: list[dict[str, Any]] = []
    for task in tasks:
        batch = batch_size if task == "infer" else train_batch_size
        x, y = inputs(batch, input_size, num_classes, dev)
        group = [c for c in contenders if task == "infer" or c.trainable]
        if not group:
            continue
        log(f"timing {task} (batch {batch}): {', '.join(c.name for c in group)}")
        if task == "infer":
            step = lambda c, x=x: infer_step(c, x, dev)
        else:
            step = lambda c, x=x, y=y: train_step(c, x, y, dev)
        timing = time_alternating(group, step, device=dev, warmup=warmup, iters=iters, repeats=repeats)
        flops_img = (fl if task == "infer" else fl_train)["flops"] / fl["input_shape"][0]  # counted at batch 1
        for c in group:
            t = timing[c.name]
            sec = statistics.median(t["repeat_s"])
            ips = batch / sec
            rate = rates.get(c.dtype if c.mode not in CPU_ONLY else "fp32", rates["fp32"])
            achieved = flops_img * ips / 1e9
            batches = repeats * iters
            r = {
                "name": c.name,
                "impl": c.impl,
                "mode": c.mode,
                "dtype": c.dtype,
                "task": task,
                "batch_size": batch,
                "img_per_s": round(ips, 3),
                "latency_ms_p50": round(1e3 * percentile(t["iter_s"], 0.5), 2),
                "latency_ms_p90": round(1e3 * percentile(t["iter_s"], 0.9), 2),
                "repeat_img_per_s": [round(batch / s, 3) for s in t["repeat_s"]],
                "gflops_per_s": round(achieved, 2),
                "frac_of_matmul_peak": round(achieved / rate, 4),
                "first_call_s": round(t["first_call_s"], 3),
                "page_faults_per_batch": round(t["page_faults"] / batches),
                "kernel_calls_per_batch": {k: round(v / batches, 2) for k, v in t["kernel_calls"].items() if v},
                "setup_s": round(c.setup_s, 3),
                "adamw": c.adamw if task == "train" else None,
                "weights": c.weights,
                "max_abs_logit_diff_vs_first": diffs.get(c.name),
                "peak_mem_mb": None,
                "run_mem_mb": None,
                "mem_method": "not measured",
            }
            results.append(r)
            log(f"  {c.name:<24} {task:<5} {ips:8.2f} img/s  p50 {r['latency_ms_p50']:.1f} ms")

    if memory:
        for r in results:
            if r["mode"] == "compile":
                r["mem_method"] = "not measured (would recompile in the subprocess)"
                continue
            job = {
                "model": model,
                "spec": {"impl": r["impl"], "mode": r["mode"], "dtype": r["dtype"], "adamw": r["adamw"] or "default"},
                "img_size": img_size,
                "overrides": overrides,
                "device": str(dev),
                "threads": threads or torch.get_num_threads(),
                "batch_size": r["batch_size"],
                "num_classes": num_classes,
                "task": r["task"],
                "iters": 2,
                "malloc": malloc,
            }
            r.update(measure_memory(job))
            log(f"  {r['name']:<24} {r['task']:<5} peak {r['peak_mem_mb']} MiB")

    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info | {"load_avg_before": load_before, "load_avg_after": load_avg()},
        "settings": {
            "model": model,
            "input_size": list(input_size),
            "batch_size": batch_size,
            "train_batch_size": train_batch_size,
            "threads": threads or torch.get_num_threads(),
            "device": str(dev),
            "dtypes": list(dtypes),
            "modes": list(modes),
            "tasks": list(tasks),
            "compare": compare,
            "warmup": warmup,
            "iters": iters,
            "repeats": repeats,
            "overrides": overrides,
            "malloc": malloc,
            "malloc_applied": malloc_applied,
            "peer_adamw": peer_adamw,
        },
        "optimization": optimization.lines() if optimization is not None else [],
        "matmul_gflops": {k: round(v, 1) for k, v in rates.items()},
        "flops": {
            "params": fl["params"],
            "gmacs_per_image": round(fl["gmacs"] / fl["input_shape"][0], 4),
            "train_gflops_per_image": round(fl_train["gflops"], 4) if fl_train else None,
        },
        "results": results,
        "ratios": ratios(results),
        "notes": notes,
    }
