"""Explanations of a classifier's decision: heat maps (rollout, gradient-weighted rollout, Grad-CAM) for every
family, their faithfulness measured, and figures of the study note's mechanisms.

    exp = vitkit.explain(model, ["shoe.png"], method="grad-rollout", target="Sneaker")
    exp.heatmaps      # (B, H, W) in [0, 1] at the model input's size
    exp.on_original(0)  # the same on the image file as it was
"""

from vitkit.explanations.core import (
    CLASS_SPECIFIC,
    DEFAULT_METHOD,
    METHODS,
    Explanation,
    check_model,
    class_index,
    explain,
    heatmap_on_original,
    normalise,
    peak,
)

__all__ = [
    "CLASS_SPECIFIC",
    "DEFAULT_METHOD",
    "METHODS",
    "Explanation",
    "check_model",
    "class_index",
    "explain",
    "heatmap_on_original",
    "normalise",
    "peak",
]
