"""Peak memory of one contender, alone in a fresh subprocess that builds only that model.

CPU: the kernel's resident-set high-water mark (``VmHWM``), reset through ``/proc/self/clear_refs`` after the model
is built; ``peak_mem_mb`` = peak - RSS after imports (weights + activations, + gradients and optimizer state for
training), ``run_mem_mb`` = peak - RSS after building (what running adds); ``ru_maxrss`` elsewhere. CUDA:
``torch.cuda.max_memory_allocated``.
"""

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from vitkit.bench.contenders import build_contender, infer_step, inputs, train_step
from vitkit.bench.machine import resolve_device, synchronize
from vitkit.engine.malloc import set_malloc


def _rss_kb() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _hwm_kb() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(job: dict[str, Any]) -> dict[str, Any]:
    """Runs in the subprocess: build one contender, run its task a few times, report the memory peak in MiB."""
    torch.set_num_threads(job["threads"])
    set_malloc(job.get("malloc", "default"))
    device = resolve_device(job["device"])
    spec = job["spec"]
    if spec["impl"] != "vitkit":
        import transformers  # noqa: F401  (import cost is not the model's)
    linux = Path("/proc/self/status").exists()
    base_kb = _rss_kb() if linux else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c = build_contender(job["model"], spec, job["img_size"], job["overrides"], device, job["threads"])
    x, y = inputs(job["batch_size"], c.input_size, job["num_classes"], device, seed=0)
    built_kb = _rss_kb() if linux else base_kb
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    method = "cuda max_memory_allocated"
    if device.type == "cpu":
        method = "VmHWM (reset after build) - RSS after imports" if linux and _reset_hwm() else "ru_maxrss"
    for _ in range(job["iters"]):
        if job["task"] == "train":
            train_step(c, x, y, device)
        else:
            infer_step(c, x, device)
    synchronize(device)
    act_mb = None
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    elif method.startswith("VmHWM"):
        hwm = _hwm_kb()
        peak_mb, act_mb = (hwm - base_kb) / 1024, round((hwm - built_kb) / 1024, 1)
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_kb) / 1024
    return {"peak_mem_mb": round(peak_mb, 1), "run_mem_mb": act_mb, "mem_method": method}


def measure_memory(job: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    code = (
        "import json, sys\nfrom vitkit.bench.memory import memory_child\n"
        "print(json.dumps(memory_child(json.loads(sys.argv[1]))))"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"peak_mem_mb": None, "mem_method": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peak_mem_mb": None, "mem_method": f"failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])
