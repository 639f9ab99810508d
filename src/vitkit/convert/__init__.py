"""Checkpoint converters: each maps a foreign config + state dict to (vitkit config, state dict, class names).

``HF_CONVERTERS`` is keyed by a transformers ``config.json`` ``model_type``; ``TIMM_CONVERTERS`` by the prefix of a
timm ``architecture`` name (timm has no CvT); ``RELEASE_CONVERTERS`` by family, for bare state dicts (the papers'
official releases, timm's or transformers' files). The other way, :func:`to_transformers` and :func:`to_timm` give
the files of a checkpoint those libraries load (``HF_CONFIGS``: a vitkit config -> transformers' config fields).
``VITKIT_UPGRADES`` renames the fields of configs that older vitkit versions wrote.
"""

from typing import Any

import torch

from vitkit.convert import cvt, swin, vit
from vitkit.convert.common import hf_extra_fields, hf_label_fields, hf_preprocessor_config, timm_pretrained_cfg
from vitkit.errors import CheckpointError
from vitkit.models.registry import family_of_config

HF_CONVERTERS = {"vit": vit.from_hf, "swin": swin.from_hf, "cvt": cvt.from_hf}
TIMM_CONVERTERS = {"vit_": vit.from_timm, "swin_": swin.from_timm}
RELEASE_CONVERTERS = {
    "vit": vit.state_dict_from_release,
    "swin": swin.state_dict_from_release,
    "cvt": cvt.state_dict_from_release,
}
HF_CONFIGS = {"vit": vit.config_to_hf, "swin": swin.config_to_hf, "cvt": cvt.config_to_hf}
VITKIT_UPGRADES = {"cvt": cvt.upgrade_vitkit_config}  # family -> raw config of vitkit 0.1 -> today's fields

_HF_TO = {"vit": vit.state_dict_to_hf, "swin": swin.state_dict_to_hf, "cvt": cvt.state_dict_to_hf}
_HF_ARCHITECTURES = {
    "vit": "ViTForImageClassification",
    "swin": "SwinForImageClassification",
    "cvt": "CvtForImageClassification",
}
_TIMM_TO = {"vit": (vit.to_timm, "head"), "swin": (swin.to_timm, "head.fc")}

Files = dict[str, dict[str, Any]]  # file name -> JSON content


def to_transformers(
    cfg: Any, sd: dict[str, torch.Tensor], class_names: list[str] | None
) -> tuple[Files, dict[str, torch.Tensor]]:
    """config.json (for ``AutoModelForImageClassification``; ``num_classes=0``: a classifier that is the identity)
    and preprocessor_config.json (for ``AutoImageProcessor``), and the state dict in transformers' names."""
    family = family_of_config(cfg).name
    config = HF_CONFIGS[family](cfg) | hf_label_fields(class_names, cfg.num_classes)
    config |= {"architectures": [_HF_ARCHITECTURES[family]], "vitkit_fields": hf_extra_fields(cfg)}
    return {"config.json": config, "preprocessor_config.json": hf_preprocessor_config(cfg)}, _HF_TO[family](sd, cfg)


def to_timm(
    cfg: Any, sd: dict[str, torch.Tensor], class_names: list[str] | None, model_name: str | None
) -> tuple[Files, dict[str, torch.Tensor]]:
    """timm's hub config.json (``architecture``, ``num_classes``, ``model_args``, ``pretrained_cfg``) and state dict,
    as ``timm.models.save_for_hf`` writes them: ``timm.create_model("local-dir:DIR", pretrained=True)`` loads them."""
    family = family_of_config(cfg).name
    if family not in _TIMM_TO:
        raise CheckpointError(f"timm has no {family} models; save it as transformers or vitkit instead")
    convert, classifier = _TIMM_TO[family]
    config, state = convert(cfg, sd, model_name)
    config["pretrained_cfg"] = timm_pretrained_cfg(cfg, cfg.num_classes, classifier, class_names)
    if class_names and len(class_names) == cfg.num_classes:
        config["label_names"] = list(class_names)
    return {"config.json": config}, state
