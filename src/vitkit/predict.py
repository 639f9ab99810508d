"""Classify image files: paths, folders or glob patterns -> top-k classes with their names.

Every file is read on its own, so one unreadable file gives an error for that file and the others still
get their answers. Images are prepared the way the model's ``data_config`` says (the evaluation
pipeline: resize the shorter side to size / crop_pct, centre crop, normalise with the model's mean/std).
"""

import glob
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vitkit.errors import VitkitError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm")
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass
class Prediction:
    path: str
    topk: list[tuple[int, str, float]] = field(default_factory=list)  # (class index, name, probability)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "predictions": [{"class": i, "name": n, "probability": p} for i, n, p in self.topk],
        }


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[Prediction]]:
    """Files, folders (searched recursively for images) and glob patterns -> file list, in the given order.

    Inputs that match nothing come back as failed predictions, so they are reported like a bad file.
    """
    files: list[str] = []
    missing: list[Prediction] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                missing.append(Prediction(item, error=f"folder has no image files ({', '.join(IMAGE_EXTENSIONS)})"))
            files.extend(found)
        elif path.is_file():
            files.append(str(path))
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(os.path.expanduser(item), recursive=True) if os.path.isfile(p))
            if not found:
                missing.append(Prediction(item, error="pattern matches no files"))
            files.extend(found)
        else:
            missing.append(Prediction(item, error="no such file or directory"))
    seen: set[str] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return unique, missing


def load_image(path: str | os.PathLike, data_config: dict[str, Any]) -> torch.Tensor:
    """Read one image and prepare it as the model's evaluation pipeline does: (C, H, W) float."""
    in_chans = data_config["input_size"][0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse, don't just warn
            with Image.open(path) as im:
                im.load()
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # alpha over white
                    im = Image.alpha_composite(background, rgba)
                im = im.convert("L" if in_chans == 1 else "RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise VitkitError(f"refused: {e}") from None
    except Exception as e:  # UnidentifiedImageError, truncated data, OSError ...
        raise VitkitError(f"cannot read image ({type(e).__name__}: {e})") from None
    return prepare_image(im, data_config)


def prepare_image(im: Image.Image, data_config: dict[str, Any], normalize: bool = True) -> torch.Tensor:
    """The evaluation pipeline on a PIL image already in the model's mode (L or RGB): (C, H, W) float."""
    in_chans, height, width = data_config["input_size"]
    crop_pct = float(data_config.get("crop_pct") or 1.0)
    resample = _RESAMPLE.get(str(data_config.get("interpolation", "bicubic")), Image.Resampling.BICUBIC)
    # resize so the centre crop of (height, width) covers crop_pct of the shorter side
    scale = max(height, width) / crop_pct / min(im.size)
    new_w, new_h = max(width, round(im.size[0] * scale)), max(height, round(im.size[1] * scale))
    if (new_w, new_h) != im.size:
        im = im.resize((new_w, new_h), resample)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    im = im.crop((left, top, left + width, top + height))
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)  # (C, H, W)
    if in_chans == 3 and x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    if not normalize:
        return x.contiguous()
    mean = torch.tensor(data_config["mean"], dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.tensor(data_config["std"], dtype=torch.float32).reshape(-1, 1, 1)
    return (x - mean) / std


def class_name(model: Any, index: int) -> str:
    names = getattr(model, "class_names", None)
    return str(names[index]) if names and index < len(names) else str(index)


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    inputs: Sequence[str],
    *,
    topk: int = 5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> list[Prediction]:
    """Top-k predictions for every image that ``inputs`` name; failures carry ``error`` instead."""
    if topk < 1:
        raise VitkitError(f"topk must be >= 1 (got {topk})")
    files, failed = expand_inputs(inputs)
    model.eval().to(device)
    data_config = model.data_config
    results: dict[str, Prediction] = {}
    batch: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        x = torch.stack([t for _, t in batch]).to(device)
        probs = model(x).float().softmax(dim=-1).cpu()
        k = min(topk, probs.shape[-1])
        values, indices = probs.topk(k, dim=-1)
        for (path, _), vals, idxs in zip(batch, values, indices, strict=True):
            results[path] = Prediction(
                path, [(int(i), class_name(model, int(i)), float(v)) for v, i in zip(vals, idxs, strict=True)]
            )
        batch.clear()

    for path in files:
        try:
            batch.append((path, load_image(path, data_config)))
        except VitkitError as e:
            results[path] = Prediction(path, error=str(e))
        if len(batch) >= batch_size:
            flush()
    flush()
    return failed + [results[p] for p in files]


def format_table(predictions: Iterable[Prediction]) -> str:
    """An aligned table: the file, then 'name probability' for each of the top k (errors as one cell)."""
    preds = list(predictions)
    k = max((len(p.topk) for p in preds), default=0)
    rows = [["file", *(f"top-{i + 1}" for i in range(k))]]
    for p in preds:
        if p.error is not None:
            rows.append([p.path, f"ERROR: {p.error}"])
        else:
            rows.append([p.path, *(f"{n} {v:.1%}" for _, n, v in p.topk)])
    widths = [max(len(r[c]) for r in rows if c < len(r)) for c in range(k + 1)]
    return "\n".join("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(r)).rstrip() for r in rows)
