"""Model size and cost without running real arithmetic: parameters, FLOPs, per-stage structure.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on *meta* tensors: the model is built
with its parameters on the meta device (shapes only, no memory, no initialisation cost), so even a
300M-parameter model costs next to nothing to measure. One multiply-add counts as 2 FLOPs; GMACs = GFLOPs / 2
(the number timm and most papers print). Only matmuls, convolutions and attention are counted (norms,
activations and softmax are a few percent at most), like fvcore and timm's profilers.
"""

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from vitkit.eval.flops import flop_counter
from vitkit.models.config import to_2tuple
from vitkit.models.registry import get_entry, model_from_config, replace_config


class _ParamsOnMeta(TorchFunctionMode):
    """Create new tensors on the meta device, except the small index/schedule tensors that model
    constructors read back with ``.tolist()`` (``linspace``, ``arange``); ``model.to('meta')`` moves those after."""

    def __init__(self) -> None:
        super().__init__()
        from torch.utils._device import _device_constructors

        self.factories = _device_constructors() - {torch.linspace, torch.arange}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.factories and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def build_on_meta(config: Any, name: str | None = None) -> nn.Module:
    """The model a config describes with every parameter and buffer on the meta device."""
    try:
        with _ParamsOnMeta():
            model = model_from_config(config, name)
    except (NotImplementedError, RuntimeError):  # a constructor that needs real values: pay for a CPU build
        model = model_from_config(config, name)
    return model.to("meta").eval()


def count_flops(model: nn.Module, input_size: tuple[int, int, int], batch_size: int = 1) -> int:
    """FLOPs of one forward pass on ``input_size`` = (C, H, W), on the model's own device (meta works)."""
    device = next(model.parameters()).device
    x = torch.zeros(batch_size, *input_size, device=device)
    counter = flop_counter()  # the one counting convention of vitkit.eval.flops (CPU fused attention included)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class ModelStats:
    name: str
    family: str
    params: int
    flops: int  # at input_size
    input_size: tuple[int, int, int]

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "params": self.params,
            "params_m": round(self.params / 1e6, 3),
            "gflops": round(self.gflops, 4),
            "gmacs": round(self.gmacs, 4),
            "input_size": list(self.input_size),
        }


@functools.cache
def registered_model_stats(name: str, img_size: int | None = None, num_classes: int | None = None) -> ModelStats:
    """Parameters and FLOPs of a registered model at its native resolution (or ``img_size``)."""
    entry = get_entry(name)
    changes = {k: v for k, v in {"img_size": img_size, "num_classes": num_classes}.items() if v is not None}
    cfg = replace_config(entry.config, **changes) if changes else entry.config
    model = build_on_meta(cfg, name)
    size = (cfg.in_chans, *to_2tuple(cfg.img_size))
    return ModelStats(name, entry.family, sum(p.numel() for p in model.parameters()), count_flops(model, size), size)


def model_stats(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> ModelStats:
    """Parameters and FLOPs of a built model (any device), at its configured input size by default."""
    cfg = model.config
    size = input_size or (cfg.in_chans, *to_2tuple(cfg.img_size))
    try:
        meta = build_on_meta(cfg, getattr(model, "model_name", None))
        flops = count_flops(meta, size)
    except Exception:  # e.g. a model class that is not in the registry: count on a real input
        flops = count_flops(model, size)
    name = getattr(model, "model_name", None) or type(model).__name__
    return ModelStats(name, getattr(model, "family", ""), sum(p.numel() for p in model.parameters()), flops, size)


# --- per-stage structure ---------------------------------------------------------------------------
def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from vitkit.layers import RecordsAttention

    return [(n, m) for n, m in model.named_modules() if isinstance(m, RecordsAttention)]


def _parent_name(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _window(attn: nn.Module, block: nn.Module) -> str:
    for m in (attn, block):
        for key in ("window_size", "window"):
            w = getattr(m, key, None)
            if w is not None and not isinstance(w, nn.Module):
                w = to_2tuple(w) if not isinstance(w, int) or w > 0 else (w, w)
                return f"{w[0]}x{w[1]}"
    return "global"


def _heads(attn: nn.Module) -> int | None:
    for key in ("num_heads", "heads", "n_heads"):
        v = getattr(attn, key, None)
        if isinstance(v, int):
            return v
    return None


def _width(attn: nn.Module, block: nn.Module) -> int | None:
    for m in (attn, block):
        dim = getattr(m, "dim", None)
        if isinstance(dim, int):
            return dim
    first = next((m for m in attn.modules() if isinstance(m, nn.Linear)), None)
    return first.in_features if first is not None else None


def describe(model: nn.Module, input_size: tuple[int, int, int] | None = None) -> list[dict[str, Any]]:
    """Architecture summary per stage: blocks, tokens, channels, heads, attention window.

    A model may provide its own ``describe()``; otherwise this runs one forward pass on meta tensors with
    hooks on every attention block (the parent of each attention module) and groups consecutive blocks
    with the same (tokens, channels, heads, window) into a stage, which works for any family built from
    ``RecordsAttention`` modules.
    """
    own = getattr(model, "describe", None)
    if callable(own):
        return own()
    cfg = model.config
    size = input_size or (cfg.in_chans, *to_2tuple(cfg.img_size))
    try:
        meta = build_on_meta(cfg, getattr(model, "model_name", None))
    except Exception:
        meta = model
    modules = dict(meta.named_modules())
    seen: list[dict[str, Any]] = []
    hooks = []
    for attn_name, attn in _attention_modules(meta):
        block_name = _parent_name(attn_name)
        block = modules[block_name]

        def hook(mod, args, _attn=attn, _block=block, _name=block_name):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor):
                return
            width = _width(_attn, _block)
            tokens = x.numel() // (x.shape[0] * width) if width else None
            spatial = tuple(x.shape[1:-1]) if x.dim() == 4 else None  # channels-last (B, H, W, C)
            seen.append(
                {
                    "block": _name,
                    "tokens": tokens,
                    "grid": f"{spatial[0]}x{spatial[1]}" if spatial else None,
                    "channels": width,
                    "heads": _heads(_attn),
                    "window": _window(_attn, _block),
                }
            )

        hooks.append(block.register_forward_pre_hook(hook))
    try:
        device = next(meta.parameters()).device
        with torch.no_grad():
            meta.eval()(torch.zeros(1, *size, device=device))
    finally:
        for h in hooks:
            h.remove()
    stages: list[dict[str, Any]] = []
    for rec in seen:
        key = (rec["tokens"], rec["channels"], rec["heads"], rec["window"])
        if stages and stages[-1]["_key"] == key:
            stages[-1]["blocks"] += 1
            stages[-1]["last"] = rec["block"]
        else:
            stages.append({"_key": key, "blocks": 1, "first": rec["block"], "last": rec["block"], **rec})
    out = []
    for i, s in enumerate(stages):
        span = s["first"] if s["blocks"] == 1 else f"{s['first']} .. {s['last']}"
        out.append(
            {
                "stage": i,
                "modules": span,
                "blocks": s["blocks"],
                "tokens": s["tokens"],
                "channels": s["channels"],
                "heads": s["heads"],
                "window": s["window"],
            }
        )
    return out
