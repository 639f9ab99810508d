"""What every optimized model is: the reference model's class with an inference-only layer on top.

:func:`vitkit.optimize` swaps the classes of a model's modules for their engine versions (subclasses that take a
fast path where it applies and call the reference ``forward`` everywhere else) and the model's own class for a
subclass of :class:`InferenceModel`, which refuses training and new weights and carries the report of what was
swapped.
"""

from collections import Counter
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import nn

from vitkit.errors import VitkitError
from vitkit.settings import EngineSettings

# Set while an optimized model computes its logits and nothing else can see the last block's output: a head that
# reads [CLS] only then lets the last block compute its [CLS] row only (keys and values still from every token).
HEAD_READS_CLS_ONLY: ContextVar[bool] = ContextVar("vitkit_head_reads_cls_only", default=False)


def has_hooks(modules: tuple[nn.Module, ...]) -> bool:
    """Forward hooks on any of ``modules`` (or global ones): they would see the [CLS] row alone."""
    hooks = nn.modules.module
    if getattr(hooks, "_global_forward_hooks", None) or getattr(hooks, "_global_forward_pre_hooks", None):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


@dataclass
class OptimizationReport:
    """What :func:`vitkit.optimize` did to a model."""

    model: str
    settings: EngineSettings
    swaps: Counter = field(default_factory=Counter)  # (reference class, engine class, what it does) -> modules
    kernels: dict[str, str] = field(default_factory=dict)  # kernel -> "ready" or why it is not used
    probes: list = field(default_factory=list)  # vitkit.engine.probe's probes: what was measured, and chosen

    def lines(self) -> list[str]:
        out = [f"{n} x {ref} -> {new}: {what}" for (ref, new, what), n in self.swaps.items()]
        out += [f"native kernel {name}: {state}" for name, state in self.kernels.items()]
        return out + [p.line() for p in self.probes]

    def summary(self) -> str:
        return f"optimized {self.model}:\n" + "\n".join(f"  {line}" for line in self.lines())

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "swaps": [{"from": r, "to": n, "what": w, "modules": c} for (r, n, w), c in self.swaps.items()],
            "kernels": dict(self.kernels),
            "probes": [p.record() for p in self.probes],
            "micro_batch_bytes": self.settings.micro_batch_bytes,
        }


class InferenceModel:
    """Mixin of an optimized model's class (listed before the reference class)."""

    engine_settings: EngineSettings
    optimization: OptimizationReport

    def train(self, mode: bool = True):
        if mode:
            raise VitkitError(
                "this model was optimized for inference (vitkit.optimize) and cannot be trained; train the model it "
                "was made from (optimize returns a copy unless inplace=True)"
            )
        return super().train(False)

    def load_state_dict(self, *args, **kwargs):
        raise VitkitError(
            "an optimized model keeps precomputed tensors that new weights would leave stale; load the weights into "
            "the reference model, then call vitkit.optimize on it again"
        )

    def _cast_in(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs to the model's dtype when its weights are bfloat16 (``bf16_weights``)."""
        if self.engine_settings.bf16_weights and x.is_floating_point() and x.dtype != torch.bfloat16:
            return x.to(torch.bfloat16)
        return x

    # set by optimize where the head reads [CLS] alone: the modules whose outputs are then the [CLS] row only (the
    # last block and its parts, what follows it up to the head), in a tuple: not registered as submodules
    cls_only_modules: tuple[nn.Module, ...] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls_only = bool(self.cls_only_modules) and not has_hooks(self.cls_only_modules)
        token = HEAD_READS_CLS_ONLY.set(cls_only)
        try:
            logits = super().forward(self._cast_in(x))
        finally:
            HEAD_READS_CLS_ONLY.reset(token)
        return logits.float() if self.engine_settings.bf16_weights else logits

    def _needs_no_grad(self, x: torch.Tensor) -> bool:
        """Autograd is on, but nothing needs a gradient: the call may run under no_grad (the fast paths)."""
        return torch.is_grad_enabled() and not x.requires_grad and not any(p.requires_grad for p in self.parameters())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._cast_in(x)
        if self._needs_no_grad(x):
            with torch.no_grad():
                return self.forward_features(x)
        return super().forward_features(x)

    def forward_intermediates(self, x: torch.Tensor, *args, **kwargs):
        x = self._cast_in(x)
        if self._needs_no_grad(x):
            with torch.no_grad():
                return self.forward_intermediates(x, *args, **kwargs)
        return super().forward_intermediates(x, *args, **kwargs)
