import pytest
import torch

import vitkit
from tests.tools.conftest import TINY
from vitkit.layers import fused
from vitkit.tools.pack import pack_linear_weights

pytestmark = pytest.mark.skipif(not fused.HAS_FUSED_LINEAR, reason="PyTorch without oneDNN")  # CPU wheels have it


@pytest.mark.parametrize("family", sorted(TINY))
def test_packed_model_gives_the_same_logits(family):
    name, overrides, size, _ = TINY[family]
    model = vitkit.create_model(name, img_size=size, **overrides).eval()
    packed = pack_linear_weights(model)
    assert not any(type(m) is torch.nn.Linear for m in packed.modules())
    assert any(type(m) is torch.nn.Linear for m in model.modules())  # the original is untouched
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), model(x), atol=1e-5, rtol=1e-5)
        fused_off = pytest.MonkeyPatch.context()
        with fused_off as mp:
            mp.setattr(fused, "FUSED_CPU_INFERENCE", False)  # blocks then call the packed layers as modules
            torch.testing.assert_close(packed(x), model(x), atol=1e-5, rtol=1e-5)


def test_packed_model_refuses_training_and_other_dtypes_clearly():
    name, overrides, size, _ = TINY["vit"]
    packed = pack_linear_weights(vitkit.create_model(name, img_size=size, **overrides))
    x = torch.randn(1, 3, size, size)
    with pytest.raises(RuntimeError, match="CPU float32 inference only"):
        packed(x.requires_grad_())
    layer = fused.PackedLinear(torch.nn.Linear(4, 2))
    with torch.no_grad():
        torch.testing.assert_close(layer(torch.ones(1, 4)).shape, torch.Size([1, 2]))
        with pytest.raises(RuntimeError, match="CPU float32 inference only"):
            layer(torch.ones(1, 4, dtype=torch.float64))
