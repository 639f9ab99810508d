"""Speed and memory benchmark: ``vitkit bench MODEL`` and ``benchmarks/speed.py`` share this code.

What is measured, per contender (vitkit in a mode and dtype; with ``--compare`` also transformers and timm):
  * inference images/s and batch latency p50 / p90 (``torch.inference_mode``),
  * training-step images/s (forward, cross-entropy, backward, SGD step with momentum, like timm's benchmark),
  * peak memory, each contender alone in a fresh subprocess that builds only that model, so runs cannot
    contaminate each other (CPU: the kernel's resident-set high-water mark ``VmHWM``, reset through
    ``/proc/self/clear_refs`` after the model is built; ``peak_mem_mb`` = peak - RSS after imports, i.e.
    weights + activations (+ gradients and optimizer state for training); ``run_mem_mb`` = peak - RSS after
    building, what running adds; falls back to ``ru_maxrss``. CUDA: ``torch.cuda.max_memory_allocated``),
  * FLOPs per image (``vitkit.tools.flops``) and the achieved rate as a fraction of this machine's dense matmul
    rate, measured in the same run (``torch.mm`` of 2048 x 2048 at the benchmark's thread count and dtype).

Contenders run alternately (repeat 1: A, B, C; repeat 2: B, C, A; ...) after a warm-up of each, so slow drift
of a shared machine hits all of them alike; throughput is the median over repeats. Peers get the **same
weights**: the transformers model is built from a config equal to vitkit's, saved with ``save_pretrained`` and
loaded into vitkit with :func:`vitkit.from_pretrained`; the largest logit difference is reported.
"""

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import vitkit
from vitkit.errors import VitkitError
from vitkit.kernels import attention as native_attention
from vitkit.kernels import window_attention as native_window_attention
from vitkit.registry import get_entry
from vitkit.tools.malloc import PRESETS, set_malloc
from vitkit.utils.io import atomic_write_json, atomic_write_text

SCHEMA = "vitkit.bench/1"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("eager", "compile", "onnx", "int8", "packed")
TASKS = ("infer", "train")


# --- machine ------------------------------------------------------------------------------------
def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VitkitError(f"--device {name}: CUDA is not available in this torch ({torch.__version__})")
    if name != "cpu" and not name.startswith("cuda"):
        raise VitkitError(f"--device must be cpu, cuda[:N] or auto, got {name!r}")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    m = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    return set(m.group(1).split()) if m else set()


def cpu_supports_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX); without them bf16 autocast on CPU is emulated and slow."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_name() -> str:
    try:
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        if m:
            return m.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_supports_bf16(),
        "cpu_amx": "amx_tile" in cpu_flags(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "vitkit": vitkit.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def device_tag(info: dict[str, Any]) -> str:
    """A short file-name-safe name of the device, e.g. ``cpu-amd-epyc-2c`` or ``cuda-nvidia-h100``."""
    if str(info["device"]).startswith("cuda"):
        name, prefix = info.get("gpu", "gpu"), "cuda"
    else:
        name, prefix = f"{info['cpu']} {info['cpu_count']}c", "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{prefix}-{slug}"[:60]


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Dense ``torch.mm`` GFLOP/s (median of repeats): the machine's practical peak for this dtype."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    synchronize(device)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


# --- building the contenders --------------------------------------------------------------------
def _hf_vit_config(cfg: Any) -> Any:
    import transformers

    h, w = vitkit.models.base.to_2tuple(cfg.img_size)
    if h != w or cfg.global_pool != "token" or not cfg.class_token:
        raise VitkitError("transformers' ViT needs a square image and the [CLS] token head")
    return transformers.ViTConfig(
        image_size=h,
        patch_size=cfg.patch_size,
        num_channels=cfg.in_chans,
        hidden_size=cfg.embed_dim,
        num_hidden_layers=cfg.depth,
        num_attention_heads=cfg.num_heads,
        intermediate_size=int(cfg.embed_dim * cfg.mlp_ratio),
        qkv_bias=cfg.qkv_bias,
        layer_norm_eps=cfg.norm_eps,
        num_labels=cfg.num_classes,
    ), transformers.ViTForImageClassification


def _hf_swin_config(cfg: Any) -> Any:
    import transformers

    h, w = vitkit.models.base.to_2tuple(cfg.img_size)
    return transformers.SwinConfig(
        image_size=h if h == w else [h, w],
        patch_size=cfg.patch_size,
        num_channels=cfg.in_chans,
        embed_dim=cfg.embed_dim,
        depths=list(cfg.depths),
        num_heads=list(cfg.num_heads),
        window_size=cfg.window_size,
        mlp_ratio=cfg.mlp_ratio,
        qkv_bias=cfg.qkv_bias,
        drop_path_rate=0.0,
        layer_norm_eps=cfg.norm_eps,
        num_labels=cfg.num_classes,
    ), transformers.SwinForImageClassification


def _hf_cvt_config(cfg: Any) -> Any:
    import transformers

    n = len(cfg.depth)
    h = vitkit.models.base.to_2tuple(cfg.img_size)[0]
    return transformers.CvtConfig(
        num_channels=cfg.in_chans,
        patch_sizes=list(cfg.patch_size),
        patch_stride=list(cfg.patch_stride),
        patch_padding=list(cfg.patch_padding),
        embed_dim=list(cfg.embed_dim),
        num_heads=list(cfg.num_heads),
        depth=list(cfg.depth),
        mlp_ratio=list(cfg.mlp_ratio),
        qkv_bias=list(cfg.qkv_bias),
        cls_token=list(cfg.cls_token),
        kernel_qkv=[cfg.kernel_qkv] * n,
        padding_q=[cfg.padding_q] * n,
        padding_kv=[cfg.padding_kv] * n,
        stride_q=[cfg.stride_q] * n,
        stride_kv=[cfg.stride_kv] * n,
        drop_rate=[0.0] * n,
        attention_drop_rate=[0.0] * n,
        drop_path_rate=[0.0] * n,
        num_labels=cfg.num_classes,
        image_size=h,  # not a transformers field: lets vitkit's converter restore img_size
    ), transformers.CvtForImageClassification


# family -> function(vitkit config) -> (transformers config, transformers model class)
HF_CONFIGS: dict[str, Callable[[Any], Any]] = {"vit": _hf_vit_config, "swin": _hf_swin_config, "cvt": _hf_cvt_config}


def build_vitkit(name: str, img_size: int | None, overrides: dict[str, Any]) -> nn.Module:
    kw = dict(overrides)
    if img_size is not None:
        kw["img_size"] = img_size
    return vitkit.create_model(name, drop_path_rate=0.0, **kw)


def build_hf_pair(name: str, img_size: int | None, overrides: dict[str, Any], seed: int = 0):
    """(vitkit model, transformers model) with identical weights: HF init -> save_pretrained -> from_pretrained."""
    entry = get_entry(name)
    config = build_vitkit(name, img_size, overrides).config
    if entry.family not in HF_CONFIGS:
        raise VitkitError(f"--compare: no transformers counterpart for family {entry.family!r}")
    hf_cfg, hf_cls = HF_CONFIGS[entry.family](config)
    torch.manual_seed(seed)
    hf = hf_cls(hf_cfg)
    with tempfile.TemporaryDirectory(prefix="vitkit-bench-") as tmp:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        hf.save_pretrained(tmp)
        model = vitkit.from_pretrained(tmp)
    model.model_name = name
    return model, hf


def build_timm(name: str, vitkit_model: nn.Module) -> tuple[nn.Module, str]:
    """timm's model of the same name, given vitkit's weights when the state dict fits (vitkit uses timm's names)."""
    import timm

    cfg = vitkit_model.config
    kw = {"num_classes": cfg.num_classes}
    if hasattr(cfg, "img_size"):
        kw["img_size"] = cfg.img_size
    m = timm.create_model(name, pretrained=False, **kw)
    try:
        m.load_state_dict(vitkit_model.state_dict(), strict=True)
        return m, "shared"
    except RuntimeError as e:
        return m, f"timm init (state dict did not fit: {str(e).splitlines()[0]})"


def logits_of(out: Any) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


@dataclasses.dataclass
class Contender:
    name: str
    impl: str  # vitkit | transformers | timm
    mode: str  # eager | compile | onnx | int8 | packed
    dtype: str  # fp32 | bf16
    model: Any  # nn.Module, or an OnnxRunner
    trainable: bool = True
    setup_s: float = 0.0  # export / quantisation time; compile time is measured on the first call
    weights: str = "shared"
    input_size: tuple[int, ...] = (3, 224, 224)  # (C, H, W) of one image
    optimizer: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "transformers":
            return self.model(pixel_values=x).logits
        return logits_of(self.model(x))


def make_mode(model: nn.Module, mode: str, *, threads: int | None, input_size) -> tuple[Any, float]:
    """Wrap vitkit's eager model for a faster mode; returns (callable model, setup seconds)."""
    t0 = time.perf_counter()
    if mode == "eager":
        return model, 0.0
    if mode == "compile":
        return torch.compile(model), 0.0  # compiles lazily: the first call's time is reported as compile time
    if mode == "onnx":
        from vitkit.tools.export import onnx_session

        runner = onnx_session(model, input_size=input_size, threads=threads)
        return runner, time.perf_counter() - t0
    if mode == "int8":
        from vitkit.tools.quantize import quantize_dynamic_int8

        q = quantize_dynamic_int8(model)
        return q, time.perf_counter() - t0
    if mode == "packed":
        from vitkit.tools.pack import pack_linear_weights

        return pack_linear_weights(model), time.perf_counter() - t0
    raise VitkitError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


def contender_specs(modes: list[str], dtypes: list[str], compare: bool, device: torch.device) -> list[dict[str, str]]:
    specs = []
    for mode in modes:
        for dtype in dtypes:
            if mode in ("onnx", "int8", "packed") and dtype != "fp32":
                continue  # these modes are their own precision; autocast does not apply
            if mode in ("onnx", "int8", "packed") and device.type != "cpu":
                continue  # onnxruntime CPU provider, fbgemm int8 and oneDNN packed weights are CPU-only here
            specs.append({"impl": "vitkit", "mode": mode, "dtype": dtype})
    if compare:
        for dtype in dtypes:
            specs.append({"impl": "transformers", "mode": "eager", "dtype": dtype})
            specs.append({"impl": "timm", "mode": "eager", "dtype": dtype})
    return specs


def spec_name(spec: dict[str, str]) -> str:
    extra = [s for s in (spec["mode"] if spec["mode"] != "eager" else "", spec["dtype"]) if s and s != "fp32"]
    return spec["impl"] + (f"[{','.join(extra)}]" if extra else "")


# --- timing -------------------------------------------------------------------------------------
def _autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")


def infer_step(c: Contender, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    if c.mode == "onnx":
        return c.model(x)
    with torch.inference_mode(), _autocast(device, c.dtype):
        return c.forward(x)


def train_step(c: Contender, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    c.model.train()
    if c.optimizer is None:
        c.optimizer = torch.optim.SGD(c.model.parameters(), lr=1e-4, momentum=0.9)
    c.optimizer.zero_grad(set_to_none=True)
    with _autocast(device, c.dtype):
        loss = F.cross_entropy(c.forward(x).float(), y)
    loss.backward()
    c.optimizer.step()
    return loss.detach()


def _time_once(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def time_alternating(
    contenders: list[Contender],
    step: Callable[[Contender], Any],
    *,
    device: torch.device,
    warmup: int,
    iters: int,
    repeats: int,
) -> dict[str, dict[str, Any]]:
    """Per contender: per-repeat mean seconds per batch and every iteration's seconds, run in rotating order."""
    out: dict[str, dict[str, Any]] = {}
    for c in contenders:  # warm-up (and compile) each one before anything is timed
        first = _time_once(lambda c=c: step(c), device)
        for _ in range(max(0, warmup - 1)):
            _time_once(lambda c=c: step(c), device)
        out[c.name] = {"first_call_s": first, "repeat_s": [], "iter_s": [], "page_faults": 0}
    n = len(contenders)
    for r in range(repeats):
        for j in range(n):
            c = contenders[(r + j) % n]
            faults = _minor_faults()
            times = [_time_once(lambda c=c: step(c), device) for _ in range(iters)]
            out[c.name]["page_faults"] += _minor_faults() - faults
            out[c.name]["repeat_s"].append(sum(times) / len(times))
            out[c.name]["iter_s"].extend(times)
    return out


def _minor_faults() -> int:
    """Page faults of this process so far (fresh pages from the OS: ~1 us each here; see vitkit.tools.malloc)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --- memory, in a fresh subprocess --------------------------------------------------------------
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


def _memory_child(job: dict[str, Any]) -> dict[str, Any]:
    """Runs in a subprocess: build one contender, run its task a few times, report the memory peak in MiB."""
    torch.set_num_threads(job["threads"])
    set_malloc(job.get("malloc", "default"))
    device = resolve_device(job["device"])
    spec = job["spec"]
    if spec["impl"] != "vitkit":
        import transformers  # noqa: F401  (import cost is not the model's)
    linux = Path("/proc/self/status").exists()
    base_kb = _rss_kb() if linux else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c = _build_contender(job["model"], spec, job["img_size"], job["overrides"], device, job["threads"])
    x, y = _inputs(job["batch_size"], c.input_size, job["num_classes"], device, seed=0)
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
        "import json, sys\nfrom vitkit.tools.bench import _memory_child\n"
        "print(json.dumps(_memory_child(json.loads(sys.argv[1]))))"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(job)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"peak_mem_mb": None, "mem_method": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"peak_mem_mb": None, "mem_method": f"failed: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the benchmark ------------------------------------------------------------------------------
def _inputs(batch: int, input_size, num_classes: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *input_size, generator=g).to(device)
    y = torch.randint(0, max(1, num_classes), (batch,), generator=g).to(device)
    return x, y


def _build_contender(
    name: str,
    spec: dict[str, str],
    img_size: int | None,
    overrides: dict[str, Any],
    device: torch.device,
    threads: int | None,
    pair: tuple[nn.Module, nn.Module] | None = None,
) -> Contender:
    impl, mode, dtype = spec["impl"], spec["mode"], spec["dtype"]
    if impl == "vitkit":
        base = pair[0] if pair is not None else build_vitkit(name, img_size, overrides)
        base = base.to(device).eval()
        input_size = tuple(base.data_config["input_size"])
        model, setup = make_mode(base, mode, threads=threads, input_size=input_size)
        c = Contender(spec_name(spec), impl, mode, dtype, model, trainable=mode in ("eager", "compile"), setup_s=setup)
    elif impl == "transformers":
        if pair is not None:
            vk, hf = pair
            input_size = tuple(vk.data_config["input_size"])
        else:  # the memory subprocess: only the transformers model may live in it
            config = build_vitkit(name, img_size, overrides).config
            input_size = (config.in_chans, *vitkit.models.base.to_2tuple(config.img_size))
            hf_cfg, hf_cls = HF_CONFIGS[get_entry(name).family](config)
            hf = hf_cls(hf_cfg)
        c = Contender(spec_name(spec), impl, mode, dtype, hf.to(device).eval())
    elif impl == "timm":
        vk = pair[0] if pair is not None else build_vitkit(name, img_size, overrides)
        input_size = tuple(vk.data_config["input_size"])
        tm, weights = build_timm(name, vk)
        c = Contender(spec_name(spec), impl, mode, dtype, tm.to(device).eval(), weights=weights)
    else:
        raise VitkitError(f"unknown implementation {impl!r}")
    c.input_size = tuple(input_size)
    return c


def _timm_available() -> bool:
    try:
        import timm  # noqa: F401

        return True
    except Exception:  # timm's import fails in several ways when torchvision does not match torch
        return False


def benchmark(
    model: str,
    *,
    batch_size: int = 8,
    train_batch_size: int | None = None,
    img_size: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    dtypes: tuple[str, ...] = ("fp32",),
    modes: tuple[str, ...] = ("eager",),
    tasks: tuple[str, ...] = TASKS,
    compare: bool = False,
    warmup: int = 2,
    iters: int = 3,
    repeats: int = 5,
    memory: bool = True,
    overrides: dict[str, Any] | None = None,
    malloc: str = "default",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the JSON-ready result (see the module docstring for the method)."""
    log = log or (lambda s: None)
    if malloc not in PRESETS:
        raise VitkitError(f"unknown malloc preset {malloc!r}; choose from {', '.join(PRESETS)}")
    malloc_applied = set_malloc(malloc)  # the same allocator settings for every contender (process-wide)
    overrides = dict(overrides or {})
    get_entry(model)  # a clear error for an unknown name
    for d in dtypes:
        if d not in DTYPES:
            raise VitkitError(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    for m in modes:
        if m not in MODES:
            raise VitkitError(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    for t in tasks:
        if t not in TASKS:
            raise VitkitError(f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    if batch_size < 1 or (train_batch_size is not None and train_batch_size < 1):
        raise VitkitError("batch sizes must be >= 1")
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    notes: list[str] = []
    if dev.type == "cpu" and "bf16" in dtypes and not cpu_supports_bf16():
        notes.append("this CPU has no native bf16 (avx512_bf16/amx): bf16 autocast is emulated and slow")
    train_batch_size = train_batch_size or batch_size
    info = machine_info(dev)
    load_before = load_avg()

    specs = contender_specs(list(modes), list(dtypes), compare, dev)
    if compare and not _timm_available():
        notes.append("timm is not importable here: no timm contender")
        specs = [s for s in specs if s["impl"] != "timm"]
    if compare and get_entry(model).family not in HF_CONFIGS:
        notes.append(f"no transformers counterpart wired for family {get_entry(model).family!r}")
        specs = [s for s in specs if s["impl"] != "transformers"]
    pair = None
    if any(s["impl"] == "transformers" for s in specs):
        pair = build_hf_pair(model, img_size, overrides)
    else:
        pair = (build_vitkit(model, img_size, overrides), None)
    vk_model = pair[0].eval()
    num_classes = vk_model.config.num_classes
    input_size = tuple(vk_model.data_config["input_size"])

    log(f"{model}: {', '.join(spec_name(s) for s in specs)} on {dev}, input {input_size}")
    from vitkit.tools.flops import count_flops

    fl = count_flops(vk_model, input_size)
    fl_train = count_flops(vk_model, input_size, backward=True) if "train" in tasks else None
    rates = {d: matmul_rate(dev, DTYPES[d]) for d in sorted(set(dtypes) | {"fp32"})}
    log("matmul GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))

    contenders = []
    for s in specs:
        try:
            contenders.append(_build_contender(model, s, img_size, overrides, dev, threads, pair=pair))
        except Exception as e:  # a mode that fails on this model is reported, not fatal
            notes.append(f"{spec_name(s)}: could not be built ({type(e).__name__}: {str(e).splitlines()[0][:200]})")

    # same weights, same input: how far apart are the outputs?
    x_check, _ = _inputs(2, input_size, num_classes, dev, seed=1)
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
        x, y = _inputs(batch, input_size, num_classes, dev)
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
            rate = rates.get(c.dtype if c.mode in ("eager", "compile") else "fp32", rates["fp32"])
            achieved = flops_img * ips / 1e9
            r = {
                "name": c.name,
                "impl": c.impl,
                "mode": c.mode,
                "dtype": c.dtype,
                "task": task,
                "batch_size": batch,
                "img_per_s": round(ips, 3),
                "latency_ms_p50": round(1e3 * _percentile(t["iter_s"], 0.5), 2),
                "latency_ms_p90": round(1e3 * _percentile(t["iter_s"], 0.9), 2),
                "repeat_img_per_s": [round(batch / s, 3) for s in t["repeat_s"]],
                "gflops_per_s": round(achieved, 2),
                "frac_of_matmul_peak": round(achieved / rate, 4),
                "first_call_s": round(t["first_call_s"], 3),
                "page_faults_per_batch": round(t["page_faults"] / (repeats * iters)),
                "setup_s": round(c.setup_s, 3),
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
                "spec": {"impl": r["impl"], "mode": r["mode"], "dtype": r["dtype"]},
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
            "native_kernels": _native_kernels(model, dev),
        },
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


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """vitkit eager (per dtype) vs the fastest peer of the same dtype, per task: speed and memory ratios."""
    rows = []
    for task in TASKS:
        for dtype in DTYPES:
            mine = [r for r in results if r["task"] == task and r["dtype"] == dtype and r["impl"] == "vitkit"]
            peers = [r for r in results if r["task"] == task and r["dtype"] == dtype and r["impl"] != "vitkit"]
            ours = next((r for r in mine if r["mode"] == "eager"), None)
            if ours is None or not peers:
                continue
            best = max(peers, key=lambda r: r["img_per_s"])
            mem = [r["peak_mem_mb"] for r in peers if r["peak_mem_mb"] is not None]
            # one ratio per alternation round (the two ran back to back): shows how much of the spread is the machine
            rounds = [a / b for a, b in zip(ours["repeat_img_per_s"], best["repeat_img_per_s"], strict=False) if b > 0]
            rows.append(
                {
                    "task": task,
                    "dtype": dtype,
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


# --- output -------------------------------------------------------------------------------------
def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def round_range(q: dict[str, Any]) -> str:
    """'median (min-max)' of the per-round speed ratios of a ratio row ('-' for files without them)."""
    rounds = q.get("round_ratios") or []
    if not rounds:
        return "-"
    return f"{q['round_ratio_median']:.2f} ({min(rounds):.2f}-{max(rounds):.2f})"


def _native_kernels(model: str, device: torch.device) -> list[str]:
    """The native CPU kernels (``vitkit.kernels``) vitkit's fp32 inference ran for this model."""
    if device.type != "cpu":
        return []
    if get_entry(model).family == "swin":
        on, name, module = native_window_attention.NATIVE_WINDOW_ATTENTION, "window_attention", native_window_attention
    else:
        on, name, module = native_attention.NATIVE_ATTENTION, "attention", native_attention
    return [name] if on and module.library() is not None else []


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of one benchmark result (what ``vitkit bench`` prints)."""
    s = result["settings"]
    m = result["machine"]
    lines = [
        f"### {s['model']} · {s['device']} · {s['threads']} threads · input {'x'.join(map(str, s['input_size']))}",
        "",
        f"{m['cpu'] if s['device'] == 'cpu' else m.get('gpu')} · torch {m['torch']} · "
        f"matmul {', '.join(f'{k} {v} GFLOP/s' for k, v in result['matmul_gflops'].items())} · "
        f"{result['flops']['gmacs_per_image']:.2f} GMACs/img · {result['flops']['params'] / 1e6:.2f} M params · "
        f"load avg {m.get('load_avg_before')} -> {m.get('load_avg_after')} · malloc {s.get('malloc', 'default')}"
        f" · native kernels: {', '.join(s.get('native_kernels') or ['none'])}",
        "",
        "| contender | task | batch | img/s | vs vitkit fp32 | p50 ms | p90 ms | GFLOP/s | of matmul peak | peak MiB "
        "| page faults / batch | first call s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {r["task"]: r["img_per_s"] for r in result["results"] if r["name"] == "vitkit"}
    for r in result["results"]:
        rel = f"{r['img_per_s'] / base[r['task']]:.2f}x" if r["task"] in base else "-"
        lines.append(
            f"| {r['name']} | {r['task']} | {r['batch_size']} | {r['img_per_s']:.2f} | {rel} | "
            f"{r['latency_ms_p50']:.1f} | {r['latency_ms_p90']:.1f} | {r['gflops_per_s']:.1f} | "
            f"{100 * r['frac_of_matmul_peak']:.0f}% | {_fmt(r['peak_mem_mb'], '.0f')} | "
            f"{_fmt(r.get('page_faults_per_batch'), 'd')} | {r['first_call_s']:.2f} |"
        )
    if result["ratios"]:
        lines += [
            "",
            "| task | dtype | vitkit img/s | fastest peer | peer img/s | speed ratio | per-round ratios "
            "| memory ratio |",
        ]
        lines.append("|---|---|---:|---|---:|---:|---:|---:|")
        for q in result["ratios"]:
            lines.append(
                f"| {q['task']} | {q['dtype']} | {q['vitkit_img_per_s']:.2f} | {q['fastest_peer']} | "
                f"{q['peer_img_per_s']:.2f} | {q['speed_ratio']:.3f}x | {round_range(q)} | "
                f"{_fmt(q['mem_ratio'], '.3f')} |"
            )
    diffs = {r["name"]: r["max_abs_logit_diff_vs_first"] for r in result["results"]}
    if len(diffs) > 1:
        pairs = ", ".join(f"{k} {_fmt(v, '.2e')}" for k, v in diffs.items())
        lines += ["", f"max |logit difference| vs the first contender: {pairs}"]
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


# --- command line -------------------------------------------------------------------------------
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


def add_arguments(parser: argparse.ArgumentParser, *, several_models: bool = False) -> None:
    """The options of ``vitkit bench``; ``several_models`` takes ``--models A B ...`` instead of one MODEL."""
    if several_models:
        parser.add_argument("--models", nargs="+", default=None, help="registered model names")
    else:
        parser.add_argument("model", help="registered model name, e.g. vit_base_patch16_224 (see `vitkit models`)")
    parser.add_argument("--batch-size", "-b", type=int, default=8)
    parser.add_argument("--train-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--img-size", type=int, default=None, help="default: the model's")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda[:N] or auto")
    parser.add_argument("--dtype", type=_csv(tuple(DTYPES)), default=("fp32",), help="fp32,bf16 (autocast)")
    parser.add_argument("--mode", type=_csv(MODES), default=("eager",), help="eager,compile,onnx,int8,packed")
    parser.add_argument("--task", type=_csv(TASKS), default=TASKS, help="infer,train")
    parser.add_argument("--compare", action="store_true", help="also transformers (and timm) with the same weights")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--malloc",
        choices=tuple(PRESETS),
        default="default",
        help="glibc malloc thresholds for the whole run: default, pinned (32/64 MiB fixed) or tuned "
        "(no page faults after warm-up); see vitkit.tools.malloc",
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
        log=log,
    )


def run(args: argparse.Namespace) -> int:
    result = benchmark_from_args(args.model, args)
    print(format_table(result))
    if args.out:
        path = write_result(result, args.out)
        print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitkit bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except VitkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
