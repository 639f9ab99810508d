"""Training with the engine's exact shortcuts: the reference model's own modules, parameters and state dict.

:func:`vitkit.optimize` rewrites a model for inference. A training step can skip work too where the logits and
gradients stay the reference model's: the head of a ViT that reads the [CLS] token alone needs only that row of the
last block. Keys and values still come from every token, but the query, the projection and the MLP run on one token
instead of 1 + N (what the inference engine's last block does, here with the reference ops, dropout and stochastic
depth, so autograd runs through it). :func:`training_path` makes ``model(x)`` take that path while it is active;
``vitkit train`` and the training benchmarks wrap each forward pass in it. The model's class, parameters and state
dict stay the reference model's, so checkpoints, EMA copies and ``vitkit.optimize`` see a plain model.
"""

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitkit.engine.model import has_hooks
from vitkit.layers import attention
from vitkit.models import vit


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


def cls_row_forward(model: nn.Module):
    """The shortcut ``forward`` for ``model``, or None where none applies (not a ViT with a [CLS] head)."""
    if not isinstance(model, vit.VisionTransformer) or type(model).forward is not vit.VisionTransformer.forward:
        return None  # another family, or a subclass with its own forward (an optimized model has its own path)
    cfg = model.config
    if not (cfg.class_token and cfg.global_pool == "token" and len(model.blocks)):
        return None
    return _vit_cls_row_forward


@contextmanager
def training_path(model: nn.Module) -> Iterator[bool]:
    """While active, ``model(x)`` computes its logits through the exact shortcuts (yields whether one applies).

    Calls through a wrapper (DDP, ``torch.compile``) reach it too: it replaces the instance's ``forward``, which
    ``model.__call__`` reads. Forward hooks on the last block or the final norm, recorded attention, and
    ``forward_features`` / ``forward_intermediates`` get every token as before.
    """
    forward = cls_row_forward(model)
    if forward is None or "forward" in vars(model):
        yield False
        return
    model.forward = types.MethodType(forward, model)
    try:
        yield True
    finally:
        del model.forward
