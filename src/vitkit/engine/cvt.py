"""CvT for inference: BatchNorm folded into each projection's depthwise conv; linears fused with bias, GELU and
residual add; native attention."""

import torch
import torch.nn.functional as F

from vitkit.engine.attention import multi_head_attention
from vitkit.engine.conditions import inference_call
from vitkit.engine.linear import linear, mlp
from vitkit.engine.micro_batch import num_micro_batches, sliced
from vitkit.engine.model import HEAD_READS_CLS_ONLY, InferenceModel
from vitkit.kernels import attention as attention_kernel
from vitkit.models import cvt
from vitkit.settings import EngineSettings


class FoldedConvProj(cvt.ConvProj):
    """conv -> BatchNorm (running statistics) as one conv: ``w' = w * g / sqrt(var + eps)``,
    ``b' = beta - mean * g / sqrt(var + eps)``. The folded pair is built once; the model is frozen."""

    def prepare(self, settings: EngineSettings) -> None:
        bn = self.bn
        with torch.no_grad():
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C,)
            self.register_buffer("folded_weight", self.conv.weight * scale.view(-1, 1, 1, 1), persistent=False)
            self.register_buffer("folded_bias", bn.bias - bn.running_mean * scale, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, h*w, C)
        c = self.conv
        x = F.conv2d(x, self.folded_weight, self.folded_bias, c.stride, c.padding, c.dilation, c.groups)
        return x.flatten(2).transpose(1, 2)


class FastBlock(cvt.Block):
    """Convolutional projections, attention and MLP with the residual adds inside the output matmuls."""

    fused: bool
    native: bool
    cls_only: bool = False  # the last block of a model whose head reads [CLS] alone

    def prepare(self, settings: EngineSettings) -> None:
        self.fused, self.native = settings.fused_linear, settings.native_kernels

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:  # (B, [1+]N, D) -> (B, [1+]N, D)
        a = self.attn
        if not inference_call(a):
            return super().forward(x, H, W)
        if self.cls_only and HEAD_READS_CLS_ONLY.get():
            return self.forward_cls(x, H, W)
        y = self.norm1(x)
        B, N, C = y.shape
        if a.with_cls_token:
            cls, y = y[:, :1], y[:, 1:].contiguous()
        t = y.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last: no copy
        q, k, v = a.conv_proj_q(t), a.conv_proj_k(t), a.conv_proj_v(t)
        if a.with_cls_token:
            q, k, v = (torch.cat([cls, z], dim=1) for z in (q, k, v))
        h, d = a.num_heads, C // a.num_heads
        q = linear(q, a.proj_q, fused=self.fused).view(B, q.shape[1], h, d).transpose(1, 2)  # (B, heads, N, d)
        k = linear(k, a.proj_k, fused=self.fused).view(B, k.shape[1], h, d).transpose(1, 2)  # (B, heads, Nk, d)
        v = linear(v, a.proj_v, fused=self.fused).view(B, v.shape[1], h, d).transpose(1, 2)
        out = multi_head_attention(q, k, v, a.scale, self.native).transpose(1, 2).reshape(B, N, C)
        x = linear(out, a.proj, residual=x, fused=self.fused)
        return mlp(self.mlp, self.norm2(x), residual=x, fused=self.fused)

    def forward_cls(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:  # (B, 1+N, D) -> (B, 1, D)
        """The block's [CLS] row alone: keys and values from every token, the [CLS] query only (so no query
        convolution), projection and MLP on one token. The same numbers as that row of :meth:`forward`."""
        a = self.attn
        y = self.norm1(x)
        B, _, C = y.shape
        cls, t = y[:, :1].contiguous(), y[:, 1:].contiguous().reshape(B, H, W, C).permute(0, 3, 1, 2)  # channels-last
        k, v = (torch.cat([cls, proj(t)], dim=1) for proj in (a.conv_proj_k, a.conv_proj_v))
        h, d = a.num_heads, C // a.num_heads
        q = linear(cls, a.proj_q, fused=self.fused).view(B, 1, h, d).transpose(1, 2)  # (B, heads, 1, d)
        k = linear(k, a.proj_k, fused=self.fused).view(B, k.shape[1], h, d).transpose(1, 2)  # (B, heads, Nk, d)
        v = linear(v, a.proj_v, fused=self.fused).view(B, v.shape[1], h, d).transpose(1, 2)
        out = multi_head_attention(q, k, v, a.scale, self.native).transpose(1, 2).reshape(B, 1, C)
        x = linear(out, a.proj, residual=x[:, :1].contiguous(), fused=self.fused)
        return mlp(self.mlp, self.norm2(x), residual=x, fused=self.fused)


def cls_only_path(model: cvt.CvT) -> tuple[torch.nn.Module, tuple[torch.nn.Module, ...]] | None:
    """Where the last stage has [CLS] (the head reads it alone): its last block and the modules whose outputs are
    then that row alone; else None."""
    stage = model.stages[-1]
    if not (model.config.cls_token and len(stage.blocks)):
        return None
    block = stage.blocks[-1]
    return block, (*block.modules(), stage, model.norm)


class SlicedStage(cvt.Stage):
    """A stage over slices of a CPU batch whose widest temporary (the MLP hidden) would be huge."""

    def prepare(self, settings: EngineSettings) -> None:
        self.limit = settings.micro_batch_bytes

    def slices(self, x: torch.Tensor) -> int:
        conv = self.patch_embed.proj
        H, W = (
            (n + 2 * p - k) // s + 1
            for n, p, k, s in zip(x.shape[-2:], conv.padding, conv.kernel_size, conv.stride, strict=True)
        )
        widest = x.shape[0] * (H * W + 1) * self.blocks[0].mlp.fc1.out_features * 4
        return num_micro_batches(self, x, widest, self.limit)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:  # (B, C, H, W) -> tokens, H', W'
        return sliced(super().forward, x, self.slices(x))


class InferenceCvT(InferenceModel, cvt.CvT):
    pass


MODEL = (cvt.CvT, InferenceCvT)
SWAPS = {
    cvt.Stage: (SlicedStage, "CPU batches whose widest temporary exceeds the limit run in slices", "micro_batch_bytes"),
    cvt.ConvProj: (FoldedConvProj, "BatchNorm folded into the depthwise conv", "fold_batchnorm"),
    cvt.Block: (FastBlock, "linears fused with bias / GELU / residual add; native multi-head attention", None),
}
KERNELS = {"attention": attention_kernel.library}
