"""vitkit: ViT, Swin Transformer and CvT from first principles in PyTorch.

Layers, bottom to top (each imports only from the ones below it; ``tests/test_layering.py`` keeps it so):
``errors`` / ``settings`` / ``utils`` / ``version`` -> ``kernels`` -> ``layers`` -> ``models`` -> ``convert`` ->
``hub`` / ``factory`` -> ``data`` -> ``engine`` -> ``eval`` -> ``train`` -> ``export`` / ``predict`` / ``explanations``
-> ``bench`` -> ``cli``. This file only gathers the public API (``vitkit.explain`` is the function of
``vitkit.explanations``).
"""

from vitkit.engine import is_optimized, optimize
from vitkit.errors import CheckpointError, VitkitError
from vitkit.explanations import Explanation, explain
from vitkit.factory import create_model
from vitkit.hub import from_pretrained, save_pretrained
from vitkit.layers.attention import AttentionMap, get_attention_maps, record_attention
from vitkit.models.registry import list_models
from vitkit.version import __version__

__all__ = [
    "AttentionMap",
    "CheckpointError",
    "Explanation",
    "VitkitError",
    "__version__",
    "create_model",
    "explain",
    "from_pretrained",
    "get_attention_maps",
    "is_optimized",
    "list_models",
    "optimize",
    "record_attention",
    "save_pretrained",
]
