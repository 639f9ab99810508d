"""Classification metrics from predictions, in plain torch (no scikit-learn at run time).

Conventions follow scikit-learn: the confusion matrix has true classes in rows and predictions in
columns; a precision or recall whose denominator is zero counts as 0; macro-F1 is the unweighted mean
of the per-class F1 over every class (also classes that never occur, which then score 0).
"""

from dataclasses import dataclass, field

import torch


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, ``cm[true, pred]``."""
    preds, targets = preds.reshape(-1).long().cpu(), targets.reshape(-1).long().cpu()
    if preds.shape != targets.shape:
        raise ValueError(f"{preds.numel()} predictions for {targets.numel()} targets")
    idx = targets * num_classes + preds
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """How many targets are among the k highest logits, for each k (k larger than the classes counts all)."""
    maxk = min(max(ks), logits.shape[-1])
    top = logits.topk(maxk, dim=-1).indices  # (B, maxk)
    hit = top == targets.reshape(-1, 1)
    return {k: int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in ks}


@dataclass
class ClassificationReport:
    confusion: torch.Tensor  # (K, K), rows = true class
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    topk_accuracy: dict[int, float] = field(default_factory=dict)

    def to_dict(self, class_names: list[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(len(self.support))]
        per_class = [
            {"class": i, "name": names[i], "precision": p, "recall": r, "f1": f, "support": s}
            for i, (p, r, f, s) in enumerate(zip(self.precision, self.recall, self.f1, self.support, strict=True))
        ]
        return {
            "num_samples": int(sum(self.support)),
            "top1": self.accuracy,
            **{f"top{k}": v for k, v in sorted(self.topk_accuracy.items()) if k != 1},
            "macro_precision": self.macro_precision,
            "macro_recall": self.macro_recall,
            "macro_f1": self.macro_f1,
            "per_class": per_class,
            "confusion_matrix": self.confusion.tolist(),
        }


def classification_report(cm: torch.Tensor, topk: dict[int, float] | None = None) -> ClassificationReport:
    """Per-class precision / recall / F1 and their macro averages from a confusion matrix."""
    cm = cm.double()
    tp = cm.diagonal()
    predicted = cm.sum(dim=0)  # column sums
    actual = cm.sum(dim=1)  # row sums
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    total = float(cm.sum())
    return ClassificationReport(
        confusion=cm.long(),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=[int(v) for v in actual.tolist()],
        accuracy=float(tp.sum()) / total if total else 0.0,
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        topk_accuracy=dict(topk or {}),
    )
