"""The engine's oneDNN fused linear: equal to the plain ops, and only where nothing but rounding can differ."""

import torch
import torch.nn.functional as F

from vitkit.engine.linear import PackedLinear, linear, mlp
from vitkit.layers import Mlp


def test_linear_helper_equals_the_plain_ops_and_falls_back_for_other_modules():
    x = torch.randn(2, 5, 8)
    layer = torch.nn.Linear(8, 8).eval()
    res = torch.randn(2, 5, 8)
    with torch.no_grad():
        for gelu, residual in ((False, None), (True, None), (False, res), (True, res)):
            ref = layer(x)
            ref = F.gelu(ref) if gelu else ref
            ref = ref if residual is None else residual + ref
            torch.testing.assert_close(linear(x, layer, gelu=gelu, residual=residual), ref)
            torch.testing.assert_close(linear(x, layer, gelu=gelu, residual=residual, fused=False), ref)
        seq = torch.nn.Sequential(layer).eval()  # not an nn.Linear: called as a module
        torch.testing.assert_close(linear(x, seq, residual=res), res + layer(x))


def test_other_dtypes_and_autocast_run_the_plain_ops():
    layer = torch.nn.Linear(8, 8)
    with torch.no_grad():
        out = linear(torch.randn(2, 8, dtype=torch.float64), layer.double())
        assert out.dtype == torch.float64
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 autocast must reach the matmuls
            assert linear(torch.randn(2, 8), layer.float()).dtype == torch.bfloat16


def test_mlp_with_residual():
    block = Mlp(8, 16).eval()
    x, res = torch.randn(3, 4, 8), torch.randn(3, 4, 8)
    with torch.no_grad():
        ref = res + block.fc2(F.gelu(block.fc1(x)))
        torch.testing.assert_close(mlp(block, x, residual=res), ref)
        torch.testing.assert_close(mlp(block, x, residual=res, fused=False), ref)


def test_packed_linear_equals_the_plain_one_and_keeps_its_state_dict():
    layer = torch.nn.Linear(8, 4)
    ref_state = {k: v.clone() for k, v in layer.state_dict().items()}
    x = torch.randn(3, 8)
    with torch.no_grad():
        ref = layer(x)
        packed = PackedLinear.from_linear(layer)
        torch.testing.assert_close(packed(x), ref)
        torch.testing.assert_close(linear(x, packed, residual=ref), 2 * ref)
    torch.testing.assert_close(packed(x), ref)  # autograd on: the plain weight
    assert packed.state_dict().keys() == ref_state.keys()
