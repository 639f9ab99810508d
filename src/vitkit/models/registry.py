"""The registry of families and timm-style model names; each model file registers its own on import.

``vitkit.create_model(name)`` (:mod:`vitkit.factory`) builds from it; this module only stores and finds.
"""

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


def model_from_config(config: Any, name: str | None = None) -> Any:
    """The model a config describes, with freshly initialised weights."""
    model = family_of_config(config).model_cls(config)
    model.model_name = name
    return model


def parse_overrides(text: str) -> dict[str, Any]:
    """'depth=2,embed_dim=64,global_pool=avg' -> {'depth': 2, 'embed_dim': 64, 'global_pool': 'avg'}.

    Values are Python literals (numbers, tuples such as ``depths=(2,2,6,2)``, booleans); a bare word is a string.
    """
    import ast

    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in _split_top_level(text))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise VitkitError(f"model overrides: expected key=value, got {part!r}")
        try:
            out[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            out[key.strip()] = value.strip()  # a bare word is a string
    return out


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets, so 'depths=(2,2,6,2),embed_dim=96' works."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts
