"""The weight initialisation the three families share (timm's / the papers' 'trunc_normal' scheme)."""

from torch import nn


def init_linear_and_norms_(module: nn.Module, std: float = 0.02) -> None:
    """Linear ~ truncated N(0, std) with zero bias; LayerNorm / BatchNorm weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
