"""Hugging Face CvT checkpoints (``CvtForImageClassification`` / ``CvtModel``) -> vitkit's CvT, and back.

vitkit uses the parameter names of Microsoft's official release; transformers renamed them when it
ported the weights (its conversion script holds the same table in the other direction).
"""

import warnings

import torch

from vitkit.convert.common import class_names_from_hf, num_labels, take, with_hf_extra_fields
from vitkit.errors import CheckpointError
from vitkit.models.config import to_2tuple
from vitkit.models.cvt import CvTConfig
from vitkit.models.registry import replace_config

# transformers' CvtConfig defaults, for config.json files that leave a field out
_HF_DEFAULTS = {
    "num_channels": 3,
    "patch_sizes": [7, 3, 3],
    "patch_stride": [4, 2, 2],
    "patch_padding": [2, 1, 1],
    "embed_dim": [64, 192, 384],
    "num_heads": [1, 3, 6],
    "depth": [1, 2, 10],
    "mlp_ratio": [4.0, 4.0, 4.0],
    "attention_drop_rate": [0.0, 0.0, 0.0],
    "drop_rate": [0.0, 0.0, 0.0],
    "drop_path_rate": [0.0, 0.0, 0.1],
    "qkv_bias": [True, True, True],
    "cls_token": [False, False, True],
    "qkv_projection_method": ["dw_bn", "dw_bn", "dw_bn"],
    "kernel_qkv": [3, 3, 3],
    "padding_kv": [1, 1, 1],
    "stride_kv": [2, 2, 2],
    "padding_q": [1, 1, 1],
    "stride_q": [1, 1, 1],
}


def _get(hf: dict, key: str):
    return hf.get(key, _HF_DEFAULTS[key])


def _same_in_every_stage(hf: dict, key: str):
    values = list(_get(hf, key))
    if len(set(values)) != 1:
        raise CheckpointError(f"CvT config {key}={values}: vitkit needs the same value in every stage")
    return values[0]


def _cls_token(hf: dict) -> bool:
    """vitkit's CvT has a [CLS] token in the last stage only (every released model), or none."""
    flags = [bool(b) for b in _get(hf, "cls_token")]
    if any(flags[:-1]):
        raise CheckpointError(f"CvT config cls_token={flags}: only the last stage may have a [CLS] token")
    return flags[-1]


def _img_size(hf: dict) -> int:
    """The resolution the weights were trained at; transformers keeps it only in preprocessor_config.json."""
    if "image_size" in hf:
        return int(hf["image_size"])
    if "384" in str(hf.get("_name_or_path", "")):
        return 384
    return 384 if list(_get(hf, "embed_dim"))[:1] == [192] else 224  # CvT-W24 was released at 384 only


def config_from_hf(hf: dict) -> CvTConfig:
    methods = set(_get(hf, "qkv_projection_method"))
    if methods != {"dw_bn"}:
        raise CheckpointError(f"CvT qkv_projection_method {sorted(methods)} is not supported (only 'dw_bn')")
    try:
        img_size = _img_size(hf)
        drop = float(max(_get(hf, "drop_rate")))
        return CvTConfig(
            img_size=img_size,
            in_chans=hf.get("num_channels", 3),
            num_classes=num_labels(hf),
            patch_sizes=tuple(_get(hf, "patch_sizes")),
            patch_strides=tuple(_get(hf, "patch_stride")),
            patch_paddings=tuple(_get(hf, "patch_padding")),
            embed_dims=tuple(_get(hf, "embed_dim")),
            depths=tuple(_get(hf, "depth")),
            num_heads=tuple(_get(hf, "num_heads")),
            mlp_ratio=float(_same_in_every_stage(hf, "mlp_ratio")),
            qkv_bias=bool(_same_in_every_stage(hf, "qkv_bias")),
            cls_token=_cls_token(hf),
            kernel_qkv=int(_same_in_every_stage(hf, "kernel_qkv")),
            padding_q=int(_same_in_every_stage(hf, "padding_q")),
            padding_kv=int(_same_in_every_stage(hf, "padding_kv")),
            stride_q=int(_same_in_every_stage(hf, "stride_q")),
            stride_kv=int(_same_in_every_stage(hf, "stride_kv")),
            pos_drop_rate=drop,  # transformers' drop_rate: after the token embedding, the attention output, the MLP
            proj_drop_rate=drop,
            attn_drop_rate=float(max(_get(hf, "attention_drop_rate"))),
            # transformers ramps per stage up to (0, 0, 0.1); vitkit ramps once over all blocks to the largest
            drop_path_rate=float(max(_get(hf, "drop_path_rate"))),
            # transformers' CvT builds nn.LayerNorm(dim) and ignores layer_norm_eps: 1e-5, as the original
            norm_eps=1e-5,
            crop_pct=1.0 if img_size >= 384 else 0.875,
        )
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"CvT config.json does not describe a model vitkit can build: {e}") from None


def config_to_hf(cfg: CvTConfig) -> dict:
    """transformers' ``CvtConfig`` fields for a vitkit config (``model_type`` included; ``image_size`` is not a
    transformers field, but it lets :func:`config_from_hf` restore the resolution)."""
    short = [i for i, d in enumerate(cfg.depths) if d <= i]
    if short:  # CvtStage picks its drop-path rate by stage index from a list of depth[i] entries
        i = short[0]
        raise CheckpointError(
            f"transformers cannot build this CvT: stage {i} has {cfg.depths[i]} block(s), transformers needs more than "
            f"{i} there; save it as vitkit instead"
        )
    n = cfg.num_stages
    return {
        "model_type": "cvt",
        "num_channels": cfg.in_chans,
        "patch_sizes": list(cfg.patch_sizes),
        "patch_stride": list(cfg.patch_strides),
        "patch_padding": list(cfg.patch_paddings),
        "embed_dim": list(cfg.embed_dims),
        "num_heads": list(cfg.num_heads),
        "depth": list(cfg.depths),
        "mlp_ratio": [cfg.mlp_ratio] * n,
        "qkv_bias": [cfg.qkv_bias] * n,
        "cls_token": [False] * (n - 1) + [cfg.cls_token],
        "qkv_projection_method": ["dw_bn"] * n,
        "kernel_qkv": [cfg.kernel_qkv] * n,
        "padding_q": [cfg.padding_q] * n,
        "padding_kv": [cfg.padding_kv] * n,
        "stride_q": [cfg.stride_q] * n,
        "stride_kv": [cfg.stride_kv] * n,
        "drop_rate": [cfg.proj_drop_rate] * n,
        "attention_drop_rate": [cfg.attn_drop_rate] * n,
        "drop_path_rate": [0.0] * (n - 1) + [cfg.drop_path_rate],
        "num_labels": cfg.num_classes,
        "image_size": to_2tuple(cfg.img_size)[0],
    }


def upgrade_vitkit_config(raw: dict) -> dict:
    """A CvT config written by vitkit 0.1 (``depth``, ``embed_dim`` ... per stage; ``drop_rate`` inside the blocks)
    in today's names."""
    raw = dict(raw)
    for old, new in (("depth", "depths"), ("embed_dim", "embed_dims"), ("patch_size", "patch_sizes"),
                     ("patch_stride", "patch_strides"), ("patch_padding", "patch_paddings")):  # fmt: skip
        if old in raw:
            raw[new] = raw.pop(old)
    for key in ("mlp_ratio", "qkv_bias"):
        values = raw.get(key)
        if isinstance(values, list):
            if len(set(values)) != 1:
                raise CheckpointError(f"CvT {key}={values}: vitkit needs the same value in every stage")
            raw[key] = values[0]
    if isinstance(raw.get("cls_token"), list):
        flags = raw["cls_token"]
        if any(flags[:-1]):
            raise CheckpointError(f"CvT cls_token={flags}: only the last stage may have a [CLS] token")
        raw["cls_token"] = bool(flags[-1]) if flags else False
    if "drop_rate" in raw:  # 0.1 meant the official drop_rate (embedding, attention output, MLP)
        raw["pos_drop_rate"] = raw["proj_drop_rate"] = raw.pop("drop_rate")
    return raw


# transformers' names inside encoder.stages.{i}.layers.{j}. -> official names inside stage{i}.blocks.{j}.
_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.attention.projection_query": "attn.proj_q",
    "attention.attention.projection_key": "attn.proj_k",
    "attention.attention.projection_value": "attn.proj_v",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_CONV_PROJ = {"query": "q", "key": "k", "value": "v"}
_BN = ("weight", "bias", "running_mean", "running_var")


def state_dict_from_hf(sd: dict[str, torch.Tensor], cfg: CvTConfig) -> dict[str, torch.Tensor]:
    sd = dict(sd)
    p = "cvt." if any(k.startswith("cvt.") for k in sd) else ""
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.num_stages):
        src, dst = f"{p}encoder.stages.{i}.", f"stage{i}."
        emb = src + "embedding.convolution_embeddings."
        for a, b in (("projection", "patch_embed.proj"), ("normalization", "patch_embed.norm")):
            for t in ("weight", "bias"):
                out[f"{dst}{b}.{t}"] = take(sd, f"{emb}{a}.{t}")
        if cfg.cls_token and i == cfg.num_stages - 1:
            out[dst + "cls_token"] = take(sd, src + "cls_token")
        for j in range(cfg.depths[i]):
            h, b = f"{src}layers.{j}.", f"{dst}blocks.{j}."
            for a, c in _BLOCK.items():
                out[f"{b}{c}.weight"] = take(sd, f"{h}{a}.weight")
                if f"{h}{a}.bias" in sd:  # projection_* have none when qkv_bias is off
                    out[f"{b}{c}.bias"] = sd.pop(f"{h}{a}.bias")
            for name, s in _CONV_PROJ.items():
                conv = f"{h}attention.attention.convolution_projection_{name}.convolution_projection."
                out[f"{b}attn.conv_proj_{s}.conv.weight"] = take(sd, conv + "convolution.weight")
                for t in _BN:
                    out[f"{b}attn.conv_proj_{s}.bn.{t}"] = take(sd, f"{conv}normalization.{t}")
                tracked = sd.pop(f"{conv}normalization.num_batches_tracked", torch.tensor(0, dtype=torch.long))
                out[f"{b}attn.conv_proj_{s}.bn.num_batches_tracked"] = tracked
    if "layernorm.weight" in sd:
        out["norm.weight"], out["norm.bias"] = sd.pop("layernorm.weight"), take(sd, "layernorm.bias")
    else:  # a CvtModel checkpoint: the final LayerNorm lives in transformers' classification wrapper
        dim = cfg.embed_dims[-1]
        out["norm.weight"], out["norm.bias"] = torch.ones(dim), torch.zeros(dim)
        warnings.warn("CvtModel checkpoint has no final LayerNorm; it starts with weight 1, bias 0", stacklevel=3)
    if "classifier.weight" in sd:
        out["head.weight"], out["head.bias"] = sd.pop("classifier.weight"), take(sd, "classifier.bias")
    out.update(sd)  # leftovers surface as "unexpected keys" when loaded
    return out


def state_dict_to_hf(sd: dict[str, torch.Tensor], cfg: CvTConfig) -> dict[str, torch.Tensor]:
    """Official (vitkit) names -> ``CvtForImageClassification``'s: the inverse of :func:`state_dict_from_hf`."""
    sd = dict(sd)
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.num_stages):
        dst, src = f"cvt.encoder.stages.{i}.", f"stage{i}."
        emb = dst + "embedding.convolution_embeddings."
        for a, b in (("projection", "patch_embed.proj"), ("normalization", "patch_embed.norm")):
            for t in ("weight", "bias"):
                out[f"{emb}{a}.{t}"] = take(sd, f"{src}{b}.{t}")
        if cfg.cls_token and i == cfg.num_stages - 1:
            out[dst + "cls_token"] = take(sd, src + "cls_token")
        for j in range(cfg.depths[i]):
            h, b = f"{dst}layers.{j}.", f"{src}blocks.{j}."
            for a, c in _BLOCK.items():
                out[f"{h}{a}.weight"] = take(sd, f"{b}{c}.weight")
                if f"{b}{c}.bias" in sd:
                    out[f"{h}{a}.bias"] = sd.pop(f"{b}{c}.bias")
            for name, q in _CONV_PROJ.items():
                conv = f"{h}attention.attention.convolution_projection_{name}.convolution_projection."
                out[conv + "convolution.weight"] = take(sd, f"{b}attn.conv_proj_{q}.conv.weight")
                for t in (*_BN, "num_batches_tracked"):
                    out[f"{conv}normalization.{t}"] = take(sd, f"{b}attn.conv_proj_{q}.bn.{t}")
    out["layernorm.weight"], out["layernorm.bias"] = take(sd, "norm.weight"), take(sd, "norm.bias")
    if "head.weight" in sd:
        out["classifier.weight"], out["classifier.bias"] = take(sd, "head.weight"), take(sd, "head.bias")
    if sd:
        raise CheckpointError(f"CvT -> transformers: no transformers name for {', '.join(sorted(sd))}")
    return out


def state_dict_from_release(sd: dict[str, torch.Tensor], cfg: CvTConfig) -> dict[str, torch.Tensor]:
    """A bare state dict: Microsoft's official release (vitkit's names) or transformers' (``cvt.encoder...``)."""
    if any(k.startswith(("cvt.encoder.", "encoder.stages.")) for k in sd):
        return state_dict_from_hf(sd, cfg)
    return dict(sd)


def from_hf(hf_config: dict, sd: dict[str, torch.Tensor]) -> tuple[CvTConfig, dict, list[str] | None]:
    cfg = with_hf_extra_fields(config_from_hf(hf_config), hf_config)
    if "classifier.weight" not in sd and cfg.num_classes:
        cfg = replace_config(cfg, num_classes=0)  # a CvtModel checkpoint: backbone only
    return cfg, state_dict_from_hf(sd, cfg), class_names_from_hf(hf_config)
