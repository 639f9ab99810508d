"""Training with the engine's shortcuts: the reference model's own modules, parameters and state dict.

:func:`vitkit.optimize` rewrites a model for inference. A training step can be faster too, with the reference
model's logits and gradients:

* ViT with a [CLS] head: the head reads that row alone, so the last block needs only the [CLS] query, and the
  projection and MLP of one token instead of 1 + N; keys and values still come from every token (what the inference
  engine's last block does, here with the reference ops, dropout and stochastic depth, so autograd runs through it);
  CvT with [CLS] likewise (its [CLS] query skips the convolutions; the query convolution still runs for its
  BatchNorm's statistics, its output joined to the graph with the zero gradient the full pass gives it);
* Swin, CPU float32: each block's (shifted) window attention in the native kernel with its backward pass
  (:func:`vitkit.kernels.window_attention.window_attention_trainable`): the shift, the window partition and its
  reverse are index arithmetic, and the window-sized matmuls stay in L1, where PyTorch runs them as thousands of
  tiny batched matmuls with copies around them. Gradients reach q / k / v and the relative-position bias table.
  Not where the kernel's probe (:mod:`vitkit.engine.probe`) finds it clearly slower than PyTorch's attention.
* CvT under CPU bf16 autocast: the strided depthwise convolutions of the key / value projections (and their
  BatchNorm) in float32. PyTorch's bf16 backward of a strided depthwise convolution on the CPU is an order of
  magnitude slower than the float32 one (benchmarks/README.md); float32 there is the more precise of the two, so
  the numbers differ from the plain autocast pass by bf16 rounding, not more. The other shortcuts match the plain
  pass to float rounding.
* Any model under CPU bf16 autocast where the probe (:mod:`vitkit.engine.probe`) finds float32 matmuls faster than
  bf16 ones (CPUs without AMX): every Linear as float32 products of the bf16 values, forward and backward, which
  are the bf16 matmul's numbers to summation order at the float32 rate; it saves the bf16 tensors, as autocast does.

:func:`training_path` makes ``model(x)`` take these paths while it is active; ``vitkit train`` and the training
benchmarks wrap each forward pass in it. It swaps instance ``forward`` methods only while active, so the model's
class, parameters and state dict stay the reference model's: checkpoints, EMA copies and ``vitkit.optimize`` see a
plain model.
"""

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitkit.engine import probe
from vitkit.engine.conditions import is_tracing, native_call
from vitkit.engine.model import HEAD_READS_CLS_ONLY, has_hooks
from vitkit.kernels import window_attention as window_kernel
from vitkit.layers import attention
from vitkit.models import cvt, swin, vit
from vitkit.models.base import VisionModel
from vitkit.settings import native_kernels_enabled
from vitkit.utils.autocast import autocast_dtype


def vit_cls_row(block: vit.Block, x: torch.Tensor) -> torch.Tensor:  # (B, 1+N, D) -> (B, 1, D)
    """Row 0 of ``block(x)``, computing only what it depends on; the same numbers to float rounding."""
    a = block.attn
    B, N, C = x.shape
    h, d = a.num_heads, C // a.num_heads
    y = block.norm1(x)
    if type(a.qkv) is nn.Linear:  # the query of [CLS] alone; keys and values of every token
        w, b = a.qkv.weight, a.qkv.bias
        q = F.linear(y[:, :1], w[:C], None if b is None else b[:C])  # (B, 1, C)
        kv = F.linear(y, w[C:], None if b is None else b[C:]).view(B, N, 2, h, d)
    else:  # a replaced layer (e.g. quantised): all three, the [CLS] query kept
        qkv = a.qkv(y).view(B, N, 3, h, d)
        q, kv = qkv[:, :1, 0].reshape(B, 1, C), qkv[:, :, 1:]
    k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
    q = q.view(B, 1, h, d).transpose(1, 2)  # (B, heads, 1, d)
    out, _ = attention(q, k, v, scale=a.scale, dropout_p=a.attn_drop if a.training else 0.0)
    x = x[:, :1] + block.drop_path1(a.proj_drop(a.proj(out.transpose(1, 2).reshape(B, 1, C))))
    return x + block.drop_path2(block.mlp(block.norm2(x)))


def _vit_cls_row_forward(self: vit.VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """``forward`` of a ViT whose head reads [CLS]: every block but the last in full, the last one's [CLS] row."""
    last = self.blocks[-1]
    if has_hooks((*last.modules(), self.norm)) or getattr(last.attn, "record_attention", False):
        return type(self).forward(self, x)  # something would see the rows this path leaves out
    x, _ = self.forward_trunk(x, stop=len(self.blocks) - 1)  # (B, 1+N, D)
    if self.grad_checkpointing and torch.is_grad_enabled():
        x = checkpoint(vit_cls_row, last, x, use_reentrant=False)
    else:
        x = vit_cls_row(last, x)  # (B, 1, D)
    return self.forward_head(self.norm(x))


def cvt_cls_row(block: cvt.Block, x: torch.Tensor, H: int, W: int) -> torch.Tensor:  # (B, 1+N, D) -> (B, 1, D)
    """Row 0 ([CLS]) of ``block(x, H, W)``, computing only what it depends on; the same numbers to float rounding.

    The [CLS] query skips the convolutions, so the query convolution's output feeds the other rows alone. It still
    runs: its BatchNorm's batch statistics and running averages are then the full pass's, and its parameters get
    the full pass's gradients (zeros), which DDP expects of every parameter."""
    a = block.attn
    y = block.norm1(x)
    B, _, C = y.shape
    h, d = a.num_heads, C // a.num_heads
    cls, t = y[:, :1], y[:, 1:].contiguous().reshape(B, H, W, C).permute(0, 3, 1, 2)  # map (B, C, H, W) channels-last
    unread = a.conv_proj_q(t)  # (B, H*W, C)
    k, v = (torch.cat([cls, proj(t)], dim=1) for proj in (a.conv_proj_k, a.conv_proj_v))  # (B, 1+h*w, C)
    q = a.proj_q(cls).view(B, 1, h, d).transpose(1, 2)  # (B, heads, 1, d)
    k = a.proj_k(k).view(B, k.shape[1], h, d).transpose(1, 2)  # (B, heads, Nk, d)
    v = a.proj_v(v).view(B, v.shape[1], h, d).transpose(1, 2)
    out, _ = attention(q, k, v, scale=a.scale, dropout_p=a.attn_drop if a.training else 0.0)
    x = x[:, :1] + block.drop_path1(a.proj_drop(a.proj(out.transpose(1, 2).reshape(B, 1, C))))
    x = _ZeroGradient.apply(x, unread)
    return x + block.drop_path2(block.mlp(block.norm2(x)))


class _ZeroGradient(torch.autograd.Function):
    """``x`` as it is, with ``unread`` joined to the graph: its gradient is zero, what the full pass gives a tensor
    whose values never reach the loss."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, unread: torch.Tensor) -> torch.Tensor:
        ctx.unread = (unread.shape, unread.dtype)
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        shape, dtype = ctx.unread
        return grad, grad.new_zeros(shape, dtype=dtype)


def _cvt_cls_row_forward(self: cvt.CvT, x: torch.Tensor) -> torch.Tensor:
    """``forward`` of a CvT whose head reads [CLS]: its last block computes that row alone (``cvt_cls_row``) unless a
    hook would see the rows left out."""
    stage = self.stages[-1]
    token = HEAD_READS_CLS_ONLY.set(not has_hooks((*stage.blocks[-1].modules(), stage, self.norm)))
    try:
        return type(self).forward(self, x)
    finally:
        HEAD_READS_CLS_ONLY.reset(token)


def _cvt_last_block_forward(self: cvt.Block, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``forward`` of a CvT's last block: the [CLS] row alone while the model computes its logits (every token for
    ``forward_features`` / ``forward_intermediates`` and while attention maps are recorded)."""
    if not HEAD_READS_CLS_ONLY.get() or self.attn.record_attention:
        return type(self).forward(self, x, H, W)
    return cvt_cls_row(self, x, H, W)


def _swin_block_forward(self: swin.SwinBlock, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
    """``forward`` of a Swin block with its window attention in the native kernel (reference path elsewhere)."""
    a = self.attn
    _, H, W, C = x.shape
    window, shift = swin.window_and_shift(H, W, self.window_size, self.shift_size)
    dropout = a.training and a.attn_drop > 0  # the kernel has none
    if dropout or not native_call(x) or is_tracing() or a.record_attention or has_hooks((a,)):
        return type(self).forward(self, x)  # (a hook on the attention module would not fire here)
    if not window_kernel.supports(C, a.num_heads, window):
        return type(self).forward(self, x)
    shortcut, y = x, self.norm1(x)
    pad_b, pad_r = (-H) % window, (-W) % window
    if pad_b or pad_r:  # zero tokens right / bottom to whole windows, as the reference block
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
    bias = a.relative_position_bias(window)  # (heads, n, n): autograd reaches the table
    if shift:
        mask = swin.shift_mask(H + pad_b, W + pad_r, window, shift, y.device, bias.dtype)  # (nW, n, n)
        bias = (mask.unsqueeze(1) + bias).flatten(0, 1)  # (nW * heads, n, n)
    n = window * window
    bias = F.pad(bias, (0, window_kernel.padded_width(n) - n), value=float("-inf"))
    out = window_kernel.window_attention_trainable(a.qkv(y), bias, a.num_heads, window, shift, a.scale)
    x = shortcut + self.drop_path1(a.proj_drop(a.proj(out[:, :H, :W])))
    return x + self.drop_path2(self.mlp(self.norm2(x)))


def _cvt_strided_projection_forward(self: cvt.ConvProj, x: torch.Tensor) -> torch.Tensor:
    """``forward`` of a strided key / value projection: in float32 under CPU bf16 autocast (reference elsewhere)."""
    if x.device.type != "cpu" or autocast_dtype("cpu") != torch.bfloat16 or self.conv.weight.dtype != torch.float32:
        return type(self).forward(self, x)  # (bf16 weights: a model cast, or FSDP's mixed precision gathering them)
    with torch.autocast("cpu", enabled=False):
        return type(self).forward(self, x.float())  # (B, h*w, C) float32; the linears after it cast to bf16


# float32 temporaries of the bf16-values linears: whole up to WHOLE_BYTES (glibc's largest mmap threshold, above
# which every call page-faults its blocks in afresh), else in slices of rows of about SLICE_BYTES
WHOLE_BYTES, SLICE_BYTES = 32 * 2**20, 8 * 2**20


def _row_slices(rows: int, width: int) -> Iterator[slice]:
    """Slices of ``rows`` for float32 copies ``width`` wide: one slice while the copy stays under
    :data:`WHOLE_BYTES`, else slices the allocator recycles instead of page-faulting them in on every call."""
    step = rows if rows * width * 4 <= WHOLE_BYTES else max(1, SLICE_BYTES // (4 * width))
    return (slice(start, start + step) for start in range(0, rows, max(step, 1)))


class _Bf16ValuesLinear(torch.autograd.Function):
    """``x W^T + b`` of the bf16 values, as float32 products, forward and backward: the product of two bf16 numbers
    is exact in float32 and bf16 matmuls sum in float32, so the output and gradients (rounded to bf16, then to each
    input's dtype) are autocast's to summation order. Saves the bf16 tensors, as autocast does (same memory). Past
    :data:`WHOLE_BYTES` the float32 copies of the activations are made a slice of rows at a time, each slice's
    result written straight into the bf16 (or the input's dtype) output."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x16, w16 = x.to(torch.bfloat16), weight.to(torch.bfloat16)
        ctx.save_for_backward(x16, w16)
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        w, b = w16.float(), None if bias is None else bias.to(torch.bfloat16).float()
        rows = x16.reshape(-1, x16.shape[-1])  # (n, in)
        y = rows.new_empty(rows.shape[0], w.shape[0])  # (n, out) bf16
        with torch.autocast("cpu", enabled=False):
            for part in _row_slices(rows.shape[0], max(w.shape)):
                y[part] = F.linear(rows[part].float(), w, b)  # rounded to bf16 on the way in
        return y.view(*x16.shape[:-1], w.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x16, w16 = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        g16 = grad.to(torch.bfloat16).reshape(-1, grad.shape[-1])  # (n, out)
        rows = x16.reshape(-1, x16.shape[-1])  # (n, in)
        w = w16.float()  # (out, in)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = b_dtype is not None and ctx.needs_input_grad[2]
        gx = rows.new_empty(rows.shape, dtype=x_dtype) if need_x else None
        gw = gb = None  # float32 sums over the slices
        with torch.autocast("cpu", enabled=False):
            for part in _row_slices(rows.shape[0], max(w.shape)):
                g = g16[part].float()
                if need_x:
                    gx[part] = (g @ w).to(torch.bfloat16)  # then to the input's dtype
                if need_w:
                    gw = g.T @ rows[part].float() if gw is None else gw.addmm_(g.T, rows[part].float())
                if need_b:
                    gb = g.sum(0) if gb is None else gb.add_(g.sum(0))
        if rows.shape[0] == 0:  # no slices: zero gradients
            gw, gb = (w.new_zeros(w.shape) if need_w else None), (w.new_zeros(w.shape[0]) if need_b else None)
        gx = None if gx is None else gx.view(x16.shape)
        gw = None if gw is None else gw.to(torch.bfloat16).to(w_dtype)
        gb = None if gb is None else gb.to(torch.bfloat16).to(b_dtype)
        return gx, gw, gb


def _bf16_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``forward`` of a Linear under CPU bf16 autocast: float32 products of the bf16 values (``_Bf16ValuesLinear``)."""
    if autocast_dtype("cpu") != torch.bfloat16 or x.device.type != "cpu" or is_tracing():
        return type(self).forward(self, x)
    return _Bf16ValuesLinear.apply(x, self.weight, self.bias)


def shortcuts(model: nn.Module) -> list[tuple[nn.Module, types.FunctionType]]:
    """(module, the ``forward`` it takes on the training path) for each shortcut that applies to ``model``."""
    if type(model).forward is not VisionModel.forward:
        return []  # a subclass with its own forward (an optimized model has its own paths), or not a vitkit model
    return _family_shortcuts(model) + _bf16_linear_shortcuts(model)


def _bf16_linear_shortcuts(model: nn.Module) -> list[tuple[nn.Module, types.FunctionType]]:
    """Every Linear, when the step runs under CPU bf16 autocast where the probe finds float32 matmuls faster."""
    if autocast_dtype("cpu") != torch.bfloat16 or any(getattr(m, "grad_checkpointing", False) for m in model.modules()):
        return []  # (a recomputed block must save tensors of the same dtypes)
    bf16 = probe.bf16_probe(model, False, False)  # the plain ops, as autocast runs them
    if bf16 is None or not bf16.use_float32:
        return []
    return [(m, _bf16_linear_forward) for m in model.modules() if type(m) is nn.Linear]


def _family_shortcuts(model: nn.Module) -> list[tuple[nn.Module, types.FunctionType]]:
    if isinstance(model, vit.VisionTransformer):
        cls_head = model.config.class_token and model.config.global_pool == "token" and len(model.blocks) > 0
        return [(model, _vit_cls_row_forward)] if cls_head else []
    if isinstance(model, swin.SwinTransformer):
        if any(getattr(m, "grad_checkpointing", False) for m in model.modules()):
            return []  # a checkpointed block is recomputed after the path is gone: it must run the same ops
        if not native_kernels_enabled() or window_kernel.library() is None:
            return []
        if not all(p.use_kernel for p in probe.kernel_probes(model)):
            return []  # a build that is slower than PyTorch's attention on this CPU (the probe is kept per process)
        return [(m, _swin_block_forward) for m in model.modules() if type(m) is swin.SwinBlock]
    if isinstance(model, cvt.CvT):
        if any(getattr(m, "grad_checkpointing", False) for m in model.modules()):
            return []  # a recomputed block must run the same ops in the same dtypes
        strided = [m for m in model.modules() if type(m) is cvt.ConvProj and max(m.conv.stride) > 1]
        swaps = [(m, _cvt_strided_projection_forward) for m in strided]
        blocks = model.stages[-1].blocks
        if model.config.cls_token and len(blocks):  # the head reads [CLS] alone
            swaps += [(model, _cvt_cls_row_forward), (blocks[-1], _cvt_last_block_forward)]
        return swaps
    return []


@contextmanager
def training_path(model: nn.Module) -> Iterator[bool]:
    """While active, ``model(x)`` trains through the shortcuts that apply to it (yields whether any does).

    Calls through a wrapper (DDP, ``torch.compile``) reach them too: they replace instance ``forward`` methods,
    which ``__call__`` reads. Each steps aside where it would change what someone sees: forward hooks on the modules
    it skips or shortens, recorded attention maps; ``forward_features`` / ``forward_intermediates`` of a ViT get every
    token.
    """
    swaps = shortcuts(model)
    if not swaps or any("forward" in vars(m) for m, _ in swaps):
        yield False
        return
    for m, forward in swaps:
        m.forward = types.MethodType(forward, m)
    try:
        yield True
    finally:
        for m, _ in swaps:
            del m.forward
