"""The engine's Linear layers: oneDNN's fused linear on the CPU, bf16 weights cast once.

On CPU the passes over a block's output (bias, GELU, residual add) cost a noticeable share of the time next to the
matmuls; ``torch.ops.mkldnn._linear_pointwise`` does them in the matmul's epilogue. :class:`PackedLinear` also keeps
the weight in oneDNN's blocked layout, which saves the reorder inside every call at the price of a second copy of the
weight. For bf16 matmuls (autocast, or a model cast to bf16), :class:`CastOnceLinear` keeps its weight in that
dtype, on the CPU in oneDNN's layout with the same epilogues: autocast casts the weights on every call otherwise (its
own cache holds only tensors that require grad, which a frozen model's do not), and at small batches the casts cost
more than the matmuls. Anything else (a quantised layer, autograd) runs the plain ops.
"""

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.engine.conditions import cpu_float32, inference_call
from vitkit.utils.autocast import autocast_dtype

HAS_FUSED_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# oneDNN's bf16 matmuls need AVX-512 (or AMX) on x86; elsewhere the plain bf16 ops run
HAS_BF16_FUSED_LINEAR = HAS_FUSED_LINEAR and getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()


def linear(x: torch.Tensor, layer: nn.Module, gelu: bool = False, residual: torch.Tensor | None = None, fused=True):
    """``residual + gelu?(layer(x))``, as one oneDNN op where it can run."""
    if fused and cpu_float32(x):
        if type(layer) is PackedLinear:
            w, b = layer.packed_weight, layer.bias
        elif type(layer) in (nn.Linear, CastOnceLinear) and layer.weight.dtype == x.dtype and HAS_FUSED_LINEAR:
            w, b = layer.weight, layer.bias
        else:
            w = None
        if w is not None and residual is None:
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu" if gelu else "none", [], "none")
        if w is not None and not gelu:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, b, "add")
    elif type(layer) is CastOnceLinear and (dtype := layer.call_dtype(x)) is not None:
        return layer.lowp(x, dtype, gelu=gelu, residual=residual)
    y = layer(x)  # also any replacement of nn.Linear (e.g. a dynamically quantised one)
    y = F.gelu(y) if gelu else y
    return y if residual is None else residual + y


def mlp(module: nn.Module, x: torch.Tensor, residual: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """``residual + module(x)`` for a :class:`vitkit.layers.Mlp` (dropout is off in inference)."""
    if type(module.act) is nn.GELU and module.act.approximate == "none":
        return linear(linear(x, module.fc1, gelu=True, fused=fused), module.fc2, residual=residual, fused=fused)
    return residual + module(x)


class PackedLinear(nn.Linear):
    """An ``nn.Linear`` for CPU float32 inference whose weight is also kept in oneDNN's blocked layout.

    The plain ``weight`` stays (the state dict is unchanged; other devices and dtypes use it), the packed copy
    ``packed_weight`` serves the fused ops.
    """

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> "PackedLinear":
        layer.__class__ = cls
        with torch.no_grad():
            layer.register_buffer(
                "packed_weight",
                torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach().float()),
                persistent=False,
            )
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_float32(x) and not torch.is_grad_enabled():
            return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "none")
        return super().forward(x)


class CastOnceLinear(nn.Linear):
    """An ``nn.Linear`` whose bf16 / fp16 matmuls in inference (under autocast, or in a model cast to bf16) use a copy
    of its weight and bias in that dtype made once, and again only when the weights change; on CPUs with oneDNN's
    bf16 path that copy is in oneDNN's blocked layout and bias / GELU / a residual add run in the matmul's epilogue.
    Autocast's numbers, to the rounding of the epilogue: the same casts, made fewer times."""

    onednn: bool = True  # may bf16 matmuls take oneDNN's path (set by optimize from fused_linear and the probe)

    def call_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The reduced precision this call's matmul runs in, or None for the plain layer."""
        dtype = autocast_dtype(x.device.type)
        if dtype is None and x.dtype == self.weight.dtype and x.dtype in (torch.bfloat16, torch.float16):
            dtype = x.dtype  # a model cast to bf16 (bf16_weights): only the oneDNN layout to gain
        if dtype is None or dtype == torch.float32 or not inference_call():  # cheap checks first: a hot path
            return None
        return dtype

    def prepared(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
        """(weight, bias, in oneDNN's layout) for matmuls in ``dtype`` on ``device``."""
        w = self.weight
        key = (dtype, device, w.data_ptr(), w._version)
        cached = self.__dict__.get("_prepared")
        if cached is None or cached[0] != key:
            with torch.no_grad():
                weight = w.detach().to(dtype)
                bias = None if self.bias is None else self.bias.detach().to(dtype)
                onednn = self.onednn and device.type == "cpu" and dtype == torch.bfloat16 and HAS_BF16_FUSED_LINEAR
                if onednn:
                    weight = torch.ops.mkldnn._reorder_linear_weight(weight)
            cached = self.__dict__["_prepared"] = (key, weight, bias, onednn)
        return cached[1], cached[2], cached[3]

    def lowp(self, x: torch.Tensor, dtype: torch.dtype, gelu: bool = False, residual=None) -> torch.Tensor:
        """``residual + gelu?(self(x))`` with the matmul in ``dtype`` (the residual keeps its own dtype)."""
        w, b, onednn = self.prepared(dtype, x.device)
        x = x.to(dtype)
        if onednn and residual is not None and residual.dtype == dtype and not gelu:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, b, "add")
        if onednn:
            y = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu" if gelu else "none", [], "none")
        else:
            y = F.linear(x, w, b)
            y = F.gelu(y) if gelu else y
        return y if residual is None else residual + y

    def __getstate__(self) -> dict:
        """Copies and pickles leave the prepared weight out (oneDNN's layout has no storage to copy); it is remade."""
        state = self.__dict__.copy()
        state.pop("_prepared", None)
        return state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.call_dtype(x)
        return super().forward(x) if dtype is None else self.lowp(x, dtype)
