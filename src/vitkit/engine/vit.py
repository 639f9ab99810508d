"""ViT for inference: each block's linears fused with their bias, GELU and residual add; native attention."""

import torch
from torch import nn

from vitkit.engine.attention import multi_head_attention
from vitkit.engine.conditions import inference_call
from vitkit.engine.linear import linear, mlp
from vitkit.engine.micro_batch import num_micro_batches, sliced
from vitkit.engine.model import HEAD_READS_CLS_ONLY, InferenceModel
from vitkit.kernels import attention as attention_kernel
from vitkit.models import vit
from vitkit.settings import EngineSettings


class FastBlock(vit.Block):
    """``x + attn(LN(x))`` and ``x + MLP(LN(x))`` with the adds inside the output matmuls (reference otherwise)."""

    fused: bool
    native: bool
    cls_only: bool = False  # the last block of a model whose head reads [CLS] alone

    def prepare(self, settings: EngineSettings) -> None:
        self.fused, self.native = settings.fused_linear, settings.native_kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1+N, D) -> (B, 1+N, D)
        a = self.attn
        if not inference_call(a):
            return super().forward(x)
        if self.cls_only and HEAD_READS_CLS_ONLY.get():
            return self.forward_cls(x)
        B, N, C = x.shape
        qkv = linear(self.norm1(x), a.qkv, fused=self.fused).view(B, N, 3, a.num_heads, C // a.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d)
        out = multi_head_attention(q, k, v, a.scale, self.native).transpose(1, 2).reshape(B, N, C)
        x = linear(out, a.proj, residual=x, fused=self.fused)
        return mlp(self.mlp, self.norm2(x), residual=x, fused=self.fused)

    def forward_cls(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1+N, D) -> (B, 1, D)
        """The block's [CLS] row alone: keys and values from every token, one query, and projection and MLP on one
        token. The same numbers as that row of :meth:`forward`."""
        a = self.attn
        B, N, C = x.shape
        qkv = linear(self.norm1(x), a.qkv, fused=self.fused).view(B, N, 3, a.num_heads, C // a.num_heads)
        q, k, v = qkv[:, :1, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        out = multi_head_attention(q, k, v, a.scale, self.native).transpose(1, 2).reshape(B, 1, C)
        x = linear(out, a.proj, residual=x[:, :1].contiguous(), fused=self.fused)
        return mlp(self.mlp, self.norm2(x), residual=x, fused=self.fused)


def cls_only_path(model: vit.VisionTransformer) -> tuple[nn.Module, tuple[nn.Module, ...]] | None:
    """Under a [CLS] head: the last block, whose [CLS] row is all the head reads, and the modules whose outputs are
    then that row alone; else None."""
    cfg = model.config
    if not (cfg.class_token and cfg.global_pool == "token" and len(model.blocks)):
        return None
    block = model.blocks[-1]
    return block, (*block.modules(), model.norm)


class InferenceViT(InferenceModel, vit.VisionTransformer):
    def slices(self, x: torch.Tensor) -> int:
        cfg, (gh, gw) = self.config, self.grid(x)
        widest = x.shape[0] * (self.num_prefix_tokens + gh * gw) * int(cfg.embed_dim * max(3.0, cfg.mlp_ratio)) * 4
        return num_micro_batches(self, x, widest, self.engine_settings.micro_batch_bytes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder over slices of a CPU batch whose widest temporary (MLP hidden or q/k/v) would be huge."""
        return sliced(super().forward_features, x, self.slices(x))


MODEL = (vit.VisionTransformer, InferenceViT)
SWAPS = {vit.Block: (FastBlock, "linears fused with bias / GELU / residual add; native multi-head attention", None)}
KERNELS = {"attention": attention_kernel.library}
