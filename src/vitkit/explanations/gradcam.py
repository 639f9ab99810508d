"""Grad-CAM (Selvaraju et al., 2017) with each family's token layout built in.

Grad-CAM weighs the channels of one feature map by the mean gradient of the target logit over its positions and keeps
the positive part of the weighted sum. The map must be one whose positions still reach the head:

* ViT: the tokens entering the last block. After it the head reads [CLS] only, so the patch tokens the last block
  puts out have no gradient; before it they reach [CLS] through its attention. [CLS] is dropped, the N patch tokens
  become the (H/p, W/p) grid.
* Swin: the output of the last stage, already (B, H, W, C) (the head averages it); of the last stage with more
  than one token when a small input leaves the last ones a single token (a 1x1 map has nowhere to point).
* CvT: the tokens entering the last block of the last stage, [CLS] dropped, tokens -> (H, W) map (with a head that
  averages the tokens every position reaches it anyway).
"""

import torch

from vitkit.explanations.geometry import stages, to_pixels


def feature_stage(model, size: tuple[int, int]) -> int:
    """The stage whose tokens Grad-CAM reads for an input of ``size``."""
    chain = stages(model, size)
    if model.family == "swin":
        wide = [i for i, st in enumerate(chain) if st.grid[0] * st.grid[1] > 1]
        return wide[-1] if wide else len(chain) - 1
    return len(chain) - 1


def feature_module(model, size: tuple[int, int]) -> tuple[torch.nn.Module, str]:
    """The module whose input (``"input"``) or output (``"output"``) Grad-CAM reads."""
    if model.family == "vit":
        return model.blocks[-1], "input"
    if model.family == "swin":
        return model.layers[feature_stage(model, size)], "output"
    if model.family == "cvt":
        return model.stages[-1].blocks[-1], "input"
    raise ValueError(f"no Grad-CAM layer for family {model.family!r}")


def capture_features(model, size: tuple[int, int]):
    """Hook the Grad-CAM feature map: returns the hook's handle and a dict whose ``"features"`` the next forward
    pass fills."""
    module, where = feature_module(model, size)
    store: dict[str, torch.Tensor] = {}

    def pre_hook(_module, args):
        store["features"] = args[0]

    def post_hook(_module, _args, output):
        store["features"] = output

    handle = module.register_forward_pre_hook(pre_hook) if where == "input" else module.register_forward_hook(post_hook)
    return handle, store


def cam_grid(model, features: torch.Tensor, grad: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM on the family's feature map -> (B, h, w) on the grid of the stage it came from."""
    chain = stages(model, size)
    if model.family == "swin":  # (B, H, W, C)
        feats, grads = features, grad
    else:  # tokens (B, [prefix +] H*W, C)
        h, w = chain[feature_stage(model, size)].grid
        p = features.shape[1] - h * w
        feats = features[:, p:].reshape(features.shape[0], h, w, -1)
        grads = grad[:, p:].reshape(grad.shape[0], h, w, -1)
    weights = grads.float().mean(dim=(1, 2), keepdim=True)  # (B, 1, 1, C): each channel's importance
    return (weights * feats.float()).sum(dim=-1).clamp_min(0)  # (B, h, w)


def gradcam_pixels(model, features: torch.Tensor, grad: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM carried to the (B, H, W) input: each pixel the mean of the tokens whose windows cover it."""
    cam = cam_grid(model, features.detach(), grad.detach(), size)
    return to_pixels(cam, model, size, feature_stage(model, size), "mean")
