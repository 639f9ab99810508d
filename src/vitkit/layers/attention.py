"""Scaled dot-product attention with an opt-in path that also returns the attention weights.

SDPA (``F.scaled_dot_product_attention``) never materialises the (N x N) weights, so a module that has been asked to
record them (``record_attention = True``) takes the explicit path for that call. So do training calls where it is
faster (:func:`_explicit_for_training`): a learned additive bias (Swin), and CPU bf16 autocast at moderate sizes.
Explain tools use :func:`record_attention` (maps and logits) or :func:`get_attention_maps` (maps only), which flip the
flag on every attention module of a model, run one forward pass, and collect what each module stored.
"""

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.utils.autocast import autocast_dtype

# CPU training under bf16 autocast: the explicit path up to this many weights per call (B x heads x Nq x Nk), about
# 270 MB kept for the backward pass; beyond it SDPA's kernel, which keeps none (benchmarks/README.md, "Attention")
EXPLICIT_TRAINING_ELEMENTS = 2**25


def _explicit_for_training(q: torch.Tensor, k: torch.Tensor, attn_bias: torch.Tensor | None) -> bool:
    """Does this training call run faster on the explicit path than through SDPA?

    A learned bias (Swin's relative position bias): SDPA's CPU kernel cannot give a mask a gradient, and its fallback
    computes bf16 inputs in float32. CPU bf16 autocast: the flash kernel's backward is slower than autocast's bf16
    matmuls on the CPUs measured, while the weights it would save stay small.
    """
    if not torch.is_grad_enabled():
        return False
    if attn_bias is not None and attn_bias.requires_grad:
        return True
    cpu_bf16 = q.device.type == "cpu" and autocast_dtype("cpu") == torch.bfloat16
    return cpu_bf16 and q.shape[:-2].numel() * q.shape[-2] * k.shape[-2] <= EXPLICIT_TRAINING_ELEMENTS


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    attn_bias: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    need_weights: bool = False,
    weights_shape: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q: (B, h, Nq, d), k/v: (B, h, Nk, d), attn_bias broadcastable to (B, h, Nq, Nk), added to logits.

    With ``need_weights`` the weights come back too, viewed as ``weights_shape`` if given (Swin: windows and heads
    apart). That view is what multiplies ``v``, so it lies on the path to the output and gradients reach it.
    """
    if not need_weights and not _explicit_for_training(q, k, attn_bias):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, scale=scale)
        return out, None
    logits = (q * scale) @ k.transpose(-2, -1)  # (B, h, Nq, Nk)
    if attn_bias is not None:
        logits = logits + attn_bias
    weights = logits.softmax(dim=-1)
    if weights_shape is not None:
        weights = weights.view(weights_shape)
    used = weights.view(logits.shape)
    out = F.dropout(used, dropout_p) @ v if dropout_p > 0 else used @ v
    return out, weights if need_weights else None


@dataclass
class AttentionMap:
    """Softmax attention weights of one layer.

    ``weights`` is (B, heads, Nq, Nk) for ViT and CvT; for Swin it is per window,
    (B, num_windows, heads, ws*ws, ws*ws). ``meta`` describes the token layout (see each family's docs):
    e.g. ``grid`` (H, W) of query tokens, ``num_prefix_tokens``, ``kv_grid`` for CvT, ``window_size``
    and ``shift_size`` for Swin.
    """

    name: str
    weights: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)


class RecordsAttention:
    """Mixin for attention modules: when ``record_attention`` is set, keep the last weights."""

    record_attention: bool = False
    attention_map: torch.Tensor | None = None
    attention_meta: dict[str, Any] | None = None

    def store_attention(self, weights: torch.Tensor, **meta: Any) -> None:
        self.attention_map = weights
        self.attention_meta = meta


def record_attention(model: nn.Module, x: torch.Tensor) -> tuple[list[AttentionMap], torch.Tensor]:
    """Run ``model(x)`` once; return the attention weights of every attention layer, in order, and the output.

    The output (the logits of a classifier) comes from the same forward pass as the maps, so an explanation that
    needs both (gradient-weighted rollout differentiates the target logit by each map) runs the model once. Gradients
    are kept if autograd is enabled; wrap the call in ``torch.no_grad()`` to save memory.
    """
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, RecordsAttention)]
    for _, m in modules:
        m.record_attention = True
    try:
        output = model(x)
        maps = [AttentionMap(n, m.attention_map, dict(m.attention_meta or {})) for n, m in modules]
    finally:
        for _, m in modules:
            m.record_attention = False
            m.attention_map = None
            m.attention_meta = None
    return [a for a in maps if a.weights is not None], output


def get_attention_maps(model: nn.Module, x: torch.Tensor) -> list[AttentionMap]:
    """Run ``model(x)`` once and return the attention weights of every attention layer, in order.

    Gradients are kept if autograd is enabled (for gradient-weighted explanations); wrap the call in
    ``torch.no_grad()`` to save memory.
    """
    return record_attention(model, x)[0]
