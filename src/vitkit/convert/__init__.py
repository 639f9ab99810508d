"""Checkpoint converters: each maps a foreign config + state dict to (vitkit config, state dict, class names).

``HF_CONVERTERS`` is keyed by a transformers ``config.json`` ``model_type``; ``TIMM_CONVERTERS`` by the prefix of a
timm ``architecture`` name (timm has no CvT). ``HF_CONFIGS`` goes the other way: a vitkit config -> transformers'
config fields. ``VITKIT_UPGRADES`` renames the fields of configs that older vitkit versions wrote.
"""

from vitkit.convert import cvt, swin, vit

HF_CONVERTERS = {"vit": vit.from_hf, "swin": swin.from_hf, "cvt": cvt.from_hf}
TIMM_CONVERTERS = {"vit_": vit.from_timm, "swin_": swin.from_timm}
HF_CONFIGS = {"vit": vit.config_to_hf, "swin": swin.config_to_hf, "cvt": cvt.config_to_hf}
VITKIT_UPGRADES = {"cvt": cvt.upgrade_vitkit_config}  # family -> raw config of vitkit 0.1 -> today's fields
