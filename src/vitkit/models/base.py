"""What every vitkit model shares: the timm-style API around a family's own forward_features."""

import dataclasses
import warnings
from typing import Any

import torch
from torch import nn

from vitkit.errors import CheckpointError
from vitkit.layers.attention import AttentionMap, record_attention
from vitkit.models.config import ModelConfig, to_2tuple
from vitkit.models.features import FeatureInfo, check_output_fmt, feature_take_indices, format_level


def adapt_input_conv(weight: torch.Tensor, in_chans: int, name: str = "stem") -> torch.Tensor:
    """Fit a (O, I, kh, kw) stem filter to ``in_chans`` input channels.

    RGB -> grayscale sums the filters, so a gray image (R = G = B) gives the same activation as before.
    Grayscale -> RGB repeats and divides by 3 for the same reason; other counts cycle the channels.
    """
    have = weight.shape[1]
    if have == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    if have == 1:
        return weight.repeat(1, in_chans, 1, 1) / in_chans
    if have != 3:
        raise CheckpointError(f"{name}: cannot adapt {have} input channels to {in_chans}")
    warnings.warn(f"{name}: adapting 3 input channels to {in_chans} by cycling RGB filters", stacklevel=2)
    reps = -(-in_chans // 3)
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (3 / in_chans)


class VisionModel(nn.Module):
    """Base class: ``forward = forward_head(forward_features(x))``.

    Subclasses set ``family`` and ``stem_key`` (the first convolution's weight), build themselves from ``config``
    (a frozen :class:`~vitkit.models.config.ModelConfig`) and implement ``forward_trunk`` (the levels: blocks or
    stages), ``forward_features``, ``forward_head``, ``feature_info``, ``no_weight_decay`` and ``layer_id`` (for
    layer-wise learning-rate decay). Checkpoint loaders call ``adapt_state_dict`` so each family can resize what
    depends on the input size (position embeddings, bias tables).
    """

    family: str = ""
    stem_key: str = ""
    norm_every_level = False  # does the final norm fit every level (ViT) or only the last one (Swin, CvT)?

    def __init__(self, config: ModelConfig) -> None:
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

    def forward_trunk(
        self, x: torch.Tensor, take: frozenset[int] = frozenset(), stop: int | None = None
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, tuple[int, int]]]]:
        """Everything before the final norm, over the first ``stop`` levels (all by default). Returns the last
        level's output in the family's layout and, for each level in ``take``, its tokens (B, prefix + H*W, C) and
        grid (H, W)."""
        raise NotImplementedError

    @property
    def feature_info(self) -> FeatureInfo:
        """Channels, reduction and module of every level (ViT blocks, Swin / CvT stages)."""
        raise NotImplementedError

    @property
    def default_out_indices(self) -> int | tuple[int, ...]:
        """The levels ``features_only`` returns by default: every stage (timm's choice)."""
        return tuple(range(len(self.feature_info)))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        *,
        norm: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
        stop_early: bool = False,
    ) -> Any:
        """timm's ``forward_intermediates``: the outputs of the levels in ``indices`` (None: all; n: the last n).

        Each is (B, C, H, W) for ``output_fmt="NCHW"`` or (B, H*W, C) for ``"NLC"``, prefix tokens ([CLS]) removed,
        or a pair (map, prefix tokens (B, P, C)) with ``return_prefix_tokens``. ``norm`` applies the final norm where
        it fits (every ViT block; the last Swin / CvT stage). ``stop_early`` runs no level after the last one
        taken. Returns the list, or (final features, list): the final features are ``forward_features(x)``
        (not normed when a Swin / CvT run stopped before the last stage, as in timm).
        """
        check_output_fmt(output_fmt)
        n = len(self.feature_info)
        take, last = feature_take_indices(n, indices)
        x, levels = self.forward_trunk(x, frozenset(take), last + 1 if stop_early else None)
        out = []
        for i, (tokens, grid) in zip(sorted(set(take)), levels, strict=True):
            if norm and (self.norm_every_level or i == n - 1):
                tokens = self.norm(tokens)
            spatial, prefix = format_level(tokens, grid, output_fmt)
            out.append((spatial, prefix) if return_prefix_tokens else spatial)
        if intermediates_only:
            return out
        if self.norm_every_level or not stop_early or last == n - 1:
            x = self.norm(x)
        return x, out

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
        for m in self.modules():  # the model and the stages that run the blocks (Swin, CvT)
            if hasattr(m, "grad_checkpointing"):
                m.grad_checkpointing = enabled

    def get_attention_maps(self, x: torch.Tensor) -> list[AttentionMap]:
        """Attention weights of every layer for input ``x``; see :class:`vitkit.layers.AttentionMap`."""
        return self.forward_with_attention(x)[0]

    def forward_with_attention(self, x: torch.Tensor) -> tuple[list[AttentionMap], torch.Tensor]:
        """The attention weights of every layer and the logits, from one forward pass (explanations need both)."""
        return record_attention(self, x)

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
        """Make a checkpoint of the same family fit this model's input size and channels (the stem here;
        families resize what depends on the input size)."""
        sd = dict(state_dict)
        if self.stem_key in sd:
            sd[self.stem_key] = adapt_input_conv(sd[self.stem_key], self.config.in_chans, self.stem_key)
        return sd

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
