"""Helpers shared by the checkpoint converters of all families."""

import dataclasses
import math
from typing import Any

import torch

from vitkit.errors import CheckpointError, VitkitError
from vitkit.models.config import to_2tuple
from vitkit.models.registry import replace_config


def class_names_from_hf(hf_config: dict) -> list[str] | None:
    id2label = hf_config.get("id2label")
    if not id2label:
        return None
    names = [str(id2label.get(str(i), id2label.get(i, i))) for i in range(len(id2label))]
    if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None  # transformers' placeholders carry no information
    return names


def take(state_dict: dict[str, torch.Tensor], key: str, source: str = "checkpoint") -> torch.Tensor:
    """Pop a key or fail with the key's name; used when a converter needs a tensor to exist."""
    if key not in state_dict:
        raise CheckpointError(f"{source}: missing key {key!r}")
    return state_dict.pop(key)


# transformers' names inside one encoder layer -> timm's (ViT and Swin use the same layout)
HF_LAYER_PAIRS = {
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
}


def hf_encoder_layer(
    sd: dict[str, torch.Tensor], src: str, attn_src: str, dst: str, qkv_bias: bool
) -> dict[str, torch.Tensor]:
    """Pop one transformers encoder layer (``src``; separate query/key/value under ``attn_src``) from ``sd``
    and return it in timm's names under ``dst``, with q, k, v fused into one ``attn.qkv`` Linear."""
    qkv = ("query", "key", "value")
    out = {dst + "attn.qkv.weight": torch.cat([take(sd, f"{attn_src}{n}.weight") for n in qkv])}
    if qkv_bias:
        out[dst + "attn.qkv.bias"] = torch.cat([take(sd, f"{attn_src}{n}.bias") for n in qkv])
    for s, d in HF_LAYER_PAIRS.items():
        out[dst + d + ".weight"] = take(sd, src + s + ".weight")
        out[dst + d + ".bias"] = take(sd, src + s + ".bias")
    return out


def num_labels(hf_config: dict) -> int:
    """How many classes a transformers config's head has (0 for a backbone)."""
    return len(hf_config["id2label"]) if hf_config.get("id2label") else hf_config.get("num_labels", 0)


def hf_encoder_layer_from(
    sd: dict[str, torch.Tensor], src: str, dst: str, attn_dst: str, qkv_bias: bool
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`hf_encoder_layer`: pop one layer in timm's names (``src``) and return it in
    transformers' names under ``dst``, with the fused ``attn.qkv`` split into query, key and value."""
    out = {}
    for n, w in zip(("query", "key", "value"), take(sd, src + "attn.qkv.weight").chunk(3), strict=True):
        out[f"{attn_dst}{n}.weight"] = w.contiguous()
    if qkv_bias:
        for n, b in zip(("query", "key", "value"), take(sd, src + "attn.qkv.bias").chunk(3), strict=True):
            out[f"{attn_dst}{n}.bias"] = b.contiguous()
    for d, s in HF_LAYER_PAIRS.items():
        out[dst + d + ".weight"] = take(sd, src + s + ".weight")
        out[dst + d + ".bias"] = take(sd, src + s + ".bias")
    return out


def class_names_from_timm(timm_config: dict) -> list[str] | None:
    """timm writes ``label_names`` at the top level (a list or a dict index -> name), older timm in pretrained_cfg."""
    names = timm_config.get("label_names") or (timm_config.get("pretrained_cfg") or {}).get("label_names")
    if isinstance(names, dict):
        names = [str(names.get(str(i), names.get(i, i))) for i in range(len(names))]
    return [str(n) for n in names] if names else None


# --- vitkit -> transformers / timm: what their configs carry besides the architecture -----------------------------
# config fields transformers' configs do not have; vitkit writes them as "vitkit_fields" and reads them back
HF_EXTRA_FIELDS = ("img_size", "mean", "std", "interpolation", "crop_pct", "pos_embed_antialias")
PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values


def hf_label_fields(class_names: list[str] | None, num_classes: int) -> dict[str, Any]:
    names = class_names if class_names and len(class_names) == num_classes else None
    names = names or [f"LABEL_{i}" for i in range(num_classes)]
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def hf_extra_fields(cfg: Any) -> dict[str, Any]:
    values = dataclasses.asdict(cfg)
    return {k: list(values[k]) if isinstance(values[k], tuple) else values[k] for k in HF_EXTRA_FIELDS if k in values}


def with_hf_extra_fields(cfg: Any, hf_config: dict) -> Any:
    """``cfg`` with the fields a vitkit-written transformers config.json keeps in ``vitkit_fields``."""
    extra = hf_config.get("vitkit_fields")
    if not isinstance(extra, dict):
        return cfg
    known = {f.name for f in dataclasses.fields(cfg)}
    changes = {
        k: tuple(v) if isinstance(v, list) else v for k, v in extra.items() if k in HF_EXTRA_FIELDS and k in known
    }
    try:
        return replace_config(cfg, **changes)
    except VitkitError as e:
        raise CheckpointError(f"vitkit_fields: {e}") from None


def hf_preprocessor_config(cfg: Any) -> dict[str, Any]:
    """transformers' image processor doing vitkit's evaluation transform: resize (the short side to
    ``img_size / crop_pct`` for a square input), centre crop, scale to [0, 1], normalise."""
    h, w = to_2tuple(cfg.img_size)
    if h == w:
        size = {"shortest_edge": math.floor(h / cfg.crop_pct)}
    else:
        size = {"height": math.floor(h / cfg.crop_pct), "width": math.floor(w / cfg.crop_pct)}
    return {
        "image_processor_type": "BitImageProcessor",
        "do_convert_rgb": cfg.in_chans == 3,
        "do_resize": True,
        "size": size,
        "resample": PIL_RESAMPLE[cfg.interpolation],
        "do_center_crop": True,
        "crop_size": {"height": h, "width": w},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(cfg.mean),
        "image_std": list(cfg.std),
    }


def timm_pretrained_cfg(cfg: Any, num_classes: int, classifier: str, class_names: list[str] | None) -> dict[str, Any]:
    """timm's ``pretrained_cfg``: the evaluation transform and the names of the first conv and the classifier."""
    out = {
        "input_size": list(cfg.input_size),
        "fixed_input_size": False,
        "interpolation": cfg.interpolation,
        "crop_pct": cfg.crop_pct,
        "crop_mode": "center",
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "num_classes": num_classes,
        "first_conv": "patch_embed.proj",
        "classifier": classifier,
    }
    if class_names and len(class_names) == num_classes:
        out["label_names"] = list(class_names)
    return out
