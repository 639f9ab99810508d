"""Convolutional vision Transformer, CvT (Wu et al., 2021), read top to bottom in the order of the study note.

image (B, C, H, W)
  -> for each of 3 stages:
       convolutional token embedding: an overlapping strided conv on the 2-D map, then LayerNorm  (B, N_i, D_i)
       (last stage only) a learned [CLS] token in front                                           (B, 1+N_i, D_i)
       depth_i x pre-norm block: x + Attn(LN(x)); x + MLP(LN(x)), where Attn is the convolutional projection:
         the token map goes through a depthwise 3x3 conv + BatchNorm, then a linear map; queries at stride 1,
         keys and values at stride 2 (a quarter of the tokens, so attention costs a quarter as much)
       tokens -> 2-D map for the next stage's embedding
  -> LayerNorm -> the head reads the [CLS] token (or the mean of the tokens)                    (B, num_classes)

There is no position embedding: the convolutions know where a token is, so any input size works (the [CLS] token
never enters a convolution; it is split off before and put back after them). Parameter names follow Microsoft's
official release (``stage{i}.blocks.{j}.attn.conv_proj_q.conv``), so its weights map one to one; Hugging Face
checkpoints are mapped in ``vitkit.convert.cvt``.

Faithful to the released weights: attention logits are scaled by ``dim ** -0.5`` (the full width of the stage, not
the head width, as in the original code), LayerNorm and BatchNorm eps 1e-5. Unlike transformers' port, stochastic
depth sits on each residual branch and ramps linearly over all blocks of all stages.
"""

import contextlib
import math
import threading
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitkit.layers import DropPath, Mlp, RecordsAttention, attention, drop_path_rates
from vitkit.layers.init import init_linear_and_norms_
from vitkit.models.base import VisionModel
from vitkit.models.config import ModelConfig
from vitkit.models.features import FeatureInfo
from vitkit.models.registry import register_family, register_model

PER_STAGE = ("patch_sizes", "patch_strides", "patch_paddings", "embed_dims", "depths", "num_heads")


@dataclass(frozen=True)
class CvTConfig(ModelConfig):
    # per stage: the token embedding's conv, the width, the blocks and heads
    patch_sizes: tuple[int, ...] = (7, 3, 3)
    patch_strides: tuple[int, ...] = (4, 2, 2)
    patch_paddings: tuple[int, ...] = (2, 1, 1)
    embed_dims: tuple[int, ...] = (64, 192, 384)
    depths: tuple[int, ...] = (1, 2, 10)
    num_heads: tuple[int, ...] = (1, 3, 6)
    cls_token: bool = True  # a [CLS] token in the last stage, read by the head; else the head averages the tokens
    # the convolutional projection (the same in every stage, as in every released model)
    kernel_qkv: int = 3
    padding_q: int = 1
    padding_kv: int = 1
    stride_q: int = 1
    stride_kv: int = 2  # keys / values on a grid reduced by this factor: attention costs N * N / stride_kv^2
    norm_eps: float = 1e-5  # LayerNorm eps of the official code (transformers also uses 1e-5)
    crop_pct: float = 0.875

    family = "cvt"

    def check(self) -> None:
        n = len(self.depths)
        if n == 0:
            raise ValueError("depths: name at least one stage")
        for name in PER_STAGE:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: {len(getattr(self, name))} values, but depths has {n} stages")
        for i, (dim, heads) in enumerate(zip(self.embed_dims, self.num_heads, strict=True)):
            if dim % heads:
                raise ValueError(f"num_heads: embed_dims[{i}]={dim} is not divisible by num_heads[{i}]={heads}")
        if self.stride_q != 1 or 2 * self.padding_q != self.kernel_qkv - 1:
            raise ValueError(
                "stride_q / padding_q: queries must keep the token grid (stride_q=1, padding_q=(kernel_qkv-1)/2) "
                f"for the residual connection, got kernel_qkv={self.kernel_qkv}, stride_q={self.stride_q}, "
                f"padding_q={self.padding_q}"
            )

    def approx_params(self) -> float:
        return sum(self.block_params(dim, d) for dim, d in zip(self.embed_dims, self.depths, strict=True))

    @property
    def num_stages(self) -> int:
        return len(self.depths)


# --- gradient checkpointing and BatchNorm ---------------------------------------------------------------------
# A checkpointed block runs its forward twice in training; the second run must not update BatchNorm's running
# statistics again (the batch statistics, hence outputs and gradients, are the same).
_recomputing = threading.local()


@contextlib.contextmanager
def _recompute_context():
    _recomputing.active = True
    try:
        yield
    finally:
        _recomputing.active = False


def _checkpoint_contexts():
    return contextlib.nullcontext(), _recompute_context()


# --- modules ----------------------------------------------------------------------------------------------
class ConvEmbed(nn.Module):
    """Convolutional token embedding: an overlapping strided conv on the image / token map, then LayerNorm."""

    def __init__(self, patch_size: int, stride: int, padding: int, in_chans: int, dim: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:  # (B, C, H, W) -> (B, N, D), H', W'
        x = self.proj(x)  # (B, D, H', W')
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), H, W  # tokens in raster order


class ConvProj(nn.Module):
    """Depthwise conv + BatchNorm on the token map: each query / key / value sees its token's 3x3 neighbourhood."""

    def __init__(self, dim: int, kernel: int, padding: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel, stride=stride, padding=padding, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, h*w, C), h = H / stride
        x = self.conv(x)
        if self.training and getattr(_recomputing, "active", False):  # recomputation: no second statistics update
            # through self.bn itself, so a BatchNorm synchronised across processes normalises the same way again
            saved = [b.clone() for b in self.bn.buffers()]
            x = self.bn(x)
            with torch.no_grad():
                for b, s in zip(self.bn.buffers(), saved, strict=True):
                    b.copy_(s)
        else:
            x = self.bn(x)
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module, RecordsAttention):
    """Multi-head attention with convolutional projections.

    Queries come from every token (grid H x W); keys and values from the token map convolved at stride
    ``stride_kv``, a grid of ``h = (H + 2p - k) // s + 1`` by ``w`` (likewise), e.g. 56x56 -> 28x28. The [CLS]
    token, when present, skips the convolutions and is put in front of q, k and v.
    """

    def __init__(self, dim: int, num_heads: int, cfg: CvTConfig, with_cls_token: bool, stage: int, block: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim**-0.5  # the official code scales by the full width, not the head width
        self.with_cls_token = with_cls_token
        self.stage, self.block = stage, block
        k = cfg.kernel_qkv
        self.conv_proj_q = ConvProj(dim, k, cfg.padding_q, cfg.stride_q)
        self.conv_proj_k = ConvProj(dim, k, cfg.padding_kv, cfg.stride_kv)
        self.conv_proj_v = ConvProj(dim, k, cfg.padding_kv, cfg.stride_kv)
        self.proj_q = nn.Linear(dim, dim, bias=cfg.qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=cfg.qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=cfg.qkv_bias)
        self.attn_drop = cfg.attn_drop_rate
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(cfg.proj_drop_rate)

    def kv_grid(self, H: int, W: int) -> tuple[int, int]:
        """The reduced grid of keys and values for an H x W token map."""
        conv = self.conv_proj_k.conv
        return tuple((n + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1 for n in (H, W))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:  # (B, [1+]H*W, C) -> (B, [1+]H*W, C)
        B, N, C = x.shape
        if self.with_cls_token:  # one copy, so the map below is laid out channels-last for all three convs
            cls, x = x[:, :1], x[:, 1:].contiguous()
        t = x.reshape(B, H, W, C).permute(0, 3, 1, 2)  # tokens -> map (B, C, H, W), channels-last: no copy
        q, k, v = self.conv_proj_q(t), self.conv_proj_k(t), self.conv_proj_v(t)  # (B, H*W, C), (B, h*w, C) x 2
        if self.with_cls_token:
            q, k, v = (torch.cat([cls, z], dim=1) for z in (q, k, v))
        d = C // self.num_heads
        q = self.proj_q(q).view(B, q.shape[1], self.num_heads, d).transpose(1, 2)  # (B, heads, N, d)
        k = self.proj_k(k).view(B, k.shape[1], self.num_heads, d).transpose(1, 2)  # (B, heads, Nk, d)
        v = self.proj_v(v).view(B, v.shape[1], self.num_heads, d).transpose(1, 2)
        dropout_p = self.attn_drop if self.training else 0.0
        x, weights = attention(q, k, v, scale=self.scale, dropout_p=dropout_p, need_weights=self.record_attention)
        if weights is not None:
            self.store_attention(
                weights,
                stage=self.stage,
                block=self.block,
                q_grid=(H, W),
                kv_grid=self.kv_grid(H, W),
                grid=(H, W),
                cls_token=self.with_cls_token,
                num_prefix_tokens=int(self.with_cls_token),
            )
        x = x.transpose(1, 2).reshape(B, N, C)  # heads side by side again
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm transformer block; stochastic depth on each residual branch."""

    def __init__(self, cfg: CvTConfig, stage: int, block: int, with_cls_token: bool, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dims[stage]
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads[stage], cfg, with_cls_token, stage, block)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), drop=cfg.proj_drop_rate)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:  # (B, [1+]N, D) -> (B, [1+]N, D)
        x = x + self.drop_path1(self.attn(self.norm1(x), H, W))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class Stage(nn.Module):
    """Token embedding, the optional [CLS] token, blocks: one resolution of the hierarchy."""

    def __init__(self, cfg: CvTConfig, i: int, in_chans: int, drop_path: list[float]) -> None:
        super().__init__()
        dim = cfg.embed_dims[i]
        with_cls_token = cfg.cls_token and i == cfg.num_stages - 1
        self.patch_embed = ConvEmbed(
            cfg.patch_sizes[i], cfg.patch_strides[i], cfg.patch_paddings[i], in_chans, dim, cfg.norm_eps
        )
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)  # the official name; CvT has no position embedding
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None
        self.blocks = nn.ModuleList(Block(cfg, i, j, with_cls_token, rate) for j, rate in enumerate(drop_path))
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(B, C, H, W) image or map -> tokens (B, [1+]H'*W', D) and the grid (H', W')."""
        x, H, W = self.patch_embed(x)  # (B, N, D)
        x = self.pos_drop(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, H, W, use_reentrant=False, context_fn=_checkpoint_contexts)
            else:
                x = blk(x, H, W)
        return x, H, W


class CvT(VisionModel):
    family = "cvt"
    stem_key = "stage0.patch_embed.proj.weight"

    def __init__(self, config: CvTConfig) -> None:
        super().__init__(config)
        cfg = config
        rates = drop_path_rates(cfg.drop_path_rate, sum(cfg.depths))  # one ramp over all blocks of all stages
        self.stages: list[Stage] = []
        start = 0
        for i in range(cfg.num_stages):
            in_chans = cfg.in_chans if i == 0 else cfg.embed_dims[i - 1]
            stage = Stage(cfg, i, in_chans, rates[start : start + cfg.depths[i]])
            self.add_module(f"stage{i}", stage)  # official names: stage0, stage1, stage2
            self.stages.append(stage)
            start += cfg.depths[i]
        dim = cfg.embed_dims[-1]
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        """Like the official 'trunc_norm' init: Linear ~ N(0, 0.02) truncated, norms 1/0, convs default."""
        init_linear_and_norms_(self)
        for stage in self.stages:
            if stage.cls_token is not None:
                nn.init.trunc_normal_(stage.cls_token, std=0.02)

    @property
    def num_features(self) -> int:
        return self.config.embed_dims[-1]

    @property
    def feature_info(self) -> FeatureInfo:
        """One level per stage: ``embed_dims[i]`` channels, the product of the embedding strides so far."""
        c = self.config
        return FeatureInfo([dict(num_chs=c.embed_dims[i], reduction=math.prod(c.patch_strides[: i + 1]),
                                 module=f"stage{i}") for i in range(c.num_stages)])  # fmt: skip

    def forward_trunk(self, x: torch.Tensor, take=frozenset(), stop: int | None = None):
        """The stages (the first ``stop``): the last one's tokens (B, [1+]N, D), those in ``take`` with their grid."""
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"expected input (B, {self.config.in_chans}, H, W), got {tuple(x.shape)}")
        B, stages, taken = x.shape[0], self.stages[:stop], []
        for i, stage in enumerate(stages):
            x, H, W = stage(x)  # (B, [1+]N, D)
            if i in take:
                taken.append((x, (H, W)))
            if i < len(stages) - 1:  # tokens -> map for the next stage's embedding
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2)  # (B, D, H, W), channels-last: no copy
        return x, taken

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> final-normed tokens (B, [1+]N, D) of the last stage, [CLS] first if it has one."""
        return self.norm(self.forward_trunk(x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.config.cls_token else x.mean(dim=1)  # (B, D)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def get_attention_maps(self, x):
        """Per block: weights (B, heads, Nq, Nk).

        Queries are the tokens of the stage's grid ``q_grid`` (H, W) in raster order; keys / values are the reduced
        grid ``kv_grid`` (h, w) after the stride-``stride_kv`` depthwise conv (56x56 -> 28x28 in CvT-13's first
        stage at 224 px). When ``cls_token`` is true (CvT's last stage) the [CLS] token is in front of both, so
        Nq = 1 + H*W and Nk = 1 + h*w. ``stage`` and ``block`` locate the layer.
        """
        return super().get_attention_maps(x)

    def no_weight_decay(self) -> set[str]:
        return {f"stage{i}.cls_token" for i, s in enumerate(self.stages) if s.cls_token is not None}

    def num_layers(self) -> int:
        return sum(self.config.depths)

    def layer_id(self, param_name: str) -> int:
        """Blocks count 1..num_layers over all stages; a stage's embedding and [CLS] token share the id of the
        block before them (the stem gets 0); the final norm and head num_layers + 1."""
        if param_name.startswith("stage"):
            stage, _, rest = param_name.partition(".")
            before = sum(self.config.depths[: int(stage[len("stage") :])])
            return before + int(rest.split(".")[1]) + 1 if rest.startswith("blocks.") else before
        return self.num_layers() + 1


register_family("cvt", CvTConfig, CvT)

# --- registered configurations ---------------------------------------------------------------------------
# ImageNet models of the paper. Weights: Hugging Face ports of the official release (ImageNet-1k classes; "-22k" =
# pre-trained on ImageNet-22k, fine-tuned on 1k). At 384 px the official evaluation resizes without a centre crop.
_384 = dict(img_size=384, crop_pct=1.0)
register_model("cvt_13_224", CvTConfig(), hub_id="hf-hub:microsoft/cvt-13")
register_model("cvt_13_384", CvTConfig(**_384), hub_id="hf-hub:microsoft/cvt-13-384")
register_model("cvt_21_224", CvTConfig(depths=(1, 4, 16)), hub_id="hf-hub:microsoft/cvt-21")
register_model("cvt_21_384", CvTConfig(depths=(1, 4, 16), **_384), hub_id="hf-hub:microsoft/cvt-21-384")
register_model(
    "cvt_w24_384",
    CvTConfig(embed_dims=(192, 768, 1024), depths=(2, 2, 20), num_heads=(3, 12, 16), **_384),
    hub_id="hf-hub:microsoft/cvt-w24-384-22k",
)

# Small images: a gentler stem (3x3 conv, stride 2) so the token map is not tiny.
_SMALL = dict(num_classes=10, crop_pct=1.0, interpolation="bilinear", patch_sizes=(3, 3, 3), patch_paddings=(1, 1, 1))
_SMALL |= dict(patch_strides=(2, 2, 2))
_GRAY = dict(img_size=28, in_chans=1, mean=(0.2860,), std=(0.3530,))  # Fashion-MNIST statistics
register_model(  # Fashion-MNIST / MNIST, 28 px grayscale: 28 -> 14 -> 7 -> 4 tokens a side
    "cvt_nano_28",
    CvTConfig(embed_dims=(32, 64, 128), depths=(1, 1, 2), num_heads=(1, 2, 4), **_GRAY, **_SMALL),
)
register_model(  # CIFAR, 32 px RGB: 32 -> 16 -> 8 -> 4 tokens a side
    "cvt_tiny_32", CvTConfig(img_size=32, embed_dims=(64, 128, 256), depths=(1, 2, 4), num_heads=(1, 2, 4), **_SMALL)
)
register_model(  # 64 px (Tiny-ImageNet-like): 64 -> 32 -> 16 -> 8 tokens a side
    "cvt_small_64", CvTConfig(img_size=64, embed_dims=(64, 192, 384), depths=(1, 2, 6), num_heads=(1, 3, 6), **_SMALL)
)
