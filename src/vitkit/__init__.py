"""vitkit: ViT, Swin Transformer and CvT from first principles in PyTorch."""

__version__ = "0.1.0"

from vitkit import models  # noqa: F401  (registers every model)
from vitkit.errors import CheckpointError, VitkitError
from vitkit.hub import from_pretrained, save_pretrained
from vitkit.layers.attention import AttentionMap, get_attention_maps
from vitkit.registry import create_model, list_models

__all__ = [
    "AttentionMap",
    "CheckpointError",
    "VitkitError",
    "__version__",
    "create_model",
    "from_pretrained",
    "get_attention_maps",
    "list_models",
    "save_pretrained",
]
