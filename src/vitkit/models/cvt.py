"""Convolutional vision Transformer, CvT (Wu et al., 2021), read top to bottom.

image (B, C, H, W)
  -> for each of 3 stages:
       convolutional token embedding: overlapping strided conv, then LayerNorm      (B, N_i, D_i)
       (last stage only) prepend a learned [CLS] token                              (B, 1+N_i, D_i)
       depth_i x pre-norm block: x + Attn(LN(x)); x + MLP(LN(x)), where Attn builds
         q from a depthwise 3x3 conv + BatchNorm of the token map (stride 1) and
         k, v from the same at stride 2 (a quarter of the tokens), then linear maps
       tokens -> 2-D map for the next stage's embedding
  -> LayerNorm -> the head reads the [CLS] token (or the mean of the tokens)      (B, num_classes)

There is no position embedding: the convolutions know where a token is, so any input size works
(the [CLS] token never enters a convolution; it is split off before and prepended after them).
Parameter names follow Microsoft's official release (``stage{i}.blocks.{j}.attn.conv_proj_q.conv``),
so its weights map one to one; Hugging Face checkpoints are mapped in ``vitkit.convert.cvt``.

Faithful to the released weights: attention logits are scaled by ``embed_dim ** -0.5`` (the full
width of the stage, not the head width, as in the original code), LayerNorm eps is 1e-5, BatchNorm
eps 1e-5. Unlike transformers' port, stochastic depth sits on each residual branch and its rate
ramps linearly over all blocks of all stages (0 at the first block, ``drop_path_rate`` at the last;
the official code ramps within each stage with a per-stage maximum of (0, 0, 0.1), so stages 1-2
never drop: with one global rate the early stages drop very little anyway).

Speed: attention runs through SDPA (CPU fp32 inference: vitkit.kernels.attention); in eval mode each
projection's BatchNorm is folded into its depthwise conv (cached, refreshed when any of the tensors involved
changes); token maps are kept channels-last so (B, N, C) tokens become (B, C, H, W) maps and back without
copies. In eval mode without autograd on CPU, GELU and the residual adds are fused into oneDNN matmuls
(``vitkit.layers.fused``).
"""

import contextlib
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitkit.layers import DropPath, Mlp, RecordsAttention, attention, can_fuse, linear
from vitkit.layers.init import init_linear_and_norms_
from vitkit.layers.micro_batch import num_micro_batches
from vitkit.models.base import IMAGENET_MEAN, IMAGENET_STD, VisionModel
from vitkit.registry import register_family, register_model

_PER_STAGE = ("patch_size", "patch_stride", "patch_padding", "embed_dim", "depth", "num_heads", "mlp_ratio")


@dataclass(frozen=True)
class CvTConfig:
    img_size: int | tuple[int, int] = 224  # what the weights were trained at (data_config); any size runs
    in_chans: int = 3
    num_classes: int = 1000
    # per stage
    patch_size: tuple[int, ...] = (7, 3, 3)  # kernel of each stage's token-embedding conv
    patch_stride: tuple[int, ...] = (4, 2, 2)
    patch_padding: tuple[int, ...] = (2, 1, 1)
    embed_dim: tuple[int, ...] = (64, 192, 384)
    depth: tuple[int, ...] = (1, 2, 10)
    num_heads: tuple[int, ...] = (1, 3, 6)
    mlp_ratio: tuple[float, ...] = (4.0, 4.0, 4.0)
    qkv_bias: tuple[bool, ...] = (True, True, True)
    cls_token: tuple[bool, ...] = (False, False, True)  # a [CLS] token in the last stage -> the head reads it
    # convolutional projection (the same in every stage, as in every released model)
    kernel_qkv: int = 3
    padding_q: int = 1
    padding_kv: int = 1
    stride_q: int = 1
    stride_kv: int = 2  # keys/values on a grid reduced by this factor: attention costs N * N / stride_kv^2
    drop_rate: float = 0.0  # after the token embedding, the attention output projection and in the MLP
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # ramps linearly over all blocks of all stages
    norm_eps: float = 1e-5  # LayerNorm eps of the official code (transformers also uses 1e-5)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        for name in (*_PER_STAGE, "qkv_bias", "cls_token", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):  # JSON and keyword overrides hand lists; keep the config hashable
                object.__setattr__(self, name, tuple(value))
            elif not isinstance(value, tuple):
                raise ValueError(f"{name} must be a tuple with one value per stage, got {value!r}")
        n = len(self.depth)
        if n == 0:
            raise ValueError("depth must name at least one stage")
        for name in (*_PER_STAGE, "qkv_bias", "cls_token"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} values but depth has {n} stages")
        for i, (dim, heads) in enumerate(zip(self.embed_dim, self.num_heads, strict=True)):
            if heads < 1 or dim % heads:
                raise ValueError(f"embed_dim[{i}]={dim} is not divisible by num_heads[{i}]={heads}")
        if any(d < 1 for d in self.depth):
            raise ValueError(f"depth must be positive in every stage, got {self.depth}")
        if self.stride_q != 1 or 2 * self.padding_q != self.kernel_qkv - 1:
            raise ValueError(
                "queries must keep the token grid (stride_q=1, padding_q=(kernel_qkv-1)/2) for the residual "
                f"connection, got kernel_qkv={self.kernel_qkv}, stride_q={self.stride_q}, padding_q={self.padding_q}"
            )
        if self.stride_kv < 1 or self.kernel_qkv < 1:
            raise ValueError(f"stride_kv and kernel_qkv must be positive, got {self.stride_kv}, {self.kernel_qkv}")
        for name in ("mean", "std"):  # in_chans=1 on an RGB config: one channel with the average statistics
            value = getattr(self, name)
            if len(value) != self.in_chans:
                object.__setattr__(self, name, (round(sum(value) / len(value), 4),) * self.in_chans)
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    @property
    def num_stages(self) -> int:
        return len(self.depth)


# --- gradient checkpointing and BatchNorm -----------------------------------------------------------
# A checkpointed block runs its forward twice in training; the second run must not update BatchNorm
# running statistics again (the batch statistics, hence outputs and gradients, are the same).
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


class ConvEmbed(nn.Module):
    """Overlapping strided conv on the image / token map, then LayerNorm over channels."""

    def __init__(self, patch_size: int, stride: int, padding: int, in_chans: int, dim: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=stride, padding=padding)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (B, D, H, W); channels-last when the input is
        B, D, H, W = x.shape
        x = x.permute(0, 2, 3, 1).reshape(B, H * W, D)  # (B, N, D), raster order; a view if channels-last
        return self.norm(x), H, W


class ConvProj(nn.Module):
    """Depthwise conv + BatchNorm: each query/key/value sees its token's 3x3 neighbourhood.

    In eval mode BatchNorm is an affine map per channel, folded into the conv's weight and bias:
    ``w' = w * g / sqrt(var + eps)``, ``b' = beta - mean * g / sqrt(var + eps)``. The folded pair is
    cached and recomputed whenever a tensor it depends on was changed (optimizer step, load_state_dict,
    ``.to()``), detected through the tensors' version counters and storage.
    """

    def __init__(self, dim: int, kernel: int, padding: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel, stride=stride, padding=padding, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.fold_bn = True  # False: eval runs conv -> BatchNorm as two ops (the reference in tests)
        self._folded: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of one conv equal to conv -> BatchNorm in eval mode; differentiable."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C,)
        return self.conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn
        needs_grad = torch.is_grad_enabled() and (self.conv.weight.requires_grad or bn.weight.requires_grad)
        if needs_grad or torch.compiler.is_compiling():
            return self.fold()  # gradients reach the conv and BatchNorm parameters; traceable
        tensors = (self.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        if any(t.is_inference() for t in tensors):  # built under inference_mode: no version counters
            return self.fold()
        key = (*((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors), bn.eps)
        if self._folded is None or self._folded[0] != key:
            with torch.no_grad(), torch.inference_mode(False):
                self._folded = (key, *self.fold())
        return self._folded[1], self._folded[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, h, w)
        conv, bn = self.conv, self.bn
        if not self.training and self.fold_bn:
            weight, bias = self.folded()
            return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        x = conv(x)
        if self.training and getattr(_recomputing, "active", False):  # recomputation: no stats update
            stats = bn.running_mean.clone(), bn.running_var.clone()  # updated and thrown away
            return F.batch_norm(x, *stats, bn.weight, bn.bias, True, 0.0, bn.eps)
        return bn(x)

    def _apply(self, fn, recurse=True):
        self._folded = None  # .to() / .half(): drop the cache now instead of holding the old tensors
        return super()._apply(fn, recurse)


class Attention(nn.Module, RecordsAttention):
    """Multi-head attention with convolutional projections.

    Queries come from every token (grid H x W); keys and values from the token map convolved at
    stride ``stride_kv``, a grid of ``h = (H + 2p - k) // s + 1`` by ``w`` (likewise), e.g. 56x56 -> 28x28.
    The [CLS] token, when present, skips the convolutions and is prepended to q, k and v.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool,
        cfg: CvTConfig,
        with_cls_token: bool,
        stage: int,
        block: int,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim**-0.5  # the official code scales by the full width, not the head width
        self.with_cls_token = with_cls_token
        self.stage, self.block = stage, block
        k = cfg.kernel_qkv
        self.conv_proj_q = ConvProj(dim, k, cfg.padding_q, cfg.stride_q)
        self.conv_proj_k = ConvProj(dim, k, cfg.padding_kv, cfg.stride_kv)
        self.conv_proj_v = ConvProj(dim, k, cfg.padding_kv, cfg.stride_kv)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = cfg.attn_drop_rate
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(cfg.drop_rate)

    @staticmethod
    def _tokens(t: torch.Tensor) -> torch.Tensor:
        B, C, h, w = t.shape
        return t.permute(0, 2, 3, 1).reshape(B, h * w, C)  # (B, h*w, C); a view when channels-last

    def forward(self, x: torch.Tensor, H: int, W: int, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, [1+]H*W, C) after norm1. ``residual`` (fused path only) is added inside the output projection."""
        B, N, C = x.shape
        if self.with_cls_token:
            # one copy: a sliced map is not channels-last, and each conv would copy (slowly) on its own
            cls, x = x[:, :1], x[:, 1:].contiguous()  # (B, 1, C), (B, H*W, C)
        t = x.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last: no copy
        q, k = self._tokens(self.conv_proj_q(t)), self._tokens(self.conv_proj_k(t))
        v = self.conv_proj_v(t)
        kv_grid = (v.shape[-2], v.shape[-1])
        v = self._tokens(v)
        if self.with_cls_token:
            q, k, v = (torch.cat([cls, z], dim=1) for z in (q, k, v))
        d = C // self.num_heads
        q = linear(q, self.proj_q).view(B, N, self.num_heads, d).transpose(1, 2)  # (B, heads, N, d)
        k = linear(k, self.proj_k).view(B, k.shape[1], self.num_heads, d).transpose(1, 2)  # (B, heads, Nk, d)
        v = linear(v, self.proj_v).view(B, v.shape[1], self.num_heads, d).transpose(1, 2)
        dropout_p = self.attn_drop if self.training else 0.0
        x, weights = attention(q, k, v, scale=self.scale, dropout_p=dropout_p, need_weights=self.record_attention)
        if weights is not None:
            self.store_attention(
                weights,
                stage=self.stage,
                block=self.block,
                q_grid=(H, W),
                kv_grid=kv_grid,
                grid=(H, W),
                cls_token=self.with_cls_token,
                num_prefix_tokens=int(self.with_cls_token),
            )
        x = x.transpose(1, 2).reshape(B, N, C)
        if residual is not None:
            return linear(x, self.proj, residual=residual)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm transformer block; stochastic depth on each residual branch."""

    def __init__(
        self, dim: int, stage: int, block: int, cfg: CvTConfig, with_cls_token: bool, drop_path: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads[stage], cfg.qkv_bias[stage], cfg, with_cls_token, stage, block)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio[stage]), drop=cfg.drop_rate)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        if can_fuse(x, self):  # eval, no autograd: drop paths are identities, residual adds go into the matmuls
            x = self.attn(self.norm1(x), H, W, residual=x)
            return self.mlp(self.norm2(x), residual=x)
        x = x + self.drop_path1(self.attn(self.norm1(x), H, W))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class Stage(nn.Module):
    """Token embedding, optional [CLS] token, blocks: one resolution of the hierarchy."""

    def __init__(self, cfg: CvTConfig, i: int, in_chans: int, drop_path: list[float]) -> None:
        super().__init__()
        dim = cfg.embed_dim[i]
        self.patch_embed = ConvEmbed(
            cfg.patch_size[i], cfg.patch_stride[i], cfg.patch_padding[i], in_chans, dim, cfg.norm_eps
        )
        self.pos_drop = nn.Dropout(cfg.drop_rate)  # the official name; CvT has no position embedding
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cfg.cls_token[i] else None
        self.blocks = nn.ModuleList(Block(dim, i, j, cfg, cfg.cls_token[i], dp) for j, dp in enumerate(drop_path))
        self.grad_checkpointing = False
        self.widest_channels = int(dim * max(1.0, cfg.mlp_ratio[i]))  # the MLP hidden (q, k, v are dim wide)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """(B, C, H, W) image or map -> tokens (B, [1+]H'*W', D) and the grid (H', W')."""
        conv = self.patch_embed.proj
        H, W = (
            (size + 2 * p - k) // s + 1
            for size, p, k, s in zip(x.shape[-2:], conv.padding, conv.kernel_size, conv.stride, strict=True)
        )
        widest = x.shape[0] * (H * W + 1) * self.widest_channels * x.element_size()
        n = num_micro_batches(self, x, widest)  # CPU inference (BatchNorm uses running statistics)
        if n > 1:  # same result, small temporaries
            return torch.cat([self._forward(part)[0] for part in x.tensor_split(n)]), H, W
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        B = x.shape[0]
        x, H, W = self.patch_embed(x)  # (B, N, D)
        x = self.pos_drop(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1+N, D)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, H, W, use_reentrant=False, context_fn=_checkpoint_contexts)
            else:
                x = blk(x, H, W)
        return x, H, W


class CvT(VisionModel):
    family = "cvt"

    def __init__(self, config: CvTConfig) -> None:
        super().__init__(config)
        cfg = config
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depth), device="cpu").tolist()  # one ramp, all blocks
        self.stages: list[Stage] = []
        start = 0
        for i in range(cfg.num_stages):
            in_chans = cfg.in_chans if i == 0 else cfg.embed_dim[i - 1]
            stage = Stage(cfg, i, in_chans, dpr[start : start + cfg.depth[i]])
            self.add_module(f"stage{i}", stage)  # official names: stage0, stage1, stage2
            self.stages.append(stage)
            start += cfg.depth[i]
        dim = cfg.embed_dim[-1]
        self.norm = nn.LayerNorm(dim, eps=cfg.norm_eps)
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
        return self.config.embed_dim[-1]

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled
        for stage in self.stages:
            stage.grad_checkpointing = enabled

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> final-normed tokens (B, [1+]N, D) of the last stage, [CLS] first if it has one."""
        if x.ndim != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"expected input (B, {self.config.in_chans}, H, W), got {tuple(x.shape)}")
        B = x.shape[0]
        for i, stage in enumerate(self.stages):
            x, H, W = stage(x)  # (B, [1+]N, D)
            if i < len(self.stages) - 1:  # tokens -> map for the next stage's embedding
                if stage.cls_token is not None:
                    x = x[:, 1:]  # only the last stage's [CLS] token is read
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2)  # (B, D, H, W), channels-last: no copy
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0] if self.config.cls_token[-1] else x.mean(dim=1)  # (B, D)
        return x if pre_logits else self.head(x)

    def get_attention_maps(self, x):
        """Per block: weights (B, heads, Nq, Nk).

        Queries are the tokens of the stage's grid ``q_grid`` (H, W) in raster order; keys/values are
        the reduced grid ``kv_grid`` (h, w) after the stride-``stride_kv`` depthwise conv (56x56 -> 28x28
        in CvT-13's first stage at 224 px). When ``cls_token`` is true (CvT's last stage) the [CLS] token
        is prefixed to both, so Nq = 1 + H*W and Nk = 1 + h*w. ``stage`` and ``block`` locate the layer.
        """
        return super().get_attention_maps(x)

    def no_weight_decay(self) -> set[str]:
        return {f"stage{i}.cls_token" for i, s in enumerate(self.stages) if s.cls_token is not None}

    def num_layers(self) -> int:
        return sum(self.config.depth)

    def layer_id(self, param_name: str) -> int:
        """Blocks count 1..num_layers over all stages; a stage's embedding and [CLS] token share the
        id of the block before them (the stem gets 0); the final norm and head num_layers + 1."""
        if param_name.startswith("stage"):
            stage, _, rest = param_name.partition(".")
            i = int(stage[len("stage") :])
            before = sum(self.config.depth[:i])
            if rest.startswith("blocks."):
                return before + int(rest.split(".")[1]) + 1
            return before
        return self.num_layers() + 1

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """No position embedding to resize; only the stem follows ``in_chans`` (3 -> 1 sums the filters)."""
        from vitkit.convert.common import adapt_input_conv

        sd = dict(state_dict)
        key = "stage0.patch_embed.proj.weight"
        if key in sd:
            sd[key] = adapt_input_conv(sd[key], self.config.in_chans, key)
        return sd


register_family("cvt", CvTConfig, CvT)

# --- registered configurations ---------------------------------------------------------------------
# ImageNet models of the paper. Weights: Hugging Face ports of the official release (ImageNet-1k
# classes; "-22k" = pre-trained on ImageNet-22k, fine-tuned on 1k). At 384 px the official
# evaluation resizes without a center crop.
_384 = dict(img_size=384, crop_pct=1.0)
_CVT_13 = CvTConfig()
_CVT_21 = CvTConfig(depth=(1, 4, 16))
_CVT_W24 = CvTConfig(embed_dim=(192, 768, 1024), depth=(2, 2, 20), num_heads=(3, 12, 16), **_384)
register_model("cvt_13_224", _CVT_13, hub_id="hf-hub:microsoft/cvt-13")
register_model("cvt_13_384", CvTConfig(**_384), hub_id="hf-hub:microsoft/cvt-13-384")
register_model("cvt_21_224", _CVT_21, hub_id="hf-hub:microsoft/cvt-21")
register_model("cvt_21_384", CvTConfig(depth=(1, 4, 16), **_384), hub_id="hf-hub:microsoft/cvt-21-384")
register_model("cvt_w24_384", _CVT_W24, hub_id="hf-hub:microsoft/cvt-w24-384-22k")

# Small images: a gentler stem (3x3 conv, stride 2 or 1) so the token map is not tiny.
_SMALL = dict(num_classes=10, crop_pct=1.0, interpolation="bilinear", patch_size=(3, 3, 3), patch_padding=(1, 1, 1))
# Fashion-MNIST / MNIST, 28 px grayscale: 28 -> 14 -> 7 -> 4 tokens a side.
register_model(
    "cvt_nano_28",
    CvTConfig(
        img_size=28,
        in_chans=1,
        mean=(0.2860,),
        std=(0.3530,),
        patch_stride=(2, 2, 2),
        embed_dim=(32, 64, 128),
        depth=(1, 1, 2),
        num_heads=(1, 2, 4),
        **_SMALL,
    ),
)
# CIFAR, 32 px RGB: 32 -> 16 -> 8 -> 4 tokens a side.
register_model(
    "cvt_tiny_32",
    CvTConfig(
        img_size=32, patch_stride=(2, 2, 2), embed_dim=(64, 128, 256), depth=(1, 2, 4), num_heads=(1, 2, 4), **_SMALL
    ),
)
# 64 px (Tiny-ImageNet-like): 64 -> 32 -> 16 -> 8 tokens a side.
register_model(
    "cvt_small_64",
    CvTConfig(
        img_size=64, patch_stride=(2, 2, 2), embed_dim=(64, 192, 384), depth=(1, 2, 6), num_heads=(1, 3, 6), **_SMALL
    ),
)
