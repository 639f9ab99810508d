"""Load weights from Hugging Face, timm or vitkit checkpoints; save vitkit checkpoints.

``from_pretrained(source)`` accepts
  * a local directory in transformers format (``config.json`` with ``model_type``),
  * a local directory in timm's hub format (``config.json`` with ``architecture``),
  * a directory written by :func:`save_pretrained` (``config.json`` with a ``vitkit`` section),
  * a training run directory (its ``final/``, else ``best/``, else ``last/`` checkpoint),
  * ``hf-hub:org/name[@revision]`` (downloaded with ``huggingface_hub``),
  * a registered model name that has a default hub id (``vit_base_patch16_224``).
Weights come from ``model.safetensors`` (also sharded) or ``pytorch_model.bin``; pickles are only read with
``torch.load(weights_only=True)``, which refuses to run code; the error names the refused global and never suggests
turning that protection off. Every problem with a file is a :class:`~vitkit.errors.CheckpointError` naming the file
and the key or field. A bare weights file (the papers' releases: ``.pth``, ``.bin``, ``.safetensors``) names no
architecture; ``create_model(name, pretrained=file)`` loads it (:func:`read_weights_file`).
``save_pretrained(model, dir, format=...)`` writes vitkit's, transformers' or timm's format.
"""

import dataclasses
import json
import os
import pickle
import re
import warnings
from pathlib import Path, PurePath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vitkit.convert import HF_CONVERTERS, TIMM_CONVERTERS, VITKIT_UPGRADES, to_timm, to_transformers
from vitkit.errors import CheckpointError, VitkitError
from vitkit.models.features import FeatureModel
from vitkit.models.registry import family_of_config, get_entry, get_family, model_from_config, replace_config
from vitkit.utils.io import atomic_save_safetensors, atomic_write_json
from vitkit.version import __version__

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
RUN_SUBDIRS = ("final", "best", "last")  # what `vitkit train` writes, in order of preference
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
SAVE_FORMATS = ("vitkit", "transformers", "timm")


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
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0")
        hint = (
            "HF_HUB_OFFLINE is set, so only the local cache was searched and the repository is not in it"
            if offline
            else "if this machine is offline, set HF_HUB_OFFLINE=1 to use the local cache"
        )
        raise VitkitError(
            f"could not fetch 'hf-hub:{repo}' ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}). "
            f"Download the repository elsewhere (huggingface-cli download {repo_id}) and pass the local directory; "
            f"{hint}."
        ) from None


def resolve_source(source: str | os.PathLike) -> Path:
    """Turn a source string into a local directory holding config.json and weights."""
    s = str(source)
    if s.startswith("hf-hub:"):
        return _download(s[len("hf-hub:") :])
    path = Path(s).expanduser()
    if is_weights_file(path):
        raise CheckpointError(
            f"{path}: a bare weights file names no architecture; load it with create_model(name, pretrained=file) "
            "(command line: --model NAME)"
        )
    if path.is_file():
        path = path.parent  # a weights file or config.json: use the directory around it
    if path.is_dir():
        if (path / CONFIG_NAME).is_file():
            return path
        for sub in RUN_SUBDIRS:  # a training run: its final, best or last checkpoint
            if (path / sub / CONFIG_NAME).is_file():
                return path / sub
        raise CheckpointError(
            f"{path}: no {CONFIG_NAME} here, nor a {', '.join(f'{s}/' for s in RUN_SUBDIRS)} checkpoint inside "
            "(pass a checkpoint directory, a training output_dir, or hf-hub:org/name)"
        )
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
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: expected a JSON object at the top level, got {type(value).__name__}")
    return value


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        with warnings.catch_warnings():  # torch's note on the pickle protocol; a refusal is reported below
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's refusal of a global or call: it never runs anything
        raise CheckpointError(
            f"{path}: refused to load: the pickle holds something other than tensors ({_refusal(str(e))}). "
            "vitkit reads pickles only as plain tensors; convert the file to safetensors where you trust it"
        ) from None
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(
            f"{path}: cannot read weights ({type(e).__name__}: {_refusal(str(e))}); is the file complete?"
        ) from None
    except Exception as e:  # any other unpickler refusal ends here too, never executes anything
        raise CheckpointError(
            f"{path}: refused to load: the pickle holds something other than tensors "
            f"({type(e).__name__}: {_refusal(str(e))}). vitkit reads pickles only as plain tensors; convert the file "
            "to safetensors where you trust it"
        ) from None


def _refusal(message: str) -> str:
    """What torch refused, in one line, without torch's advice to turn its safety off (which vitkit never does)."""
    found = re.search(r"GLOBAL (\S+)", message)
    if found:
        return f"refused global {found.group(1)}"
    found = re.search(r"unrecognized function (.+?)(?: which belongs|$)", message, re.MULTILINE)
    if found:
        return f"refused call of {found.group(1)}"
    message = message.split("WeightsUnpickler error:")[-1]
    lines = [ln.strip() for ln in message.splitlines() if ln.strip() and "weights_only" not in ln]
    return lines[0] if lines else "not a plain mapping of tensors"


def _shard_names(index_path: Path, directory: Path) -> list[Path]:
    """The shard files a ``*.index.json`` names, each a plain file inside ``directory``."""
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        names = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"{index_path}: not a readable JSON index ({e})") from None
    except (KeyError, TypeError, AttributeError):
        raise CheckpointError(f"{index_path}: expected an object with a 'weight_map' of tensor -> file name") from None
    shards = []
    for name in names:
        if not isinstance(name, str) or PurePath(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{index_path}: weight_map names {name!r}, not a file inside {directory}")
        shards.append(directory / name)
    return shards


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    for name in _WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            sd: dict[str, torch.Tensor] = {}
            for shard in _shard_names(path, directory):
                sd.update(_load_file(shard))
            return sd
        sd = _load_file(path)
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):  # a training-style pickle
            sd = sd["state_dict"]
        if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
            raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
        return sd
    raise CheckpointError(f"{directory}: no weights file (looked for {', '.join(_WEIGHT_FILES)})")


def is_weights_file(path: str | os.PathLike) -> bool:
    """A weights file on its own: not the ``model.safetensors`` / ``pytorch_model.bin`` of a checkpoint directory
    (one with a ``config.json``), which :func:`from_pretrained` reads as a whole."""
    path = Path(path).expanduser()
    if not path.is_file() or not path.name.endswith(WEIGHT_SUFFIXES):
        return False
    return not (path.name in _WEIGHT_FILES and (path.parent / CONFIG_NAME).is_file())


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A bare state dict, unwrapped from the ``{'model': ...}`` / ``{'state_dict': ...}`` / ``{'module': ...}`` of
    training scripts and from DistributedDataParallel's ``module.`` prefix; pickles only with weights_only=True."""
    path = Path(path).expanduser()
    sd = _load_file(path)
    for key in ("model", "state_dict", "module"):  # the official Swin release: {'model': ...}
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors (or one under 'model')")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def config_from_vitkit(meta: Any, path: Path) -> Any:
    """The config a vitkit ``config.json`` records (older field names upgraded), or an error naming the field."""
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: the 'vitkit' section needs a 'family' and a 'config' object")
    try:
        family = get_family(str(meta.get("family")))
    except VitkitError as e:
        raise CheckpointError(f"{path}: {e}") from None
    raw = dict(meta["config"])
    if str(meta.get("version", "0.1.0")).startswith("0.1.") and family.name in VITKIT_UPGRADES:
        raw = VITKIT_UPGRADES[family.name](raw)
    fields = {f.name for f in dataclasses.fields(family.config_cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise CheckpointError(f"{path}: unknown {family.name} config field(s) {', '.join(map(str, unknown))}")
    try:
        return family.config_cls(**raw)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid {family.name} config: {e}") from None


def _convert(directory: Path, cfg_json: dict[str, Any]) -> tuple[Any, dict[str, torch.Tensor], Any, str | None]:
    """Pick the format from config.json (before touching the weights), then read and convert them."""
    path = directory / CONFIG_NAME
    if "vitkit" in cfg_json:
        meta = cfg_json["vitkit"]
        config = config_from_vitkit(meta, path)
        names = cfg_json.get("class_names")
        name = meta.get("model_name")
        return config, read_weights(directory), names, name if isinstance(name, str) else None
    if "model_type" in cfg_json:
        mt = cfg_json["model_type"]
        if mt not in HF_CONVERTERS:
            raise CheckpointError(f"{path}: transformers model_type {mt!r} is not one of {sorted(HF_CONVERTERS)}")
        convert, name = HF_CONVERTERS[mt], None
    elif "architecture" in cfg_json:
        arch = str(cfg_json["architecture"])
        convert = next((f for p, f in TIMM_CONVERTERS.items() if arch.startswith(p)), None)
        if convert is None:
            raise CheckpointError(f"{path}: timm architecture {arch!r} is not a ViT/Swin/CvT vitkit knows")
        name = arch.split(".")[0]
    else:
        raise CheckpointError(f"{path}: no 'model_type', 'architecture' or 'vitkit' key")
    try:
        cfg, sd, names = convert(cfg_json, read_weights(directory))
    except CheckpointError as e:
        raise CheckpointError(str(e) if str(directory) in str(e) else f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a field of the wrong kind in config.json
        raise CheckpointError(f"{path}: unexpected content ({type(e).__name__}: {e})") from None
    return cfg, sd, names, name


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


def _registered_entry(source: str | os.PathLike) -> Any:
    """The registry entry when ``source`` is a registered name rather than a path or hub id."""
    s = str(source)
    if s.startswith("hf-hub:") or Path(s).expanduser().exists():
        return None
    try:
        return get_entry(s)
    except VitkitError:
        return None


def _class_names(names: Any, num_classes: int) -> list[str] | None:
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    return None


def from_pretrained(
    source: str | os.PathLike,
    *,
    num_classes: int | None = None,
    img_size: int | tuple[int, int] | None = None,
    in_chans: int | None = None,
    family: str | None = None,
    **overrides: Any,
) -> Any:
    """Build the model a checkpoint describes and load its weights; returns it in eval mode.

    ``family`` ("vit", "swin", "cvt"): refuse a checkpoint of another family before anything is built.
    ``num_classes`` different from the checkpoint's re-initialises the head (with a warning);
    ``img_size`` resizes position embeddings / relative-position tables; ``in_chans`` adapts the
    stem filters (3 -> 1 sums them). Other keyword arguments override config fields that do not
    change the weights' shapes (``drop_path_rate=0.1``).
    """
    directory = resolve_source(source)
    cfg, sd, class_names, name = _convert(directory, read_config(directory))
    if family is not None and family_of_config(cfg).name != family:
        raise VitkitError(
            f"{source} holds a {family_of_config(cfg).name} model, not a {family} one; pass a {family} checkpoint, "
            "or the model name that matches the checkpoint"
        )
    registered = _registered_entry(source)
    if registered is not None and registered.family == family_of_config(cfg).name:
        # a hub config may not record the resolution (transformers' CvT never does): trust the registry's
        cfg = replace_config(cfg, img_size=registered.config.img_size, crop_pct=registered.config.crop_pct)
        name = registered.name
    changes = {
        k: v
        for k, v in {"num_classes": num_classes, "img_size": img_size, "in_chans": in_chans}.items()
        if v is not None
    } | overrides
    new_head = num_classes is not None and num_classes != cfg.num_classes
    cfg = replace_config(cfg, **changes)
    model = model_from_config(cfg, name)
    if new_head:
        head = {k for k in model.state_dict() if k.startswith("head.")}
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
        if num_classes:  # num_classes=0 asks for the backbone: nothing to train
            warnings.warn(
                f"{source}: classifier re-initialised for {num_classes} classes "
                f"({', '.join(sorted(head)) or 'no head'}); train it before use",
                stacklevel=2,
            )
        class_names = None
    sd = model.adapt_state_dict(sd)
    if new_head:
        own = model.state_dict()
        sd.update({k: own[k] for k in own if k.startswith("head.")})
    load_state_dict_checked(model, sd, str(source))
    model.class_names = _class_names(class_names, cfg.num_classes)
    return model.eval()


# --- writing -------------------------------------------------------------------------------------
def checkpoint_config(model: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
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


def save_pretrained(
    model: Any,
    directory: str | os.PathLike,
    *,
    format: str = "vitkit",
    extra: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (each atomically) that ``from_pretrained`` reads back.

    ``format="vitkit"``: vitkit's config (``extra`` is added to it). ``"transformers"``: what
    ``AutoModelForImageClassification`` / ``AutoImageProcessor.from_pretrained(directory)`` load (ViT, Swin, CvT;
    also ``preprocessor_config.json``). ``"timm"``: timm's hub format, which ``timm.create_model("local-dir:" +
    directory, pretrained=True)`` loads (ViT, Swin). A configuration the other library cannot reproduce exactly is a
    :class:`~vitkit.errors.CheckpointError` that says why. ``state_dict`` replaces ``model.state_dict()`` (the full
    weights of a model whose parameters are sharded over processes, gathered beforehand).
    """
    if format not in SAVE_FORMATS:
        raise VitkitError(f"format: must be one of {', '.join(SAVE_FORMATS)}, got {format!r}")
    if isinstance(model, FeatureModel):  # a features_only backbone: the model inside, without its classifier
        model = model.model
    directory = Path(directory)
    state = dict(state_dict if state_dict is not None else model.state_dict())
    if format == "vitkit":
        files = {CONFIG_NAME: checkpoint_config(model, extra)}
    elif format == "transformers":
        files, state = to_transformers(model.config, state, getattr(model, "class_names", None))
    else:
        files, state = to_timm(
            model.config, state, getattr(model, "class_names", None), getattr(model, "model_name", None)
        )
    atomic_save_safetensors(directory / WEIGHTS_NAME, state, metadata={"format": "pt"})
    for name, content in files.items():
        atomic_write_json(directory / name, content)
    return directory
