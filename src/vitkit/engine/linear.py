"""The engine's Linear layers: oneDNN's fused linear on the CPU, weights packed or cast once.

On CPU the passes over a block's output (bias, GELU, residual add) cost a noticeable share of the time next to the
matmuls; ``torch.ops.mkldnn._linear_pointwise`` does them in the matmul's epilogue. Given a weight in the plain
layout, oneDNN reorders it into its blocked layout inside every call, so :class:`EngineLinear` keeps the float32
weight in that layout instead (packed once), and for bf16 / fp16 matmuls (autocast, or a model cast to bf16) a copy
of the weight in that dtype, made once: autocast casts the weights on every call otherwise (its own cache holds only
tensors that require grad, which a frozen model's do not), and at small batches the casts cost more than the
matmuls. Anything else (a quantised layer, autograd) runs the plain ops.
"""

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.engine.conditions import cpu_float32, inference_call
from vitkit.utils.autocast import autocast_dtype

HAS_FUSED_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# oneDNN's bf16 matmuls need AVX-512 (or AMX) on x86; elsewhere the plain bf16 ops run
HAS_BF16_FUSED_LINEAR = HAS_FUSED_LINEAR and getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
ONEDNN_DTYPES = {d for d, ok in ((torch.float32, HAS_FUSED_LINEAR), (torch.bfloat16, HAS_BF16_FUSED_LINEAR)) if ok}


def _onednn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, gelu: bool, epilogue: bool) -> torch.Tensor:
    """``gelu?(x @ w.T + b)`` by oneDNN: GELU in the matmul's epilogue, or PyTorch's after it in place (``epilogue``
    False: faster where oneDNN's GELU code is slow, e.g. its AVX2 one)."""
    if gelu and not epilogue:
        return torch.ops.aten.gelu_(torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "none"))
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu" if gelu else "none", [], "none")


def _matmul(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, onednn: bool, gelu: bool, epilogue: bool = True
) -> torch.Tensor:
    """``gelu?(x @ w.T + b)``: oneDNN's op on its packed weight, else the plain ops."""
    if onednn:
        return _onednn(x, w, b, gelu, epilogue)
    y = F.linear(x, w, b)
    return F.gelu(y) if gelu else y


def linear(x: torch.Tensor, layer: nn.Module, gelu: bool = False, residual: torch.Tensor | None = None, fused=True):
    """``residual + gelu?(layer(x))``, as one oneDNN op where it can run."""
    w = None
    if cpu_float32(x) and type(layer) in (nn.Linear, EngineLinear):
        if type(layer) is EngineLinear and layer.packed is not None:
            w = layer.packed  # no plain layout to fall back on: oneDNN it is
        elif fused and HAS_FUSED_LINEAR and layer.weight.dtype == x.dtype:
            w = layer.weight
    if w is not None and residual is None:
        return _onednn(x, w, layer.bias, gelu, x.dtype not in getattr(layer, "gelu_after", ()))
    if w is not None and not gelu:
        return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, layer.bias, "add")
    if type(layer) is EngineLinear and (dtype := layer.call_dtype(x)) is not None:
        return layer.lowp(x, dtype, gelu=gelu, residual=residual)
    y = layer(x)  # also any replacement of nn.Linear (e.g. a dynamically quantised one)
    y = F.gelu(y) if gelu else y
    return y if residual is None else residual + y


def mlp(module: nn.Module, x: torch.Tensor, residual: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """``residual + module(x)`` for a :class:`vitkit.layers.Mlp` (dropout is off in inference)."""
    if type(module.act) is nn.GELU and module.act.approximate == "none":
        return linear(linear(x, module.fc1, gelu=True, fused=fused), module.fc2, residual=residual, fused=fused)
    return residual + module(x)


class EngineLinear(nn.Linear):
    """An optimized model's ``nn.Linear``.

    Packed (:meth:`pack`, CPU float32): the weight lives only in oneDNN's blocked layout, since keeping both layouts
    would double the memory of the weights. ``weight`` gives the plain layout back, exactly, whenever something asks
    for it (autograd, another dtype or device, the state dict); moving the layer (``.to``, ``.half``) unpacks it
    first, and copies and pickles carry the plain weight and pack it again.

    bf16 / fp16 matmuls in inference (under autocast, or in a model cast to bf16) use a copy of the weight and bias in
    that dtype made once, and again only when the weights change; on CPUs with oneDNN's bf16 path that copy is in
    oneDNN's blocked layout and bias / GELU / a residual add run in the matmul's epilogue. Autocast's numbers, to the
    rounding of the epilogue: the same casts, made fewer times. Where bf16 matmuls are slower than float32 ones (CPUs
    without AMX; ``bf16_in_float32``, set from a probe), the copy holds the bf16-rounded values in float32 and the
    matmul runs in float32 on the bf16-rounded input: a product of two bf16 values is exact in float32, and bf16
    kernels sum in float32 too, so the numbers are bf16's to summation order; the output is rounded to bf16.
    """

    cast_once: bool = True  # bf16 / fp16 matmuls with the weight cast once (else autocast's own casts)
    onednn: bool = True  # may bf16 matmuls take oneDNN's path (set by optimize from fused_linear and the probe)
    bf16_in_float32: bool = False  # bf16 matmuls as float32 products of the bf16 values (set by optimize's probe)
    gelu_after: frozenset = frozenset()  # dtypes whose oneDNN matmuls run GELU after them (set by optimize's probe)
    packed: torch.Tensor | None = None  # the float32 weight in oneDNN's layout; then no plain ``weight`` parameter

    def pack(self) -> None:
        """Keep the (CPU float32) weight in oneDNN's layout only."""
        with torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(self._parameters.pop("weight").detach())

    def unpack(self) -> None:
        """Back to a plain ``weight`` parameter (frozen, as in an optimized model)."""
        if self.packed is not None:
            self._parameters = self._plain_parameters()
            del self.packed

    def _plain_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters with the packed weight back in the plain layout, first (the reference layer's order)."""
        return {"weight": nn.Parameter(self.packed.to_dense(), requires_grad=False), **self._parameters}

    @property
    def weight(self) -> torch.Tensor:
        packed = self.packed
        if packed is None:
            return self._parameters["weight"]
        get_state = getattr(torch._C, "_get_tracing_state", None)
        if not torch.jit.is_tracing() or get_state is None:
            return packed.to_dense()
        # a trace (ONNX export) must see the plain weight as a constant, not an op on oneDNN's opaque tensor
        state = get_state()
        torch._C._set_tracing_state(None)
        try:
            return packed.to_dense()
        finally:
            torch._C._set_tracing_state(state)

    def _apply(self, fn, recurse: bool = True):
        """``.to()`` and friends: on the plain weight; packed again if it stays CPU float32 (left packed when ``fn``
        keeps a CPU float32 tensor as it is, e.g. ``.to("cpu")`` of a CPU model)."""
        was_packed = self.packed is not None
        if was_packed:
            moved = fn(torch.zeros(1))
            if moved.device.type == "cpu" and moved.dtype == torch.float32:
                return super()._apply(fn, recurse)  # the bias and the rest; the packed weight stays
        self.unpack()
        super()._apply(fn, recurse)
        w = self._parameters["weight"]
        if was_packed and w.device.type == "cpu" and w.dtype == torch.float32:
            self.pack()
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        if self.packed is not None:  # the reference layer's keys, in its order
            destination[prefix + "weight"] = self.packed.to_dense()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def __getstate__(self) -> dict:
        """Copies and pickles carry the plain weight (oneDNN's layout has no storage to copy) and drop cached casts."""
        state = self.__dict__.copy()
        state.pop("_prepared", None)
        if state.pop("packed", None) is not None:
            state["_parameters"] = self._plain_parameters()
            state["_pack_again"] = True
        return state

    def __setstate__(self, state: dict) -> None:
        pack_again = state.pop("_pack_again", False)
        super().__setstate__(state)
        if pack_again:
            self.pack()

    def call_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The reduced precision this call's matmul runs in, or None for the plain layer."""
        if not self.cast_once:
            return None
        dtype = autocast_dtype(x.device.type)
        lowp_input = x.dtype in (torch.bfloat16, torch.float16) and self.packed is None
        if dtype is None and lowp_input and x.dtype == self._parameters["weight"].dtype:
            dtype = x.dtype  # a model cast to bf16 (bf16_weights): only the oneDNN layout to gain
        if dtype is None or dtype == torch.float32 or not inference_call():  # cheap checks first: a hot path
            return None
        return dtype

    def prepared(
        self, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None, bool, torch.dtype]:
        """(weight, bias, in oneDNN's layout, the dtype the matmul runs in) for matmuls in ``dtype`` on ``device``."""
        packed = self.packed  # frozen while packed; a plain weight is checked for changes
        w = self._parameters["weight"] if packed is None else None
        source = ("packed", id(packed)) if w is None else (w.data_ptr(), w._version)
        key = (dtype, device, source)
        cached = self.__dict__.get("_prepared")
        if cached is None or cached[0] != key:
            compute = torch.float32 if self.bf16_in_float32 and dtype == torch.bfloat16 else dtype
            with torch.no_grad():
                weight = self.weight.detach().to(device=device, dtype=dtype).to(compute)  # bf16 values either way
                bias = None if self.bias is None else self.bias.detach().to(dtype).to(compute)
                onednn = self.onednn and device.type == "cpu" and compute in ONEDNN_DTYPES
                if onednn:
                    weight = torch.ops.mkldnn._reorder_linear_weight(weight)
            cached = self.__dict__["_prepared"] = (key, weight, bias, onednn, compute)
        return cached[1:]

    def lowp(self, x: torch.Tensor, dtype: torch.dtype, gelu: bool = False, residual=None) -> torch.Tensor:
        """``residual + gelu?(self(x))`` with the matmul in ``dtype`` (the residual keeps its own dtype)."""
        w, b, onednn, compute = self.prepared(dtype, x.device)
        x = x.to(dtype)
        if compute != dtype:  # bf16 values, their products and sums in float32 (exact products, as bf16 kernels)
            with torch.autocast(x.device.type, enabled=False):
                y = _matmul(x.to(compute), w, b, onednn, gelu, compute not in self.gelu_after).to(dtype)
            return y if residual is None else residual + y
        if onednn and residual is not None and residual.dtype == dtype and not gelu:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, w, b, "add")
        y = _matmul(x, w, b, onednn, gelu, dtype not in self.gelu_after)
        return y if residual is None else residual + y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and cpu_float32(x) and inference_call():
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "none")
        dtype = self.call_dtype(x)
        return F.linear(x, self.weight, self.bias) if dtype is None else self.lowp(x, dtype)
