"""oneDNN's fused linear for CPU inference: bias, GELU or a residual add inside the matmul.

On CPU the passes over a block's output (bias, GELU, residual add) cost a noticeable share of the time next
to the matmuls; ``torch.ops.mkldnn._linear_pointwise`` does them in the matmul's epilogue. Used only where
nothing but rounding can differ: eval mode, autograd off, CPU float32 without autocast, and not while tracing,
compiling or exporting (those see the plain ops). Results agree with the plain path within float32 rounding (~1e-6).
Set ``vitkit.layers.fused.FUSED_CPU_INFERENCE = False`` to compare or to rule it out.
"""

import torch
import torch.nn.functional as F
from torch import nn

FUSED_CPU_INFERENCE = True
HAS_FUSED_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def can_fuse(x: torch.Tensor, module: nn.Module) -> bool:
    """True when ``module`` may run its linears through oneDNN's fused op for input ``x``."""
    return (
        FUSED_CPU_INFERENCE
        and HAS_FUSED_LINEAR
        and not module.training
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not _autocast_on()  # the oneDNN op is not on autocast's list: it would run bf16 work in fp32
        and not is_tracing()
    )


def is_tracing() -> bool:
    """True while ``torch.jit`` traces, ``torch.compile`` compiles or ``torch.export`` exports."""
    return torch.jit.is_tracing() or _is_compiling() or _is_exporting()


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def linear(x: torch.Tensor, layer: nn.Module, gelu: bool = False, residual: torch.Tensor | None = None):
    """``residual + gelu?(layer(x))``, as one oneDNN op when :func:`can_fuse` allows it."""
    if type(layer) is PackedLinear:
        return packed_linear(x, layer, gelu, residual)
    if type(layer) is nn.Linear and layer.weight.dtype == x.dtype and can_fuse(x, layer):
        w, b = layer.weight, layer.bias
        if residual is None:
            return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu" if gelu else "none", [], "none")
        if not gelu:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, b, "add")
    y = layer(x)  # also any replacement of nn.Linear (e.g. a dynamically quantised one)
    y = F.gelu(y) if gelu else y
    return y if residual is None else residual + y


class PackedLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose weight is kept in oneDNN's blocked layout.

    Plain weights are reordered into that layout inside every matmul call; packing once saves the reorder.
    Built by :func:`vitkit.tools.pack.pack_linear_weights`; CPU float32 only, no autograd.
    """

    def __init__(self, layer: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        with torch.no_grad():
            self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach().float())
            self.bias = None if layer.bias is None else layer.bias.detach().float().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed=oneDNN"


def packed_linear(x: torch.Tensor, layer: PackedLinear, gelu: bool = False, residual: torch.Tensor | None = None):
    if x.device.type != "cpu" or x.dtype != torch.float32 or (torch.is_grad_enabled() and x.requires_grad):
        raise RuntimeError(
            "a model with packed Linear weights runs CPU float32 inference only "
            f"(got {x.dtype} on {x.device}{', requiring grad' if x.requires_grad else ''}); use the unpacked model"
        )
    if residual is not None and not gelu:
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, layer.packed_weight, layer.bias, "add")
    y = torch.ops.mkldnn._linear_pointwise(x, layer.packed_weight, layer.bias, "gelu" if gelu else "none", [], "none")
    return y if residual is None else residual + y
