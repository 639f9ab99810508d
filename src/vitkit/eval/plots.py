"""PNG figures: confusion matrix, misclassified examples, training curves.

matplotlib is an optional extra (``pip install 'vitkit[plots]'``). Figures are drawn on a
``matplotlib.figure.Figure`` with the Agg canvas, never through pyplot, so nothing depends on (or changes)
the user's interactive backend, and each PNG is written atomically.
"""

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vitkit.errors import VitkitError
from vitkit.utils.io import atomic_write

PLOTS_HINT = "plots need matplotlib: pip install 'vitkit[plots]'"


class PlotsUnavailable(VitkitError):
    """matplotlib is not installed; callers that can go on without plots catch this."""


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailable(PLOTS_HINT) from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    return path


def plot_confusion_matrix(
    cm: torch.Tensor, path: str | os.PathLike, class_names: Sequence[str] | None = None, title: str = ""
) -> Path:
    """Rows = true class, columns = prediction; colour = share of the row, text = count."""
    cm = torch.as_tensor(cm).long().cpu()
    k = cm.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    rows = cm.sum(dim=1, keepdim=True).clamp(min=1)
    share = (cm.double() / rows).numpy()
    size = max(4.0, 0.55 * k + 2.0)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if k <= 30:  # beyond that the numbers are unreadable
        for i in range(k):
            for j in range(k):
                n = int(cm[i, j])
                if n:
                    colour = "white" if share[i, j] > 0.5 else "black"
                    ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color=colour)
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = float(cm.diagonal().sum()) / max(1, int(cm.sum()))
    ax.set_title(f"{title + ' — ' if title else ''}confusion matrix (top-1 {acc:.2%})", fontsize=10)
    return _save(fig, path)


def plot_misclassified(
    images: torch.Tensor,
    targets: Sequence[int],
    preds: Sequence[int],
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    confidences: Sequence[float] | None = None,
    title: str = "",
) -> Path:
    """A grid of images (N, C, H, W) with values in [0, 1], each titled 'true -> predicted'."""
    n = len(targets)
    name = (lambda i: class_names[i]) if class_names else str
    cols = min(8, max(1, n))
    rows = max(1, math.ceil(n / cols))
    fig = _figure(1.6 * cols, 1.8 * rows + 0.4)
    if n == 0:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified examples", ha="center", va="center")
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        img = images[i].detach().float().clamp(0, 1).cpu()
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img[:3].permute(1, 2, 0).numpy())
        conf = f" {confidences[i]:.0%}" if confidences is not None else ""
        ax.set_title(f"{name(int(targets[i]))}\n→ {name(int(preds[i]))}{conf}", fontsize=7)
        ax.axis("off")
    fig.suptitle(title or "misclassified (true → predicted, confidence)", fontsize=9)
    return _save(fig, path)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (a run killed mid-write) is ignored."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_PANELS = (  # (title, test on a metric name)
    ("loss", lambda k: "loss" in k),
    ("accuracy", lambda k: "acc" in k or "top1" in k or "top5" in k or "f1" in k),
    ("learning rate", lambda k: k == "lr" or k.endswith("_lr") or k.startswith("lr")),
)
_KIND_KEYS = ("kind", "type", "event", "split", "phase")
_KIND_LABELS = {"train": "per step", "step": "per step", "epoch": "per epoch"}


def training_curves(records: list[dict[str, Any]]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Group metric series by panel: {panel: {label: (x, y)}}.

    Works on any JSONL of flat records: the x axis is ``step`` when present, else ``epoch``; a record's
    kind (``kind``/``type``/``event``/...: per-step vs per-epoch records) becomes part of the label.
    """
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {title: {} for title, _ in _PANELS}
    for rec in records:
        kind = next((str(rec[k]) for k in _KIND_KEYS if isinstance(rec.get(k), str)), "")
        if _is_num(rec.get("step")):
            x = float(rec["step"])
        elif _is_num(rec.get("epoch")):
            x = float(rec["epoch"])
        else:
            continue
        for key, value in rec.items():
            if key in ("step", "epoch") or key.startswith("best_") or not _is_num(value):
                continue
            for title, test in _PANELS:
                if test(key.lower()):
                    label = f"{key} ({_KIND_LABELS.get(kind, kind)})" if kind else key
                    xs, ys = panels[title].setdefault(label, ([], []))
                    xs.append(x)
                    ys.append(float(value))
                    break
    lr = panels["learning rate"]
    if len(lr) > 1:  # the same schedule logged per step and per epoch: keep the denser series
        keep = max(lr, key=lambda k: len(lr[k][0]))
        panels["learning rate"] = {keep: lr[keep]}
    return {t: s for t, s in panels.items() if s}


def plot_training_curves(metrics_jsonl: str | os.PathLike, path: str | os.PathLike, title: str = "") -> Path:
    """Loss, accuracy and learning rate against step from a run's metrics.jsonl."""
    metrics_jsonl = Path(metrics_jsonl)
    if not metrics_jsonl.is_file():
        raise VitkitError(f"{metrics_jsonl}: no such metrics file")
    panels = training_curves(read_jsonl(metrics_jsonl))
    if not panels:
        raise VitkitError(f"{metrics_jsonl}: no step/epoch records with loss, accuracy or lr to plot")
    fig = _figure(5.0 * len(panels), 3.8)
    for i, (name, series) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for label, (xs, ys) in sorted(series.items()):
            few = len(xs) <= 50
            ax.plot(xs, ys, label=label, marker="o" if few else None, markersize=3, linewidth=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        values = [y for _, ys in series.values() for y in ys]
        if name == "loss" and min(values) > 0 and max(values) / min(values) > 10:
            ax.set_yscale("log")  # only when the loss spans more than a decade
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
