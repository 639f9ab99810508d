"""Where each token of each family comes from in the image: the geometry every explanation maps back through.

All three families make tokens with convolutions (ViT and Swin: kernel = stride = patch; Swin's patch merging:
kernel = stride = 2 after padding to even sides; CvT: overlapping strided convolutions, and keys / values on a grid
reduced by another one). :func:`spread` runs one such convolution backwards: it hands the value of every output token
to the input positions its window covers. Chained stage by stage, it carries a token-level map down to pixels.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Window:
    """One convolution's geometry: ``kernel``, ``stride``, symmetric ``padding``; ``pad_end``: the input is first
    padded right / bottom to whole windows (Swin's patch embedding and patch merging)."""

    kernel: int
    stride: int
    padding: int = 0
    pad_end: bool = False

    def out_size(self, n: int) -> int:
        """Output length for an input of length ``n``."""
        if self.pad_end:
            return math.ceil((n + 2 * self.padding - self.kernel) / self.stride) + 1
        return (n + 2 * self.padding - self.kernel) // self.stride + 1


def window_weights(window: Window, dtype=torch.float32, device=None) -> torch.Tensor:
    """(1, 1, k, k) share of each input position in its window: uniform when windows do not overlap (patches, patch
    merging); a tent of half-width ``stride`` around the window's centre when they do (CvT), so that every input
    position gets the same total share and no stride-periodic checkerboard appears."""
    k, s = window.kernel, window.stride
    if k <= s:
        line = torch.ones(k, dtype=dtype, device=device)
    else:
        offsets = torch.arange(k, dtype=dtype, device=device) - (k - 1) / 2
        line = (1 - offsets.abs() / s).clamp_min(0)
    return (line[:, None] * line[None, :]).view(1, 1, k, k)


def spread(values: torch.Tensor, size: tuple[int, int], window: Window, mode: str = "mass") -> torch.Tensor:
    """Map (B, h, w) values on a convolution's output grid to its (B, H, W) input grid.

    ``mode="mass"``: each output token's value is shared among the input positions its window covers, in proportion
    to :func:`window_weights` (relevance, attention flow). The share of positions outside the image (zero padding)
    is dropped rather than handed to the border, which would otherwise collect the padding's part of every border
    window and light up; without padding the total is kept.
    ``mode="mean"``: each input position gets the weighted mean of the output tokens whose windows cover it (an
    intensity such as Grad-CAM's; bilinear interpolation for CvT's 3x3 / stride-2 windows). Positions no window
    covers get 0.
    """
    B, h, w = values.shape
    H, W = size
    k, s, p = window.kernel, window.stride, window.padding
    full_h, full_w = (h - 1) * s - 2 * p + k, (w - 1) * s - 2 * p + k  # what the windows reach
    extra_h, extra_w = max(0, full_h - H), max(0, full_w - W)  # right / bottom padding (Swin)
    out_pad = (H + extra_h - full_h, W + extra_w - full_w)  # rows / columns after the last window's start
    if not (0 <= out_pad[0] < max(s, 1) and 0 <= out_pad[1] < max(s, 1)):
        raise ValueError(f"a {h}x{w} grid cannot come from a {H}x{W} input through {window}")
    kernel = window_weights(window, values.dtype, values.device)
    x = values.reshape(B, 1, h, w)
    if mode == "mass":
        out = F.conv_transpose2d(x / kernel.sum(), kernel, stride=s, padding=p, output_padding=out_pad)
    elif mode == "mean":
        num = F.conv_transpose2d(x, kernel, stride=s, padding=p, output_padding=out_pad)
        den = F.conv_transpose2d(torch.ones_like(x[:1]), kernel, stride=s, padding=p, output_padding=out_pad)
        out = num / den.clamp_min(1e-12)
    else:
        raise ValueError(f"mode must be 'mass' or 'mean', got {mode!r}")
    return out[:, 0, :H, :W]


@dataclass(frozen=True)
class Stage:
    """One resolution of a model: its token grid and the convolution that made it from the grid below."""

    grid: tuple[int, int]
    embed: Window


def stages(model, size: tuple[int, int]) -> list[Stage]:
    """The token grids of ``model`` for an (H, W) input, first stage first, each with the window that made it."""
    cfg, family = model.config, model.family
    below = size
    out = []
    if family == "vit":
        windows = [Window(cfg.patch_size, cfg.patch_size)]
    elif family == "swin":
        patch = Window(cfg.patch_size, cfg.patch_size, pad_end=True)
        windows = [patch] + [Window(2, 2, pad_end=True)] * (len(cfg.depths) - 1)
    elif family == "cvt":
        windows = [
            Window(k, s, p) for k, s, p in zip(cfg.patch_sizes, cfg.patch_strides, cfg.patch_paddings, strict=True)
        ]
    else:
        raise ValueError(f"unknown family {family!r}")
    for win in windows:
        grid = (win.out_size(below[0]), win.out_size(below[1]))
        out.append(Stage(grid, win))
        below = grid
    return out


def to_pixels(values: torch.Tensor, model, size: tuple[int, int], from_stage: int, mode: str) -> torch.Tensor:
    """Carry a (B, h, w) map on stage ``from_stage``'s grid down through every embedding to the (B, H, W) input."""
    chain = stages(model, size)
    for i in range(from_stage, -1, -1):
        below = chain[i - 1].grid if i > 0 else size
        values = spread(values, below, chain[i].embed, mode)
    return values
