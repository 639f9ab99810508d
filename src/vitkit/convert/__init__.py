"""Checkpoint converters: each maps a foreign config + state dict to (vitkit config, state dict, class names).

``HF_CONVERTERS`` is keyed by a transformers ``config.json`` ``model_type``; ``TIMM_CONVERTERS`` by the
prefix of a timm ``architecture`` name.
"""

from vitkit.convert import cvt, swin, vit

HF_CONVERTERS = {"vit": vit.from_hf}
TIMM_CONVERTERS = {"vit_": vit.from_timm}
HF_CONVERTERS["swin"] = swin.from_hf
TIMM_CONVERTERS["swin_"] = swin.from_timm
HF_CONVERTERS["cvt"] = cvt.from_hf
