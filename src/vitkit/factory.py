"""``create_model``: a registered name -> a model, with random weights or the weights of any source.

The registry (:mod:`vitkit.models.registry`) only stores names and configs; building with pretrained weights needs the
loaders of :mod:`vitkit.hub`, so the factory sits above both.
"""

from collections.abc import Sequence
from typing import Any

from vitkit.errors import VitkitError
from vitkit.hub import from_pretrained
from vitkit.models.features import FeatureModel
from vitkit.models.registry import get_entry, model_from_config, replace_config


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
    ``pretrained`` takes anything :func:`vitkit.from_pretrained` takes, or ``True`` for the registered default hub
    id; the model stays in train mode so it is ready to fine-tune. ``features_only=True`` returns a
    :class:`~vitkit.models.features.FeatureModel`: its forward gives the NCHW maps of the levels in ``out_indices``
    (ViT blocks, Swin / CvT stages; default: every stage, or ViT's last three blocks), ``feature_info`` their
    channels and reductions.
    """
    entry = get_entry(name)
    named = {"num_classes": num_classes, "img_size": img_size, "in_chans": in_chans, "drop_path_rate": drop_path_rate}
    changes = {k: v for k, v in named.items() if v is not None} | overrides
    if out_indices is not None and not features_only:
        raise VitkitError("out_indices: only with features_only=True")
    if pretrained:
        source = entry.hub_id if pretrained is True else pretrained
        if source is None:
            raise VitkitError(f"{name} has no default pretrained weights; pass a hub id or a directory")
        model = from_pretrained(source, family=entry.family, **changes).train()
    else:
        model = model_from_config(replace_config(entry.config, **changes), name)
    return FeatureModel(model, out_indices) if features_only else model
