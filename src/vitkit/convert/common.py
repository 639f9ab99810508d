"""Helpers shared by the checkpoint converters of all families."""

import torch

from vitkit.errors import CheckpointError


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
