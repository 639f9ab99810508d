"""Building blocks that are truly identical across the three families."""

from vitkit.layers.attention import AttentionMap, RecordsAttention, attention, get_attention_maps
from vitkit.layers.drop_path import DropPath, drop_path
from vitkit.layers.fused import can_fuse, linear
from vitkit.layers.mlp import Mlp

__all__ = [
    "AttentionMap",
    "DropPath",
    "Mlp",
    "RecordsAttention",
    "attention",
    "can_fuse",
    "drop_path",
    "get_attention_maps",
    "linear",
]
