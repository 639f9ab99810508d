"""Classify image files: paths, folders or glob patterns -> top-k classes with their names.

Every file is read on its own, so one unreadable file gives an error for that file and the others still get their
answers. Images go through the one evaluation pipeline (:func:`vitkit.data.transforms.eval_image`, the same tensors
as ``vitkit eval`` and training validation make for the same file), as the model's ``data_config`` says.
"""

import glob
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitkit.data.images import IMAGE_EXTENSIONS, open_image
from vitkit.data.transforms import DataSpec, eval_image
from vitkit.errors import VitkitError


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
        path = os.path.expanduser(item)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as e:  # e.g. a parent folder that may not be read
            missing.append(Prediction(item, error=f"cannot access: {e.strerror}"))
            continue
        if mode is not None and stat.S_ISDIR(mode):
            found, unreadable = _images_under(path)
            missing.extend(Prediction(d, error=f"cannot read folder: {err}") for d, err in unreadable)
            if not found and not unreadable:
                missing.append(Prediction(item, error=f"folder has no image files ({', '.join(IMAGE_EXTENSIONS)})"))
            files.extend(found)
        elif mode is not None and stat.S_ISREG(mode):
            files.append(path)
        elif mode is not None:
            missing.append(Prediction(item, error="not a regular file (a FIFO, socket or device is never opened)"))
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            if not found:
                missing.append(Prediction(item, error="pattern matches no files"))
            files.extend(found)
        else:
            missing.append(Prediction(item, error="no such file or directory"))
    seen: set[str] = set()
    unique = [f for f in files if not (f in seen or seen.add(f))]
    return unique, missing


def _images_under(folder: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Image files below ``folder`` (sorted), and the sub-folders that could not be read with the reason."""
    found: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for root, _, names in os.walk(folder, onerror=lambda e: unreadable.append((e.filename, e.strerror))):
        for name in names:
            full = os.path.join(root, name)
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and os.path.isfile(full):
                found.append(full)
    return sorted(found), unreadable


def load_image(path: str | os.PathLike, spec: DataSpec) -> torch.Tensor:
    """Read one image file and prepare it as the model's evaluation pipeline does: (C, H, W) float."""
    return eval_image(open_image(path), spec)


def class_name(model: Any, index: int) -> str:
    names = getattr(model, "class_names", None)
    return str(names[index]) if names and index < len(names) else str(index)


NON_FINITE = "the model produced NaN/inf logits; its weights are broken"


def top_classes(model: Any, logits: torch.Tensor, topk: int) -> list[list[tuple[int, str, float]] | None]:
    """Per row of ``logits``: the top-k (class index, name, probability), or None where a logit is NaN/inf."""
    logits = logits.float().cpu()
    finite = torch.isfinite(logits).all(dim=-1)
    values, indices = logits.softmax(dim=-1).topk(min(topk, logits.shape[-1]), dim=-1)
    return [
        [(int(i), class_name(model, int(i)), float(v)) for v, i in zip(vals, idxs, strict=True)] if ok else None
        for vals, idxs, ok in zip(values, indices, finite, strict=True)
    ]


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
    spec = DataSpec.from_model(model)
    results: dict[str, Prediction] = {}
    batch: list[tuple[str, torch.Tensor]] = []

    def flush() -> None:
        if not batch:
            return
        x = torch.stack([t for _, t in batch]).to(device)
        for (path, _), top in zip(batch, top_classes(model, model(x), topk), strict=True):
            results[path] = Prediction(path, top) if top is not None else Prediction(path, error=NON_FINITE)
        batch.clear()

    for path in files:
        try:
            batch.append((path, load_image(path, spec)))
        except VitkitError as e:
            results[path] = Prediction(path, error=str(e).removeprefix(f"{path}: "))
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
