"""The three families; importing this module registers every model."""

from vitkit.models import cvt, vit  # noqa: F401  (registers)
from vitkit.models.base import VisionModel
from vitkit.models.cvt import CvT, CvTConfig
from vitkit.models.swin import SwinConfig, SwinTransformer  # registers the Swin models
from vitkit.models.vit import VisionTransformer, ViTConfig

__all__ = ["CvT", "CvTConfig", "SwinConfig", "SwinTransformer", "ViTConfig", "VisionModel", "VisionTransformer"]
