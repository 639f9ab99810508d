"""The three families; importing this package registers every model.

Each family's file holds its config, its modules in the order of the study note, the model and its registered
names. Layout: ``config`` (the shared config vocabulary) <- ``base`` (the uniform model API) <- the families, all
registering into ``registry``.
"""

from vitkit.models.base import VisionModel
from vitkit.models.config import ModelConfig
from vitkit.models.cvt import CvT, CvTConfig
from vitkit.models.registry import get_entry, list_models, model_from_config, replace_config
from vitkit.models.swin import SwinConfig, SwinTransformer
from vitkit.models.vit import VisionTransformer, ViTConfig

__all__ = [
    "CvT",
    "CvTConfig",
    "ModelConfig",
    "SwinConfig",
    "SwinTransformer",
    "ViTConfig",
    "VisionModel",
    "VisionTransformer",
    "get_entry",
    "list_models",
    "model_from_config",
    "replace_config",
]
