"""Intermediate features of every family, with timm's meaning: which levels, their channels and strides, the
``features_only`` backbone that dense heads (detection, segmentation) read.

A *level* is a ViT block or a Swin / CvT stage. Each family's ``forward_trunk`` returns the outputs of the levels
asked for as tokens (B, prefix + H*W, C) with their grid (H, W); :meth:`VisionModel.forward_intermediates
<vitkit.models.base.VisionModel.forward_intermediates>` turns them into NCHW maps or NLC tokens with
:func:`format_level`. Indices follow :func:`feature_take_indices`: ``None`` = every level, an int ``n`` = the last
``n``, a sequence = those levels (negative counts from the end).
"""

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from vitkit.errors import VitkitError

OUTPUT_FORMATS = ("NCHW", "NLC")


def feature_take_indices(num_levels: int, indices: int | Sequence[int] | None = None) -> tuple[list[int], int]:
    """(levels to take, in the order given; the largest of them), as timm's function of the same name."""
    if indices is None:
        indices = num_levels
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise VitkitError(f"indices: last-n {indices} is out of range (1 to {num_levels})")
        take = list(range(num_levels - indices, num_levels))
    else:
        take = []
        for i in indices:
            idx = num_levels + int(i) if int(i) < 0 else int(i)
            if not 0 <= idx < num_levels:
                raise VitkitError(f"indices: level {i} is out of range ({-num_levels} to {num_levels - 1})")
            take.append(idx)
        if not take:
            raise VitkitError("indices: name at least one level")
    return take, max(take)


def format_level(tokens: torch.Tensor, grid: tuple[int, int], output_fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, P + H*W, C) -> (map, prefix tokens (B, P, C)); the map is (B, C, H, W) for NCHW, (B, H*W, C) for NLC."""
    B, n, C = tokens.shape
    h, w = grid
    prefix, spatial = tokens[:, : n - h * w], tokens[:, n - h * w :]
    if output_fmt == "NCHW":
        spatial = spatial.reshape(B, h, w, C).permute(0, 3, 1, 2).contiguous()
    return spatial, prefix


def check_output_fmt(output_fmt: str) -> None:
    if output_fmt not in OUTPUT_FORMATS:
        raise VitkitError(f"output_fmt: must be one of {', '.join(OUTPUT_FORMATS)}, got {output_fmt!r}")


class FeatureInfo:
    """Channels, reduction (input pixels per feature-map pixel) and module name of each level, timm-style.

    ``len()`` and indexing cover every level; ``channels()``, ``reduction()`` and ``module_name()`` without an
    index list the selected ``out_indices`` (every level on a model, the chosen ones on a ``features_only`` one).
    """

    def __init__(self, levels: list[dict[str, Any]], out_indices: Sequence[int] | None = None) -> None:
        self.levels = [dict(level) for level in levels]
        self.out_indices = tuple(range(len(levels))) if out_indices is None else tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.levels[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.levels[idx][key]
        return [self.levels[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def get_dicts(self, idx: Sequence[int] | None = None) -> list[dict[str, Any]]:
        return [dict(self.levels[i]) for i in (self.out_indices if idx is None else idx)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.levels[i]

    def __len__(self) -> int:
        return len(self.levels)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.levels)

    def __repr__(self) -> str:
        return f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()})"


class FeatureModel(nn.Module):
    """A backbone for dense heads: ``forward(x)`` returns the NCHW maps of the levels in ``out_indices``.

    Built by ``create_model(name, features_only=True, out_indices=...)``. The classifier is removed and levels
    after the last one asked for are not run. ``norm=True`` applies the final norm where timm does (every ViT
    block; the last stage of Swin and CvT).
    """

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None, norm: bool = False) -> None:
        super().__init__()
        if not hasattr(model, "forward_intermediates"):
            raise VitkitError(f"features_only: {type(model).__name__} has no forward_intermediates")
        if out_indices is None:
            out_indices = model.default_out_indices
        take, _ = feature_take_indices(len(model.feature_info), out_indices)
        model.reset_classifier(0)
        self.model = model
        self.out_indices = tuple(sorted(set(take)))  # the levels in the order the trunk produces them
        self.norm = norm
        self.feature_info = FeatureInfo(model.feature_info.levels, self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(
            x, self.out_indices, norm=self.norm, stop_early=True, intermediates_only=True
        )

    @property
    def data_config(self) -> dict[str, Any]:
        return self.model.data_config

    @property
    def config(self) -> Any:
        return self.model.config

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.model.set_grad_checkpointing(enabled)
