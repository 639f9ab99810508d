"""AdamW (fused where PyTorch has the kernel), its parameter groups, the warm-up + cosine schedule, weight EMA."""

import copy
import math
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Group trainable parameters by (decay or not, depth) so each group has one lr scale and decay.

    No decay on anything 1-D (norm weights, biases) or named by ``model.no_weight_decay()``
    (position embeddings, [CLS] tokens, relative-position bias tables). With ``layer_decay < 1``
    a parameter at depth ``layer_id`` gets ``lr * layer_decay ** (num_layers + 1 - layer_id)``:
    the head trains at the full rate, the stem at the smallest.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    use_layers = layer_decay < 1.0 and hasattr(model, "layer_id")
    n_layers = model.num_layers() + 1 if use_layers else 0
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or name in skip or any(name.startswith(s + ".") or name.endswith(s) for s in skip)
        layer = model.layer_id(name) if use_layers else 0
        key = (no_decay, layer)
        if key not in groups:
            scale = layer_decay ** (n_layers - layer) if use_layers else 1.0
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": scale,
            }
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def adamw(params, lr: float, **kwargs: Any) -> torch.optim.AdamW:
    """AdamW with PyTorch's fused kernel where it exists for these parameters, else its default implementation.

    On CPU the default is a per-parameter loop; the fused kernel updates every tensor in one pass over memory, which
    matters for large models at small batches (see benchmarks/README.md). The update rule is the same.
    """
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, lr=lr, **kwargs)


class WarmupCosine:
    """Per-step lr factor: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_lr / lr``.

    Sets ``group['lr'] = base_lr * group['lr_scale'] * factor`` on every ``step()``; its only state is
    the step counter, so resuming is exact.
    """

    def __init__(self, optimizer, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> None:
        self.optimizer, self.base_lr, self.min_lr = optimizer, base_lr, min_lr
        self.warmup_steps, self.total_steps = warmup_steps, max(total_steps, 1)
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / (self.warmup_steps + 1)
        span = max(self.total_steps - self.warmup_steps, 1)
        t = min((step - self.warmup_steps) / span, 1.0)
        floor = min(self.min_lr, self.base_lr)
        return floor + (self.base_lr - floor) * 0.5 * (1 + math.cos(math.pi * t))

    def _apply(self) -> None:
        lr = self.lr_at(self.last_step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> float:
        return self.lr_at(self.last_step)

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self._apply()


class ModelEma:
    """``ema = d * ema + (1 - d) * weights`` after every optimizer step; buffers are copied.

    ``d = min(decay, (1 + n) / (10 + n))`` after n updates (timm's warm-up): with decay 0.9999 a short
    run would otherwise evaluate weights that are still mostly the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            ema = ema_state[name]
            if value.is_floating_point():
                ema.mul_(d).add_(value.detach(), alpha=1 - d)
            else:
                ema.copy_(value)
