"""The transformer feed-forward block; the same in ViT, Swin and CvT (fc1 -> GELU -> fc2)."""

import torch
from torch import nn

from vitkit.layers.fused import can_fuse, linear


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual + mlp(x)`` when a residual is given: on the fused CPU path the add rides in fc2."""
        if can_fuse(x, self) and type(self.act) is nn.GELU and self.act.approximate == "none":
            return linear(linear(x, self.fc1, gelu=True), self.fc2, residual=residual)
        y = self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))
        return y if residual is None else residual + y
