"""Integrated gradients (Sundararajan, Taly & Yan, 2017): a class-specific map that works the same for every family.

The attribution of input value ``x_i`` is ``(x_i - x'_i)`` times the mean gradient of the target logit along the
straight path from a baseline ``x'`` to ``x``. The attributions add up to ``f(x) - f(x')`` (completeness), so a
pixel gets relevance only for what it changes in the target's score. The baseline is the all-zero *model input*,
which after normalisation is the data's mean colour: a grey image carrying no pattern. The path integral is the
midpoint rule over ``steps`` points, each one forward and backward pass of the batch.

It reads no attention and needs no reshape for any family: it differentiates the whole model, so the windows,
shifts and convolutional projections all take part, and the map is at pixel resolution from the start. Channels are
summed and the positive part kept (the pixels that speak *for* the target class).
"""

import torch


def attributions(model, x: torch.Tensor, targets: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """Per input value (B, C, H, W): ``(x - 0) * mean gradient of logit[target]`` over the path 0 -> x."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    x = x.detach()
    total = torch.zeros_like(x, dtype=torch.float32)
    index = targets.to(x.device).view(-1, 1)
    for i in range(steps):
        point = (x * ((i + 0.5) / steps)).requires_grad_(True)
        score = model(point).gather(1, index).sum()  # images are independent: one backward for the batch
        (grad,) = torch.autograd.grad(score, [point])
        total += grad.float()
    return x.float() * total / steps


def integrated_gradients_pixels(model, x: torch.Tensor, targets: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """(B, H, W) relevance per pixel: attributions summed over channels, positive part."""
    return attributions(model, x, targets, steps).sum(dim=1).clamp_min(0)
