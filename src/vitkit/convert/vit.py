"""Hugging Face / timm ViT checkpoints -> vitkit's VisionTransformer (timm parameter names), and back."""

import re
import warnings

import torch

from vitkit.convert.common import (
    class_names_from_hf,
    class_names_from_timm,
    hf_encoder_layer,
    hf_encoder_layer_from,
    num_labels,
    take,
    with_hf_extra_fields,
)
from vitkit.errors import CheckpointError, VitkitError
from vitkit.models.config import to_2tuple
from vitkit.models.registry import get_entry, replace_config
from vitkit.models.vit import ViTConfig


def config_from_hf(hf: dict) -> ViTConfig:
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"ViT with hidden_act={hf['hidden_act']!r} is not supported (only 'gelu')")
    dim = hf.get("hidden_size", 768)
    try:
        return ViTConfig(
            img_size=hf.get("image_size", 224),
            patch_size=hf.get("patch_size", 16),
            in_chans=hf.get("num_channels", 3),
            num_classes=num_labels(hf),
            embed_dim=dim,
            depth=hf.get("num_hidden_layers", 12),
            num_heads=hf.get("num_attention_heads", 12),
            mlp_ratio=hf.get("intermediate_size", 4 * dim) / dim,
            qkv_bias=hf.get("qkv_bias", True),
            norm_eps=hf.get("layer_norm_eps", 1e-12),
            pos_embed_antialias=False,  # transformers' interpolate_pos_encoding does not antialias
        )
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"ViT config.json does not describe a model vitkit can build: {e}") from None


def config_to_hf(cfg: ViTConfig) -> dict:
    """transformers' ``ViTConfig`` fields for a vitkit config (``model_type`` included)."""
    h, w = to_2tuple(cfg.img_size)
    if h != w or cfg.global_pool != "token" or not cfg.class_token:
        raise CheckpointError("transformers' ViT needs a square image and the [CLS] token head")
    return {
        "model_type": "vit",
        "image_size": h,
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.depth,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": int(cfg.embed_dim * cfg.mlp_ratio),
        "qkv_bias": cfg.qkv_bias,
        "layer_norm_eps": cfg.norm_eps,
        "hidden_act": "gelu",
        "num_labels": cfg.num_classes,
    }


def state_dict_from_hf(sd: dict[str, torch.Tensor], cfg: ViTConfig) -> dict[str, torch.Tensor]:
    sd = dict(sd)
    prefix = "vit." if any(k.startswith("vit.") for k in sd) else ""
    for extra in ("embeddings.mask_token", "pooler.dense.weight", "pooler.dense.bias"):
        sd.pop(prefix + extra, None)
    p = prefix
    out = {
        "cls_token": take(sd, p + "embeddings.cls_token"),
        "pos_embed": take(sd, p + "embeddings.position_embeddings"),
        "patch_embed.proj.weight": take(sd, p + "embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": take(sd, p + "embeddings.patch_embeddings.projection.bias"),
        "norm.weight": take(sd, p + "layernorm.weight"),
        "norm.bias": take(sd, p + "layernorm.bias"),
    }
    for i in range(cfg.depth):
        h = f"{p}encoder.layer.{i}."
        out.update(hf_encoder_layer(sd, h, h + "attention.attention.", f"blocks.{i}.", cfg.qkv_bias))
    if "classifier.weight" in sd:
        out["head.weight"] = sd.pop("classifier.weight")
        out["head.bias"] = sd.pop("classifier.bias")
    out.update(sd)  # leftovers surface as "unexpected keys" when loaded
    return out


def state_dict_to_hf(sd: dict[str, torch.Tensor], cfg: ViTConfig) -> dict[str, torch.Tensor]:
    """vitkit (timm) names -> ``ViTForImageClassification``'s: the inverse of :func:`state_dict_from_hf`."""
    sd = dict(sd)
    p = "vit."
    out = {
        p + "embeddings.cls_token": take(sd, "cls_token"),
        p + "embeddings.position_embeddings": take(sd, "pos_embed"),
        p + "embeddings.patch_embeddings.projection.weight": take(sd, "patch_embed.proj.weight"),
        p + "embeddings.patch_embeddings.projection.bias": take(sd, "patch_embed.proj.bias"),
        p + "layernorm.weight": take(sd, "norm.weight"),
        p + "layernorm.bias": take(sd, "norm.bias"),
    }
    for i in range(cfg.depth):
        h = f"{p}encoder.layer.{i}."
        out.update(hf_encoder_layer_from(sd, f"blocks.{i}.", h, h + "attention.attention.", cfg.qkv_bias))
    if "head.weight" in sd:
        out["classifier.weight"], out["classifier.bias"] = take(sd, "head.weight"), take(sd, "head.bias")
    if sd:
        raise CheckpointError(f"ViT -> transformers: no transformers name for {', '.join(sorted(sd))}")
    return out


def from_hf(hf_config: dict, sd: dict[str, torch.Tensor]) -> tuple[ViTConfig, dict, list[str] | None]:
    cfg = with_hf_extra_fields(config_from_hf(hf_config), hf_config)
    if "classifier.weight" not in sd:
        cfg = replace_config(cfg, num_classes=0)  # a ViTModel checkpoint: backbone only
    return cfg, state_dict_from_hf(sd, cfg), class_names_from_hf(hf_config)


# timm ``model_args`` (the keyword arguments of timm's VisionTransformer) that map onto ViTConfig fields.
_TIMM_FIELDS = (
    "img_size",
    "patch_size",
    "in_chans",
    "num_classes",
    "global_pool",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "qkv_bias",
    "class_token",
    "drop_rate",
    "pos_drop_rate",
    "proj_drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
)
# timm options vitkit's ViT does not have: accepted only at the value that means "off" (timm's default).
_TIMM_DEFAULTS = {
    "qk_norm": False,
    "scale_attn_norm": False,
    "scale_mlp_norm": False,
    "proj_bias": True,
    "init_values": None,
    "pos_embed": "learn",
    "no_embed_class": False,
    "reg_tokens": 0,
    "pre_norm": False,
    "final_norm": True,
    "pool_include_prefix": False,
    "dynamic_img_pad": False,
    "patch_drop_rate": 0.0,
    "embed_norm_layer": None,
    "norm_layer": None,
    "act_layer": None,
}
# options that change only initialisation or input-size checks (vitkit accepts any multiple of the patch)
_TIMM_IGNORED = ("dynamic_img_size", "weight_init", "fix_init")


def config_from_timm(timm_config: dict, sd: dict[str, torch.Tensor]) -> ViTConfig:
    """Build a ViTConfig from timm's hub ``config.json``.

    timm >= 1.0 records every constructor argument in ``model_args``; older hub configs name only the
    ``architecture``, so its registered vitkit config is the base and ``model_args`` override it.
    """
    arch = timm_config["architecture"].split(".")[0]
    args = dict(timm_config.get("model_args") or {})
    try:
        base = get_entry(arch).config
    except VitkitError:
        if not args:
            raise CheckpointError(
                f"timm architecture {arch!r} is not registered in vitkit and config.json has no model_args "
                "to build it from"
            ) from None
        base = ViTConfig()  # timm's VisionTransformer defaults, the same as ViTConfig's
    if not isinstance(base, ViTConfig):
        raise CheckpointError(f"timm architecture {arch!r} is not a ViT")

    unknown = sorted(set(args) - set(_TIMM_FIELDS) - set(_TIMM_DEFAULTS) - set(_TIMM_IGNORED) - {"fc_norm"})
    if unknown:
        raise CheckpointError(f"timm {arch}: model_args {', '.join(unknown)} unknown to vitkit's ViT")
    unsupported = [f"{k}={args[k]!r}" for k, v in _TIMM_DEFAULTS.items() if k in args and args[k] != v]
    pool = args.get("global_pool", timm_config.get("global_pool", base.global_pool))
    if pool not in ("token", "avg"):
        unsupported.append(f"global_pool={pool!r}")
    fc_norm = args.get("fc_norm")
    if fc_norm is not None and fc_norm != (pool == "avg"):
        unsupported.append(f"fc_norm={fc_norm!r} with global_pool={pool!r}")
    if unsupported:
        raise CheckpointError(f"timm {arch}: option(s) vitkit's ViT does not support: {', '.join(unsupported)}")

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if k in _TIMM_FIELDS}
    patch = fields.get("patch_size")
    if isinstance(patch, tuple):  # timm allows (ph, pw); vitkit's patches are square
        if len(set(patch)) != 1:
            raise CheckpointError(f"timm {arch}: non-square patch_size {list(patch)} is not supported")
        fields["patch_size"] = patch[0]
    fields["global_pool"] = pool
    pre = timm_config.get("pretrained_cfg") or {}
    if "img_size" not in fields and "input_size" in pre:
        fields["img_size"] = tuple(pre["input_size"][1:])
    for key in ("mean", "std"):
        if key in pre:
            fields[key] = tuple(pre[key])
    if isinstance(pre.get("interpolation"), str):
        fields["interpolation"] = pre["interpolation"]
    if isinstance(pre.get("crop_pct"), (int, float)):
        fields["crop_pct"] = float(pre["crop_pct"])
    if "num_classes" in timm_config:
        fields["num_classes"] = timm_config["num_classes"]
    if "in_chans" not in fields and "patch_embed.proj.weight" in sd:
        fields["in_chans"] = sd["patch_embed.proj.weight"].shape[1]
    try:
        return replace_config(base, **fields)
    except VitkitError as e:
        raise CheckpointError(f"timm {arch}: {e}") from None


def from_timm(timm_config: dict, sd: dict[str, torch.Tensor]) -> tuple[ViTConfig, dict, list[str] | None]:
    """timm's ViT uses vitkit's parameter names, so only the config needs translating."""
    return config_from_timm(timm_config, sd), dict(sd), class_names_from_timm(timm_config)


# vitkit's registered names that timm registers too (the ImageNet models); others are saved under a timm name of
# the same family, with every structural field in model_args.
TIMM_NAME = re.compile(r"vit_(tiny|small|base|large)_patch(16|32)_(224|384)")


def to_timm(cfg: ViTConfig, sd: dict[str, torch.Tensor], model_name: str | None) -> tuple[dict, dict]:
    """(timm's hub ``config.json`` without ``pretrained_cfg``, timm's state dict): timm builds this model from them."""
    if cfg.norm_eps != 1e-6:
        warnings.warn(
            f"timm's ViT uses LayerNorm eps 1e-6, this model {cfg.norm_eps:g} (weights from transformers): timm's "
            "outputs will differ from vitkit's in the last digits",
            stacklevel=3,
        )
    h, w = to_2tuple(cfg.img_size)
    args = {
        "img_size": h if h == w else [h, w],
        "patch_size": cfg.patch_size,
        "in_chans": cfg.in_chans,
        "num_classes": cfg.num_classes,
        "global_pool": cfg.global_pool,
        "embed_dim": cfg.embed_dim,
        "depth": cfg.depth,
        "num_heads": cfg.num_heads,
        "mlp_ratio": cfg.mlp_ratio,
        "qkv_bias": cfg.qkv_bias,
        "class_token": cfg.class_token,
    }
    arch = model_name if model_name and TIMM_NAME.fullmatch(model_name) else "vit_base_patch16_224"
    config = {"architecture": arch, "num_classes": cfg.num_classes, "num_features": cfg.embed_dim,
              "global_pool": cfg.global_pool, "model_args": args}  # fmt: skip
    return config, dict(sd)


def state_dict_from_release(sd: dict[str, torch.Tensor], cfg: ViTConfig) -> dict[str, torch.Tensor]:
    """A bare state dict in timm's names (vitkit's own) or transformers' (``vit.embeddings...``)."""
    if any(k.startswith(("vit.embeddings.", "embeddings.patch_embeddings.")) for k in sd):
        return state_dict_from_hf(sd, cfg)
    return dict(sd)
