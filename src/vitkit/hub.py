"""Load weights from Hugging Face, timm or vitkit checkpoints; save vitkit checkpoints.

``from_pretrained(source)`` accepts
  * a local directory in transformers format (``config.json`` with ``model_type``),
  * a local directory in timm's hub format (``config.json`` with ``architecture``),
  * a directory written by :func:`save_pretrained` (``config.json`` with a ``vitkit`` section),
  * ``hf-hub:org/name[@revision]`` (downloaded with ``huggingface_hub``),
  * a registered model name that has a default hub id (``vit_base_patch16_224``).
Weights come from ``model.safetensors`` (also sharded) or ``pytorch_model.bin``; pickles are only read
with ``torch.load(weights_only=True)``, which refuses to run code.
"""

import dataclasses
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vitkit.convert import HF_CONVERTERS, TIMM_CONVERTERS
from vitkit.errors import CheckpointError, VitkitError
from vitkit.registry import build_model, family_of_config, get_entry, get_family, replace_config
from vitkit.utils.io import atomic_save_safetensors, atomic_write_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


# --- reading -------------------------------------------------------------------------------------
def _download(repo: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise VitkitError(
            f"'hf-hub:{repo}' needs huggingface_hub: pip install 'vitkit[hub]' "
            "(or download the repository yourself and pass its directory)"
        ) from None
    repo_id, _, revision = repo.partition("@")
    patterns = [CONFIG_NAME, "*.safetensors", "*.safetensors.index.json", "pytorch_model.bin*"]
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=patterns))
    except Exception as e:  # offline, unknown repo, gated repo: all end here
        raise VitkitError(
            f"could not fetch 'hf-hub:{repo}' ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}). "
            "If this machine is offline, download the repository elsewhere (huggingface-cli download "
            f"{repo_id}) and pass the local directory, or set HF_HUB_OFFLINE=1 to use the local cache."
        ) from None


def resolve_source(source: str | os.PathLike) -> Path:
    """Turn a source string into a local directory holding config.json and weights."""
    s = str(source)
    if s.startswith("hf-hub:"):
        return _download(s[len("hf-hub:") :])
    path = Path(s).expanduser()
    if path.is_file():
        path = path.parent  # a weights file or config.json: use the directory around it
    if path.is_dir():
        return path
    try:
        entry = get_entry(s)
    except VitkitError:
        raise VitkitError(f"{s!r} is neither a directory, a registered model name nor 'hf-hub:org/name'") from None
    if entry.hub_id is None:
        raise VitkitError(f"{s} has no default pretrained weights; pass a checkpoint directory or hub id")
    return resolve_source(entry.hub_id)


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_NAME} (need a transformers, timm or vitkit checkpoint)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {e}); is the file complete?") from None
    except Exception as e:  # an unpickler refusal ends here, never executes anything
        raise CheckpointError(f"{path}: refused to load ({type(e).__name__}: {e})") from None


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    for name in _WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            index = json.loads(path.read_text())
            sd: dict[str, torch.Tensor] = {}
            for shard in sorted(set(index["weight_map"].values())):
                sd.update(_load_file(directory / shard))
            return sd
        sd = _load_file(path)
        if "state_dict" in sd and isinstance(sd["state_dict"], dict):  # a training-style pickle
            sd = sd["state_dict"]
        return sd
    raise CheckpointError(f"{directory}: no weights file (looked for {', '.join(_WEIGHT_FILES)})")


def _config_from_vitkit(meta: dict[str, Any]) -> Any:
    family = get_family(meta["family"])
    fields = {f.name for f in dataclasses.fields(family.config_cls)}
    raw = meta["config"]
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise CheckpointError(f"checkpoint config has unknown {family.name} fields: {', '.join(unknown)}")
    # JSON turns tuples into lists; a frozen config wants them back (hashable, comparable)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return family.config_cls(**values)


def _convert(directory: Path, cfg_json: dict[str, Any]) -> tuple[Any, dict[str, torch.Tensor], Any, str | None]:
    """Pick the format from config.json (before touching the weights), then read and convert them."""
    if "vitkit" in cfg_json:
        meta = cfg_json["vitkit"]
        config = _config_from_vitkit(meta)
        return config, read_weights(directory), cfg_json.get("class_names"), meta.get("model_name")
    if "model_type" in cfg_json:
        mt = cfg_json["model_type"]
        if mt not in HF_CONVERTERS:
            raise CheckpointError(f"{directory}: transformers model_type {mt!r} is not one of {sorted(HF_CONVERTERS)}")
        cfg, sd, names = HF_CONVERTERS[mt](cfg_json, read_weights(directory))
        return cfg, sd, names, None
    if "architecture" in cfg_json:
        arch = cfg_json["architecture"]
        conv = next((f for p, f in TIMM_CONVERTERS.items() if arch.startswith(p)), None)
        if conv is None:
            raise CheckpointError(f"{directory}: timm architecture {arch!r} is not a ViT/Swin/CvT vitkit knows")
        cfg, sd, names = conv(cfg_json, read_weights(directory))
        return cfg, sd, names, arch.split(".")[0]
    raise CheckpointError(f"{directory / CONFIG_NAME}: no 'model_type', 'architecture' or 'vitkit' key")


def load_state_dict_checked(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with an error that lists every missing, unexpected or mis-shaped key."""
    own = model.state_dict()
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and own[k].shape != v.shape
    ]
    if shape_errors:
        raise CheckpointError(f"{source}: shape mismatch for " + "; ".join(shape_errors))
    result = model.load_state_dict(sd, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys: {', '.join(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys: {', '.join(result.unexpected_keys)}")
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not match the model; " + "; ".join(problems))


def from_pretrained(
    source: str | os.PathLike,
    *,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    in_chans: int | None = None,
    **overrides: Any,
) -> Any:
    """Build the model a checkpoint describes and load its weights; returns it in eval mode.

    ``num_classes`` different from the checkpoint's re-initialises the head (with a warning);
    ``img_size`` resizes position embeddings / relative-position tables; ``in_chans`` adapts the
    stem filters (3 -> 1 sums them). Other keyword arguments override config fields that do not
    change the weights' shapes (``drop_path_rate=0.1``).
    """
    directory = resolve_source(source)
    cfg, sd, class_names, name = _convert(directory, read_config(directory))
    changes = {
        k: v
        for k, v in {"num_classes": num_classes, "img_size": img_size, "in_chans": in_chans}.items()
        if v is not None
    } | overrides
    new_head = num_classes is not None and num_classes != cfg.num_classes
    cfg = replace_config(cfg, **changes)
    model = build_model(cfg, name)
    if new_head:
        head = {k for k in model.state_dict() if k.startswith("head.")}
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        warnings.warn(
            f"{source}: classifier re-initialised for {num_classes} classes ({', '.join(sorted(head)) or 'no head'}); "
            "train it before use",
            stacklevel=2,
        )
        class_names = None
    sd = model.adapt_state_dict(sd)
    if new_head:
        own = model.state_dict()
        sd.update({k: own[k] for k in own if k.startswith("head.")})
    load_state_dict_checked(model, sd, str(source))
    if class_names is not None and len(class_names) == cfg.num_classes:
        model.class_names = list(class_names)
    return model.eval()


# --- writing -------------------------------------------------------------------------------------
def checkpoint_config(model: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from vitkit import __version__

    family = family_of_config(model.config)
    return {
        "vitkit": {
            "version": __version__,
            "family": family.name,
            "model_name": getattr(model, "model_name", None),
            "config": dataclasses.asdict(model.config),
        },
        "class_names": getattr(model, "class_names", None),
        **(extra or {}),
    }


def save_pretrained(model: Any, directory: str | os.PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (each atomically) that ``from_pretrained`` reads back."""
    directory = Path(directory)
    state = {k: v for k, v in model.state_dict().items()}
    atomic_save_safetensors(directory / WEIGHTS_NAME, state, metadata={"format": "pt"})
    atomic_write_json(directory / CONFIG_NAME, checkpoint_config(model, extra))
    return directory
