"""Count FLOPs and MACs of one forward pass with ``torch.utils.flop_counter.FlopCounterMode``.

Convention (the one timm, fvcore and the ViT / Swin / CvT papers use): only matrix products and convolutions
are counted, one multiply-add = 1 MAC = 2 FLOPs. That includes the attention products ``q @ k^T`` and
``attn @ v`` (inside ``scaled_dot_product_attention``) but not softmax, LayerNorm, GELU, additions or
pooling. With it ViT-B/16 at 224 is 17.58 GMACs (the "17.6 GFLOPs" of the DeiT / Swin tables); the
attention products are 0.72 of those GMACs, so a count without them would give 16.85.

PyTorch's counter knows the CUDA attention kernels but not the CPU one
(``aten._scaled_dot_product_flash_attention_for_cpu``), so it is added here; without it the attention
products on CPU would silently count as zero. Its convolution-backward formula is replaced too (it mishandles
grouped convolutions), and oneDNN's fused linear (``mkldnn._linear_pointwise``, used by optimized models on the CPU,
:mod:`vitkit.engine`) is counted like the ``addmm`` it replaces.
"""

import math
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_backward_flop_count, sdpa_flop_count

from vitkit.errors import VitkitError

aten = torch.ops.aten


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kw) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None) -> int:  # fmt: skip
    """Each requested gradient (input, weight) costs one forward convolution. PyTorch's own formula ignores
    ``groups`` for the input gradient, which counts CvT's depthwise convolutions' backward ~20x too high."""
    fwd = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed=transposed)
    return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _linear_pointwise_flop(x_shape, *args, out_shape=None, **kwargs) -> int:
    """oneDNN's fused linear (+ bias / GELU / residual add), which a model may use for CPU inference."""
    return 2 * math.prod(out_shape) * x_shape[-1]


def _custom_mapping() -> dict[Any, Any]:
    mapping: dict[Any, Any] = {aten.convolution_backward: _conv_backward_flop}
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if mkldnn is not None and hasattr(mkldnn, "_linear_pointwise"):
        mapping[mkldnn._linear_pointwise] = _linear_pointwise_flop
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flop
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward_flop
    return mapping


def flop_counter() -> FlopCounterMode:
    """A ``FlopCounterMode`` that also counts CPU fused attention."""
    return FlopCounterMode(display=False, custom_mapping=_custom_mapping())


def _input_shape(model: nn.Module, input_size: Any, batch_size: int) -> tuple[int, ...]:
    if input_size is None:
        cfg = getattr(model, "data_config", None)
        if cfg is None:
            raise VitkitError("count_flops: pass input_size, e.g. (3, 224, 224); the model has no data_config")
        input_size = cfg["input_size"]
    if isinstance(input_size, int):
        chans = getattr(getattr(model, "config", None), "in_chans", 3)
        input_size = (chans, input_size, input_size)
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) == 2:
        chans = getattr(getattr(model, "config", None), "in_chans", 3)
        input_size = (chans, *input_size)
    if len(input_size) == 4:
        return input_size
    if len(input_size) != 3:
        raise VitkitError(f"count_flops: input_size must be S, (H, W), (C, H, W) or (B, C, H, W), got {input_size}")
    return (batch_size, *input_size)


def count_flops(
    model: nn.Module,
    input_size: Any = None,
    *,
    batch_size: int = 1,
    backward: bool = False,
) -> dict[str, Any]:
    """FLOPs/MACs of ``model`` on one input of ``input_size`` (S, (H, W), (C, H, W) or (B, C, H, W)).

    ``backward=True`` also runs ``logits.sum().backward()`` and reports the forward + backward total (roughly 3x
    the forward). Returns ``flops``, ``macs``, ``gflops``, ``gmacs`` (for the whole batch), ``params``, the
    ``input_shape`` used and ``by_op`` (FLOPs per aten op). The model's train/eval mode is left as it was.
    """
    shape = _input_shape(model, input_size, batch_size)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn(shape, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        counter = flop_counter()
        if backward:
            with counter:
                out = model(x)
                out = out.logits if hasattr(out, "logits") else out
                out.float().sum().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), counter:
                model(x)
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return {
        "flops": flops,
        "macs": flops // 2,
        "gflops": flops / 1e9,
        "gmacs": flops / 2e9,
        "params": sum(p.numel() for p in model.parameters()),
        "input_shape": list(shape),
        "backward": backward,
        "by_op": by_op,
    }
