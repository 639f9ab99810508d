"""Image transforms in two flavours that follow the same recipe.

* PIL, one image at a time (image files, in DataLoader workers): resize / random-resized-crop,
  random crop with padding, horizontal flip, RandAugment / TrivialAugment, to tensor, normalise, random erasing.
* Tensors, a whole batch at a time (in-memory uint8 arrays such as 28 px Fashion-MNIST): the same ops
  vectorised, so the model, not the loader, is the bottleneck without worker processes.

Every random choice comes from a generator seeded by (seed, epoch, sample or batch), never from the
global RNG: a resumed run sees exactly the augmentations an uninterrupted run would have seen.

Evaluation: resize the short side to ``img_size / crop_pct`` and centre-crop ``img_size`` (timm's rule).
RandAugment follows timm's "rand-m9-n2" (2 ops at magnitude 9 of 10); TrivialAugment the "wide" variant
(1 op, magnitude uniform in [0, 1] of the wide ranges), both with a random sign per op.
"""

import math
import random
from dataclasses import dataclass

import numpy as np
import PIL
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from vitkit.data.images import to_channels
from vitkit.errors import VitkitError
from vitkit.models.config import match_channels

_PIL_INTERP = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
_SUPPORT = {Image.BILINEAR: 1.0, Image.BICUBIC: 2.0}  # the filters' half-widths, in pixels of the larger side
_PIL_VERSION = tuple(int(part) for part in PIL.__version__.split(".")[:2])


@dataclass(frozen=True)
class DataSpec:
    """What the model wants fed: size, channels, normalisation (from ``model.data_config``)."""

    img_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 1.0

    @classmethod
    def from_model(cls, model, in_chans: int | None = None) -> "DataSpec":
        dc = model.data_config
        c, h, w = dc["input_size"]
        in_chans = in_chans or c
        try:
            mean, std = match_channels(dc["mean"], dc["std"], in_chans)
        except ValueError as e:
            raise VitkitError(f"cannot feed {in_chans}-channel images to this model: {e}") from None
        return cls((h, w), in_chans, mean, std, dc["interpolation"], dc["crop_pct"])


# --- augmentation ops: name -> (magnitude at 1.0 for RandAugment, for TrivialAugment-wide, signed) ------
AUG_OPS = {
    "identity": (0.0, 0.0, False),
    "autocontrast": (0.0, 0.0, False),
    "equalize": (0.0, 0.0, False),
    "rotate": (30.0, 135.0, True),  # degrees
    "solarize": (1.0, 1.0, False),  # threshold = 1 - magnitude (fraction of the range)
    "color": (0.9, 0.99, True),  # enhance factor 1 + m
    "posterize": (4.0, 6.0, False),  # bits removed
    "contrast": (0.9, 0.99, True),
    "brightness": (0.9, 0.99, True),
    "sharpness": (0.9, 0.99, True),
    "shear_x": (0.3, 0.99, True),
    "shear_y": (0.3, 0.99, True),
    "translate_x": (0.45, 1.0, True),  # fraction of the side (RandAugment 150/331; wide 32 px of 32)
    "translate_y": (0.45, 1.0, True),
}
OP_NAMES = list(AUG_OPS)


def sample_aug_ops(kind: str, rng: random.Random) -> list[tuple[str, float]]:
    """Pick (op, signed magnitude) pairs: RandAugment 2 ops at 0.9, TrivialAugment 1 op at U(0, 1)."""
    if kind == "randaugment":
        picks = [(rng.choice(OP_NAMES), 0.9) for _ in range(2)]
        table = 0
    else:
        picks = [(rng.choice(OP_NAMES), rng.random())]
        table = 1
    out = []
    for name, level in picks:
        scale, signed = AUG_OPS[name][table], AUG_OPS[name][2]
        m = level * scale
        if signed and rng.random() < 0.5:
            m = -m
        out.append((name, m))
    return out


def pil_op(img: Image.Image, name: str, m: float) -> Image.Image:
    fill = 0 if img.mode == "L" else (0, 0, 0)
    w, h = img.size
    if name == "identity":
        return img
    if name == "autocontrast":
        return ImageOps.autocontrast(img)
    if name == "equalize":
        return ImageOps.equalize(img)
    if name == "rotate":
        return img.rotate(m, resample=Image.BILINEAR, fillcolor=fill)
    if name == "solarize":
        return ImageOps.solarize(img, threshold=round(255 * (1 - m)))
    if name == "posterize":
        return ImageOps.posterize(img, 8 - round(m))
    if name in ("color", "contrast", "brightness", "sharpness"):
        enhancer = {
            "color": ImageEnhance.Color,
            "contrast": ImageEnhance.Contrast,
            "brightness": ImageEnhance.Brightness,
            "sharpness": ImageEnhance.Sharpness,
        }[name]
        return enhancer(img).enhance(1.0 + m)
    if name == "shear_x":
        return img.transform(img.size, Image.AFFINE, (1, m, -m * h / 2, 0, 1, 0), Image.BILINEAR, fillcolor=fill)
    if name == "shear_y":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, m, 1, -m * w / 2), Image.BILINEAR, fillcolor=fill)
    if name == "translate_x":
        return img.transform(img.size, Image.AFFINE, (1, 0, m * w, 0, 1, 0), Image.BILINEAR, fillcolor=fill)
    if name == "translate_y":
        return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, m * h), Image.BILINEAR, fillcolor=fill)
    raise ValueError(name)


# --- PIL pipeline ----------------------------------------------------------------------------------
def _random_resized_crop_box(w: int, h: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return x0, y0, x0 + cw, y0 + ch
    side = min(w, h)  # fallback: the central square
    return (w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side


def _to_tensor(img: Image.Image, spec: DataSpec | None) -> torch.Tensor:
    """(C, H, W) float in [0, 1], normalised with ``spec``'s mean / std unless ``spec`` is None."""
    a = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(a.copy()).float().div_(255.0)
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)  # (C, H, W)
    if spec is None:
        return t
    mean = torch.tensor(spec.mean).view(-1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1)
    return (t - mean) / std


def eval_geometry(h: int, w: int, spec: DataSpec) -> tuple[int, int, int, int]:
    """timm's evaluation resize: (resized height, width, crop top, left) for an h x w image.

    A square target: the short side becomes ``floor(size / crop_pct)``, the long side keeps the aspect ratio; a
    non-square target: the image becomes ``floor(target / crop_pct)`` on both sides. Then a centre crop of the target.
    """
    th, tw = spec.img_size
    if th == tw:
        short = math.floor(th / spec.crop_pct)
        nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    else:
        nh, nw = math.floor(th / spec.crop_pct), math.floor(tw / spec.crop_pct)
    nh, nw = max(nh, th), max(nw, tw)
    return nh, nw, round((nh - th) / 2.0), round((nw - tw) / 2.0)


def eval_resize_crop(img: Image.Image, spec: DataSpec) -> Image.Image:
    """The evaluation resize + centre crop of :func:`eval_geometry`, with memory bounded by the output.

    The whole image is resized, then cropped (timm's computation, pixel for pixel), unless the resized image would be
    far larger than the crop: a 1 x 4000 image would become 256 x 1,024,000 for a 224 crop. Then only the source
    region the crop needs is resized (:func:`_region_resize_crop`).
    """
    th, tw = spec.img_size
    w, h = img.size
    nh, nw, y0, x0 = eval_geometry(h, w, spec)
    if (nh, nw) == (h, w):
        return img.crop((x0, y0, x0 + tw, y0 + th))
    resample = _PIL_INTERP.get(spec.interpolation, Image.BICUBIC)
    if nh * nw <= WHOLE_RESIZE_LIMIT * th * tw:
        return img.resize((nw, nh), resample).crop((x0, y0, x0 + tw, y0 + th))
    return _region_resize_crop(img, resample, (nh, nw, y0, x0), (th, tw))


WHOLE_RESIZE_LIMIT = 16  # resize the whole image while it has at most this many times the crop's pixels


def _region_resize_crop(
    img: Image.Image, resample: int, geometry: tuple[int, int, int, int], size: tuple[int, int]
) -> Image.Image:
    """Resize + crop computed on the source region the crop needs: the whole-image resize's pixels up to the float32
    rounding of PIL's box coordinates.

    The separable filter's two passes run as two calls, in the order PIL's whole-image resize takes them: PIL picks the
    order of a call's passes from its sizes and rounds to 8 bits in between, so one region call could round
    differently (by many grey levels where a bicubic overshoot is clipped).
    """
    (nh, nw, y0, x0), (th, tw) = geometry, size
    w, h = img.size
    if resample == Image.NEAREST:
        return _nearest_region(img, nh, nw, y0, x0, th, tw)
    sx, sy = w / nw, h / nh  # source pixels per resized pixel
    if _vertical_first(w, h, nw, nh):
        c0, c1 = _span(x0 * sx, (x0 + tw) * sx, sx, resample, w)
        columns = img.resize((c1 - c0, th), resample, box=(c0, y0 * sy, c1, (y0 + th) * sy))  # vertical pass
        return columns.resize((tw, th), resample, box=(x0 * sx - c0, 0, (x0 + tw) * sx - c0, th))  # horizontal
    r0, r1 = _span(y0 * sy, (y0 + th) * sy, sy, resample, h)
    rows = img.resize((tw, r1 - r0), resample, box=(x0 * sx, r0, (x0 + tw) * sx, r1))  # horizontal pass
    return rows.resize((tw, th), resample, box=(0, y0 * sy - r0, tw, (y0 + th) * sy - r0))  # vertical pass


def _span(start: float, end: float, scale: float, resample: int, size: int) -> tuple[int, int]:
    """The source pixels [lo, hi) a pass reads for the output between source coordinates ``start`` and ``end``."""
    reach = _SUPPORT[resample] * max(scale, 1.0) + 1  # the filter's half-width, and a margin for rounding
    return max(math.floor(start - reach), 0), min(math.ceil(end + reach), size)


def _vertical_first(w: int, h: int, nw: int, nh: int) -> bool:
    """Whether PIL resizes a whole w x h image to nw x nh vertical pass first, which the region resize must follow:
    PIL 13 does when the height loses more than twice the pixels the width loses, 12.2 when the image is over 100
    times taller than wide and its height shrinks, older versions never."""
    if _PIL_VERSION >= (13, 0):
        return h - nh > 0 and h - nh > 2 * (w - nw)
    if _PIL_VERSION >= (12, 2):
        return h > w * 100 and nh < h
    return False


def _nearest_region(img: Image.Image, nh: int, nw: int, y0: int, x0: int, th: int, tw: int) -> Image.Image:
    """Nearest neighbour at the source positions PIL's whole-image resize picks (it steps ``w / nw`` per pixel from
    half a step, in float64), so exact ties between two source pixels fall the same way."""
    w, h = img.size

    def positions(size: int, new: int, start: int, count: int) -> np.ndarray:
        step = size / new
        at = np.add.accumulate(np.concatenate([[step * 0.5], np.full(start + count - 1, step)]))[start:]
        return np.clip(at.astype(np.int64), 0, size - 1)

    ys, xs = positions(h, nh, y0, th), positions(w, nw, x0, tw)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    a = np.asarray(img.crop(box))
    return Image.fromarray(np.ascontiguousarray(a[ys - box[1]][:, xs - box[0]]))


def eval_image(img: Image.Image, spec: DataSpec, normalize: bool = True) -> torch.Tensor:
    """Any decoded image -> the model's evaluation input (C, H, W): channels, resize + centre crop, normalise.

    The one evaluation pipeline for image files: ``vitkit predict``, ``vitkit eval`` and training validation.
    """
    img = eval_resize_crop(to_channels(img, spec.in_chans), spec)
    return _to_tensor(img, spec) if normalize else _to_tensor(img, None)


class PILTransform:
    """Image -> normalised (C, H, W) tensor; ``rng`` makes the random choices (training only)."""

    def __init__(
        self,
        spec: DataSpec,
        train: bool,
        aug: str = "flip",
        random_resized_crop: bool = False,
        crop_padding: int = 0,
        random_erasing: float = 0.0,
    ) -> None:
        self.spec, self.train, self.aug, self.rrc = spec, train, aug, random_resized_crop
        self.crop_padding, self.random_erasing = crop_padding, random_erasing

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        spec = self.spec
        if not self.train:
            return eval_image(img, spec)
        img = to_channels(img, spec.in_chans)
        rng = rng or random.Random(0)
        th, tw = spec.img_size
        interp = _PIL_INTERP.get(spec.interpolation, Image.BICUBIC)
        if self.rrc:
            img = img.resize((tw, th), interp, box=_random_resized_crop_box(*img.size, rng))
        elif img.size != (tw, th):
            img = img.resize((tw, th), interp)
        if p := self.crop_padding:
            dx, dy = rng.randint(0, 2 * p), rng.randint(0, 2 * p)
            img = ImageOps.expand(img, p, fill=0).crop((dx, dy, dx + tw, dy + th))
        if self.aug != "none" and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.aug in ("randaugment", "trivialaugment"):
            for name, m in sample_aug_ops(self.aug, rng):
                img = pil_op(img, name, m)
        x = _to_tensor(img, spec)
        if self.random_erasing and rng.random() < self.random_erasing:
            y0, x0, eh, ew = _erase_box(th, tw, rng.random(), rng.random(), rng.random(), rng.random())
            x[:, y0 : y0 + eh, x0 : x0 + ew] = 0.0
        return x


def _erase_box(h: int, w: int, u_area: float, u_ratio: float, u_y: float, u_x: float) -> tuple[int, int, int, int]:
    """Random erasing's rectangle (top, left, height, width) from four uniforms: 2-33% of the area, aspect 0.3-3.3."""
    area = h * w * (0.02 + 0.31 * u_area)
    ratio = math.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u_ratio)
    eh = max(1, min(h, round(math.sqrt(area * ratio))))
    ew = max(1, min(w, round(math.sqrt(area / ratio))))
    return int(u_y * (h - eh + 1)), int(u_x * (w - ew + 1)), eh, ew


# --- tensor pipeline for in-memory uint8 arrays ----------------------------------------------------
def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).clamp(0, 1)


def uint8_to_float(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (B, H, W) or (B, H, W, C) -> float (B, channels, H, W) in [0, 1]."""
    x = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    x = x.float().div_(255.0)
    if x.shape[1] == channels:
        return x
    if channels == 1:
        return _gray(x)
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    raise VitkitError(f"cannot feed {x.shape[1]}-channel images to a {channels}-channel model")


def _affine(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int] | None = None, mode="bilinear"):
    """Sample x at grid positions given by per-image 2x3 matrices (normalised coordinates), zero fill."""
    b, c = x.shape[:2]
    out = size or x.shape[-2:]
    grid = F.affine_grid(theta, [b, c, *out], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def _eye(b: int) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(b, 1, 1)


def tensor_op(x: torch.Tensor, name: str, m: torch.Tensor) -> torch.Tensor:
    """One op on a sub-batch ``x`` (B, C, H, W) in [0, 1] with per-image signed magnitudes ``m`` (B,)."""
    b = x.shape[0]
    mv = m.view(-1, 1, 1, 1)
    if name == "identity":
        return x
    if name == "autocontrast":
        lo = x.amin(dim=(2, 3), keepdim=True)
        hi = x.amax(dim=(2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    if name == "equalize":
        q = (x * 255).round().long().clamp(0, 255).flatten(2)  # (B, C, HW)
        hist = torch.zeros(*q.shape[:2], 256).scatter_add_(2, q, torch.ones_like(q, dtype=torch.float))
        cdf = hist.cumsum(2)
        cdf_min = torch.where(hist > 0, cdf, torch.full_like(cdf, float("inf"))).amin(2, keepdim=True)
        lut = ((cdf - cdf_min) / (q.shape[2] - cdf_min).clamp_min(1)).clamp(0, 1)
        return lut.gather(2, q).view_as(x)
    if name == "solarize":
        return torch.where(x >= 1 - mv, 1 - x, x)
    if name == "posterize":
        shift = (2 ** m.round()).view(-1, 1, 1, 1)
        return torch.div((x * 255).round(), shift, rounding_mode="floor") * shift / 255
    if name == "brightness":
        return (x * (1 + mv)).clamp(0, 1)
    if name == "color":
        g = _gray(x)
        return (g + (1 + mv) * (x - g)).clamp(0, 1)
    if name == "contrast":
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        return (mean + (1 + mv) * (x - mean)).clamp(0, 1)
    if name == "sharpness":
        k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13
        c = x.shape[1]
        blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3).repeat(c, 1, 1, 1), groups=c)
        return (blur + (1 + mv) * (x - blur)).clamp(0, 1)
    theta = _eye(b)
    h, w = x.shape[-2:]
    if name == "rotate":
        a = torch.deg2rad(-m)  # PIL rotates counter-clockwise for positive angles
        theta[:, 0, 0], theta[:, 1, 1] = a.cos(), a.cos()
        theta[:, 0, 1], theta[:, 1, 0] = -a.sin() * h / w, a.sin() * w / h
    elif name == "shear_x":
        theta[:, 0, 1] = m * h / w
    elif name == "shear_y":
        theta[:, 1, 0] = m * w / h
    elif name == "translate_x":
        theta[:, 0, 2] = 2 * m
    elif name == "translate_y":
        theta[:, 1, 2] = 2 * m
    else:
        raise ValueError(name)
    return _affine(x, theta)


def tensor_augment(x: torch.Tensor, kind: str, g: torch.Generator) -> torch.Tensor:
    """RandAugment / TrivialAugment on a batch: each image gets its own ops, applied op-group by op-group."""
    b = x.shape[0]
    layers, table = (2, 0) if kind == "randaugment" else (1, 1)
    scales = torch.tensor([AUG_OPS[n][table] for n in OP_NAMES])
    signed = torch.tensor([AUG_OPS[n][2] for n in OP_NAMES])
    for _ in range(layers):
        op = torch.randint(len(OP_NAMES), (b,), generator=g)
        level = torch.full((b,), 0.9) if kind == "randaugment" else torch.rand(b, generator=g)
        sign = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
        mag = level * scales[op] * torch.where(signed[op], sign, torch.ones(b))
        out = x.clone()
        for k, name in enumerate(OP_NAMES):
            sel = (op == k).nonzero().flatten()
            if len(sel) and name != "identity":
                out[sel] = tensor_op(x[sel], name, mag[sel])
        x = out
    return x


def tensor_train_transform(
    x: torch.Tensor,
    spec: DataSpec,
    aug: str,
    random_resized_crop: bool,
    g: torch.Generator,
    crop_padding: int = 0,
    random_erasing: float = 0.0,
) -> torch.Tensor:
    """Float (B, C, H, W) in [0, 1] -> augmented, resized, normalised (B, C, *img_size).

    ``crop_padding`` p: a random crop of the image padded with p black pixels a side (a shift of up to p pixels);
    ``random_erasing``: the probability that a random rectangle (2-33% of the image) is set to the mean (0 after
    normalisation), as in Zhong et al. (2020).
    """
    b = x.shape[0]
    th, tw = spec.img_size
    if random_resized_crop:
        scale = torch.empty(b).uniform_(0.08, 1.0, generator=g)
        log_r = torch.empty(b).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
        sw = (scale * log_r.exp()).sqrt().clamp(max=1.0)  # crop width as a fraction of the image
        sh = (scale / log_r.exp()).sqrt().clamp(max=1.0)
        cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - sw)
        cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - sh)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, cx, sh, cy
        x = _affine(x, theta, (th, tw))
    elif x.shape[-2:] != (th, tw):
        x = resize(x, (th, tw), spec.interpolation)
    if p := crop_padding:
        shift = torch.randint(0, 2 * p + 1, (2, b), generator=g)
        rows = (shift[0, :, None] + torch.arange(th))[:, None, :, None]  # (B, 1, H, 1) rows of the padded image
        cols = (shift[1, :, None] + torch.arange(tw))[:, None, None, :]
        x = F.pad(x, (p, p, p, p))[
            torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[:, None, None], rows, cols
        ]
    if aug != "none":
        flip = torch.rand(b, generator=g) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if aug in ("randaugment", "trivialaugment"):
        x = tensor_augment(x, aug, g)
    x = normalize(x, spec)
    if random_erasing:  # the rectangles of _erase_box, for the whole batch at once
        u = torch.rand(5, b, generator=g, dtype=torch.float64)
        area = th * tw * (0.02 + 0.31 * u[1])
        ratio = torch.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * u[2])
        eh = torch.round(torch.sqrt(area * ratio)).clamp(1, th)
        ew = torch.round(torch.sqrt(area / ratio)).clamp(1, tw)
        y0, x0 = torch.floor(u[3] * (th - eh + 1)), torch.floor(u[4] * (tw - ew + 1))
        rows, cols = torch.arange(th)[None, :, None], torch.arange(tw)[None, None, :]
        inside = (rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None])
        inside = inside & (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None])
        x = x.masked_fill((inside & (u[0] < random_erasing)[:, None, None])[:, None], 0.0)
    return x


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    mode = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
    kw = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
    return F.interpolate(x, size=size, mode=mode, **kw).clamp_(0, 1)


def tensor_eval_transform(x: torch.Tensor, spec: DataSpec, normalized: bool = True) -> torch.Tensor:
    """The evaluation resize + centre crop of :func:`eval_geometry` on a batch, then normalise."""
    th, tw = spec.img_size
    h, w = x.shape[-2:]
    nh, nw, y0, x0 = eval_geometry(h, w, spec)
    if (nh, nw) != (h, w):
        x = resize(x, (nh, nw), spec.interpolation)
    x = x[..., y0 : y0 + th, x0 : x0 + tw]
    return normalize(x, spec) if normalized else x


def array_eval_batch(images: np.ndarray, spec: DataSpec, normalized: bool = True) -> torch.Tensor:
    """uint8 (B, H, W[, C]) images of an in-memory data set -> the model's evaluation input (B, C, h, w)."""
    x = uint8_to_float(torch.from_numpy(np.ascontiguousarray(images)), spec.in_chans)
    return tensor_eval_transform(x, spec, normalized).contiguous()


def normalize(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


# --- mixup / cutmix with label smoothing --------------------------------------------------------------
def smooth_one_hot(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    return torch.full((y.shape[0], num_classes), off, device=y.device).scatter_(1, y.view(-1, 1), 1 - smoothing + off)


def mixup_cutmix(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, *, mixup: float, cutmix: float, smoothing: float, rng
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's batch mode: pair image i with image B-1-i; soft targets mix the smoothed one-hots.

    With both alphas > 0 each batch uses one of them (50/50). ``rng`` is a numpy Generator.
    """
    target = smooth_one_hot(y, num_classes, smoothing)
    if mixup <= 0 and cutmix <= 0:
        return x, target
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    lam = float(rng.beta(cutmix, cutmix) if use_cutmix else rng.beta(mixup, mixup))
    flipped = x.flip(0)
    if use_cutmix:
        h, w = x.shape[-2:]
        cut = math.sqrt(1 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    else:
        x = x * lam + flipped * (1 - lam)
    return x, target * lam + target.flip(0) * (1 - lam)
