"""The server's one call into :mod:`vitkit.explanations`: an image -> its explanation drawn over it, as PNG bytes.

``vitkit.explanations`` is imported only here and only when an explanation is asked for; where it is not installed,
:class:`ExplainUnavailable` makes ``POST /v1/explain`` answer 501 and the page says so. The call runs in the model
thread, between batches (it needs autograd and records attention, which the optimized model does on its reference
path).
"""

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

DEFAULT_METHOD = "integrated-gradients"  # = vitkit.explanations.DEFAULT_METHOD, which is not imported until used
# a dark-to-bright ramp (black, purple, red, orange, pale yellow): relevance 0 -> 1
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64)
ALPHA = 0.55  # how much of the colour covers the image where relevance is 1


UNAVAILABLE = "explanations are not available: this vitkit has no vitkit.explanations (predictions still work)"


class ExplainUnavailable(Exception):
    """This vitkit has no ``vitkit.explanations``."""


def _explain_function() -> Any:
    try:
        from vitkit.explanations import explain
    except ModuleNotFoundError as e:
        if e.name is not None and (e.name == "vitkit" or e.name.startswith("vitkit.explanations")):
            raise ExplainUnavailable(UNAVAILABLE) from None
        raise
    return explain


def explain_available() -> bool:
    try:
        _explain_function()
    except ExplainUnavailable:
        return False
    return True


def explain_png(model: torch.nn.Module, image: Image.Image, method: str = DEFAULT_METHOD, target: Any = None) -> bytes:
    """``image`` with the heat map of ``method`` for ``target`` (None: the predicted class) laid over it, as PNG."""
    explain = _explain_function()
    explanation = explain(model, image, method=method, target=target)
    return overlay_png(image, explanation.on_original(0))


def overlay_png(image: Image.Image, heat: torch.Tensor) -> bytes:
    """Colour ``heat`` (h, w) in [0, 1] (NaN: outside what the model saw, dimmed) over ``image`` as an RGB PNG."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    h = heat.detach().float().cpu().numpy()
    seen = np.isfinite(h)
    v = np.clip(np.nan_to_num(h, nan=0.0), 0.0, 1.0)
    position = v * (len(_RAMP) - 1)
    low = np.floor(position).astype(int).clip(0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    colour = _RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac
    alpha = (ALPHA * np.sqrt(v))[..., None]
    out = np.where(seen[..., None], rgb * (1 - alpha) + colour * alpha, rgb * 0.35)
    buffer = io.BytesIO()
    Image.fromarray(out.round().clip(0, 255).astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
