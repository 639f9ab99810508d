"""Hugging Face / timm ViT checkpoints -> vitkit's VisionTransformer (timm parameter names)."""

import torch

from vitkit.convert.common import class_names_from_hf, take
from vitkit.errors import CheckpointError
from vitkit.models.vit import ViTConfig
from vitkit.registry import get_entry, replace_config


def config_from_hf(hf: dict) -> ViTConfig:
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"ViT with hidden_act={hf['hidden_act']!r} is not supported (only 'gelu')")
    dim = hf.get("hidden_size", 768)
    return ViTConfig(
        img_size=hf.get("image_size", 224),
        patch_size=hf.get("patch_size", 16),
        in_chans=hf.get("num_channels", 3),
        num_classes=len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 0),
        embed_dim=dim,
        depth=hf.get("num_hidden_layers", 12),
        num_heads=hf.get("num_attention_heads", 12),
        mlp_ratio=hf.get("intermediate_size", 4 * dim) / dim,
        qkv_bias=hf.get("qkv_bias", True),
        norm_eps=hf.get("layer_norm_eps", 1e-12),
        pos_embed_antialias=False,  # transformers' interpolate_pos_encoding does not antialias
    )


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
        h, b = f"{p}encoder.layer.{i}.", f"blocks.{i}."
        att = h + "attention.attention."
        out[b + "attn.qkv.weight"] = torch.cat([take(sd, att + f"{n}.weight") for n in ("query", "key", "value")])
        if cfg.qkv_bias:
            out[b + "attn.qkv.bias"] = torch.cat([take(sd, att + f"{n}.bias") for n in ("query", "key", "value")])
        pairs = {
            "attention.output.dense": "attn.proj",
            "intermediate.dense": "mlp.fc1",
            "output.dense": "mlp.fc2",
            "layernorm_before": "norm1",
            "layernorm_after": "norm2",
        }
        for src, dst in pairs.items():
            out[b + dst + ".weight"] = take(sd, h + src + ".weight")
            out[b + dst + ".bias"] = take(sd, h + src + ".bias")
    if "classifier.weight" in sd:
        out["head.weight"] = sd.pop("classifier.weight")
        out["head.bias"] = sd.pop("classifier.bias")
    out.update(sd)  # leftovers surface as "unexpected keys" when loaded
    return out


def from_hf(hf_config: dict, sd: dict[str, torch.Tensor]) -> tuple[ViTConfig, dict, list[str] | None]:
    cfg = config_from_hf(hf_config)
    if "classifier.weight" not in sd:
        cfg = replace_config(cfg, num_classes=0)  # a ViTModel checkpoint: backbone only
    return cfg, state_dict_from_hf(sd, cfg), class_names_from_hf(hf_config)


# timm model_args -> ViTConfig fields (names that differ; equal names pass through)
_TIMM_ARGS = {"drop_rate": "drop_rate", "no_embed_class": None, "dynamic_img_size": None}


def from_timm(timm_config: dict, sd: dict[str, torch.Tensor]) -> tuple[ViTConfig, dict, list[str] | None]:
    arch = timm_config["architecture"].split(".")[0]
    base = get_entry(arch).config
    args = dict(timm_config.get("model_args") or {})
    unsupported = {k for k in args if k in _TIMM_ARGS and _TIMM_ARGS[k] is None and args[k]}
    if unsupported:
        raise CheckpointError(f"timm ViT option(s) not supported: {', '.join(sorted(unsupported))}")
    for k in ("no_embed_class", "dynamic_img_size"):
        args.pop(k, None)
    pre = timm_config.get("pretrained_cfg") or {}
    if "input_size" in pre and "img_size" not in args:
        args["img_size"] = tuple(pre["input_size"][1:])
    if "mean" in pre:
        args["mean"], args["std"] = tuple(pre["mean"]), tuple(pre["std"])
    if "num_classes" in timm_config:
        args["num_classes"] = timm_config["num_classes"]
    if "global_pool" in timm_config:
        args["global_pool"] = timm_config["global_pool"]
    if "in_chans" not in args and "patch_embed.proj.weight" in sd:
        args["in_chans"] = sd["patch_embed.proj.weight"].shape[1]
    cfg = replace_config(base, **args)
    names = pre.get("label_names")
    return cfg, dict(sd), list(names) if names else None
