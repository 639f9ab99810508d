"""Hugging Face CvT checkpoints (``CvtForImageClassification`` / ``CvtModel``) -> vitkit's CvT.

vitkit uses the parameter names of Microsoft's official release; transformers renamed them when it
ported the weights (its conversion script holds the same table in the other direction).
"""

import warnings

import torch

from vitkit.convert.common import class_names_from_hf, take
from vitkit.errors import CheckpointError
from vitkit.models.cvt import CvTConfig
from vitkit.registry import replace_config

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


def _same_in_every_stage(hf: dict, key: str) -> int:
    values = list(_get(hf, key))
    if len(set(values)) != 1:
        raise CheckpointError(f"CvT config {key}={values}: vitkit needs the same value in every stage")
    return int(values[0])


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
    img_size = _img_size(hf)
    try:
        return CvTConfig(
            img_size=img_size,
            in_chans=hf.get("num_channels", 3),
            num_classes=len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 0),
            patch_size=tuple(_get(hf, "patch_sizes")),
            patch_stride=tuple(_get(hf, "patch_stride")),
            patch_padding=tuple(_get(hf, "patch_padding")),
            embed_dim=tuple(_get(hf, "embed_dim")),
            depth=tuple(_get(hf, "depth")),
            num_heads=tuple(_get(hf, "num_heads")),
            mlp_ratio=tuple(float(r) for r in _get(hf, "mlp_ratio")),
            qkv_bias=tuple(bool(b) for b in _get(hf, "qkv_bias")),
            cls_token=tuple(bool(b) for b in _get(hf, "cls_token")),
            kernel_qkv=_same_in_every_stage(hf, "kernel_qkv"),
            padding_q=_same_in_every_stage(hf, "padding_q"),
            padding_kv=_same_in_every_stage(hf, "padding_kv"),
            stride_q=_same_in_every_stage(hf, "stride_q"),
            stride_kv=_same_in_every_stage(hf, "stride_kv"),
            drop_rate=float(max(_get(hf, "drop_rate"))),
            attn_drop_rate=float(max(_get(hf, "attention_drop_rate"))),
            # transformers ramps per stage up to (0, 0, 0.1); vitkit ramps once over all blocks to the largest
            drop_path_rate=float(max(_get(hf, "drop_path_rate"))),
            # transformers' CvT builds nn.LayerNorm(dim) and ignores layer_norm_eps: 1e-5, as the original
            norm_eps=1e-5,
            crop_pct=1.0 if img_size >= 384 else 0.875,
        )
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"CvT config.json does not describe a model vitkit can build: {e}") from None


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
        if cfg.cls_token[i]:
            out[dst + "cls_token"] = take(sd, src + "cls_token")
        for j in range(cfg.depth[i]):
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
        dim = cfg.embed_dim[-1]
        out["norm.weight"], out["norm.bias"] = torch.ones(dim), torch.zeros(dim)
        warnings.warn("CvtModel checkpoint has no final LayerNorm; it starts with weight 1, bias 0", stacklevel=3)
    if "classifier.weight" in sd:
        out["head.weight"], out["head.bias"] = sd.pop("classifier.weight"), take(sd, "classifier.bias")
    out.update(sd)  # leftovers surface as "unexpected keys" when loaded
    return out


def from_hf(hf_config: dict, sd: dict[str, torch.Tensor]) -> tuple[CvTConfig, dict, list[str] | None]:
    cfg = config_from_hf(hf_config)
    if "classifier.weight" not in sd and cfg.num_classes:
        cfg = replace_config(cfg, num_classes=0)  # a CvtModel checkpoint: backbone only
    return cfg, state_dict_from_hf(sd, cfg), class_names_from_hf(hf_config)
