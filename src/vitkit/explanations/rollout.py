"""Attention rollout (Abnar & Zuidema, 2020) and gradient-weighted rollout (Chefer et al., 2021) for all families.

Both multiply per-layer token-to-token matrices from the last layer down to the first. Rollout uses the head mean of
the attention with the residual connection added, ``0.5 A + 0.5 I``; gradient-weighted rollout (Chefer et al.,
"Generic Attention-model Explainability", eq. 5-6) uses ``I + mean_h (dy_t/dA * A)^+``, so the target class decides
which attention counts. Only one row of the product is needed (the [CLS] token's, or the mean of all tokens when the
head averages them), so it is carried as a vector ``r <- a r + b (r M)``: the cost is that of one pass over the maps,
never an (N x N) product.

The families differ only in how their attention maps tokens to tokens:

* ViT: one (1+N) x (1+N) matrix per block.
* Swin: one (ws^2 x ws^2) matrix per window. Windows tile the block's padded, cyclically shifted grid in raster
  order, so ``r`` is padded, rolled by ``-shift``, cut into windows, multiplied, put back, rolled by ``+shift`` and
  cropped; keys on padding are dropped (rollout renormalises the rows). Between stages, patch merging made each token
  from a 2x2 block, so its relevance goes back to those four tokens.
* CvT: queries on the stage's grid attend to keys / values on a grid reduced by a strided depthwise conv; a key's
  relevance goes back to the query-grid tokens its 3x3 window covers. Between stages the convolutional token embedding
  does the same at its own kernel / stride. The [CLS] token (CvT-13's last stage) is carried like ViT's.

At the bottom the first stage's tokens go to the pixels of their patch / convolution window
(:func:`vitkit.explanations.geometry.to_pixels`), so every map has the input's size, padding and odd sizes included.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vitkit.explanations.geometry import Window, spread, stages, to_pixels
from vitkit.layers.attention import AttentionMap
from vitkit.models.swin import window_partition, window_reverse


def layer_matrix(amap: AttentionMap, grad: torch.Tensor | None) -> torch.Tensor:
    """Heads -> one matrix: the head mean of A (rollout) or of (dy/dA * A)^+ (gradient-weighted rollout)."""
    w = amap.weights.detach().float()
    if grad is not None:
        w = (grad.detach().float() * w).clamp_min(0)
    head_axis = 2 if w.ndim == 5 else 1  # Swin (B, nW, heads, N, N); ViT / CvT (B, heads, Nq, Nk)
    return w.mean(dim=head_axis)


def _swin_windows(mat: torch.Tensor, meta: dict, size: tuple[int, int], normalise: bool):
    """Validity of every key in every window (padding = 0), and the matrices with padded keys dropped."""
    ws, shift = meta["window_size"], meta["shift_size"]
    Hp, Wp = meta["grid"]
    H, W = size
    inside = torch.zeros(1, Hp, Wp, 1, device=mat.device, dtype=mat.dtype)
    inside[:, :H, :W] = 1
    if shift:
        inside = torch.roll(inside, shifts=(-shift, -shift), dims=(1, 2))
    keys = window_partition(inside, ws)[..., 0]  # (1, nW, N)
    mat = mat * keys[:, :, None, :]
    if normalise:  # attention over the real tokens only
        mat = mat / mat.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return mat


def swin_window_step(r: torch.Tensor, mat: torch.Tensor, meta: dict) -> torch.Tensor:
    """r (B, H, W) through one block's window matrices (B, nW, N, N): r M, on the unshifted, unpadded map."""
    _, H, W = r.shape
    ws, shift = meta["window_size"], meta["shift_size"]
    Hp, Wp = meta["grid"]
    x = F.pad(r, (0, Wp - W, 0, Hp - H)).unsqueeze(-1)  # (B, Hp, Wp, 1)
    if shift:  # the block rolled its map up-left before cutting windows
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    win = window_partition(x, ws)[..., 0]  # (B, nW, N), raster order over the shifted grid
    out = (win.unsqueeze(2) @ mat).squeeze(2)  # (B, nW, N)
    x = window_reverse(out.unsqueeze(-1), ws, Hp, Wp)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    return x[:, :H, :W, 0]


def _cvt_kv_to_q(v: torch.Tensor, meta: dict, kv_window: Window) -> torch.Tensor:
    """Relevance on [CLS] + the reduced key grid (B, p + h*w) -> [CLS] + the query grid (B, p + H*W)."""
    p = meta["num_prefix_tokens"]
    h, w = meta["kv_grid"]
    H, W = meta["q_grid"]
    grid = spread(v[:, p:].reshape(-1, h, w), (H, W), kv_window, "mass").flatten(1)
    return torch.cat([v[:, :p], grid], dim=1)


def propagate(
    model,
    maps: Sequence[AttentionMap],
    grads: Sequence[torch.Tensor] | None,
    size: tuple[int, int],
) -> torch.Tensor:
    """Rollout (``grads`` None) or gradient-weighted rollout of one forward pass -> relevance per pixel (B, H, W).

    Rollout keeps the total: the [CLS] row (or the mean row) of a product of row-stochastic matrices, less what stays
    on the [CLS] token itself, spread over the pixels. Gradient-weighted rollout returns the part of the row of
    ``prod (I + A_l)`` that went through at least one attention layer (Chefer et al.'s ``R - I``): with a [CLS] token
    that is the [CLS] row without [CLS] itself, as in the paper; with a mean-pooling head the identity path alone would
    add the same amount to every pixel and drown the class signal.
    """
    gradient = grads is not None
    mats = [layer_matrix(m, grads[i] if gradient else None) for i, m in enumerate(maps)]
    family, cfg = model.family, model.config
    B = maps[0].weights.shape[0]
    device = mats[0].device
    chain = stages(model, size)

    def start(top: torch.Tensor) -> torch.Tensor:
        # gradient-weighted: rows [0, B) carry what went through attention, [B, 2B) the identity path
        return torch.cat([torch.zeros_like(top), top]) if gradient else top

    def layer(r: torch.Tensor, step) -> torch.Tensor:
        """One block with its residual connection; ``step`` applies the block's matrix to a (B, ...) relevance."""
        if not gradient:
            return 0.5 * r + 0.5 * step(r)  # rollout: (0.5 A + 0.5 I)
        through, identity = r[:B], r[B:]
        return torch.cat([through + step(through + identity), identity])  # (I + A)

    def finish(pixels: torch.Tensor) -> torch.Tensor:
        return pixels[:B]

    if family == "vit":
        p = maps[0].meta["num_prefix_tokens"]
        gh, gw = maps[0].meta["grid"]
        top = torch.zeros(B, p + gh * gw, device=device)
        if cfg.global_pool == "token":
            top[:, 0] = 1.0  # the head reads [CLS]
        else:
            top[:, p:] = 1.0 / (gh * gw)  # the head averages the patch tokens
        r = start(top)
        for mat in reversed(mats):
            r = layer(r, lambda v, mat=mat: (v.unsqueeze(1) @ mat).squeeze(1))
        return finish(to_pixels(r[:, p:].reshape(-1, gh, gw), model, size, 0, "mass"))

    if family == "swin":
        last = len(chain) - 1
        H, W = chain[last].grid
        r = start(torch.full((B, H, W), 1.0 / (H * W), device=device))  # the head averages all tokens
        for stage in range(last, -1, -1):
            grid = chain[stage].grid
            for amap, mat in reversed([(a, m) for a, m in zip(maps, mats, strict=True) if a.meta["stage"] == stage]):
                mat = _swin_windows(mat, amap.meta, grid, normalise=not gradient)
                r = layer(r, lambda v, mat=mat, meta=amap.meta: swin_window_step(v, mat, meta))
            if stage > 0:  # patch merging: a token came from a 2x2 block of the stage below
                r = spread(r, chain[stage - 1].grid, chain[stage].embed, "mass")
        return finish(to_pixels(r, model, size, 0, "mass"))

    if family == "cvt":
        kv_window = Window(cfg.kernel_qkv, cfg.stride_kv, cfg.padding_kv)
        last = len(chain) - 1
        H, W = chain[last].grid
        has_cls = bool(cfg.cls_token)
        top = torch.zeros(B, int(has_cls) + H * W, device=device)
        if has_cls:
            top[:, 0] = 1.0  # the head reads [CLS]
        else:
            top[:, :] = 1.0 / (H * W)  # the head averages the tokens
        r = start(top)
        for stage in range(last, -1, -1):
            H, W = chain[stage].grid
            for amap, mat in reversed([(a, m) for a, m in zip(maps, mats, strict=True) if a.meta["stage"] == stage]):
                step = lambda v, mat=mat, meta=amap.meta: _cvt_kv_to_q(
                    (v.unsqueeze(1) @ mat).squeeze(1), meta, kv_window
                )
                r = layer(r, step)
            p = r.shape[1] - H * W  # the [CLS] token is a learned vector, not part of the image: drop it
            r = r[:, p:].reshape(-1, H, W)
            if stage > 0:  # the convolutional token embedding made this grid from the one below
                r = spread(r, chain[stage - 1].grid, chain[stage].embed, "mass").flatten(1)
        return finish(to_pixels(r, model, size, 0, "mass"))

    raise ValueError(f"no rollout for family {family!r}")
