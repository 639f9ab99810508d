"""``create_model``: a registered name -> a model, with random weights or the weights of any source.

The registry (:mod:`vitkit.models.registry`) only stores names and configs; building with pretrained weights needs the
loaders of :mod:`vitkit.hub`, so the factory sits above both.
"""

from typing import Any

from vitkit.errors import VitkitError
from vitkit.hub import checkpoint_family, from_pretrained
from vitkit.models.registry import get_entry, model_from_config, replace_config


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    in_chans: int | None = None,
    drop_path_rate: float | None = None,
    pretrained: str | bool | None = None,
    **overrides: Any,
) -> Any:
    """Build a registered model with randomly initialised weights (or pretrained ones).

    Keyword overrides change fields of the family's config (``depth=2``, ``embed_dim=64``, ...).
    ``pretrained`` takes anything :func:`vitkit.from_pretrained` takes, or ``True`` for the
    registered default hub id; the model stays in train mode so it is ready to fine-tune.
    """
    entry = get_entry(name)
    named = {"num_classes": num_classes, "img_size": img_size, "in_chans": in_chans, "drop_path_rate": drop_path_rate}
    changes = {k: v for k, v in named.items() if v is not None} | overrides
    if pretrained:
        source = entry.hub_id if pretrained is True else pretrained
        if source is None:
            raise VitkitError(f"{name} has no default pretrained weights; pass a hub id or a directory")
        family = checkpoint_family(source)  # before the overrides of one family meet the config of another
        if family is None or family == entry.family:
            model = from_pretrained(source, **changes)
            family = model.family
        if family != entry.family:
            raise VitkitError(
                f"{source} holds a {family} model, but {name} is a {entry.family}; pass a {entry.family} "
                "checkpoint, or the model name that matches the checkpoint"
            )
        return model.train()
    return model_from_config(replace_config(entry.config, **changes), name)
