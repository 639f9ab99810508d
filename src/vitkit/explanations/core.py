"""``vitkit.explain(model, images, method=..., target=...)``: heat maps of what a classifier looked at.

Four methods, for every family and any input size the model accepts:

* ``rollout``: attention rollout (Abnar & Zuidema, 2020), the flow of attention from the token the head reads down
  to the pixels. It does not depend on the class.
* ``grad-rollout``: gradient-weighted rollout (Chefer et al., 2021): each layer's attention weighted by the gradient
  of the target logit, positive part, so the map follows the class asked about.
* ``gradcam``: Grad-CAM (Selvaraju et al., 2017) on the family's last feature map that still reaches the head.
* ``integrated-gradients``: integrated gradients (Sundararajan et al., 2017) from a grey image to the input, the
  same computation for every family, at pixel resolution (``steps`` forward and backward passes per batch).

Images are model inputs (tensors, already normalised) or image files / PIL images, which go through the same
evaluation pipeline as ``vitkit predict``; the original images are kept so that figures can be drawn on them
(:func:`heatmap_on_original`). The model is explained in eval mode (its own mode is restored afterwards) on the
device its parameters are on. Optimized models (``vitkit.optimize``) work too: recording attention and autograd send
them down the reference computation, so they give the reference model's maps.
"""

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from vitkit.data.images import open_image
from vitkit.data.transforms import DataSpec, eval_geometry, eval_image
from vitkit.errors import VitkitError
from vitkit.explanations.gradcam import capture_features, gradcam_pixels
from vitkit.explanations.integrated_gradients import integrated_gradients_pixels
from vitkit.explanations.rollout import propagate

METHODS = {
    "rollout": "attention rollout (Abnar & Zuidema 2020): attention flow to the head's token; not class-specific",
    "grad-rollout": "gradient-weighted rollout (Chefer et al. 2021): attention weighted by the target's gradient",
    "gradcam": "Grad-CAM (Selvaraju et al. 2017) on the last feature map that reaches the head",
    "integrated-gradients": "integrated gradients (Sundararajan et al. 2017): the target's gradient along the path "
    "from a grey image to the input, times the input",
}
CLASS_SPECIFIC = ("grad-rollout", "gradcam", "integrated-gradients")
DEFAULT_METHOD = "integrated-gradients"  # the most faithful map in every family (benchmarks/README.md)
FAMILIES = ("vit", "swin", "cvt")

ImageLike = str | os.PathLike | Image.Image | torch.Tensor


@dataclass
class Explanation:
    """Heat maps of a batch of images and the forward pass they explain.

    ``heatmaps`` (B, H, W) are at the model input's size, in [0, 1] (1 = the most relevant pixel of that image);
    ``logits`` (B, K) and ``targets`` (B,) (the class each map explains) come from the same forward pass. For images
    given as files or PIL images, ``originals`` holds them as decoded and ``spec`` the evaluation pipeline that made
    the inputs, so :meth:`on_original` can put a map back on its image.
    """

    method: str
    heatmaps: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    class_names: list[str] | None = None
    inputs: torch.Tensor | None = None
    originals: list[Image.Image] | None = None
    spec: DataSpec | None = None
    paths: list[str] | None = field(default=None)

    def __len__(self) -> int:
        return self.heatmaps.shape[0]

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.float().softmax(dim=-1)

    @property
    def predicted(self) -> torch.Tensor:
        return self.logits.argmax(dim=-1)

    def name(self, index: int) -> str:
        """A class index as the model's class name (the index itself when it has none)."""
        names = self.class_names
        return str(names[index]) if names and 0 <= index < len(names) else str(index)

    def on_original(self, i: int) -> torch.Tensor:
        """Image ``i``'s heat map on its original image: (h, w), NaN where the centre crop cut the image off."""
        if self.originals is None or self.spec is None:
            raise VitkitError("on_original needs images given as files or PIL images (tensors have no original)")
        w, h = self.originals[i].size
        return heatmap_on_original(self.heatmaps[i], (h, w), self.spec)


def heatmap_on_original(heatmap: torch.Tensor, original_size: tuple[int, int], spec: DataSpec) -> torch.Tensor:
    """Map an (H, W) heat map on the model input back through the evaluation resize and centre crop.

    ``eval_geometry`` says the input is the (top, left) crop of the image resized to (nh, nw); every original pixel
    is sampled (bilinearly) at its place in that crop. Pixels the crop left out get NaN: the model never saw them.
    """
    h, w = original_size
    th, tw = spec.img_size
    nh, nw, top, left = eval_geometry(h, w, spec)
    heat = heatmap.detach().float().cpu()
    if heat.shape != (th, tw):
        raise VitkitError(f"heat map is {tuple(heat.shape)}, the model input {th}x{tw}")
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * nh / h - 0.5 - top  # row in the crop, pixel centres
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * nw / w - 0.5 - left
    gy, gx = torch.meshgrid((ys + 0.5) / th * 2 - 1, (xs + 0.5) / tw * 2 - 1, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).float().unsqueeze(0)  # (1, h, w, 2), x first
    out = F.grid_sample(heat[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0]
    outside = (ys < -0.5) | (ys > th - 0.5)
    out[outside, :] = float("nan")
    out[:, (xs < -0.5) | (xs > tw - 0.5)] = float("nan")
    return out


# --- checks ---------------------------------------------------------------------------------------------------
def check_model(model: Any, method: str) -> None:
    """One line naming what stops ``method`` on ``model``; nothing when it can run."""
    if method not in METHODS:
        close = difflib.get_close_matches(method, METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise VitkitError(f"unknown explanation method {method!r}{hint}; choose from {', '.join(METHODS)}")
    family = getattr(model, "family", None)
    if family not in FAMILIES or not hasattr(model, "forward_with_attention"):
        raise VitkitError(f"explain works on vitkit's ViT, Swin and CvT models, not on a {type(model).__name__}")
    if model.config.num_classes <= 0:
        raise VitkitError("explain needs a classifier head, and this model has none (num_classes=0)")
    if method in CLASS_SPECIFIC:
        quantized = [n for n, m in model.named_modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
        if quantized:
            raise VitkitError(
                f"--method {method} differentiates the target logit, and this model's int8 layers ({quantized[0]}, "
                f"...) have no gradient; use --method rollout or the float model"
            )


def resolve_targets(target: Any, logits: torch.Tensor, class_names: Sequence[str] | None) -> torch.Tensor:
    """None (the predicted class), a class index, a class name, or one of those per image -> (B,) indices."""
    B, K = logits.shape
    if target is None:
        return logits.argmax(dim=-1).cpu()
    if isinstance(target, torch.Tensor):
        target = target.tolist()
    if isinstance(target, (list, tuple)):
        if len(target) != B:
            raise VitkitError(f"target: {len(target)} classes given for {B} images")
        return torch.tensor([class_index(t, K, class_names) for t in target], dtype=torch.long)
    return torch.full((B,), class_index(target, K, class_names), dtype=torch.long)


def class_index(target: int | str, num_classes: int, class_names: Sequence[str] | None) -> int:
    """A class given by index or name -> its index; a one-line error names what is wrong."""
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise VitkitError(f"class {target!r}: give a class index or a class name")
    if isinstance(target, int):
        if not 0 <= target < num_classes:
            raise VitkitError(
                f"class {target} is out of range: the model has {num_classes} classes (0-{num_classes - 1})"
            )
        return target
    names = [str(n) for n in (class_names or [])]
    if not names:
        raise VitkitError(f"class {target!r}: this model has no class names; give an index 0-{num_classes - 1}")
    folded = {n.casefold(): i for i, n in enumerate(names)}
    if target.casefold() in folded:
        return folded[target.casefold()]
    close = difflib.get_close_matches(target, names, n=3)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"known: {', '.join(names[:20])}"
    raise VitkitError(f"unknown class {target!r}; {hint}")


# --- inputs ---------------------------------------------------------------------------------------------------
def prepare_images(model, images: ImageLike | Sequence[ImageLike]):
    """-> (inputs (B, C, H, W), originals or None, spec or None, paths or None)."""
    c = model.config.in_chans
    if isinstance(images, torch.Tensor):
        x = images.unsqueeze(0) if images.ndim == 3 else images
        if x.ndim != 4 or x.shape[1] != c:
            raise VitkitError(f"images: expected a (B, {c}, H, W) or ({c}, H, W) tensor, got {tuple(images.shape)}")
        return x, None, None, None
    items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
    if not items:
        raise VitkitError("no images to explain")
    if all(isinstance(t, torch.Tensor) for t in items):
        shapes = {tuple(t.shape) for t in items}
        if len(shapes) > 1:
            raise VitkitError(f"images: tensors of different sizes {sorted(shapes)}; give files or one size")
        return prepare_images(model, torch.stack(items))
    spec = DataSpec.from_model(model)
    originals, paths = [], []
    for item in items:
        if isinstance(item, Image.Image):
            originals.append(item)
            paths.append("")
        elif isinstance(item, (str, os.PathLike)):
            originals.append(open_image(item))
            paths.append(str(item))
        else:
            raise VitkitError(f"images: cannot explain a {type(item).__name__}; give files, PIL images or tensors")
    x = torch.stack([eval_image(img, spec) for img in originals])
    return x, originals, spec, paths


# --- the methods ----------------------------------------------------------------------------------------------
def _explain_batch(
    model, x: torch.Tensor, method: str, target: Any, steps: int = 16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(relevance per pixel (B, H, W), logits, targets) for one batch on the model's device."""
    size = (x.shape[-2], x.shape[-1])
    names = getattr(model, "class_names", None)
    if method == "rollout":
        with torch.no_grad():
            maps, logits = model.forward_with_attention(x)
        _check_logits(logits)
        targets = resolve_targets(target, logits, names)
        return propagate(model, maps, None, size), logits.detach(), targets
    x = x.detach().clone().requires_grad_(True)  # so the graph is built even when no parameter wants a gradient
    with torch.inference_mode(False), torch.enable_grad():
        if method == "grad-rollout":
            maps, logits = model.forward_with_attention(x)
            _check_logits(logits)
            targets = resolve_targets(target, logits, names)
            score = logits.gather(1, targets.to(logits.device).view(-1, 1)).sum()  # images are independent
            weights = [m.weights for m in maps]
            grads = torch.autograd.grad(score, weights, allow_unused=True)
            grads = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads, strict=True)]
            return propagate(model, maps, grads, size), logits.detach(), targets
        if method == "integrated-gradients":
            with torch.no_grad():
                logits = model(x)
            _check_logits(logits)
            targets = resolve_targets(target, logits, names)
            return integrated_gradients_pixels(model, x, targets, steps), logits.detach(), targets
        handle, store = capture_features(model, size)
        try:
            logits = model(x)
        finally:
            handle.remove()
        _check_logits(logits)
        targets = resolve_targets(target, logits, names)
        score = logits.gather(1, targets.to(logits.device).view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, [store["features"]])
        return gradcam_pixels(model, store["features"], grad, size), logits.detach(), targets


def _check_logits(logits: torch.Tensor) -> None:
    if not torch.isfinite(logits).all():
        raise VitkitError("the model produced NaN/inf logits; its weights are broken")


def normalise(relevance: torch.Tensor) -> torch.Tensor:
    """(B, H, W) -> [0, 1] per image: negative parts dropped, the most relevant pixel = 1 (all 0 stays 0)."""
    r = relevance.float().clamp_min(0)
    peak = r.flatten(1).amax(dim=1).view(-1, 1, 1)
    return torch.where(peak > 0, r / peak.clamp_min(1e-30), torch.zeros_like(r))


def explain(
    model: torch.nn.Module,
    images: ImageLike | Sequence[ImageLike],
    method: str = DEFAULT_METHOD,
    target: int | str | Sequence[int | str] | None = None,
    *,
    batch_size: int = 16,
    steps: int = 16,
    progress: Callable[[int], None] | None = None,
) -> Explanation:
    """Heat maps of ``images`` under ``model`` by ``method`` (see :data:`METHODS`), for class ``target``.

    ``images``: a (B, C, H, W) / (C, H, W) input tensor, or image files / PIL images (read like ``vitkit predict``).
    ``target``: None = each image's predicted class; a class index or name; or one per image. ``progress`` is called
    with the number of images done after every batch. ``steps``: the points on the path of integrated gradients.
    """
    check_model(model, method)
    x, originals, spec, paths = prepare_images(model, images)
    if batch_size < 1:
        raise VitkitError(f"batch_size must be >= 1 (got {batch_size})")
    if steps < 1:
        raise VitkitError(f"steps must be >= 1 (got {steps})")
    if isinstance(target, (list, tuple, torch.Tensor)) and len(target) != x.shape[0]:
        raise VitkitError(f"target: {len(target)} classes given for {x.shape[0]} images")
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    heat, logits, targets = [], [], []
    try:
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(param.device, param.dtype)
            tb = target[start : start + batch_size] if isinstance(target, (list, tuple, torch.Tensor)) else target
            rel, lg, tg = _explain_batch(model, xb, method, tb, steps)
            heat.append(normalise(rel).cpu())
            logits.append(lg.float().cpu())
            targets.append(tg.cpu())
            if progress is not None:
                progress(xb.shape[0])
    finally:
        if was_training:
            model.train(True)
    names = getattr(model, "class_names", None)
    return Explanation(
        method=method,
        heatmaps=torch.cat(heat),
        logits=torch.cat(logits),
        targets=torch.cat(targets),
        class_names=list(names) if names else None,
        inputs=x,
        originals=originals,
        spec=spec,
        paths=paths,
    )


def peak(heatmap: torch.Tensor) -> tuple[int, int]:
    """(row, column) of the largest value of an (H, W) map."""
    i = int(heatmap.flatten().argmax())
    return divmod(i, heatmap.shape[-1])


__all__ = ["CLASS_SPECIFIC", "METHODS", "Explanation", "check_model", "explain", "heatmap_on_original", "peak"]
