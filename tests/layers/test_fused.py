import pytest
import torch
import torch.nn.functional as F

import vitkit
from tests.tools.conftest import TINY
from vitkit.layers import fused

# sizes that exercise padding: Swin pads the odd sides of its windows and at patch merging
SIZES = {"vit": (2, 3, 32, 48), "swin": (2, 3, 30, 38), "cvt": (2, 3, 33, 47)}


@pytest.mark.parametrize("family", sorted(TINY))
def test_fused_inference_path_equals_the_plain_one(monkeypatch, family):
    name, overrides, size, _ = TINY[family]
    model = vitkit.create_model(name, img_size=size, **overrides).eval()
    x = torch.randn(*SIZES[family])
    with torch.no_grad():
        assert fused.can_fuse(x, model) == fused.HAS_FUSED_LINEAR
        with_fusion = model(x)
        monkeypatch.setattr(fused, "FUSED_CPU_INFERENCE", False)
        assert not fused.can_fuse(x, model)
        plain = model(x)
    torch.testing.assert_close(with_fusion, plain, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(fused, "FUSED_CPU_INFERENCE", True)
    assert not fused.can_fuse(x, model)  # autograd on: never fused
    with torch.no_grad():
        assert not fused.can_fuse(x, model.train())  # training: dropout / drop path must run
        assert not fused.can_fuse(x.double(), model.eval())
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 autocast must reach the matmuls
            assert not fused.can_fuse(x, model)
            assert model(x).dtype == torch.bfloat16


def test_linear_helper_equals_the_plain_ops_and_falls_back_for_other_modules():
    x = torch.randn(2, 5, 8)
    layer = torch.nn.Linear(8, 8).eval()
    res = torch.randn(2, 5, 8)
    with torch.no_grad():
        for gelu, residual in ((False, None), (True, None), (False, res), (True, res)):
            ref = layer(x)
            ref = F.gelu(ref) if gelu else ref
            ref = ref if residual is None else residual + ref
            torch.testing.assert_close(fused.linear(x, layer, gelu=gelu, residual=residual), ref)
        seq = torch.nn.Sequential(layer).eval()  # not an nn.Linear: called as a module
        torch.testing.assert_close(fused.linear(x, seq, residual=res), res + layer(x))


def test_mlp_residual_argument_on_both_paths(monkeypatch):
    mlp = vitkit.layers.Mlp(8, 16).eval()
    x, res = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    with torch.no_grad():
        ref = res + mlp.fc2(F.gelu(mlp.fc1(x)))
        torch.testing.assert_close(mlp(x, residual=res), ref)
        torch.testing.assert_close(mlp(x), ref - res)
        monkeypatch.setattr(fused, "FUSED_CPU_INFERENCE", False)
        torch.testing.assert_close(mlp(x, residual=res), ref)
