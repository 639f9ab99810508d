"""``create_model``: a registered name -> a model, with random weights or the weights of any source.

The registry (:mod:`vitkit.models.registry`) only stores names and configs; building with pretrained weights needs the
loaders of :mod:`vitkit.hub`, so the factory sits above both.
"""

import os
import warnings
from collections.abc import Sequence
from typing import Any

from vitkit.convert import RELEASE_CONVERTERS
from vitkit.errors import CheckpointError, VitkitError
from vitkit.hub import from_pretrained, is_weights_file, load_state_dict_checked, read_weights_file
from vitkit.models.features import FeatureModel
from vitkit.models.registry import ModelEntry, get_entry, model_from_config, replace_config


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    in_chans: int | None = None,
    drop_path_rate: float | None = None,
    pretrained: str | bool | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    **overrides: Any,
) -> Any:
    """Build a registered model with randomly initialised weights (or pretrained ones).

    Keyword overrides change fields of the family's config (``depth=2``, ``embed_dim=64``, ...).
    ``pretrained`` takes anything :func:`vitkit.from_pretrained` takes, ``True`` for the registered default hub
    id, or a bare weights file (``.pth`` / ``.pt`` / ``.bin`` / ``.safetensors``: the papers' official Swin and
    CvT releases, timm's or vitkit's files) loaded into this architecture; the model stays in train mode so it
    is ready to fine-tune. ``features_only=True`` returns a :class:`~vitkit.models.features.FeatureModel`: its
    forward gives the NCHW maps of the levels in ``out_indices`` (ViT blocks, Swin / CvT stages; default: every
    stage, or ViT's last three blocks), ``feature_info`` their channels and reductions.
    """
    entry = get_entry(name)
    named = {"num_classes": num_classes, "img_size": img_size, "in_chans": in_chans, "drop_path_rate": drop_path_rate}
    changes = {k: v for k, v in named.items() if v is not None} | overrides
    if out_indices is not None and not features_only:
        raise VitkitError("out_indices: only with features_only=True")
    if features_only:
        changes["num_classes"] = 0  # a backbone: the feature maps, no classifier
    if pretrained and pretrained is not True and is_weights_file(pretrained):
        model = load_weights_file(pretrained, entry, **changes).train()
    elif pretrained:
        source = entry.hub_id if pretrained is True else pretrained
        if source is None:
            raise VitkitError(f"{name} has no default pretrained weights; pass a hub id, a directory or a file")
        model = from_pretrained(source, family=entry.family, **changes).train()
    else:
        model = model_from_config(replace_config(entry.config, **changes), name)
    return FeatureModel(model, out_indices) if features_only else model


def load_weights_file(path: str | os.PathLike, entry: ModelEntry, **changes: Any) -> Any:
    """A bare state dict (official Swin / CvT release, timm's or transformers' file, vitkit's weights) loaded into the
    registered architecture ``entry`` with ``changes``; returns the model in eval mode.

    The classifier's size comes from the file unless ``num_classes`` is given: a different one (or a file without a
    classifier) starts a fresh head, with a warning. Mismatched keys are listed like :func:`vitkit.from_pretrained`.
    """
    sd = read_weights_file(path)
    try:
        sd = RELEASE_CONVERTERS[entry.family](sd, replace_config(entry.config, **changes))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    file_classes = sd["head.weight"].shape[0] if "head.weight" in sd else 0
    num_classes = changes.pop("num_classes", file_classes)
    model = model_from_config(replace_config(entry.config, num_classes=num_classes, **changes), entry.name)
    if num_classes != file_classes:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        if num_classes:
            what = f"has {file_classes} classes" if file_classes else "has no classifier"
            warnings.warn(f"{path} {what}: classifier initialised for {num_classes} classes; train it", stacklevel=3)
    sd = model.adapt_state_dict(sd)
    if num_classes != file_classes:
        sd.update({k: v for k, v in model.state_dict().items() if k.startswith("head.")})
    load_state_dict_checked(model, sd, str(path))
    return model.eval()
