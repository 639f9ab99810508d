"""The inference engine: ``vitkit.optimize(model)`` rewrites a trained model for fast inference.

The reference models (:mod:`vitkit.models`) hold only the computation of the study note; everything that is there
for speed lives here, chosen when a model is optimized, the way timm's ``reparameterize_model`` rewrites a trained
model for deployment. :func:`optimize` returns a copy (or, with ``inplace=True``, the model itself) whose modules are
swapped for engine versions:

* every block: linears fused with their bias, GELU and residual add in oneDNN's matmul (CPU float32 and bf16),
  where a quick probe on the model's widest MLP layer finds oneDNN not slower than plain ``F.linear`` on this CPU
  (:mod:`vitkit.engine.probe`; the measurement is in the report), with GELU run after the matmul instead where the
  probe finds oneDNN's GELU epilogue slower (its AVX2 code); there, every float32 Linear weight is kept in
  oneDNN's blocked layout instead of the plain one (``pack_weights``), which saves the reorder oneDNN otherwise
  makes inside every call, at no extra memory (``weight`` still reads the plain layout, exactly); each native
  kernel below is probed against PyTorch's attention the same way and left out where it is slower;
* ViT and CvT: multi-head attention in a native kernel where it beats SDPA;
* Swin: the whole shifted-window attention in one native kernel (shift, partition and reverse as index
  arithmetic), or a PyTorch path without the partition copies; the relative-position bias and shift mask are built
  once per resolution;
* CvT: each projection's BatchNorm folded into its depthwise conv;
* ViT and CvT with a head that reads [CLS] only: when the model is asked for its logits (``model(x)``; not
  ``forward_features``, and not while a forward hook watches the last block or the final norm), the last block
  computes its [CLS] row alone: keys and values from every token, but one query, and the projection and MLP on one
  token (``cls_only_head``);
* CPU batches whose widest temporary would be huge run in slices (no page faults on every call);
* bf16 / fp16 matmuls (autocast, or ``bf16_weights``): Linear weights cast to that dtype once instead of on every
  call (autocast's own cache skips tensors that need no gradient, as a frozen model's), on the CPU in oneDNN's layout
  with bias, GELU and residual add fused as in float32; on CPUs where a probe finds float32 matmuls faster than bf16
  ones (no AMX), bf16 linears, and Swin's window attention in its native kernel, run as float32 products of the bf16
  values (exact in float32, summed in float32 as bf16 kernels do; ``bf16_in_float32``);
* optionally, the whole model in bfloat16 (``bf16_weights=True``): inputs are cast on the way in and the logits come
  back in float32. On CPUs with native bf16 (AVX512-BF16, AMX) this is faster than autocast, which keeps float32
  weights and casts them, and LayerNorm / softmax outputs, on every call; the price is bf16 rounding in the residual
  stream too (``benchmarks/modes.py`` measures how many predictions change).

``forward_intermediates`` and a ``features_only`` backbone (:class:`~vitkit.models.features.FeatureModel`, whose
inner model is optimized) run the same swapped modules.

Each swap falls back to the reference computation wherever its fast path does not apply (autograd, tracing or export,
attention maps being recorded, other devices or dtypes for the CPU-only parts), so an optimized model gives the
reference's numbers to float rounding everywhere. It is inference-only: ``train()`` and ``load_state_dict()`` raise.
``model.optimization`` says what was done (``.summary()``). The switches are the fields of
:class:`vitkit.settings.EngineSettings`.

Training has shortcuts too, :func:`training_path` (:mod:`vitkit.engine.training`): while it is active a ViT with a
[CLS] head computes its last block's [CLS] row alone, Swin (CPU float32) runs each window attention in the native
kernel with its backward pass, and CvT under CPU bf16 autocast runs its strided depthwise projections in float32;
``vitkit train`` takes them on every step. The model stays the reference model.
"""

import copy
import dataclasses
from collections import Counter

import torch
from torch import nn

from vitkit.engine import cvt, swin, vit
from vitkit.engine.linear import HAS_BF16_FUSED_LINEAR, HAS_FUSED_LINEAR, EngineLinear
from vitkit.engine.model import InferenceModel, OptimizationReport
from vitkit.engine.probe import LinearProbe, bf16_probe, kernel_probes, probe_linear, widest_mlp_input
from vitkit.engine.training import training_path
from vitkit.errors import VitkitError
from vitkit.kernels import unavailable_reason
from vitkit.models.features import FeatureModel
from vitkit.settings import EngineSettings

FAMILIES = {family.MODEL[0]: family for family in (vit, swin, cvt)}


def is_optimized(model: nn.Module) -> bool:
    return isinstance(model, InferenceModel)


def optimize(model: nn.Module, *, inplace: bool = False, share_weights: bool = False, **switches) -> nn.Module:
    """An inference-only version of ``model`` with the same outputs; see the module docstring.

    ``inplace``: rewrite ``model`` itself instead of a copy. ``share_weights``: the copy reads the original's
    parameter tensors instead of copies of them (so no packed weights; re-optimize after the weights change:
    precomputed tensors such as folded BatchNorm do not follow). Other keyword arguments are
    :class:`~vitkit.settings.EngineSettings` switches, e.g. ``native_kernels=False``.
    """
    valid = {f.name for f in dataclasses.fields(EngineSettings)}
    unknown = sorted(set(switches) - valid)
    if unknown:
        raise VitkitError(f"optimize: unknown switch(es) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    settings = EngineSettings(**switches)
    if isinstance(model, FeatureModel):  # a features_only backbone: optimize the model inside
        inner = optimize(model.model, inplace=inplace, share_weights=share_weights, **switches)
        return model if inplace else FeatureModel(inner, model.out_indices, model.norm)
    if is_optimized(model):
        raise VitkitError("optimize: this model is already optimized")
    family = FAMILIES.get(type(model))
    if family is None:
        raise VitkitError(f"optimize: {type(model).__name__} is not one of vitkit's models")
    if not inplace:
        shared = {id(t): t for t in (*model.parameters(), *model.buffers())} if share_weights else {}
        model = copy.deepcopy(model, memo=shared)
    model.eval()
    if not share_weights:
        model.requires_grad_(False)
    report = OptimizationReport(getattr(model, "model_name", None) or type(model).__name__, settings, Counter())
    onednn = {"float32": settings.fused_linear, "bfloat16": settings.fused_linear}  # may this dtype use oneDNN
    if settings.fused_linear and settings.probe:
        report.probes = _probe_linears(model, bf16=settings.lowp_linear)
        onednn |= {p.dtype: p.use_onednn for p in report.probes}
    # dtypes whose oneDNN matmuls run GELU after them, not in their epilogue (the probe found that faster)
    gelu_after = frozenset(getattr(torch, p.dtype) for p in report.probes if p.use_onednn and not p.gelu_epilogue)
    slower_kernels = []  # native kernels the probe found slower than PyTorch's attention on this CPU
    if settings.native_kernels and settings.probe:
        probes = kernel_probes(model)
        report.probes += probes
        slower_kernels = [p.kernel for p in probes if not p.use_kernel]
    native = settings.native_kernels and not slower_kernels
    bf16_in_float32 = False  # bf16 matmuls as float32 products of the bf16 values, where the probe finds it faster
    onednn_bf16, onednn_float32 = onednn["bfloat16"] and HAS_BF16_FUSED_LINEAR, onednn["float32"] and HAS_FUSED_LINEAR
    if settings.bf16_in_float32 and settings.probe and (probe := bf16_probe(model, onednn_bf16, onednn_float32)):
        report.probes.append(probe)
        bf16_in_float32 = probe.use_float32
    effective = dataclasses.replace(  # what runs
        settings, fused_linear=onednn["float32"], native_kernels=native, bf16_in_float32=bf16_in_float32
    )
    # float32 weights in oneDNN's layout only where oneDNN runs them; shared weights stay the original's tensors
    pack = settings.pack_weights and onednn["float32"] and HAS_FUSED_LINEAR
    pack = pack and not (share_weights or settings.bf16_weights)
    for module in list(model.modules()):
        swap = family.SWAPS.get(type(module))
        if swap is not None and (swap[2] is None or getattr(settings, swap[2])):
            engine_cls, what, _ = swap
            report.swaps[(type(module).__name__, f"{engine_cls.__module__}.{engine_cls.__name__}", what)] += 1
            module.__class__ = engine_cls
            module.prepare(effective)
        elif type(module) is nn.Linear and (pack or settings.lowp_linear):
            module.__class__ = EngineLinear
            module.cast_once, module.bf16_in_float32 = settings.lowp_linear, bf16_in_float32
            module.gelu_after = gelu_after
            module.onednn = onednn["float32" if bf16_in_float32 else "bfloat16"]  # for the dtype bf16 matmuls run in
            w = module.weight
            what = ["bf16 / fp16 matmuls: weights cast once"] if settings.lowp_linear else []
            if pack and w.device.type == "cpu" and w.dtype == torch.float32:
                module.pack()
                what.insert(0, "float32 weight kept in oneDNN's layout only")
            report.swaps[("Linear", "vitkit.engine.linear.EngineLinear", "; ".join(what) or "plain")] += 1
    path = family.cls_only_path(model) if settings.cls_only_head else None
    if path is not None and getattr(type(path[0]), "forward_cls", None) is not None:
        block, model.cls_only_modules = path
        block.cls_only = True
        what = "the [CLS] row only when logits are asked for (all the head reads; keys and values from every token)"
        report.swaps[(type(block).__name__, "last block", what)] += 1
    if settings.bf16_weights:  # after the swaps: folded BatchNorm and the other precomputed buffers are cast too
        tensors = sum(1 for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())
        model.to(torch.bfloat16)
        report.swaps[("float32 tensors", "torch.bfloat16", "weights and activations in bfloat16")] += tensors
    if settings.native_kernels:
        for name, library in family.KERNELS.items():
            report.kernels[name] = "ready" if library() is not None else f"not used ({unavailable_reason(name)})"
            if name in slower_kernels:
                report.kernels[name] = "not used (slower than PyTorch's attention on this CPU: see its probe)"
    else:
        report.kernels = dict.fromkeys(family.KERNELS, "switched off")
    model.__class__ = family.MODEL[1]
    model.engine_settings = settings
    model.optimization = report
    return model


def _probe_linears(model: nn.Module, bf16: bool) -> list[LinearProbe]:
    """oneDNN against the plain ops on the model's widest MLP input layer (most of the FLOPs are MLPs), on the CPU."""
    fc = widest_mlp_input(model)
    if fc is None or not HAS_FUSED_LINEAR:
        return []
    threads = torch.get_num_threads()
    probes = [probe_linear(torch.float32, fc.in_features, fc.out_features, threads)]
    if bf16 and HAS_BF16_FUSED_LINEAR:
        probes.append(probe_linear(torch.bfloat16, fc.in_features, fc.out_features, threads))
    return probes


__all__ = ["EngineSettings", "OptimizationReport", "is_optimized", "optimize", "training_path"]
