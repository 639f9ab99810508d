"""Building blocks that are truly identical across the three families."""

from vitkit.layers.attention import AttentionMap, RecordsAttention, attention, get_attention_maps, record_attention
from vitkit.layers.drop_path import DropPath, drop_path, drop_path_rates
from vitkit.layers.mlp import Mlp

__all__ = [
    "AttentionMap",
    "DropPath",
    "Mlp",
    "RecordsAttention",
    "attention",
    "drop_path",
    "drop_path_rates",
    "get_attention_maps",
    "record_attention",
]
