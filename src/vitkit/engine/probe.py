"""Which CPU path is faster here, measured, not assumed: oneDNN's fused linear or PyTorch's plain ``F.linear`` (MKL /
oneDNN's matmul without the epilogue), GELU in oneDNN's epilogue or after the matmul, and each native attention kernel
or PyTorch's attention.

Which one wins depends on the CPU (vector width, AMX, the BLAS PyTorch was built with) and the dtype, so
:func:`vitkit.optimize` times both on the model's own MLP shape once per process and takes oneDNN's epilogues only
where they are not slower (oneDNN's GELU epilogue for AVX2 is slower than PyTorch's GELU run after the matmul, for
example). The native kernels size their register blocks for the vector width they are built for, but a build for
another CPU, or a compiler that vectorises them badly, can still leave a kernel slower than PyTorch's attention, so
each kernel is also timed against PyTorch's op on the model's head shape before it is used (by the engine and by the
training shortcuts). A probe is a short run of both on one shape; its result is kept for the process and recorded in
the optimization report.
"""

import dataclasses
import functools
import time

import torch
import torch.nn.functional as F

from vitkit.engine.linear import HAS_BF16_FUSED_LINEAR, HAS_FUSED_LINEAR
from vitkit.kernels import attention as attention_kernel
from vitkit.kernels import unavailable_reason
from vitkit.kernels import window_attention as window_kernel
from vitkit.models import cvt, swin, vit

ROWS = 256  # tokens of one batch-1 sequence, about: the smallest batch the engine serves
ROUNDS = 5  # alternating rounds; each side's fastest counts
MARGIN = 1.05  # the plain ops must be this much faster to be chosen (oneDNN also saves a pass over memory)
BF16_MARGIN = 1.1  # float32 must be this much faster to compute a bf16 matmul (it also makes two casts)
KERNEL_TOKENS = 197  # attention probe: a 224-px ViT's sequence
# PyTorch's attention must be this much faster for a kernel to be dropped: a kernel that suits the CPU is ahead on
# the probe's small problem (further ahead in a model, where it also saves the copies the probe leaves out); the margin
# keeps a noisy probe from flipping a choice between two near-equal paths from one process to the next
KERNEL_MARGIN = 1.1


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    dtype: str
    shape: str  # "rows x in -> out + GELU"
    onednn_ms: float  # oneDNN's matmul with GELU in its epilogue
    plain_ms: float  # F.linear, then GELU
    after_ms: float  # oneDNN's matmul, then PyTorch's GELU in place

    @property
    def gelu_epilogue(self) -> bool:
        """GELU in oneDNN's epilogue unless PyTorch's after the matmul is clearly faster."""
        return self.after_ms * MARGIN >= self.onednn_ms

    @property
    def use_onednn(self) -> bool:
        """oneDNN (its weight layout, bias and residual in its epilogue) unless the plain ops are clearly faster."""
        return self.plain_ms * MARGIN >= (self.onednn_ms if self.gelu_epilogue else self.after_ms)

    def record(self) -> dict:
        return dataclasses.asdict(self) | {"use_onednn": self.use_onednn, "gelu_epilogue": self.gelu_epilogue}

    def line(self) -> str:
        winner = "plain F.linear"
        if self.use_onednn:
            winner = "oneDNN fused" if self.gelu_epilogue else "oneDNN, GELU after it"
        return (
            f"probe {self.dtype} {self.shape}: oneDNN fused {self.onednn_ms:.3f} ms, oneDNN then GELU "
            f"{self.after_ms:.3f} ms, plain F.linear + GELU {self.plain_ms:.3f} ms -> {winner}"
        )


def _mean_ms(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e3


def _race(*calls, flops: int) -> tuple[float, ...]:
    """Fastest mean ms of each no-grad call over alternating rounds (``flops``: of one call); each runs in the dtypes
    it is written in (a probe may be called inside an autocast region: the first training step's)."""
    with torch.inference_mode(), torch.autocast("cpu", enabled=False):
        for call in calls:  # first calls: oneDNN builds its primitives, the allocator warms up
            call()
        reps = max(1, min(20, int(2e8 // flops)))  # about a millisecond or more per timing
        times: list[list[float]] = [[] for _ in calls]
        for _ in range(ROUNDS):
            for call, row in zip(calls, times, strict=True):
                row.append(_mean_ms(call, reps))
    return tuple(min(row) for row in times)


@functools.lru_cache(maxsize=64)
def probe_linear(dtype: torch.dtype, in_features: int, out_features: int, threads: int) -> LinearProbe:
    """Time ``gelu(x @ w.T + b)`` three ways on the CPU for a (ROWS, in_features) input: oneDNN with GELU in its
    epilogue, oneDNN then PyTorch's GELU, the plain ops. ``threads`` keys the cache."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, in_features, generator=g).to(dtype)
    w = torch.randn(out_features, in_features, generator=g).div_(in_features**0.5).to(dtype)
    b = torch.zeros(out_features, dtype=dtype)
    shape = f"{ROWS}x{in_features} -> {out_features} + GELU"
    name = str(dtype).removeprefix("torch.")
    if not HAS_FUSED_LINEAR or (dtype == torch.bfloat16 and not HAS_BF16_FUSED_LINEAR):
        raise RuntimeError(f"oneDNN's fused {name} linear is not available in this PyTorch build")
    w_onednn = torch.ops.mkldnn._reorder_linear_weight(w)  # where oneDNN is taken, the engine packs the weights

    def onednn():
        return torch.ops.mkldnn._linear_pointwise(x, w_onednn, b, "gelu", [], "none")

    def plain():
        return F.gelu(F.linear(x, w, b))

    def after():
        return torch.ops.aten.gelu_(torch.ops.mkldnn._linear_pointwise(x, w_onednn, b, "none", [], "none"))

    onednn_ms, plain_ms, after_ms = _race(onednn, plain, after, flops=2 * ROWS * in_features * out_features)
    return LinearProbe(name, shape, onednn_ms, plain_ms, after_ms)


def widest_mlp_input(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's widest MLP input layer on the CPU (a Swin's or CvT's first one is too small for the matmul's and
    its epilogue's speed to show), or None."""
    layers = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name.endswith("mlp.fc1")]
    if not layers or layers[0].weight.device.type != "cpu":
        return None
    return max(layers, key=lambda m: m.in_features)


@dataclasses.dataclass(frozen=True)
class Bf16Probe:
    shape: str
    bf16_ms: float
    float32_ms: float  # the bf16 input cast to float32, the matmul on bf16-rounded float32 weights, the output cast

    @property
    def use_float32(self) -> bool:
        return self.float32_ms * BF16_MARGIN <= self.bf16_ms

    def record(self) -> dict:
        return dataclasses.asdict(self) | {"use_float32": self.use_float32}

    def line(self) -> str:
        winner = "float32 products of bf16 values" if self.use_float32 else "bf16"
        return (
            f"probe bf16 matmul {self.shape}: in bf16 {self.bf16_ms:.3f} ms, as float32 products of the bf16 values "
            f"{self.float32_ms:.3f} ms -> {winner}"
        )


@functools.lru_cache(maxsize=64)
def probe_bf16_matmul(
    in_features: int, out_features: int, threads: int, onednn_bf16: bool, onednn_float32: bool
) -> Bf16Probe:
    """A bf16 ``gelu(x @ w.T + b)`` for a (ROWS, in_features) input as the engine would run it in bf16, against the
    same from float32 copies of the bf16 values (each path with oneDNN's fused op where the engine takes it)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, in_features, generator=g).bfloat16()
    w = torch.randn(out_features, in_features, generator=g).div_(in_features**0.5).bfloat16()
    b = torch.zeros(out_features, dtype=torch.bfloat16)
    w32, b32 = w.float(), b.float()
    if onednn_bf16:
        w = torch.ops.mkldnn._reorder_linear_weight(w)
    if onednn_float32:
        w32 = torch.ops.mkldnn._reorder_linear_weight(w32)

    def run(x, w, b, onednn):
        if onednn:
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "none")
        return F.gelu(F.linear(x, w, b))

    bf16_ms, float32_ms = _race(
        lambda: run(x, w, b, onednn_bf16),
        lambda: run(x.float(), w32, b32, onednn_float32).bfloat16(),
        flops=2 * ROWS * in_features * out_features,
    )
    return Bf16Probe(f"{ROWS}x{in_features} -> {out_features} + GELU", bf16_ms, float32_ms)


def bf16_probe(model: torch.nn.Module, onednn_bf16: bool, onednn_float32: bool) -> Bf16Probe | None:
    """:func:`probe_bf16_matmul` on the model's widest MLP input layer; None for a model off the CPU or without one."""
    fc = widest_mlp_input(model)
    if fc is None:
        return None
    return probe_bf16_matmul(fc.in_features, fc.out_features, torch.get_num_threads(), onednn_bf16, onednn_float32)


@dataclasses.dataclass(frozen=True)
class KernelProbe:
    kernel: str  # "attention" or "window_attention"
    shape: str
    kernel_ms: float
    torch_ms: float

    @property
    def use_kernel(self) -> bool:
        """The kernel unless PyTorch's path is clearly faster."""
        return self.torch_ms * KERNEL_MARGIN >= self.kernel_ms

    def record(self) -> dict:
        return dataclasses.asdict(self) | {"use_kernel": self.use_kernel}

    def line(self) -> str:
        winner = f"native {self.kernel}" if self.use_kernel else "PyTorch"
        return (
            f"probe {self.kernel} {self.shape}: native kernel {self.kernel_ms:.3f} ms, PyTorch {self.torch_ms:.3f} ms "
            f"-> {winner}"
        )


@functools.lru_cache(maxsize=64)
def probe_attention(heads: int, head_dim: int, threads: int) -> KernelProbe:
    """The native multi-head attention kernel against SDPA, float32, each from the qkv linear's output to the input
    of the output projection, as a ViT / CvT block runs it: (2, 197, 3C) -> (2, 197, C)."""
    if attention_kernel.library() is None:
        raise RuntimeError(f"the native attention kernel is not available ({unavailable_reason('attention')})")
    B, N, C, scale = 2, KERNEL_TOKENS, heads * head_dim, head_dim**-0.5
    qkv = torch.randn(B, N, 3, heads, head_dim, generator=torch.Generator().manual_seed(0))
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d), views

    def attend(fn):
        return lambda: fn(q, k, v, scale=scale).transpose(1, 2).reshape(B, N, C)

    kernel_ms, torch_ms = _race(
        attend(attention_kernel.attention),
        attend(F.scaled_dot_product_attention),
        flops=4 * B * heads * N * N * head_dim,
    )
    return KernelProbe("attention", f"2 x {heads} heads x {N} tokens x {head_dim}", kernel_ms, torch_ms)


@functools.lru_cache(maxsize=64)
def probe_window_attention(heads: int, head_dim: int, window: int, threads: int) -> KernelProbe:
    """The native window-attention kernel against PyTorch's path (roll, partition, SDPA with the bias and shift mask,
    reverse, roll back), float32, on a (2, 2w, 2w) map of shifted windows, as a Swin block runs it."""
    if window_kernel.library() is None:
        raise RuntimeError(
            f"the native window-attention kernel is not available ({unavailable_reason('window_attention')})"
        )
    g = torch.Generator().manual_seed(0)
    B, side, n, C, shift, scale = 2, 2 * window, window * window, heads * head_dim, window // 2, head_dim**-0.5
    qkv = torch.randn(B, side, side, 3 * C, generator=g)
    bias = torch.randn(4 * heads, n, n, generator=g)  # one per window and head, as the shifted blocks have
    padded = F.pad(bias, (0, window_kernel.padded_width(n) - n), value=float("-inf")).contiguous()
    mask = bias.view(1, 4 * heads, n, n)

    def pytorch():
        y = qkv.roll((-shift, -shift), (1, 2)).view(B, 2, window, 2, window, 3, heads, head_dim)
        q, k, v = y.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B, 4 * heads, n, head_dim).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        out = out.view(B, 2, 2, heads, window, window, head_dim).permute(0, 1, 4, 2, 5, 3, 6)
        return out.reshape(B, side, side, C).roll((shift, shift), (1, 2))

    kernel_ms, torch_ms = _race(
        lambda: window_kernel.window_attention(qkv, padded, heads, window, shift, scale),
        pytorch,
        flops=4 * B * 4 * heads * n * n * head_dim,
    )
    shape = f"2 x {heads} heads x 4 windows of {window}x{window} x {head_dim}"
    return KernelProbe("window_attention", shape, kernel_ms, torch_ms)


def _on_cpu(module: torch.nn.Module) -> bool:
    return next(module.parameters(), torch.empty(0)).device.type == "cpu"


def kernel_probes(model: torch.nn.Module) -> list[KernelProbe]:
    """The probe of each native kernel ``model``'s blocks would call, on its (last) head shape; none where the kernel
    is not built, does not take the shape, or the model is not on the CPU."""
    threads, probes = torch.get_num_threads(), {}
    for m in model.modules():
        if isinstance(m, (vit.Attention, cvt.Attention)) and attention_kernel.library() is not None:
            head_dim = m.proj.in_features // m.num_heads
            if head_dim % attention_kernel.HEAD_MULTIPLE == 0 and _on_cpu(m):
                probes["attention"] = (probe_attention, (m.num_heads, head_dim, threads))
        elif isinstance(m, swin.SwinBlock) and window_kernel.library() is not None:
            a, window = m.attn, m.window_size
            ok = window_kernel.supports(a.proj.in_features, a.num_heads, window) and _on_cpu(a)
            if ok and "window_attention" not in probes:
                probes["window_attention"] = (
                    probe_window_attention,
                    (a.num_heads, a.proj.in_features // a.num_heads, window, threads),
                )
    return [fn(*args) for fn, args in probes.values()]
