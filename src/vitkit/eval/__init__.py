"""Evaluation: metrics, reports and figures for a trained classifier; model size and cost.

``evaluate(model, dataset)`` gives top-1/top-5, macro-F1, per-class precision/recall and the confusion matrix;
``write_eval_outputs(result, out_dir, model=..., dataset=...)`` writes report.json and the PNGs.
"""

from vitkit.eval.complexity import ModelStats, count_flops, describe, model_stats, registered_model_stats
from vitkit.eval.evaluate import EvalResult, evaluate, write_eval_outputs
from vitkit.eval.metrics import ClassificationReport, classification_report, confusion_matrix, topk_correct

__all__ = [
    "ClassificationReport",
    "EvalResult",
    "ModelStats",
    "classification_report",
    "confusion_matrix",
    "count_flops",
    "describe",
    "evaluate",
    "model_stats",
    "registered_model_stats",
    "topk_correct",
    "write_eval_outputs",
]
