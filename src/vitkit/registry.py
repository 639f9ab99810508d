"""Model registry with timm-style names: ``create_model("vit_base_patch16_224", num_classes=10)``."""

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vitkit.errors import VitkitError


@dataclass(frozen=True)
class Family:
    name: str
    config_cls: type
    model_cls: Callable[[Any], Any]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    config: Any  # a frozen dataclass instance of the family's config class
    hub_id: str | None = None  # default source for ``from_pretrained(name)``, e.g. "hf-hub:google/..."


_FAMILIES: dict[str, Family] = {}
_MODELS: dict[str, ModelEntry] = {}


def register_family(name: str, config_cls: type, model_cls: Callable[[Any], Any]) -> None:
    _FAMILIES[name] = Family(name, config_cls, model_cls)


def register_model(name: str, config: Any, *, hub_id: str | None = None) -> None:
    family = next((f.name for f in _FAMILIES.values() if isinstance(config, f.config_cls)), None)
    if family is None:
        raise TypeError(f"{type(config).__name__} is not the config of a registered family")
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = ModelEntry(name, family, config, hub_id)


def get_family(name: str) -> Family:
    if name not in _FAMILIES:
        raise VitkitError(f"unknown model family {name!r}; known: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def family_of_config(config: Any) -> Family:
    for f in _FAMILIES.values():
        if isinstance(config, f.config_cls):
            return f
    raise TypeError(f"{type(config).__name__} is not the config of a registered family")


def get_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `vitkit models` or list_models()"
        raise VitkitError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names, sorted; ``pattern`` is a shell wildcard such as ``"swin_*"``."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def replace_config(config: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` with an error that names the unknown or invalid fields."""
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise VitkitError(
            f"unknown {type(config).__name__} field(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as e:
        raise VitkitError(f"invalid {type(config).__name__}: {e}") from None


def build_model(config: Any, name: str | None = None) -> Any:
    model = family_of_config(config).model_cls(config)
    model.model_name = name
    return model


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
    named = {"num_classes": num_classes, "img_size": img_size, "in_chans": in_chans}
    named["drop_path_rate"] = drop_path_rate
    changes = {k: v for k, v in named.items() if v is not None} | overrides
    if pretrained:
        from vitkit.hub import from_pretrained

        source = entry.hub_id if pretrained is True else pretrained
        if source is None:
            raise VitkitError(f"{name} has no default pretrained weights; pass a hub id or a directory")
        model = from_pretrained(source, **changes)
        return model.train()
    config = replace_config(entry.config, **changes)
    return build_model(config, name)
