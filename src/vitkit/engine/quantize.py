"""Dynamic int8 quantisation of the Linear layers (weights int8 once, activations quantised per call).

Transformers spend most of their time in Linear layers (qkv, proj, MLP), so this is where int8 helps on CPU;
convolutions (patch / token embeddings) and attention products stay in fp32. Inference only.
"""

import copy

import torch
from torch import nn


def quantize_dynamic_int8(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) whose ``nn.Linear`` layers run int8 matmuls via fbgemm/x86 kernels."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    target = model if inplace else copy.deepcopy(model)
    target.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation notice (moved to torchao)
        return quantize_dynamic(target, {nn.Linear}, dtype=torch.qint8, inplace=True)
