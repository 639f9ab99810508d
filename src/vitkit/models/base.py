"""What every vitkit model shares: the timm-style API around a family's own forward_features."""

import dataclasses
from typing import Any

import torch
from torch import nn

from vitkit.layers.attention import AttentionMap, get_attention_maps

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


def to_2tuple(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair (height, width), got {x!r}")
        return int(x[0]), int(x[1])
    return int(x), int(x)


class VisionModel(nn.Module):
    """Base class: ``forward = forward_head(forward_features(x))``.

    Subclasses set ``family``, build themselves from ``config`` (a frozen dataclass) and implement
    ``forward_features``, ``forward_head``, ``reset_classifier``, ``no_weight_decay`` and
    ``layer_id`` (for layer-wise learning-rate decay). Checkpoint loaders call ``adapt_state_dict``
    so each family can resize what depends on the input size (position embeddings, bias tables).
    """

    family: str = ""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        self.grad_checkpointing = False
        self.model_name: str | None = None
        self.class_names: list[str] | None = None

    # --- the uniform API -------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one (``num_classes=0`` removes it)."""
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.class_names = None

    def get_classifier(self) -> nn.Module:
        return self.head

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.grad_checkpointing = enabled

    def get_attention_maps(self, x: torch.Tensor) -> list[AttentionMap]:
        """Attention weights of every layer for input ``x``; see :class:`vitkit.layers.AttentionMap`."""
        return get_attention_maps(self, x)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def num_features(self) -> int:
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Parameter names that should not be weight-decayed besides norms and biases."""
        return set()

    def layer_id(self, param_name: str) -> int:
        """Depth index of a parameter for layer-wise lr decay: 0 = stem, num_layers() + 1 = head."""
        raise NotImplementedError

    def num_layers(self) -> int:
        raise NotImplementedError

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Make a checkpoint of the same family fit this model's input size / channels."""
        return state_dict

    @property
    def data_config(self) -> dict[str, Any]:
        """What a data pipeline needs to feed this model like its weights expect."""
        c = self.config
        return {
            "input_size": (c.in_chans, *to_2tuple(c.img_size)),
            "mean": tuple(c.mean),
            "std": tuple(c.std),
            "interpolation": c.interpolation,
            "crop_pct": c.crop_pct,
        }

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
