"""Vision Transformer (Dosovitskiy et al., 2021), read top to bottom in the order of the study note.

image (B, C, H, W)
  -> patch embedding: a conv with kernel = stride = patch, patches in raster order (left to right, top to bottom)
                                                                                   (B, N, D), N = H/p * W/p
  -> a learned [CLS] token in front, a learned position embedding added          (B, 1+N, D)
  -> depth x pre-norm encoder block: x + MHSA(LN(x)); x + MLP(LN(x))
  -> LayerNorm -> the head reads the [CLS] token (or the mean of the patch tokens) (B, num_classes)

Self-attention relates every patch to every other one, so its cost grows with N^2. Parameter names follow timm, so
timm checkpoints load as they are; Hugging Face checkpoints are mapped in ``vitkit.convert.vit``. Any input whose
sides are multiples of the patch works: the position embedding is resampled bicubically to the new grid.
"""

import math
from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitkit.layers import DropPath, Mlp, RecordsAttention, attention, drop_path_rates
from vitkit.layers.init import init_linear_and_norms_
from vitkit.models.base import VisionModel
from vitkit.models.config import HALF_MEAN, HALF_STD, ModelConfig, to_2tuple
from vitkit.models.features import FeatureInfo
from vitkit.models.registry import register_family, register_model


@dataclass(frozen=True)
class ViTConfig(ModelConfig):
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    class_token: bool = True
    global_pool: str = "token"  # "token": read [CLS]; "avg": mean of the patch tokens (then fc_norm)
    pos_embed_antialias: bool = True  # timm resamples with antialias, Hugging Face without
    norm_eps: float = 1e-6  # timm uses 1e-6, Hugging Face 1e-12
    mean: tuple[float, ...] = HALF_MEAN
    std: tuple[float, ...] = HALF_STD

    family = "vit"

    def check(self) -> None:
        h, w = to_2tuple(self.img_size)
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"img_size: {h}x{w} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool: must be 'token' or 'avg', got {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            raise ValueError("global_pool: 'token' needs class_token=True")

    def approx_params(self) -> float:
        tokens = math.prod(self.grid_size) + 1
        return self.block_params(self.embed_dim, self.depth) + tokens * self.embed_dim

    @property
    def grid_size(self) -> tuple[int, int]:
        h, w = to_2tuple(self.img_size)
        return h // self.patch_size, w // self.patch_size


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> vectors, with one strided convolution."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, N, D)
        _, c, h, w = x.shape
        p = self.patch_size
        if c != self.proj.in_channels:
            raise ValueError(f"input has {c} channels, the model expects {self.proj.in_channels}")
        if h % p or w % p:
            raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {p}")
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, D, H/p, W/p) -> (B, N, D), raster order


class Attention(nn.Module, RecordsAttention):
    """Multi-head self-attention: one linear makes q, k and v for every token, SDPA mixes them."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B, N, C)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        dropout_p = self.attn_drop if self.training else 0.0
        x, weights = attention(q, k, v, scale=self.scale, dropout_p=dropout_p, need_weights=self.record_attention)
        if weights is not None:
            self.store_attention(weights)
        x = x.transpose(1, 2).reshape(B, N, C)  # heads side by side again
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm encoder layer."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.proj_drop_rate)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), drop=cfg.proj_drop_rate)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1+N, D) -> (B, 1+N, D)
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix_tokens: int = 1,
    antialias: bool = True,
) -> torch.Tensor:
    """Bicubic resize of (1, prefix + Ho*Wo, D) to (1, prefix + Hn*Wn, D); prefix tokens untouched."""
    n_old = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = math.isqrt(n_old)
        if side * side != n_old:
            raise ValueError(f"cannot infer the grid of a position embedding with {n_old} patch positions")
        old_grid = (side, side)
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    grid = grid.reshape(1, *old_grid, dim).permute(0, 3, 1, 2)  # (1, D, Ho, Wo)
    grid = F.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False, antialias=antialias)
    grid = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([prefix, grid], dim=1)


class VisionTransformer(VisionModel):
    family = "vit"
    stem_key = "patch_embed.proj.weight"
    norm_every_level = True

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        cfg = config
        dim = cfg.embed_dim
        self.num_prefix_tokens = 1 if cfg.class_token else 0
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cfg.class_token else None
        gh, gw = cfg.grid_size
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + gh * gw, dim))
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in drop_path_rates(cfg.drop_path_rate, cfg.depth))
        use_fc_norm = cfg.global_pool == "avg"
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.fc_norm = nn.LayerNorm(dim, eps=cfg.norm_eps) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        init_linear_and_norms_(self)
        w = self.patch_embed.proj.weight  # like a Linear on flattened patches
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=0.02)

    @property
    def num_features(self) -> int:
        return self.config.embed_dim

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        """The patch grid (rows, columns) of an input image."""
        return x.shape[-2] // self.config.patch_size, x.shape[-1] // self.config.patch_size

    @property
    def feature_info(self) -> FeatureInfo:
        """One level per block: the patch grid, ``embed_dim`` channels."""
        cfg = self.config
        return FeatureInfo(
            [dict(num_chs=cfg.embed_dim, reduction=cfg.patch_size, module=f"blocks.{i}") for i in range(cfg.depth)]
        )

    @property
    def default_out_indices(self) -> int:
        return min(3, self.config.depth)  # timm's default for ViT: the last three blocks

    def forward_trunk(self, x: torch.Tensor, take=frozenset(), stop: int | None = None):
        """Embedding and blocks (the first ``stop``): the last block's tokens (B, [1+]N, D) and those of the blocks
        in ``take`` with the patch grid."""
        cfg = self.config
        grid = self.grid(x)
        x = self.patch_embed(x)  # (B, N, D)
        if self.cls_token is not None:  # [CLS] first: the token the head reads
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        pos = resample_pos_embed(self.pos_embed, grid, cfg.grid_size, self.num_prefix_tokens, cfg.pos_embed_antialias)
        x = self.pos_drop(x + pos)
        taken = []
        for i, blk in enumerate(islice(self.blocks, stop)):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)  # recomputed in backward instead of stored
            else:
                x = blk(x)
            if i in take:
                taken.append((x, grid))
        return x, taken

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> final-normed tokens (B, [1+]N, D)."""
        return self.norm(self.forward_trunk(x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.config.global_pool == "avg":
            x = x[:, self.num_prefix_tokens :].mean(dim=1)
        else:
            x = x[:, 0]  # the [CLS] token
        x = self.head_drop(self.fc_norm(x))
        return x if pre_logits else self.head(x)

    def get_attention_maps(self, x):
        """Per block: weights (B, heads, 1+N, 1+N); token 0 is [CLS], then patches in raster order."""
        return super().get_attention_maps(x)

    def forward_with_attention(self, x):
        """The maps of :meth:`get_attention_maps` (``meta``: grid, num_prefix_tokens) and the logits."""
        maps, logits = super().forward_with_attention(x)
        for m in maps:
            m.meta.update(grid=self.grid(x), num_prefix_tokens=self.num_prefix_tokens)
        return maps, logits

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def num_layers(self) -> int:
        return self.config.depth

    def layer_id(self, param_name: str) -> int:
        if param_name.startswith(("cls_token", "pos_embed", "patch_embed")):
            return 0
        if param_name.startswith("blocks."):
            return int(param_name.split(".")[1]) + 1
        return self.config.depth + 1

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Resample the position embedding to this model's grid and fit the stem to ``in_chans``."""
        sd = super().adapt_state_dict(state_dict)
        if "pos_embed" in sd and sd["pos_embed"].shape != self.pos_embed.shape:
            sd["pos_embed"] = resample_pos_embed(
                sd["pos_embed"],
                self.config.grid_size,
                num_prefix_tokens=self.num_prefix_tokens,
                antialias=self.config.pos_embed_antialias,
            )
        return sd


register_family("vit", ViTConfig, VisionTransformer)

# --- registered configurations ---------------------------------------------------------------------
_SIZES = {  # name: (embed_dim, depth, num_heads)
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
_HF_IDS = {
    "vit_base_patch16_224": "hf-hub:google/vit-base-patch16-224",
    "vit_base_patch16_384": "hf-hub:google/vit-base-patch16-384",
    "vit_base_patch32_384": "hf-hub:google/vit-base-patch32-384",
    "vit_large_patch16_224": "hf-hub:google/vit-large-patch16-224",
    "vit_large_patch16_384": "hf-hub:google/vit-large-patch16-384",
    "vit_large_patch32_384": "hf-hub:google/vit-large-patch32-384",
    "vit_tiny_patch16_224": "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
    "vit_small_patch16_224": "hf-hub:timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit_small_patch32_224": "hf-hub:timm/vit_small_patch32_224.augreg_in21k_ft_in1k",
    "vit_base_patch32_224": "hf-hub:timm/vit_base_patch32_224.augreg_in21k_ft_in1k",
}
for _size, (_dim, _depth, _heads) in _SIZES.items():
    for _patch in (16, 32):
        for _res in (224, 384):
            if _size == "tiny" and _patch == 32:
                continue  # not a standard variant
            _name = f"vit_{_size}_patch{_patch}_{_res}"
            _cfg = ViTConfig(img_size=_res, patch_size=_patch, embed_dim=_dim, depth=_depth, num_heads=_heads)
            register_model(_name, _cfg, hub_id=_HF_IDS.get(_name))

# Small images (Fashion-MNIST / MNIST 28 px grayscale, CIFAR 32 px RGB): patch 4 -> 7x7 or 8x8 tokens.
_SMALL = dict(patch_size=4, num_classes=10, crop_pct=1.0, interpolation="bilinear")
_GRAY = dict(img_size=28, in_chans=1, mean=(0.2860,), std=(0.3530,))  # Fashion-MNIST statistics
register_model("vit_nano_patch4_28", ViTConfig(embed_dim=128, depth=6, num_heads=4, **_GRAY, **_SMALL))
register_model("vit_tiny_patch4_28", ViTConfig(embed_dim=192, depth=12, num_heads=3, **_GRAY, **_SMALL))
register_model("vit_tiny_patch4_32", ViTConfig(img_size=32, embed_dim=192, depth=12, num_heads=3, **_SMALL))
register_model("vit_small_patch4_32", ViTConfig(img_size=32, embed_dim=384, depth=12, num_heads=6, **_SMALL))
