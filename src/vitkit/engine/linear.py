"""oneDNN's fused linear for CPU float32 inference: bias, GELU or a residual add inside the matmul.

On CPU the passes over a block's output (bias, GELU, residual add) cost a noticeable share of the time next to the
matmuls; ``torch.ops.mkldnn._linear_pointwise`` does them in the matmul's epilogue. :class:`PackedLinear` also keeps
the weight in oneDNN's blocked layout, which saves the reorder inside every call at the price of a second copy of the
weight. Anything else (another device or dtype, autocast, a quantised layer) runs the plain ops.
"""

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.engine.conditions import cpu_float32

HAS_FUSED_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def linear(x: torch.Tensor, layer: nn.Module, gelu: bool = False, residual: torch.Tensor | None = None, fused=True):
    """``residual + gelu?(layer(x))``, as one oneDNN op where it can run."""
    if fused and cpu_float32(x):
        if type(layer) is PackedLinear:
            w, b = layer.packed_weight, layer.bias
        elif type(layer) is nn.Linear and layer.weight.dtype == x.dtype and HAS_FUSED_LINEAR:
            w, b = layer.weight, layer.bias
        else:
            w = None
        if w is not None and residual is None:
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu" if gelu else "none", [], "none")
        if w is not None and not gelu:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, b, "add")
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
