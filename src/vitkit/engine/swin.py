"""Swin for inference: the whole (shifted) window attention in one native kernel, or a PyTorch path with the
relative-position bias and shift mask built once per resolution; linears fused with bias, GELU and residual add."""

import torch
import torch.nn.functional as F
from torch import nn

from vitkit.engine.conditions import bf16_cpu_call, inference_call, native_call
from vitkit.engine.linear import linear, mlp
from vitkit.engine.micro_batch import num_micro_batches, sliced
from vitkit.engine.model import InferenceModel
from vitkit.kernels import window_attention as kernel
from vitkit.models import swin
from vitkit.settings import EngineSettings

_CACHE_ENTRIES = 8  # (resolution, window, shift, dtype, device) combinations kept per block


class FastSwinBlock(swin.SwinBlock):
    """The block's window attention without partition / reverse copies (reference path under autograd)."""

    fused: bool
    native: bool
    precompute: bool
    bf16_in_float32: bool

    def prepare(self, settings: EngineSettings) -> None:
        self.fused, self.native, self.precompute = (
            settings.fused_linear,
            settings.native_kernels,
            settings.precompute_bias,
        )
        self.bf16_in_float32 = settings.bf16_in_float32
        self._cache: dict[tuple, torch.Tensor] = {}

    def _cached(self, key: tuple, build) -> torch.Tensor:
        """``build()`` kept per key: the model is frozen, so nothing here goes stale."""
        if not self.precompute:
            return build()
        if key not in self._cache:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable in any later mode
                self._cache[key] = build()
        return self._cache[key]

    def attn_bias(self, hp: int, wp: int, window: int, shift: int, dtype, device, padded: bool) -> torch.Tensor:
        """Relative position bias (+ shift mask): (heads, N, N), or (nW * heads, N, N) with a shift; ``padded``:
        each row widened with -inf columns to the kernel's width."""

        def build() -> torch.Tensor:
            n = window * window
            bias = self.attn.relative_position_bias(window)  # (heads, N, N)
            if shift:
                mask = swin.shift_mask(hp, wp, window, shift, device, bias.dtype)  # (nW, N, N)
                bias = (mask.unsqueeze(1) + bias).flatten(0, 1)  # (nW * heads, N, N)
            if padded:
                bias = F.pad(bias, (0, kernel.padded_width(n) - n), value=float("-inf"))
            return bias.to(dtype).contiguous()

        return self._cached(("bias", hp, wp, window, shift, dtype, device, padded), build)

    def roll(self, x: torch.Tensor, shift: int) -> torch.Tensor:
        """``torch.roll(x, (shift, shift), (1, 2))`` of (B, H, W, C) as one gather (two passes for torch.roll)."""
        B, H, W, C = x.shape

        def build() -> torch.Tensor:
            rows = (torch.arange(H, device=x.device) - shift) % H
            cols = (torch.arange(W, device=x.device) - shift) % W
            return (rows[:, None] * W + cols[None, :]).flatten()

        index = self._cached(("roll", H, W, shift, x.device), build)
        return x.reshape(B, H * W, C).index_select(1, index).view(B, H, W, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H, W, C)
        a = self.attn
        if not inference_call(a):
            return super().forward(x)
        _, H, W, C = x.shape
        window, shift = swin.window_and_shift(H, W, self.window_size, self.shift_size)
        y = self.norm1(x)
        pad_b, pad_r = (-H) % window, (-W) % window
        if pad_b or pad_r:
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        fits = self.native and kernel.supports(C, a.num_heads, window) and kernel.library() is not None
        if fits and native_call(y):
            # one kernel: the shift, the window partition and its reverse are index arithmetic there
            bias = self.attn_bias(Hp, Wp, window, shift, y.dtype, y.device, padded=True)
            out = kernel.window_attention(linear(y, a.qkv, fused=self.fused), bias, a.num_heads, window, shift, a.scale)
        elif fits and self.bf16_in_float32 and bf16_cpu_call(y):
            # the same kernel on float32 copies of the bf16 q / k / v (products exact in float32), output in bf16
            qkv = linear(y, a.qkv, fused=self.fused)
            bias = self.attn_bias(Hp, Wp, window, shift, torch.float32, y.device, padded=True)
            with torch.autocast("cpu", enabled=False):
                out = kernel.window_attention(qkv.float(), bias, a.num_heads, window, shift, a.scale).to(qkv.dtype)
        else:
            out = self.window_attention(y, window, shift)
        if pad_b or pad_r:
            out = out[:, :H, :W]
        x = linear(out, a.proj, residual=x, fused=self.fused)
        return mlp(self.mlp, self.norm2(x), residual=x, fused=self.fused)

    def window_attention(self, y: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        """(B, Hp, Wp, C) -> (B, Hp, Wp, C) before the output projection, with one copy in and one copy out."""
        a = self.attn
        B, Hp, Wp, C = y.shape
        heads, hd = a.num_heads, C // a.num_heads
        nh, nw, n = Hp // window, Wp // window, window * window
        if shift:
            y = self.roll(y, -shift)
        bias = self.attn_bias(Hp, Wp, window, shift, y.dtype, y.device, padded=False)
        if shift == 0:  # one bias for every window: partition (one copy), windows as batch, q / k / v as views
            y = y.view(B, nh, window, nw, window, C).permute(0, 1, 3, 2, 4, 5).reshape(B * nh * nw, n, C)
            q, k, v = linear(y, a.qkv, fused=self.fused).view(-1, n, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        else:  # a mask per window: q / k / v per token, then one copy to (B, nW * heads, N, hd)
            qkv = linear(y, a.qkv, fused=self.fused).view(B, nh, window, nw, window, 3, heads, hd)
            q, k, v = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B, nh * nw * heads, n, hd).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype), scale=a.scale)
        # window reverse + head merge in one copy: (B, nh, nw, heads, ws, ws, hd) -> (B, Hp, Wp, C)
        out = out.reshape(B, nh, nw, heads, window, window, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)
        return self.roll(out, shift) if shift else out


class FastPatchMerging(swin.PatchMerging):
    """Patch merging with the reduction through the engine's linear (oneDNN on the CPU)."""

    def prepare(self, settings: EngineSettings) -> None:
        self.fused = settings.fused_linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) -> (B, H/2, W/2, 2C)
        if not inference_call():
            return super().forward(x)
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            H, W = H + H % 2, W + W % 2
        x = x.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        return linear(self.norm(x), self.reduction, fused=self.fused)


class SlicedStage(swin.SwinStage):
    """A stage over slices of a CPU batch whose widest temporary (MLP hidden or q/k/v) would be huge."""

    def prepare(self, settings: EngineSettings) -> None:
        self.limit = settings.micro_batch_bytes
        blk = self.blocks[0]
        self.widest_channels = max(blk.mlp.fc1.out_features, blk.attn.qkv.out_features)

    def slices(self, x: torch.Tensor) -> int:
        B, H, W, _ = x.shape
        if not isinstance(self.downsample, nn.Identity):
            H, W = (H + 1) // 2, (W + 1) // 2
        return num_micro_batches(self, x, B * H * W * self.widest_channels * 4, self.limit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C_in) -> (B, H', W', dim)
        return sliced(super().forward, x, self.slices(x))


class InferenceSwin(InferenceModel, swin.SwinTransformer):
    pass


def cls_only_path(model: swin.SwinTransformer) -> None:
    """None: Swin's head averages every token."""
    return None


MODEL = (swin.SwinTransformer, InferenceSwin)
SWAPS = {
    swin.SwinStage: (
        SlicedStage,
        "CPU batches whose widest temporary exceeds the limit run in slices",
        "micro_batch_bytes",
    ),
    swin.PatchMerging: (FastPatchMerging, "the reduction through oneDNN's linear", "fused_linear"),
    swin.SwinBlock: (
        FastSwinBlock,
        "window attention in one native kernel or without partition copies; bias + mask built once per resolution; "
        "linears fused with bias / GELU / residual add",
        None,
    ),
}
KERNELS = {"window_attention": kernel.library}
