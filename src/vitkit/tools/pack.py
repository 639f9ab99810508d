"""Pre-packed Linear weights for CPU float32 inference: the same logits, a few percent faster.

oneDNN reorders a plain weight matrix into its blocked layout inside every matmul; :func:`pack_linear_weights`
does it once per layer. Measured on this project's 2-core AVX-512 CPU: 5-16 % per matmul at ViT / Swin / CvT
shapes (benchmarks/README.md). Like int8, it returns a copy whose ``nn.Linear`` layers are replaced, so keep
only one of the two models in memory; the packed copy has no state dict to save: save the original.
"""

import copy

from torch import nn

from vitkit.errors import VitkitError
from vitkit.layers.fused import HAS_FUSED_LINEAR, PackedLinear


def pack_linear_weights(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) with every float32 CPU ``nn.Linear`` replaced by a :class:`PackedLinear`."""
    if not HAS_FUSED_LINEAR:
        raise VitkitError("packed Linear weights need PyTorch built with oneDNN (mkldnn), which this one is not")
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    for parent in list(target.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and child.weight.device.type == "cpu":
                setattr(parent, name, PackedLinear(child))
    return target
