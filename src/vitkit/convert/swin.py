"""Hugging Face / timm Swin checkpoints -> vitkit's SwinTransformer (timm >= 0.9 parameter names).

transformers keeps patch merging at the end of stage i (``layers.i.downsample``); timm >= 0.9 and vitkit at
the start of stage i + 1. timm checkpoints older than 0.9 use the transformers placement and ``head.*``
instead of ``head.fc.*``; both are recognised. Both libraries concatenate the 2x2 neighbours of a merge in
the same order (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]), so reductions map unchanged.
"""

import math
import re

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
from vitkit.models.swin import SwinConfig


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise CheckpointError(f"Swin {name}={value!r} is not supported (only square)")
        return int(value[0])
    return int(value)


def config_from_hf(hf: dict) -> SwinConfig:
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"Swin with hidden_act={hf['hidden_act']!r} is not supported (only 'gelu')")
    if hf.get("use_absolute_embeddings", False):
        raise CheckpointError("Swin with use_absolute_embeddings=True is not supported")
    image_size = hf.get("image_size", 224)
    try:
        return SwinConfig(
            img_size=tuple(image_size) if isinstance(image_size, (list, tuple)) else image_size,
            patch_size=_square(hf.get("patch_size", 4), "patch_size"),
            in_chans=hf.get("num_channels", 3),
            num_classes=num_labels(hf),
            embed_dim=hf.get("embed_dim", 96),
            depths=tuple(hf.get("depths", (2, 2, 6, 2))),
            num_heads=tuple(hf.get("num_heads", (3, 6, 12, 24))),
            window_size=_square(hf.get("window_size", 7), "window_size"),
            mlp_ratio=float(hf.get("mlp_ratio", 4.0)),
            qkv_bias=hf.get("qkv_bias", True),
            proj_drop_rate=hf.get("hidden_dropout_prob", 0.0),
            attn_drop_rate=hf.get("attention_probs_dropout_prob", 0.0),
            drop_path_rate=hf.get("drop_path_rate", 0.1),
            norm_eps=hf.get("layer_norm_eps", 1e-5),
        )
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"Swin config.json does not describe a model vitkit can build: {e}") from None


def stage_resolutions(cfg: SwinConfig) -> list[tuple[int, int]]:
    """Tokens (rows, columns) of each stage at the config's ``img_size``."""
    h, w = (-(-n // cfg.patch_size) for n in to_2tuple(cfg.img_size))
    out = [(h, w)]
    for _ in range(cfg.num_stages - 1):
        h, w = -(-h // 2), -(-w // 2)
        out.append((h, w))
    return out


def config_to_hf(cfg: SwinConfig) -> dict:
    """transformers' ``SwinConfig`` fields for a vitkit config (``model_type`` included)."""
    for i, (h, w) in enumerate(stage_resolutions(cfg)):
        if min(h, w) < cfg.window_size:  # transformers 5 keeps the full table there and fails in the forward pass
            raise CheckpointError(
                f"transformers cannot run this Swin: stage {i} is {h}x{w} tokens at img_size {cfg.img_size}, smaller "
                f"than the window {cfg.window_size}; save it as vitkit (or timm) instead"
            )
    h, w = to_2tuple(cfg.img_size)
    return {
        "model_type": "swin",
        "image_size": h if h == w else [h, w],
        "patch_size": cfg.patch_size,
        "num_channels": cfg.in_chans,
        "embed_dim": cfg.embed_dim,
        "depths": list(cfg.depths),
        "num_heads": list(cfg.num_heads),
        "window_size": cfg.window_size,
        "mlp_ratio": cfg.mlp_ratio,
        "qkv_bias": cfg.qkv_bias,
        "hidden_dropout_prob": cfg.proj_drop_rate,
        "attention_probs_dropout_prob": cfg.attn_drop_rate,
        "drop_path_rate": cfg.drop_path_rate,
        "layer_norm_eps": cfg.norm_eps,
        "hidden_act": "gelu",
        "num_labels": cfg.num_classes,
    }


# transformers >= 5 renames some modules in memory; normalise to the names its checkpoints carry
_HF_NEW_NAMES = [
    ("attention.q_proj", "attention.self.query"),
    ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"),
    ("attention.o_proj", "attention.output.dense"),
    ("attention.relative_position_bias.relative_position_bias_table", "attention.self.relative_position_bias_table"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
]


def state_dict_from_hf(sd: dict[str, torch.Tensor], cfg: SwinConfig) -> dict[str, torch.Tensor]:
    renamed = {}
    for k, v in sd.items():
        if ".blocks." in k:
            for new, old in _HF_NEW_NAMES:
                k = k.replace(new, old)
        renamed[k] = v
    sd = renamed
    prefix = "swin." if any(k.startswith("swin.") for k in sd) else ""
    p = prefix
    for k in list(sd):
        if k.endswith(("relative_position_index", "embeddings.mask_token")):
            del sd[k]  # cached index buffers (rebuilt here) and the SimMIM mask token
    out = {
        "patch_embed.proj.weight": take(sd, p + "embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": take(sd, p + "embeddings.patch_embeddings.projection.bias"),
        "patch_embed.norm.weight": take(sd, p + "embeddings.norm.weight"),
        "patch_embed.norm.bias": take(sd, p + "embeddings.norm.bias"),
        "norm.weight": take(sd, p + "layernorm.weight"),
        "norm.bias": take(sd, p + "layernorm.bias"),
    }
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            h, b = f"{p}encoder.layers.{i}.blocks.{j}.", f"layers.{i}.blocks.{j}."
            out.update(hf_encoder_layer(sd, h, h + "attention.self.", b, cfg.qkv_bias))
            out[b + "attn.relative_position_bias_table"] = take(sd, h + "attention.self.relative_position_bias_table")
        if i + 1 < cfg.num_stages:  # merging at the end of stage i -> start of stage i + 1
            d = f"{p}encoder.layers.{i}.downsample."
            out[f"layers.{i + 1}.downsample.norm.weight"] = take(sd, d + "norm.weight")
            out[f"layers.{i + 1}.downsample.norm.bias"] = take(sd, d + "norm.bias")
            out[f"layers.{i + 1}.downsample.reduction.weight"] = take(sd, d + "reduction.weight")
    if "classifier.weight" in sd:
        out["head.weight"] = sd.pop("classifier.weight")
        out["head.bias"] = sd.pop("classifier.bias")
    out.update(sd)  # leftovers surface as "unexpected keys" when loaded
    return embed_clamped_tables(out, cfg)


def state_dict_to_hf(sd: dict[str, torch.Tensor], cfg: SwinConfig) -> dict[str, torch.Tensor]:
    """vitkit (timm >= 0.9) names -> ``SwinForImageClassification``'s: the inverse of :func:`state_dict_from_hf`."""
    sd = {k: v for k, v in sd.items() if not k.endswith(("relative_position_index", "attn_mask"))}
    p = "swin."
    out = {
        p + "embeddings.patch_embeddings.projection.weight": take(sd, "patch_embed.proj.weight"),
        p + "embeddings.patch_embeddings.projection.bias": take(sd, "patch_embed.proj.bias"),
        p + "embeddings.norm.weight": take(sd, "patch_embed.norm.weight"),
        p + "embeddings.norm.bias": take(sd, "patch_embed.norm.bias"),
        p + "layernorm.weight": take(sd, "norm.weight"),
        p + "layernorm.bias": take(sd, "norm.bias"),
    }
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            h, b = f"{p}encoder.layers.{i}.blocks.{j}.", f"layers.{i}.blocks.{j}."
            out.update(hf_encoder_layer_from(sd, b, h, h + "attention.self.", cfg.qkv_bias))
            out[h + "attention.self.relative_position_bias_table"] = take(sd, b + "attn.relative_position_bias_table")
        if i + 1 < cfg.num_stages:  # merging at the start of stage i + 1 -> end of stage i
            d = f"{p}encoder.layers.{i}.downsample."
            for t in ("norm.weight", "norm.bias", "reduction.weight"):
                out[d + t] = take(sd, f"layers.{i + 1}.downsample.{t}")
    if "head.weight" in sd:
        out["classifier.weight"], out["classifier.bias"] = take(sd, "head.weight"), take(sd, "head.bias")
    if sd:
        raise CheckpointError(f"Swin -> transformers: no transformers name for {', '.join(sorted(sd))}")
    return out


def from_hf(hf_config: dict, sd: dict[str, torch.Tensor]) -> tuple[SwinConfig, dict, list[str] | None]:
    """transformers' ``SwinForImageClassification`` (or ``SwinModel``) checkpoint -> vitkit."""
    cfg = with_hf_extra_fields(config_from_hf(hf_config), hf_config)
    if "classifier.weight" not in sd:
        cfg = replace_config(cfg, num_classes=0)  # a SwinModel checkpoint: backbone only
    return cfg, state_dict_from_hf(sd, cfg), class_names_from_hf(hf_config)


# --- timm ------------------------------------------------------------------------------------------
_TIMM_PASS = {
    "img_size",
    "patch_size",
    "in_chans",
    "num_classes",
    "embed_dim",
    "depths",
    "num_heads",
    "window_size",
    "mlp_ratio",
    "qkv_bias",
    "drop_rate",
    "proj_drop_rate",
    "attn_drop_rate",
    "drop_path_rate",
}


def _timm_args(args: dict) -> dict:
    args = dict(args)
    if args.pop("always_partition", False):
        raise CheckpointError("timm Swin option always_partition=True is not supported")
    if args.pop("global_pool", "avg") not in ("avg", None):
        raise CheckpointError("timm Swin global_pool other than 'avg' is not supported")
    for key in ("embed_layer", "norm_layer"):
        if key in args and args.pop(key) not in (None, "layernorm", "LayerNorm"):
            raise CheckpointError(f"timm Swin option {key} is not supported")
    args.pop("strict_img_size", None)
    args.pop("weight_init", None)
    head_dim = args.pop("head_dim", None)
    unknown = sorted(set(args) - _TIMM_PASS)
    if unknown:
        raise CheckpointError(f"timm Swin option(s) not supported: {', '.join(unknown)}")
    for key in ("window_size", "patch_size"):
        if key in args:
            args[key] = _square(args[key], key)
    for key in ("depths", "num_heads", "img_size"):
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key])
    args["_head_dim"] = head_dim
    return args


def embed_clamped_tables(sd: dict[str, torch.Tensor], cfg: SwinConfig) -> dict[str, torch.Tensor]:
    """Tables built for a window clamped to a small stage -> the centre of a full-size table.

    timm, the official code and transformers 4.x size a stage's table for the stage's resolution when that is
    smaller than the window (transformers 5 always uses the full window). The smaller window's offsets are a
    subset of the full window's, so embedding the table in the centre gives the same bias at the checkpoint's
    input size; the other entries are never used there and start at zero. Only tables smaller than the
    checkpoint's own window are touched (a real window change is resized later, bicubically).
    """
    new = 2 * cfg.window_size - 1
    out = dict(sd)
    for k, table in sd.items():
        if not k.endswith("relative_position_bias_table") or table.ndim != 2 or table.shape[0] >= new * new:
            continue
        side = math.isqrt(table.shape[0])
        if side * side != table.shape[0] or side % 2 == 0:
            raise CheckpointError(f"{k}: expected a ((2w-1)^2, heads) table, got shape {tuple(table.shape)}")
        full = table.new_zeros(new, new, table.shape[1])
        o = (new - side) // 2
        full[o : o + side, o : o + side] = table.view(side, side, -1)
        out[k] = full.view(new * new, -1)
    return out


def state_dict_from_timm(sd: dict[str, torch.Tensor], cfg: SwinConfig) -> dict[str, torch.Tensor]:
    sd = {k: v for k, v in sd.items() if not k.endswith(("relative_position_index", "attn_mask"))}
    if any(k.startswith("layers.0.downsample.") for k in sd):  # timm < 0.9: merging at the end of a stage
        sd = {
            re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", k): v
            for k, v in sd.items()
        }
    sd = {("head." + k[len("head.fc.") :] if k.startswith("head.fc.") else k): v for k, v in sd.items()}
    return embed_clamped_tables(sd, cfg)


def from_timm(timm_config: dict, sd: dict[str, torch.Tensor]) -> tuple[SwinConfig, dict, list[str] | None]:
    """timm hub format (config.json with "architecture", "pretrained_cfg", optional "model_args") -> vitkit."""
    arch = timm_config["architecture"].split(".")[0]
    try:
        base = get_entry(arch).config
    except VitkitError:
        raise CheckpointError(f"timm architecture {arch!r} is not a Swin variant vitkit knows") from None
    args = _timm_args(timm_config.get("model_args") or {})
    head_dim = args.pop("_head_dim")
    pre = timm_config.get("pretrained_cfg") or {}
    if "input_size" in pre and "img_size" not in args:
        args["img_size"] = tuple(pre["input_size"][1:])
    for key in ("interpolation", "crop_pct"):
        if key in pre:
            args[key] = pre[key]
    if "mean" in pre:
        args["mean"], args["std"] = tuple(pre["mean"]), tuple(pre["std"])
    if "num_classes" in timm_config:
        args["num_classes"] = timm_config["num_classes"]
    if timm_config.get("global_pool", "avg") != "avg":
        raise CheckpointError(f"timm Swin global_pool={timm_config['global_pool']!r} is not supported")
    if "in_chans" not in args and "patch_embed.proj.weight" in sd:
        args["in_chans"] = sd["patch_embed.proj.weight"].shape[1]
    if "patch_size" not in args and "patch_embed.proj.weight" in sd:
        args["patch_size"] = sd["patch_embed.proj.weight"].shape[-1]
    cfg = replace_config(base, **args)
    if head_dim is not None and any(cfg.embed_dim * 2**i != head_dim * n for i, n in enumerate(cfg.num_heads)):
        raise CheckpointError(f"timm Swin head_dim={head_dim} different from dim / num_heads is not supported")
    return cfg, state_dict_from_timm(sd, cfg), class_names_from_timm(timm_config)


# vitkit's registered names that timm registers too (the ImageNet models); others are saved under a timm name of
# the same family, with every structural field in model_args.
TIMM_NAME = re.compile(r"swin_(tiny|small|base|large)_patch4_window(7|12)_(224|384)")


def to_timm(cfg: SwinConfig, sd: dict[str, torch.Tensor], model_name: str | None) -> tuple[dict, dict]:
    """(timm's hub ``config.json`` without ``pretrained_cfg``, timm's state dict): timm builds this model from them.

    timm fixes each block's window at construction: a stage not larger than the window gets a window (and bias
    table) of its own size, as :func:`embed_clamped_tables` undoes. Where timm's windows or padding would compute
    something else than vitkit at ``img_size`` (a non-square stage with a side not larger than the window; a shifted
    block that needs padding, which timm pads after the shift), this is an error naming the stage.
    """
    ws, sd = cfg.window_size, {k: v for k, v in sd.items() if not k.endswith(("relative_position_index", "attn_mask"))}
    for i, (h, w) in enumerate(stage_resolutions(cfg)):
        (th, tw), m = (min(h, ws), min(w, ws)), min(h, w, ws)  # timm's window per side; vitkit's square one
        if h != w and min(h, w) <= ws and (th, tw) != (m, m):
            problem = f"is {h}x{w} tokens: timm's windows there are {th}x{tw}, vitkit's {m}x{m}"
        elif h != w and min(h, w) <= ws < max(h, w) and cfg.depths[i] > 1:
            problem = (
                f"is {h}x{w} tokens: timm shifts the windows of its odd blocks there, vitkit (one window high) not"
            )
        elif min(h, w) > ws and cfg.depths[i] > 1 and (h % ws or w % ws):
            problem = f"is {h}x{w} tokens, not a multiple of the window {ws}: timm pads after the shift, vitkit before"
        else:
            problem = ""
        if problem:
            raise CheckpointError(f"timm would compute this Swin differently at img_size {cfg.img_size}: stage {i} "
                                  f"{problem}; save it as vitkit or transformers instead")  # fmt: skip
        if h == w < ws:  # timm's table for the clamped window: the centre of the full one
            side, o = 2 * ws - 1, ws - h
            for j in range(cfg.depths[i]):
                key = f"layers.{i}.blocks.{j}.attn.relative_position_bias_table"
                sd[key] = sd[key].view(side, side, -1)[o : side - o, o : side - o].reshape(-1, sd[key].shape[-1])
    if "head.weight" in sd:
        sd["head.fc.weight"], sd["head.fc.bias"] = sd.pop("head.weight"), sd.pop("head.bias")
    h, w = to_2tuple(cfg.img_size)
    args = {
        "img_size": h if h == w else [h, w],
        "patch_size": cfg.patch_size,
        "in_chans": cfg.in_chans,
        "num_classes": cfg.num_classes,
        "embed_dim": cfg.embed_dim,
        "depths": list(cfg.depths),
        "num_heads": list(cfg.num_heads),
        "window_size": ws,
        "mlp_ratio": cfg.mlp_ratio,
        "qkv_bias": cfg.qkv_bias,
    }
    arch = model_name if model_name and TIMM_NAME.fullmatch(model_name) else "swin_tiny_patch4_window7_224"
    config = {"architecture": arch, "num_classes": cfg.num_classes, "num_features": cfg.num_features,
              "global_pool": "avg", "model_args": args}  # fmt: skip
    return config, {k: v.contiguous() for k, v in sd.items()}


def state_dict_from_release(sd: dict[str, torch.Tensor], cfg: SwinConfig) -> dict[str, torch.Tensor]:
    """A bare state dict: the official release (merging at the end of a stage, ``attn_mask`` and index buffers),
    timm's (>= 0.9 or older) or transformers' (``swin.embeddings...``)."""
    if any(k.startswith(("swin.embeddings.", "embeddings.patch_embeddings.")) for k in sd):
        return state_dict_from_hf(sd, cfg)
    return state_dict_from_timm(sd, cfg)
