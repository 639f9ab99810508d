"""Which CPU matmul path is faster here: oneDNN's fused linear or PyTorch's plain ``F.linear`` (MKL / oneDNN's
matmul without the epilogue), measured, not assumed.

Which one wins depends on the CPU (vector width, AMX, the BLAS PyTorch was built with) and the dtype, so
:func:`vitkit.optimize` times both on the model's own MLP shape once per process and takes oneDNN's epilogues only
where they are not slower. A probe is a short run of both on one shape; its result is kept for the process and
recorded in the optimization report.
"""

import dataclasses
import functools
import time

import torch
import torch.nn.functional as F

from vitkit.engine.linear import HAS_BF16_FUSED_LINEAR, HAS_FUSED_LINEAR

ROWS = 256  # tokens of one batch-1 sequence, about: the smallest batch the engine serves
ROUNDS = 5  # alternating rounds; each side's fastest counts
MARGIN = 1.05  # the plain ops must be this much faster to be chosen (oneDNN also saves a pass over memory)


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    dtype: str
    shape: str  # "rows x in -> out + GELU"
    onednn_ms: float
    plain_ms: float

    @property
    def use_onednn(self) -> bool:
        return self.plain_ms * MARGIN >= self.onednn_ms

    def line(self) -> str:
        winner = "oneDNN fused" if self.use_onednn else "plain F.linear"
        return (
            f"probe {self.dtype} {self.shape}: oneDNN fused {self.onednn_ms:.3f} ms, plain F.linear + GELU "
            f"{self.plain_ms:.3f} ms -> {winner}"
        )


def _mean_ms(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1e3


@functools.lru_cache(maxsize=64)
def probe_linear(dtype: torch.dtype, in_features: int, out_features: int, threads: int) -> LinearProbe:
    """Time ``gelu(x @ w.T + b)`` both ways on the CPU for a (ROWS, in_features) input. ``threads`` keys the cache."""
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

    with torch.inference_mode():
        onednn(), plain()  # first calls: oneDNN builds its primitive, the allocator warms up
        flops = 2 * ROWS * in_features * out_features
        reps = max(1, min(20, int(2e8 // flops)))  # about a millisecond or more per timing
        times = {"onednn": [], "plain": []}
        for _ in range(ROUNDS):
            times["onednn"].append(_mean_ms(onednn, reps))
            times["plain"].append(_mean_ms(plain, reps))
    return LinearProbe(name, shape, min(times["onednn"]), min(times["plain"]))
