"""Evaluate a classifier on a data set: logits -> metrics, confusion matrix, misclassified examples, report.

The images go through the evaluation pipeline the model's ``data_config`` describes (resize, centre crop,
normalise). In-memory data sets (IDX, CIFAR) are converted a whole batch at a time as tensors; image files
are decoded one by one. ``tta="flip"`` (test-time augmentation) averages the class probabilities of each image and
its mirror image: it costs a second forward pass and suits models trained with flips; the report keeps the top-1
without it too, so the two can be told apart.
"""

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitkit.data.transforms import DataSpec, array_eval_batch, eval_image
from vitkit.errors import VitkitError
from vitkit.eval.metrics import ClassificationReport, classification_report, confusion_matrix, topk_correct
from vitkit.utils.io import atomic_write_json


@dataclass
class EvalResult:
    report: ClassificationReport
    class_names: list[str]
    preds: torch.Tensor  # (N,)
    targets: torch.Tensor  # (N,)
    confidences: torch.Tensor  # (N,) softmax probability of the prediction
    seconds: float
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def top1(self) -> float:
        return self.report.accuracy

    @property
    def macro_f1(self) -> float:
        return self.report.macro_f1

    def to_dict(self) -> dict[str, Any]:
        n = len(self.targets)
        return {
            "data": self.source,
            **self.report.to_dict(self.class_names),
            "seconds": round(self.seconds, 3),
            "images_per_second": round(n / self.seconds, 1) if self.seconds > 0 else None,
            **self.extra,
        }


def _file_batch(dataset: Any, indices: range | list[int], spec: DataSpec, normalize: bool = True):
    xs, ys = [], []
    for i in indices:
        img, label = dataset[i]
        xs.append(eval_image(img, spec, normalize))
        ys.append(label)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def load_images(dataset: Any, indices: list[int], spec: DataSpec) -> torch.Tensor:
    """The model-sized images at ``indices``, un-normalised, values in [0, 1] (for figures)."""
    if not indices:
        return torch.zeros(0, spec.in_chans, *spec.img_size)
    if isinstance(getattr(dataset, "images", None), np.ndarray):
        return array_eval_batch(dataset.images[np.asarray(indices)], spec, normalized=False)
    return _file_batch(dataset, indices, spec, normalize=False)[0]


def load_dataset(source: str, split: str, *, val_fraction: float = 0.0, seed: int = 0) -> Any:
    """``vitkit.data.build_dataset`` (the training engine's source strings); give the training run's
    ``val_fraction`` and ``seed`` so that split 'val' is the part that run held out."""
    from vitkit.data import build_dataset

    return build_dataset(source, split, val_fraction=val_fraction, seed=seed)


def run_split_settings(checkpoint: str | os.PathLike, data: str) -> tuple[float, int]:
    """(val_fraction, seed) of the training run that wrote ``checkpoint`` (a run folder or its best/ or last/) when
    it trained on ``data``; (0.0, 0) otherwise, the data set's default split."""
    path = Path(checkpoint).expanduser()
    for folder in (path, path.parent):
        try:
            cfg = json.loads((folder / "train_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict) and cfg.get("data") == data and not cfg.get("val_data"):
            fraction, seed = cfg.get("val_fraction", 0.0), cfg.get("seed", 0)
            if isinstance(fraction, (int, float)) and isinstance(seed, int) and 0 <= fraction < 1:
                return float(fraction), seed
        return 0.0, 0
    return 0.0, 0


def check_classes(model: Any, dataset: Any) -> list[str]:
    """The class names to report. A head whose size, or whose recorded class names, do not match the data set's
    classes is an error: with the same count but other names (a model trained on another data set, or on folders
    sorted differently) every score would silently compare unrelated labels."""
    classes = [str(c) for c in getattr(dataset, "classes", []) or []]
    source = getattr(dataset, "source", "") or "being evaluated"
    if classes and model.num_classes != len(classes):
        raise VitkitError(
            f"the model predicts {model.num_classes} classes but the data set "
            f"{source} has {len(classes)} ({', '.join(classes[:5])}...)"
        )
    names = [str(n) for n in getattr(model, "class_names", None) or []]
    if classes and len(names) == len(classes) and names != classes:
        differ = [i for i, (a, b) in enumerate(zip(names, classes, strict=True)) if a != b]
        i = differ[0]
        raise VitkitError(
            f"the model was trained on other classes than the data set {source} has: class {i} is {names[i]!r} "
            f"for the model but {classes[i]!r} in the data ({len(differ)} of {len(classes)} names differ); "
            "evaluate on data with the classes the model was trained on"
        )
    if not classes:
        classes = names if len(names) == model.num_classes else [str(i) for i in range(model.num_classes)]
    return classes


TTA_CHOICES = ("none", "flip")


def _scores(model: torch.nn.Module, x: torch.Tensor, tta: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores to rank the classes by, the plain logits): the logits themselves, or with ``tta="flip"`` the mean of
    the softmax over the image and its mirror image."""
    logits = model(x).float().cpu()
    if tta == "none":
        return logits, logits
    flipped = model(x.flip(-1)).float().cpu()
    return (logits.softmax(dim=-1) + flipped.softmax(dim=-1)) / 2, logits


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    max_samples: int = 0,
    source: str = "",
    tta: str = "none",
) -> EvalResult:
    """Run ``model`` over ``dataset`` (items ``(PIL image, label)``, optional ``.images`` uint8 array)."""
    if batch_size < 1:
        raise VitkitError(f"batch_size must be >= 1 (got {batch_size})")
    if tta not in TTA_CHOICES:
        raise VitkitError(f"tta must be one of {', '.join(TTA_CHOICES)} (got {tta!r})")
    class_names = check_classes(model, dataset)
    model.eval().to(device)
    spec = DataSpec.from_model(model)
    n = len(dataset) if not max_samples else min(max_samples, len(dataset))
    if n == 0:
        raise VitkitError(f"data set {source or getattr(dataset, 'source', '')} is empty")
    in_memory = isinstance(getattr(dataset, "images", None), np.ndarray)
    targets_all = np.asarray(dataset.targets) if in_memory else None
    k = model.num_classes
    cm = torch.zeros(k, k, dtype=torch.long)
    top = {1: 0, 5: 0}
    plain_correct = 0  # top-1 of the plain forward pass, reported beside the TTA score
    preds, targets, confs = [], [], []
    start = time.perf_counter()
    for lo in range(0, n, batch_size):
        hi = min(n, lo + batch_size)
        if in_memory:
            x = array_eval_batch(dataset.images[lo:hi], spec)
            y = torch.from_numpy(targets_all[lo:hi].astype(np.int64))
        else:
            x, y = _file_batch(dataset, range(lo, hi), spec)
        scores, logits = _scores(model, x.to(device), tta)
        if not torch.isfinite(scores).all():
            raise VitkitError(f"the model produced NaN/inf logits on images {lo}..{hi - 1}; the weights are broken")
        prob = logits.softmax(dim=-1) if tta == "none" else scores
        conf, pred = prob.max(dim=-1)
        cm += confusion_matrix(pred, y, k)
        for kk, v in topk_correct(scores, y, (1, 5)).items():
            top[kk] += v
        plain_correct += int((logits.argmax(dim=-1) == y).sum())
        preds.append(pred)
        targets.append(y)
        confs.append(conf)
    seconds = time.perf_counter() - start
    report = classification_report(cm, {kk: v / n for kk, v in top.items()})
    extra = {} if tta == "none" else {"tta": tta, "top1_without_tta": plain_correct / n}
    return EvalResult(
        report=report,
        class_names=class_names,
        preds=torch.cat(preds),
        targets=torch.cat(targets),
        confidences=torch.cat(confs),
        seconds=seconds,
        source=source or str(getattr(dataset, "source", "")),
        extra=extra,
    )


def most_confident_mistakes(result: EvalResult, limit: int) -> list[int]:
    """Indices of misclassified images, the most confident mistakes first (the most telling ones)."""
    wrong = (result.preds != result.targets).nonzero().flatten()
    order = result.confidences[wrong].argsort(descending=True)
    return wrong[order][:limit].tolist()


def write_eval_outputs(
    result: EvalResult,
    output_dir: str | Path,
    *,
    model: Any = None,
    dataset: Any = None,
    num_misclassified: int = 32,
    title: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """report.json, confusion_matrix.png and misclassified.png in ``output_dir``; returns the report dict.

    Without matplotlib the figures are skipped with a note in the report (the numbers are still written).
    """
    from vitkit.eval.plots import PlotsUnavailable, plot_confusion_matrix, plot_misclassified

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = result.to_dict() | (extra or {})
    files = {"report": str(out / "report.json")}
    try:
        files["confusion_matrix"] = str(
            plot_confusion_matrix(result.report.confusion, out / "confusion_matrix.png", result.class_names, title)
        )
        if model is not None and dataset is not None and num_misclassified > 0:
            idx = most_confident_mistakes(result, num_misclassified)
            images = load_images(dataset, idx, DataSpec.from_model(model))
            files["misclassified"] = str(
                plot_misclassified(
                    images,
                    result.targets[idx].tolist(),
                    result.preds[idx].tolist(),
                    out / "misclassified.png",
                    result.class_names,
                    result.confidences[idx].tolist(),
                    title=f"{title + ': ' if title else ''}most confident mistakes (true → predicted)",
                )
            )
    except PlotsUnavailable as e:
        report["plots"] = str(e)
    report["files"] = files
    atomic_write_json(out / "report.json", report)
    return report


def format_report(report: dict[str, Any], per_class: bool = True) -> str:
    """Human-readable summary of a report dict."""
    lines = [
        f"data: {report.get('data', '')}   images: {report['num_samples']}",
        f"top-1 {report['top1']:.2%}   top-5 {report.get('top5', math.nan):.2%}   macro-F1 {report['macro_f1']:.4f}   "
        f"macro precision {report['macro_precision']:.4f}   macro recall {report['macro_recall']:.4f}",
    ]
    if "top1_without_tta" in report:
        lines.append(f"test-time augmentation: {report['tta']} (top-1 without it {report['top1_without_tta']:.2%})")
    if per_class:
        width = max(5, *(len(str(c["name"])) for c in report["per_class"]))
        lines.append(f"{'class'.ljust(width)}  precision  recall     f1  support")
        for c in report["per_class"]:
            lines.append(
                f"{str(c['name']).ljust(width)}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:.4f}  "
                f"{c['support']:7d}"
            )
    return "\n".join(lines)
