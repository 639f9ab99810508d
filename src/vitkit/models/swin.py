"""Swin Transformer (Liu et al., 2021), read top to bottom in the order of the study note.

image (B, C, H, W)
  -> patch partition + linear embedding: a conv with kernel = stride = patch, then LayerNorm   (B, H/4, W/4, C)
  -> stage 1: blocks that alternate W-MSA (attention inside non-overlapping ws x ws windows) and SW-MSA (the same
     after a cyclic shift of the map by ws // 2, with a mask so tokens only attend to their true neighbours)
  -> stages 2..S: patch merging (2x2 neighbours concatenated -> LayerNorm -> linear 4C -> 2C), then blocks
  -> LayerNorm -> the head averages all tokens                                                (B, num_classes)

Every window adds a learned relative position bias: one table of (2ws-1)^2 x heads values, read through
:func:`relative_position_index`, the note's five steps. Windows have a fixed size, so the attention cost grows
linearly with the number of pixels.

Any input size works, padded exactly like transformers' ``SwinForImageClassification``: the image is padded to a
multiple of the patch, each block pads its feature map (right / bottom, after norm1) to a multiple of the window,
patch merging pads odd sides, and a stage whose smaller side is not larger than the window uses one window of that
side and no shift. Parameter names follow timm (>= 0.9), so timm checkpoints load as they are.
"""

import math
from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitkit.errors import CheckpointError
from vitkit.layers import DropPath, Mlp, RecordsAttention, attention, drop_path_rates
from vitkit.layers.init import init_linear_and_norms_
from vitkit.models.base import VisionModel
from vitkit.models.config import ModelConfig
from vitkit.models.features import FeatureInfo
from vitkit.models.registry import register_family, register_model


@dataclass(frozen=True)
class SwinConfig(ModelConfig):
    patch_size: int = 4
    embed_dim: int = 96  # channels of stage 1; each later stage doubles them
    depths: tuple[int, ...] = (2, 2, 6, 2)  # blocks per stage; len(depths) = number of stages
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    drop_path_rate: float = 0.1  # timm's and transformers' default for Swin
    norm_eps: float = 1e-5

    family = "swin"

    def check(self) -> None:
        if len(self.depths) == 0 or len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths / num_heads: {self.depths} and {self.num_heads} need the same length >= 1")
        for i, heads in enumerate(self.num_heads):
            if self.stage_dim(i) % heads:
                raise ValueError(f"num_heads: stage {i} has {self.stage_dim(i)} channels, not divisible by {heads}")

    def approx_params(self) -> float:
        return sum(self.block_params(self.stage_dim(i), d) for i, d in enumerate(self.depths))

    def stage_dim(self, i: int) -> int:
        return self.embed_dim * 2**i

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_features(self) -> int:
        return self.stage_dim(self.num_stages - 1)


# --- windows, the cyclic shift's mask and the relative position index ----------------------------------------
def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, ws*ws, C): non-overlapping windows in raster order, tokens row-major inside each."""
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, -1, window * window, C)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """(B, nW, ws*ws, C) -> (B, H, W, C): the inverse of :func:`window_partition`."""
    B, _, _, C = windows.shape
    x = windows.view(B, height // window, width // window, window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, height, width, C)


def shift_mask(height: int, width: int, window: int, shift: int, device=None, dtype=None) -> torch.Tensor:
    """Additive mask (nW, N, N) for SW-MSA on a (height, width) map: 0 within a region, -100 across regions.

    After the cyclic shift a window can hold tokens from up to 4 regions that are not neighbours in the image;
    each axis has 3 regions, [0, L-ws), [L-ws, L-shift) and [L-shift, L), as in the paper and transformers.
    """
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    row_region = (rows >= height - window).long() + (rows >= height - shift).long()
    col_region = (cols >= width - window).long() + (cols >= width - shift).long()
    region = row_region[:, None] * 3 + col_region[None, :]  # (H, W) region id of every token
    region = window_partition(region.view(1, height, width, 1), window).view(-1, window * window)  # (nW, N)
    same = region[:, :, None] == region[:, None, :]  # (nW, N, N)
    return torch.zeros(same.shape, device=device, dtype=dtype).masked_fill_(~same, -100.0)


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the (2ws-1)^2 bias table for every (query, key) pair of a ws x ws window.

    The study note's five steps: (1) meshgrid of the window's coordinates, (2) pairwise differences,
    (3) ``+ (ws - 1)`` so both offsets start at 0, (4) the row offset times ``(2ws - 1)``, (5) the sum.
    Two tokens get the same index exactly when they are the same (dy, dx) apart. Returns (ws*ws, ws*ws).
    """
    ws = int(window_size)
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))  # (2, ws, ws)
    coords = coords.flatten(1)  # (2, N): row and column of each token
    relative = coords[:, :, None] - coords[:, None, :]  # (2, N, N): (dy, dx) of every pair
    dy, dx = relative[0] + (ws - 1), relative[1] + (ws - 1)  # in [0, 2ws-2]
    return dy * (2 * ws - 1) + dx  # (N, N)


def window_and_shift(height: int, width: int, window_size: int, shift_size: int) -> tuple[int, int]:
    """transformers' rule: a stage not larger than the window is one window of its smaller side, unshifted."""
    if min(height, width) <= window_size:
        return min(height, width), 0
    return window_size, shift_size


# --- modules ----------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Patch partition + linear embedding: one strided conv, then LayerNorm, channels last."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, eps: float) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, H/p, W/p, D)
        _, c, h, w = x.shape
        if c != self.proj.in_channels:
            raise ValueError(f"input has {c} channels, the model expects {self.proj.in_channels}")
        p = self.patch_size
        if h % p or w % p:  # zero-pad right / bottom to a multiple of the patch, as transformers does
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token: concat (4C) -> LayerNorm -> linear to 2C; halves H and W."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H/2, W/2, 2C)
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            H, W = H + H % 2, W + W % 2
        # concat order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] (paper, timm, transformers)
        x = x.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        return self.reduction(self.norm(x))


class WindowAttention(nn.Module, RecordsAttention):
    """Multi-head self-attention inside each window, with the relative position bias (and the shift mask)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.stage_idx = self.block_idx = 0  # where this layer sits, for the attention-map metadata

    def relative_position_bias(self, window: int) -> torch.Tensor:
        """(heads, N, N): the table entry of every (query, key) pair of a ``window`` x ``window`` window."""
        table, index = self.relative_position_bias_table, self.relative_position_index
        if window != self.window_size:  # a stage smaller than the window: its offsets are the table's centre
            side, o = 2 * self.window_size - 1, self.window_size - window
            table = table.view(side, side, -1)[o : side - o, o : side - o].reshape(-1, self.num_heads)
            index = relative_position_index(window).to(table.device)
        n = window * window
        return table[index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: windows (B, nW, N, C); mask: (nW, N, N) for SW-MSA. Returns (B, nW, N, C)."""
        B, nW, N, C = x.shape
        heads, window = self.num_heads, math.isqrt(N)
        qkv = self.qkv(x).reshape(B, nW, N, 3, heads, C // heads).permute(3, 0, 1, 4, 2, 5)  # (3, B, nW, heads, N, d)
        q, k, v = qkv.reshape(3, B, nW * heads, N, C // heads).unbind(0)  # windows x heads as attention heads
        bias = self.relative_position_bias(window).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            bias = bias + mask.unsqueeze(1).to(bias.dtype)  # (nW, heads, N, N)
        bias = bias.expand(nW, heads, N, N).reshape(1, nW * heads, N, N)  # the same for every image
        dropout_p, bias = self.attn_drop if self.training else 0.0, bias.to(q.dtype)
        out, weights = attention(
            q, k, v, scale=self.scale, attn_bias=bias, dropout_p=dropout_p, need_weights=self.record_attention,
            weights_shape=(B, nW, heads, N, N),
        )  # fmt: skip
        if weights is not None:
            self.store_attention(weights, window_size=window, stage=self.stage_idx, block=self.block_idx)
        out = out.view(B, nW, heads, N, C // heads).transpose(2, 3).reshape(B, nW, N, C)  # heads side by side
        return self.proj_drop(self.proj(out))


class SwinBlock(nn.Module):
    """Pre-norm block: x + (S)W-MSA(LN(x)); x + MLP(LN(x)). Odd blocks of a stage shift by window // 2."""

    def __init__(self, cfg: SwinConfig, dim: int, num_heads: int, shift: bool, drop_path: float) -> None:
        super().__init__()
        self.window_size = cfg.window_size
        self.shift_size = cfg.window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = WindowAttention(
            dim, num_heads, cfg.window_size, cfg.qkv_bias, cfg.attn_drop_rate, cfg.proj_drop_rate
        )
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), drop=cfg.proj_drop_rate)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        _, H, W, _ = x.shape
        window, shift = window_and_shift(H, W, self.window_size, self.shift_size)
        shortcut, x = x, self.norm1(x)
        pad_b, pad_r = (-H) % window, (-W) % window
        if pad_b or pad_r:  # zero tokens right / bottom to whole windows (transformers pads after norm1)
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        mask = None
        if shift:  # SW-MSA: roll the map up-left, so windows straddle the previous block's window borders
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
            mask = shift_mask(Hp, Wp, window, shift, x.device)
        x = window_reverse(self.attn(window_partition(x, window), mask), window, Hp, Wp)  # (B, Hp, Wp, C)
        if self.attn.attention_meta is not None and self.attn.record_attention:  # where each window sits
            self.attn.attention_meta |= dict(shift_size=shift, grid=(Hp, Wp), num_windows=(Hp // window, Wp // window))
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = shortcut + self.drop_path1(x[:, :H, :W])
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """Patch merging at the start (except in stage 1; timm >= 0.9 layout), then ``depth`` blocks."""

    def __init__(self, cfg: SwinConfig, idx: int, drop_path: list[float]) -> None:
        super().__init__()
        dim = cfg.stage_dim(idx)
        self.downsample = PatchMerging(dim // 2, cfg.norm_eps) if idx > 0 else nn.Identity()
        self.blocks = nn.ModuleList(
            SwinBlock(cfg, dim, cfg.num_heads[idx], shift=j % 2 == 1, drop_path=drop_path[j])
            for j in range(cfg.depths[idx])
        )
        for j, blk in enumerate(self.blocks):
            blk.attn.stage_idx, blk.attn.block_idx = idx, j
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C_in) -> (B, H', W', dim)
        x = self.downsample(x)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)  # recomputed in backward instead of stored
            else:
                x = blk(x)
        return x


class SwinTransformer(VisionModel):
    family = "swin"
    stem_key = "patch_embed.proj.weight"

    def __init__(self, config: SwinConfig) -> None:
        super().__init__(config)
        cfg = config
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.norm_eps)
        self.pos_drop = nn.Dropout(cfg.pos_drop_rate)
        rates = drop_path_rates(cfg.drop_path_rate, sum(cfg.depths))  # one ramp over all blocks of all stages
        starts = [sum(cfg.depths[:i]) for i in range(cfg.num_stages)]
        self.layers = nn.ModuleList(
            SwinStage(cfg, i, rates[starts[i] : starts[i] + cfg.depths[i]]) for i in range(cfg.num_stages)
        )
        self.norm = nn.LayerNorm(cfg.num_features, eps=cfg.norm_eps)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(cfg.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        init_linear_and_norms_(self)
        for m in self.modules():
            if isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    @property
    def num_features(self) -> int:
        return self.config.num_features

    @property
    def feature_info(self) -> FeatureInfo:
        """One level per stage: ``stage_dim(i)`` channels, ``patch_size * 2**i`` pixels per token."""
        c = self.config
        return FeatureInfo([dict(num_chs=c.stage_dim(i), reduction=c.patch_size * 2**i, module=f"layers.{i}")
                            for i in range(c.num_stages)])  # fmt: skip

    def forward_trunk(self, x: torch.Tensor, take=frozenset(), stop: int | None = None):
        """Embedding and stages (the first ``stop``): the last map (B, H', W', C), the stages in ``take`` as tokens."""
        x, taken = self.pos_drop(self.patch_embed(x)), []  # (B, H/p, W/p, D)
        for i, stage in enumerate(islice(self.layers, stop)):
            x = stage(x)
            if i in take:
                taken.append((x.flatten(1, 2), tuple(x.shape[1:3])))
        return x, taken

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H', W', num_features), channels last like timm; H' = ceil(H / patch / 2^(S-1))."""
        return self.norm(self.forward_trunk(x)[0])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.mean(dim=(1, 2)))  # the average of all tokens
        return x if pre_logits else self.head(x)

    def get_attention_maps(self, x):
        """Per block: weights (B, num_windows, heads, ws*ws, ws*ws), softmax over the last axis.

        Windows are in raster order over the block's padded and (for SW-MSA) cyclically shifted grid: window
        ``i * nw + j`` holds the tokens at rows ``i*ws .. i*ws+ws-1`` and columns ``j*ws ..`` of that grid, row-major
        inside the window. Token (r, c) of the shifted grid is token ((r + shift) % Hp, (c + shift) % Wp) of the
        stage's feature map; rows / columns >= the stage's size are padding.
        ``meta``: window_size, shift_size, grid (padded Hp, Wp), num_windows (nh, nw), stage, block.
        """
        return super().get_attention_maps(x)

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    def num_layers(self) -> int:
        return sum(self.config.depths)

    def layer_id(self, param_name: str) -> int:
        """0 = patch_embed, 1..sum(depths) = blocks across stages, sum(depths) + 1 = final norm and head.

        A stage's patch merging shares the id of the block before it (as in the SimMIM / Swin repos).
        """
        if param_name.startswith("patch_embed"):
            return 0
        if param_name.startswith("layers."):
            parts = param_name.split(".")
            before = sum(self.config.depths[: int(parts[1])])
            return before if parts[2] == "downsample" else before + int(parts[3]) + 1
        return self.num_layers() + 1

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop stored index / mask buffers, resize bias tables to this window (bicubic, as the official repo does for
        384 fine-tuning) and fit the stem to ``in_chans``."""
        sd = {k: v for k, v in state_dict.items() if not k.endswith(("relative_position_index", "attn_mask"))}
        sd = super().adapt_state_dict(sd)
        own = dict(self.named_parameters())
        for k, v in sd.items():
            if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
                sd[k] = resize_bias_table(v, self.config.window_size, k)
        return sd


def resize_bias_table(table: torch.Tensor, window_size: int, name: str = "relative_position_bias_table"):
    """((2w-1)^2, heads) -> ((2ws-1)^2, heads) by bicubic interpolation of the (2w-1) x (2w-1) offset grid."""
    side = math.isqrt(table.shape[0])
    if table.ndim != 2 or side * side != table.shape[0]:
        raise CheckpointError(f"{name}: expected a ((2w-1)^2, heads) table, got shape {tuple(table.shape)}")
    new = 2 * window_size - 1
    if side == new:
        return table
    grid = table.T.reshape(1, table.shape[1], side, side).float()  # (1, heads, 2w-1, 2w-1)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return grid.reshape(table.shape[1], new * new).T.contiguous().to(table.dtype)


register_family("swin", SwinConfig, SwinTransformer)

# --- registered configurations ---------------------------------------------------------------------------
_SIZES = {  # name: (embed_dim, depths, num_heads)
    "tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "small": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "base": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "large": (192, (2, 2, 18, 2), (6, 12, 24, 48)),
}
for _size, (_dim, _depths, _heads) in _SIZES.items():
    for _window, _res in ((7, 224), (12, 384)):
        if _res == 384 and _size in ("tiny", "small"):
            continue  # no official 384 weights
        _name = f"swin_{_size}_patch4_window{_window}_{_res}"
        _cfg = SwinConfig(img_size=_res, embed_dim=_dim, depths=_depths, num_heads=_heads, window_size=_window,
                          crop_pct=0.9 if _res == 224 else 1.0)  # fmt: skip
        register_model(_name, _cfg, hub_id=f"hf-hub:microsoft/{_name.replace('_', '-')}")

# Small images: patch 2 (or 4 at 64 px) and windows that tile every stage; the last stage is one window
# (global attention over its tokens, no shift).
_SMALL = dict(num_classes=10, crop_pct=1.0, interpolation="bilinear", drop_path_rate=0.1)
_GRAY = dict(img_size=28, in_chans=1, mean=(0.2860,), std=(0.3530,))  # Fashion-MNIST statistics
_THREE = dict(embed_dim=96, depths=(2, 6, 2), num_heads=(3, 6, 12), window_size=4, **_SMALL)  # 16 -> 8 -> 4 a side
register_model(  # 14x14 (2x2 windows, shifted) -> 7x7 (one window)
    "swin_nano_patch2_window7_28",
    SwinConfig(patch_size=2, embed_dim=48, depths=(2, 4), num_heads=(3, 6), window_size=7, **_GRAY, **_SMALL),
)
register_model("swin_tiny_patch2_window4_32", SwinConfig(img_size=32, patch_size=2, **_THREE))
register_model("swin_tiny_patch4_window4_64", SwinConfig(img_size=64, patch_size=4, **_THREE))
