"""Does a heat map point at what the model uses? Deletion / insertion curves and the pointing game.

* Deletion and insertion (Petsiuk et al., 2018, "RISE"): pixels are taken away (set to the normalisation mean, 0 in
  input space) or put in (on a blurred copy of the image) in the order of the heat map, most relevant first, and the
  target class's probability is read after every step. A faithful map makes the deletion curve fall fast (small area
  under it) and the insertion curve rise fast (large area). The same curves for a random pixel order are the
  baseline. The unit removed is a ``block`` x ``block`` square (the benchmark uses the ViT patch, 4 px at 28 px):
  single pixels in random order keep a low-resolution image's silhouette until most are gone, which no ordering of
  whole regions can match, so a pixel-level random baseline is unfairly strong on insertion. Ties in a map are
  broken at random.
* The pointing game (Zhang et al., 2016): a hit when the map's peak falls on the object that decides the class.
  :func:`synthetic_pointing_data` makes a task where that object is known: noise, a small class pattern at a random
  place, and a distractor elsewhere that appears in every class and is at least as bright as any pattern (so the
  brightest spot of the image is not the answer).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def unit_scores(heatmaps: torch.Tensor, block: int = 1) -> torch.Tensor:
    """(B, H, W) maps -> (B, h*w) mean relevance of every ``block`` x ``block`` square (h = ceil(H / block))."""
    if block == 1:
        return heatmaps.flatten(1).float()
    return F.avg_pool2d(heatmaps[:, None].float(), block, ceil_mode=True)[:, 0].flatten(1)


def relevance_order(heatmaps: torch.Tensor, block: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, H, W) maps -> (B, units) indices of the ``block``-sized squares, most relevant first; ties at random."""
    scores = unit_scores(heatmaps, block)
    jitter = torch.rand(scores.shape, generator=generator) * 1e-6  # below any real difference of a [0, 1] map
    return (scores + jitter).argsort(dim=1, descending=True)


def random_order(batch: int, units: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, units): a random order of the squares for every image, the baseline."""
    return torch.stack([torch.randperm(units, generator=generator) for _ in range(batch)])


def num_units(size: tuple[int, int], block: int = 1) -> int:
    return math.ceil(size[0] / block) * math.ceil(size[1] / block)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W), the border pixels repeated outwards."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


@torch.no_grad()
def curves(
    model: torch.nn.Module,
    x: torch.Tensor,
    order: torch.Tensor,
    targets: torch.Tensor,
    *,
    block: int = 1,
    steps: int | None = None,
    blur_sigma: float | None = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Deletion and insertion curves: {"deletion": (B, steps + 1), "insertion": (B, steps + 1)} probabilities.

    ``x`` is the model input (B, C, H, W); ``order`` (B, units) the ``block`` x ``block`` squares most relevant first
    (:func:`relevance_order`, :func:`random_order`). Step ``s`` has removed (deletion) or inserted (insertion) the
    first ``round(s / steps * units)`` squares of the order; ``steps`` defaults to one square per step. Insertion
    starts from ``x`` blurred with ``blur_sigma`` (default: a fifth of the smaller side, as RISE does at 224 px).
    """
    B, _, H, W = x.shape
    hb, wb = math.ceil(H / block), math.ceil(W / block)
    units = hb * wb
    if order.shape != (B, units):
        raise ValueError(
            f"order: expected ({B}, {units}) for {block}-pixel squares of {H}x{W}, got {tuple(order.shape)}"
        )
    steps = steps or units
    sigma = blur_sigma if blur_sigma is not None else max(1.0, min(H, W) / 5)
    blurred = blur(x, sigma)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(units).expand(B, units).contiguous())  # rank of every square
    ranks = ranks.view(B, 1, hb, wb).repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :H, :W]
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    out = {}
    for kind in ("deletion", "insertion"):
        probs = torch.empty(B, steps + 1)
        for s in range(steps + 1):
            chosen = ranks < round(s / steps * units)  # (B, 1, H, W): the first squares of each order
            xs = torch.where(chosen, torch.zeros_like(x), x) if kind == "deletion" else torch.where(chosen, x, blurred)
            p = []
            for i in range(0, B, batch_size):
                logits = model(xs[i : i + batch_size].to(device, dtype)).float()
                p.append(logits.softmax(-1).gather(1, targets[i : i + batch_size].view(-1, 1).to(device)).cpu())
            probs[:, s] = torch.cat(p)[:, 0]
        out[kind] = probs
    return out


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under (B, steps + 1) curves over the fraction of pixels in [0, 1] (trapezoids)."""
    steps = curve.shape[-1] - 1
    return (curve[..., 1:] + curve[..., :-1]).sum(-1) / (2 * steps)


# --- the pointing game on a task with a known answer ----------------------------------------------------------
PATTERNS = {  # 5 x 5 strokes; each class is one pattern (the first two differ most: 9 and 16 pixels)
    "plus": ["..#..", "..#..", "#####", "..#..", "..#.."],
    "ring": ["#####", "#...#", "#...#", "#...#", "#####"],
    "cross": ["#...#", ".#.#.", "..#..", ".#.#.", "#...#"],
    "bars": ["#####", ".....", "#####", ".....", "#####"],
}
DISTRACTOR = ["####"] * 4  # in every image, whatever its class; at least as bright as any pattern


def _mask(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows], dtype=bool)


@dataclass
class PointingData:
    images: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (N, 4) top, left, bottom, right (exclusive) of the class pattern
    classes: list[str]


def synthetic_pointing_data(
    n: int, size: int = 28, seed: int = 0, distractor: bool = True, num_classes: int = 4
) -> PointingData:
    """``n`` images: uniform noise in [0, 100], one class pattern at 255 at a random place, a distractor elsewhere.

    ``num_classes`` (2-4): how many of :data:`PATTERNS` are classes.
    """
    rng = np.random.default_rng(seed)
    names = list(PATTERNS)[:num_classes]
    masks = [_mask(PATTERNS[k]) for k in names]
    dmask = _mask(DISTRACTOR)
    images = rng.integers(0, 101, size=(n, size, size)).astype(np.uint8)
    labels = rng.integers(0, len(names), size=n)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for i in range(n):
        m = masks[labels[i]]
        ph, pw = m.shape
        top, left = rng.integers(0, size - ph + 1), rng.integers(0, size - pw + 1)
        images[i, top : top + ph, left : left + pw][m] = 255
        boxes[i] = (top, left, top + ph, left + pw)
        if distractor:
            dh, dw = dmask.shape
            for _ in range(100):  # a place that keeps a pixel of space from the pattern
                dt, dl = rng.integers(0, size - dh + 1), rng.integers(0, size - dw + 1)
                if dt + dh < top - 1 or dt > top + ph or dl + dw < left - 1 or dl > left + pw:
                    images[i, dt : dt + dh, dl : dl + dw][dmask] = 255
                    break
    return PointingData(images, labels.astype(np.int64), boxes, names)


def peak_points(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of each (B, H, W) map's peak: the centre of its maximal pixels, rounded.

    A map that is constant over a patch (ViT) or flat has many maximal pixels; their centre stands for them, so a
    flat map points at the middle of the image rather than at its first pixel.
    """
    _, H, W = heatmaps.shape
    flat = heatmaps.flatten(1).float()
    top = flat >= flat.amax(dim=1, keepdim=True) - 1e-6  # (B, H*W)
    idx = torch.arange(H * W)
    weights = top.float() / top.sum(dim=1, keepdim=True)
    rows = (weights * (idx // W).float()).sum(1).round().long()
    cols = (weights * (idx % W).float()).sum(1).round().long()
    return rows, cols


def pointing_hits(heatmaps: torch.Tensor, boxes: np.ndarray | torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """(B,) bool: does each map's peak (:func:`peak_points`) fall in its box (top, left, bottom, right), widened by
    ``tolerance`` px?"""
    rows, cols = peak_points(heatmaps)
    b = torch.as_tensor(np.asarray(boxes))
    return (
        (rows >= b[:, 0] - tolerance)
        & (rows < b[:, 2] + tolerance)
        & (cols >= b[:, 1] - tolerance)
        & (cols < b[:, 3] + tolerance)
    )


def chance_hit_rate(boxes: np.ndarray, size: tuple[int, int], tolerance: int = 1) -> float:
    """The hit rate of a peak placed uniformly at random: the widened box's share of the image, averaged."""
    H, W = size
    b = np.asarray(boxes)
    h = np.minimum(b[:, 2] + tolerance, H) - np.maximum(b[:, 0] - tolerance, 0)
    w = np.minimum(b[:, 3] + tolerance, W) - np.maximum(b[:, 1] - tolerance, 0)
    return float(np.mean(h * w) / (H * W))
