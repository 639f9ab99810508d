"""The engine's linears: equal to the plain ops, and only where nothing but rounding can differ."""

import copy

import pytest
import torch
import torch.nn.functional as F

from vitkit.engine.linear import HAS_BF16_FUSED_LINEAR, HAS_FUSED_LINEAR, EngineLinear, linear, mlp
from vitkit.layers import Mlp

BF16 = {"atol": 0.02, "rtol": 0.02}  # bf16 rounding of a sum of 8 products, summed in another order


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


@pytest.mark.skipif(not HAS_FUSED_LINEAR, reason="PyTorch without oneDNN")
def test_packed_linear_equals_the_plain_one_and_gives_its_weight_back():
    layer = torch.nn.Linear(8, 4).requires_grad_(False)
    ref_state = {k: v.clone() for k, v in layer.state_dict().items()}
    x, res = torch.randn(3, 8), torch.randn(3, 4)
    with torch.no_grad():
        ref = layer(x)
    layer.__class__ = EngineLinear
    layer.pack()
    assert "weight" not in dict(layer.named_parameters())  # one copy of the weight: oneDNN's
    assert torch.equal(layer.weight, ref_state["weight"])  # read back exactly
    state = layer.state_dict()
    assert list(state) == ["weight", "bias"] and all(torch.equal(state[k], ref_state[k]) for k in state)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref)
        torch.testing.assert_close(linear(x, layer, residual=res), res + ref)
        torch.testing.assert_close(linear(x, layer, gelu=True, fused=False), F.gelu(ref))  # packed: oneDNN anyway
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(layer(x).float(), ref, **BF16)
    x.requires_grad_()
    layer(x).sum().backward()  # autograd: the plain weight, read back
    torch.testing.assert_close(x.grad, ref_state["weight"].sum(0).expand(3, 8))
    packed = layer.packed
    assert layer.to("cpu").float().packed is packed  # nothing to move: left packed
    layer.to(torch.float64)  # moved: unpacked
    assert layer.packed is None and layer.weight.dtype == torch.float64
    assert "weight" in dict(layer.named_parameters())


def test_cast_once_linear_gives_autocasts_numbers_and_casts_again_when_the_weights_change():
    layer = torch.nn.Linear(8, 4)
    fast = copy.deepcopy(layer)
    fast.__class__ = EngineLinear
    x, res = torch.randn(3, 8), torch.randn(3, 4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = layer(x)
        out = fast(x)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out, ref, **BF16)
        weight, bias, onednn, compute = fast.prepared(torch.bfloat16, x.device)
        assert bias.dtype == compute == torch.bfloat16 and onednn == HAS_BF16_FUSED_LINEAR
        fast(x)
        assert fast.prepared(torch.bfloat16, x.device)[0] is weight  # kept between calls
        out = linear(x, fast, gelu=True)  # the engine's helper: GELU (and below the residual add) fused where it can
        torch.testing.assert_close(out, F.gelu(ref), **BF16)
        out = linear(x, fast, residual=res)
        assert out.dtype == torch.float32  # autocast's promotion: the residual stream stays float32
        torch.testing.assert_close(out, res + ref.float(), **BF16)
        fast.weight.mul_(2)
        layer.weight.mul_(2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # a new region: autocast's cache is empty
        torch.testing.assert_close(fast(x), layer(x), **BF16)  # the changed weight, not the stale copy
        assert fast.prepared(torch.bfloat16, x.device)[0] is not weight
    with torch.no_grad():
        torch.testing.assert_close(fast(x), layer(x))  # no autocast: float32, plain
        fast16, layer16 = copy.deepcopy(fast).bfloat16(), copy.deepcopy(layer).bfloat16()  # a model cast to bf16
        torch.testing.assert_close(
            linear(x.bfloat16(), fast16, residual=res.bfloat16()), res.bfloat16() + layer16(x.bfloat16()), **BF16
        )
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autograd: the plain layer, gradients reach the weight
        fast(x.requires_grad_()).sum().backward()
    assert fast.weight.grad is not None


@pytest.mark.parametrize("onednn", [True, False])
def test_bf16_in_float32_gives_the_bf16_products_summed_in_float32(onednn):
    """What a CPU without AMX runs for bf16 (``bf16_in_float32``): bf16 values, exact float32 products, float32 sums,
    the output rounded to bf16; the same numbers as a float64 sum of the bf16 values, to one bf16 rounding."""
    layer = torch.nn.Linear(64, 32)
    fast = copy.deepcopy(layer)
    fast.__class__ = EngineLinear
    fast.bf16_in_float32, fast.onednn = True, onednn
    x, res = torch.randn(5, 64), torch.randn(5, 32)
    w, b = layer.weight.bfloat16().double(), layer.bias.bfloat16().double()
    exact = x.bfloat16().double() @ w.T + b
    one_rounding = dict(atol=1e-6, rtol=2**-8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(x)
        _, bias, packed, compute = fast.prepared(torch.bfloat16, x.device)
        assert compute == torch.float32 and torch.equal(bias, layer.bias.bfloat16().float())
        assert packed == (onednn and HAS_FUSED_LINEAR)
        gelu = linear(x, fast, gelu=True)
        added = linear(x, fast, residual=res)
    assert out.dtype == gelu.dtype == torch.bfloat16 and added.dtype == torch.float32
    torch.testing.assert_close(out.double(), exact, **one_rounding)
    torch.testing.assert_close(gelu.double(), F.gelu(exact), **one_rounding)
    torch.testing.assert_close(added.double() - res.double(), exact, **one_rounding)  # the bf16 output, then added
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(out, layer(x), **BF16)  # and autocast's own numbers, to bf16 rounding
