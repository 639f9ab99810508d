"""Swin Transformer (Liu et al., 2021), read top to bottom.

image (B, C, H, W)
  -> patch partition + linear embedding: conv with kernel = stride = patch, then LayerNorm    (B, H/4, W/4, C)
  -> stage 1: blocks that alternate W-MSA (attention inside non-overlapping ws x ws windows) and SW-MSA
     (the same after a cyclic shift by ws // 2, with a mask so tokens only attend to their true neighbours)
  -> stages 2..S: patch merging (2x2 neighbours concatenated -> LayerNorm -> linear 4C -> 2C), then blocks
  -> LayerNorm -> the head averages all tokens                                               (B, num_classes)

Every window adds a learned relative position bias: one table of (2ws-1)^2 x heads values, read through
:func:`relative_position_index`. Attention cost is linear in the number of pixels (windows of fixed size).

Any input size works, padded exactly like transformers' ``SwinForImageClassification``: the image is padded
to a multiple of the patch, each block pads its feature map (right/bottom, after norm1) to a multiple of the
window, patch merging pads odd sides, and a stage whose smaller side is not larger than the window uses one
window of that side and no shift. Parameter names follow timm (>= 0.9), so timm checkpoints load as they are.

Speed: window partition and reverse are one view/permute copy each (the head split rides along); the shift
mask, the table index and the cyclic-shift index are built once per (resolution, window, shift, dtype, device)
and cached; one SDPA call per block covers every window of every image, with the bias + mask broadcast over
the batch rather than copied. In eval mode without autograd on CPU float32, the whole window attention (shift,
partition, softmax(q k^T + bias) v, reverse) is one native kernel when it could be built
(``vitkit.kernels.window_attention``, the same numbers, 2-4x faster than SDPA + copies on 7 x 7 windows);
bias, GELU and residual adds are fused into oneDNN matmuls (``vitkit.layers.fused``), and a stage with large
activations runs over slices of the batch so that no temporary is big enough to be page-faulted in afresh on
every call (``layers.micro_batch``).
"""

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitkit.kernels import window_attention as native
from vitkit.layers import DropPath, Mlp, RecordsAttention, attention, can_fuse, linear
from vitkit.layers.init import init_linear_and_norms_
from vitkit.layers.micro_batch import num_micro_batches
from vitkit.models.base import IMAGENET_MEAN, IMAGENET_STD, VisionModel, to_2tuple
from vitkit.registry import register_family, register_model


@dataclass(frozen=True)
class SwinConfig:
    img_size: int | tuple[int, int] = 224
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96  # channels of stage 1; each later stage doubles them
    depths: tuple[int, ...] = (2, 2, 6, 2)  # blocks per stage; len(depths) = number of stages
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0  # before the head
    proj_drop_rate: float = 0.0  # after attention projection and in the MLP
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1  # timm's and transformers' default for Swin
    norm_eps: float = 1e-5
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.9

    def __post_init__(self) -> None:
        h, w = to_2tuple(self.img_size)
        if h < 1 or w < 1:
            raise ValueError(f"img_size must be positive, got {self.img_size!r}")
        for name in ("patch_size", "in_chans", "embed_dim", "window_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if len(self.depths) == 0 or len(self.depths) != len(self.num_heads):
            raise ValueError(
                f"depths {tuple(self.depths)} and num_heads {tuple(self.num_heads)} need the same length >= 1"
            )
        if any(d < 1 for d in self.depths):
            raise ValueError(f"every stage needs at least one block, got depths {tuple(self.depths)}")
        for i, heads in enumerate(self.num_heads):
            dim = self.embed_dim * 2**i
            if heads < 1 or dim % heads:
                raise ValueError(f"stage {i}: dim {dim} is not divisible by num_heads {heads}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        for name in ("drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean {tuple(self.mean)} and std {tuple(self.std)} differ in length")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (self.num_stages - 1)


# --- relative position bias and shift mask (cached per window / resolution) ------------------------
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


def _cached(build):
    """``lru_cache`` for the index / mask tensors below, always built as normal tensors.

    A tensor first built under ``torch.inference_mode`` would be an inference tensor, and a later training
    step that saves it for backward (``index_select``) would fail; building outside inference mode avoids that.
    """

    @functools.lru_cache(maxsize=64)
    @functools.wraps(build)
    def cached(*args):
        with torch.inference_mode(False):
            return build(*args)

    return cached


@_cached
def _table_index(window: int, table_window: int, device: torch.device) -> torch.Tensor:
    """Flat index into a table built for ``table_window`` for the pairs of a smaller (or equal) window.

    A stage smaller than its window attends within one window of side ``window``; its offsets are a
    subset of the table's, so the same table serves it unchanged.
    """
    if window == table_window:
        index = relative_position_index(window)
    else:
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = coords[:, :, None] - coords[:, None, :] + (table_window - 1)
        index = relative[0] * (2 * table_window - 1) + relative[1]
    return index.flatten().to(device)  # (N*N,)


@_cached
def _shift_mask(height: int, width: int, window: int, shift: int, dtype: torch.dtype, device: torch.device):
    """Additive mask (num_windows, N, N) for SW-MSA on a (height, width) map: 0 inside a region, -100 across.

    After the cyclic shift a window can hold tokens from up to 4 regions that are not neighbours in the
    image; each axis has 3 regions ([0, L-ws), [L-ws, L-s), [L-s, L)) as in the paper and transformers.
    """
    h = torch.arange(height)
    w = torch.arange(width)
    h_region = (h >= height - window).long() + (h >= height - shift).long()
    w_region = (w >= width - window).long() + (w >= width - shift).long()
    region = h_region[:, None] * 3 + w_region[None, :]  # (H, W) region id
    region = region.view(height // window, window, width // window, window).transpose(1, 2)
    region = region.reshape(-1, window * window)  # (num_windows, N)
    mask = torch.zeros(region.shape[0], region.shape[1], region.shape[1])
    mask.masked_fill_(region[:, :, None] != region[:, None, :], -100.0)
    return mask.to(device=device, dtype=dtype)


@_cached
def _roll_index(height: int, width: int, shift: int, device: torch.device) -> torch.Tensor:
    """Flat source index of ``torch.roll(x, (shift, shift), (1, 2))`` on a (B, H, W, C) map.

    One ``index_select`` over the H*W tokens is a single pass; ``torch.roll`` over two dims makes two.
    """
    rows = (torch.arange(height) - shift) % height
    cols = (torch.arange(width) - shift) % width
    return (rows[:, None] * width + cols[None, :]).flatten().to(device)  # (H*W,)


def cyclic_shift(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Same as ``torch.roll(x, shifts=(shift, shift), dims=(1, 2))`` for x (B, H, W, C), in one pass."""
    B, H, W, C = x.shape
    index = _roll_index(H, W, shift, x.device)
    return x.reshape(B, H * W, C).index_select(1, index).view(B, H, W, C)


def window_and_shift(height: int, width: int, window_size: int, shift_size: int) -> tuple[int, int]:
    """transformers' rule: a stage not larger than the window is one window of its smaller side, unshifted."""
    if min(height, width) <= window_size:
        return min(height, width), 0
    return window_size, shift_size


# --- modules ---------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Patch partition + linear embedding: one strided conv, then LayerNorm, channels last."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, eps: float) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        if c != self.proj.in_channels:
            raise ValueError(f"input has {c} channels, the model expects {self.proj.in_channels}")
        p = self.patch_size
        if h % p or w % p:  # zero-pad right / bottom to a multiple of the patch, as transformers does
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
        x = self.proj(x).permute(0, 2, 3, 1)  # (B, H/p, W/p, D)
        return self.norm(x)


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token: concat (4C) -> LayerNorm -> linear to 2C; halves H and W."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            H, W = H + H % 2, W + W % 2
        # concat order x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] (paper, timm, transformers)
        x = x.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        return linear(self.norm(x), self.reduction)  # (B, H/2, W/2, 2C)


class WindowAttention(nn.Module, RecordsAttention):
    """Multi-head self-attention inside windows, with the relative position bias (and the shift mask)."""

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
        self.stage_idx = self.block_idx = 0  # for the attention-map metadata
        self._bias_cache: dict[tuple, tuple[tuple[int, int], torch.Tensor]] = {}

    def attn_bias(self, hp: int, wp: int, window: int, shift: int, padded: bool = False) -> torch.Tensor:
        """Relative position bias (+ shift mask): (heads, N, N) without shift, (nW * heads, N, N) with it.

        ``padded``: rows padded with -inf columns to the native kernel's width (inference only).

        The index and the mask are cached per size. With autograd on, the bias is gathered from the table on
        every call (cheap: N*N*heads values) so the table gets gradients; under no_grad / inference_mode the
        finished tensor is kept too, and rebuilt whenever the table changes (version counter or storage).
        """
        table = self.relative_position_bias_table
        key = (hp, wp, window, shift, padded, table.dtype, table.device)
        stamp = (-1 if table.is_inference() else table._version, table.data_ptr())  # inference tensors: no counter
        # cached tensors never enter an autograd graph, nor a graph being compiled
        needs_grad = torch.is_grad_enabled() or torch.compiler.is_compiling()
        if not needs_grad:
            hit = self._bias_cache.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        n = window * window
        bias = table.index_select(0, _table_index(window, self.window_size, table.device))  # (N*N, heads)
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # (heads, N, N)
        if shift:
            mask = _shift_mask(hp, wp, window, shift, table.dtype, table.device)  # (nW, N, N)
            bias = (mask.unsqueeze(1) + bias).flatten(0, 1)  # (nW * heads, N, N)
        if padded:
            bias = F.pad(bias, (0, native.padded_width(n) - n), value=float("-inf"))  # (..., N, padded)
        if not needs_grad:
            if len(self._bias_cache) >= 8:
                self._bias_cache.clear()
            self._bias_cache[key] = (stamp, bias.detach().contiguous())
        return bias

    def forward(self, x: torch.Tensor, window: int, shift: int, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, H, W, C) after norm1. ``residual`` (fused path only) is added to the output projection."""
        B, H, W, C = x.shape
        heads, hd = self.num_heads, C // self.num_heads
        pad_b, pad_r = (-H) % window, (-W) % window
        if pad_b or pad_r:  # zero tokens right / bottom (transformers pads after norm1, before the shift)
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        if native.usable(x, self, heads, window):
            # one kernel: the shift, the window partition and its reverse are index arithmetic there
            bias = self.attn_bias(Hp, Wp, window, shift, padded=True)
            out = native.window_attention(linear(x, self.qkv), bias, heads, window, shift, self.scale)
            return self._project(out[:, :H, :W] if pad_b or pad_r else out, residual)
        if shift:
            x = cyclic_shift(x, -shift)
        nh, nw, n = Hp // window, Wp // window, window * window
        if shift == 0:
            # W-MSA, one bias for every window: partition x (one copy), windows as batch, q/k/v strided views
            x = x.view(B, nh, window, nw, window, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nh * nw, n, C)
            q, k, v = linear(x, self.qkv).view(-1, n, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            # SW-MSA, a mask per window: qkv per token, then one copy does partition + head split into
            # (B, nW * heads, N, hd), so the (nW * heads, N, N) bias + mask broadcasts over the batch
            qkv = linear(x, self.qkv).view(B, nh, window, nw, window, 3, heads, hd).permute(5, 0, 1, 3, 6, 2, 4, 7)
            q, k, v = qkv.reshape(3, B, nh * nw * heads, n, hd).unbind(0)
        bias = self.attn_bias(Hp, Wp, window, shift)
        dropout_p = self.attn_drop if self.training else 0.0
        out, weights = attention(
            q,
            k,
            v,
            scale=self.scale,
            attn_bias=bias.unsqueeze(0).to(q.dtype),  # (1, heads, N, N) or (1, nW * heads, N, N)
            dropout_p=dropout_p,
            need_weights=self.record_attention,
        )
        if weights is not None:
            self.store_attention(
                weights.reshape(B, nh * nw, heads, n, n),
                window_size=window,
                shift_size=shift,
                grid=(Hp, Wp),
                num_windows=(nh, nw),
                stage=self.stage_idx,
                block=self.block_idx,
            )
        # window reverse + head merge in one copy: (B, nh, ws, nw, ws, heads, hd) -> (B, Hp, Wp, C)
        out = out.reshape(B, nh, nw, heads, window, window, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)
        if shift:
            out = cyclic_shift(out, shift)
        if pad_b or pad_r:
            out = out[:, :H, :W]
        return self._project(out, residual)

    def _project(self, out: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        if residual is not None:
            return linear(out, self.proj, residual=residual)
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
        window, shift = window_and_shift(x.shape[1], x.shape[2], self.window_size, self.shift_size)
        if can_fuse(x, self):  # eval, no autograd: drop paths are identities, residual adds go into the matmuls
            x = self.attn(self.norm1(x), window, shift, residual=x)
            return self.mlp(self.norm2(x), residual=x)
        x = x + self.drop_path1(self.attn(self.norm1(x), window, shift))
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return x


class SwinStage(nn.Module):
    """Optional patch merging at the start (timm >= 0.9 layout), then ``depth`` blocks."""

    def __init__(self, cfg: SwinConfig, idx: int, drop_path: list[float]) -> None:
        super().__init__()
        dim = cfg.embed_dim * 2**idx
        self.downsample = PatchMerging(dim // 2, cfg.norm_eps) if idx > 0 else nn.Identity()
        self.blocks = nn.ModuleList(
            SwinBlock(cfg, dim, cfg.num_heads[idx], shift=j % 2 == 1, drop_path=drop_path[j])
            for j in range(cfg.depths[idx])
        )
        for j, blk in enumerate(self.blocks):
            blk.attn.stage_idx, blk.attn.block_idx = idx, j
        self.grad_checkpointing = False
        self.downsample_tokens = idx > 0
        self.widest_channels = int(dim * max(3.0, cfg.mlp_ratio))  # qkv has 3 * dim, the MLP hidden mlp_ratio * dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C_in) -> (B, H', W', dim)
        n = self.num_micro_batches(x)
        if n > 1:  # same result, small temporaries
            return torch.cat([self._forward(part) for part in x.tensor_split(n)])
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def num_micro_batches(self, x: torch.Tensor) -> int:
        """1, or how many slices of the batch this stage runs over (``vitkit.layers.micro_batch``)."""
        B, H, W, _ = x.shape
        if self.downsample_tokens:
            H, W = (H + 1) // 2, (W + 1) // 2
        widest = B * H * W * self.widest_channels * x.element_size()  # bytes of the MLP hidden (or qkv) tensor
        return num_micro_batches(self, x, widest)


class SwinTransformer(VisionModel):
    family = "swin"

    def __init__(self, config: SwinConfig) -> None:
        super().__init__(config)
        cfg = config
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.norm_eps)
        n = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # stochastic depth ramps with depth
        starts = [sum(cfg.depths[:i]) for i in range(cfg.num_stages)]
        self.layers = nn.ModuleList(
            SwinStage(cfg, i, dpr[starts[i] : starts[i] + cfg.depths[i]]) for i in range(cfg.num_stages)
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

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.grad_checkpointing = enabled
        for stage in self.layers:
            stage.grad_checkpointing = enabled

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H', W', num_features), channels last like timm; H' = ceil(H / patch / 2^(S-1))."""
        x = self.patch_embed(x)  # (B, H/p, W/p, D)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x.mean(dim=(1, 2)))  # average of all tokens
        return x if pre_logits else self.head(x)

    def get_attention_maps(self, x):
        """Per block: weights (B, num_windows, heads, ws*ws, ws*ws), softmax over the last axis.

        Windows are in raster order over the block's padded and (for SW-MSA) cyclically shifted grid:
        window ``i * nw + j`` holds the tokens at rows ``i*ws .. i*ws+ws-1`` and columns ``j*ws ..`` of that
        grid, row-major inside the window. Token (r, c) of the shifted grid is token ((r + shift) % Hp,
        (c + shift) % Wp) of the stage's feature map; rows / columns >= the stage's size are padding.
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
            stage = int(parts[1])
            before = sum(self.config.depths[:stage])
            if parts[2] == "downsample":
                return before
            return before + int(parts[3]) + 1
        return self.num_layers() + 1

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Drop cached buffers, resize bias tables to this window (bicubic, as the official repo does for
        384 fine-tuning) and fit the stem to ``in_chans``."""
        from vitkit.convert.common import adapt_input_conv

        sd = {k: v for k, v in state_dict.items() if not k.endswith(("relative_position_index", "attn_mask"))}
        own = dict(self.named_parameters())
        for k, v in sd.items():
            if k.endswith("relative_position_bias_table") and k in own and v.shape != own[k].shape:
                sd[k] = resize_bias_table(v, self.config.window_size, k)
        key = "patch_embed.proj.weight"
        if key in sd:
            sd[key] = adapt_input_conv(sd[key], self.config.in_chans, key)
        return sd


def resize_bias_table(table: torch.Tensor, window_size: int, name: str = "relative_position_bias_table"):
    """((2w-1)^2, heads) -> ((2ws-1)^2, heads) by bicubic interpolation of the (2w-1) x (2w-1) offset grid."""
    from vitkit.errors import CheckpointError

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

# --- registered configurations ---------------------------------------------------------------------
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
        _cfg = SwinConfig(
            img_size=_res,
            embed_dim=_dim,
            depths=_depths,
            num_heads=_heads,
            window_size=_window,
            crop_pct=0.9 if _res == 224 else 1.0,
        )
        register_model(_name, _cfg, hub_id=f"hf-hub:microsoft/{_name.replace('_', '-')}")

# Small images: patch 2 (or 4 at 64 px) and windows that tile every stage; the last stage is one window
# (global attention over its tokens, no shift).
_SMALL = dict(num_classes=10, crop_pct=1.0, interpolation="bilinear", drop_path_rate=0.1)
_GRAY = dict(img_size=28, in_chans=1, mean=(0.2860,), std=(0.3530,))  # Fashion-MNIST statistics
register_model(  # 14x14 (2x2 windows, shifted) -> 7x7 (one window)
    "swin_nano_patch2_window7_28",
    SwinConfig(patch_size=2, embed_dim=48, depths=(2, 4), num_heads=(3, 6), window_size=7, **_GRAY, **_SMALL),
)
register_model(  # 16x16 -> 8x8 -> 4x4
    "swin_tiny_patch2_window4_32",
    SwinConfig(
        img_size=32, patch_size=2, embed_dim=96, depths=(2, 6, 2), num_heads=(3, 6, 12), window_size=4, **_SMALL
    ),
)
register_model(  # 16x16 -> 8x8 -> 4x4
    "swin_tiny_patch4_window4_64",
    SwinConfig(
        img_size=64, patch_size=4, embed_dim=96, depths=(2, 6, 2), num_heads=(3, 6, 12), window_size=4, **_SMALL
    ),
)
