"""ONNX export of every family (tiny configs): onnxruntime logits equal PyTorch's within 1e-4."""

import pytest
import torch

import vitkit
from tests.conftest import randomize_
from tests.tiny import TINY
from vitkit.engine import optimize
from vitkit.errors import VitkitError
from vitkit.models.registry import _FAMILIES

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from vitkit.export import OnnxRunner, export_onnx, supports_dynamic_size


def test_every_family_has_a_tiny_config():
    assert set(_FAMILIES) <= set(TINY)


@pytest.mark.parametrize("family", sorted(TINY))
def test_onnx_logits_equal_pytorch(tmp_path, family):
    name, overrides, size, other_sizes = TINY[family]
    model = randomize_(vitkit.create_model(name, img_size=size, **overrides)).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(3, size, size))
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))  # written atomically
    runner = OnnxRunner(path, threads=1)
    sizes = [(size, size)]
    if supports_dynamic_size(model):
        sizes += [(s, s) for s in other_sizes] + [(other_sizes[0], size)]  # non-square too
    for batch in (1, 3):
        for h, w in sizes:
            x = torch.randn(batch, 3, h, w)
            with torch.no_grad():
                ref = model(x)
            out = runner(x)
            assert out.shape == ref.shape == (batch, overrides["num_classes"])
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_vit_with_and_without_antialiased_pos_embed_resampling(tmp_path):
    # timm-style (antialiased bicubic) and transformers-style (plain bicubic) resampling both export
    for antialias in (True, False):
        name, overrides, size, _ = TINY["vit"]
        model = vitkit.create_model(name, img_size=size, pos_embed_antialias=antialias, **overrides)
        randomize_(model).eval()
        with torch.no_grad():
            model.pos_embed.mul_(20)  # make the position embedding dominate, so a wrong resampling shows
        runner = OnnxRunner(export_onnx(model, tmp_path / f"aa{antialias}.onnx"), threads=1)
        for s in (16, 24, 64):
            x = torch.randn(2, 3, s, s)
            with torch.no_grad():
                torch.testing.assert_close(runner(x), model(x), atol=1e-4, rtol=1e-4)


def test_fixed_size_export_and_refusal():
    name, overrides, size, _ = TINY["vit"]
    model = vitkit.create_model(name, img_size=size, **overrides)
    fixed_family = next((f for f in TINY if f not in ("vit", "cvt")), None)
    if fixed_family is not None:
        fname, fover, fsize, _ = TINY[fixed_family]
        fixed = vitkit.create_model(fname, img_size=fsize, **fover)
        with pytest.raises(VitkitError, match="dynamic_size"):
            export_onnx(fixed, "/nonexistent/never-written.onnx", dynamic_size=True)
    assert supports_dynamic_size(model)


def test_fixed_batch_export(tmp_path):
    name, overrides, size, _ = TINY["vit"]
    model = randomize_(vitkit.create_model(name, img_size=size, **overrides)).eval()
    path = export_onnx(model, tmp_path / "b1.onnx", dynamic_batch=False, dynamic_size=False)
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, size, size]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(OnnxRunner(path)(x), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", sorted(TINY))
def test_an_optimized_model_exports_the_reference_graph(tmp_path, family):
    """Tracing takes the reference path (no native kernels, no fused ops, no slices of the batch baked in)."""
    name, overrides, size, _ = TINY[family]
    model = randomize_(vitkit.create_model(name, img_size=size, **overrides)).eval()
    fast = optimize(model, micro_batch_bytes=1, probe=False)  # slices of every batch; oneDNN and packed weights
    runner = OnnxRunner(export_onnx(fast, tmp_path / "m.onnx", input_size=(3, size, size)), threads=1)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(runner(x), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", sorted(TINY))
def test_int8_quantised_graph_runs_close_to_fp32(tmp_path, family):
    """onnxruntime's quantiser turns the weight matmuls into int8 products; the logits stay close to float32."""
    import onnx

    from vitkit.export import quantize_onnx_int8

    name, overrides, size, _ = TINY[family]
    model = randomize_(vitkit.create_model(name, img_size=size, **overrides)).eval()
    fp32 = export_onnx(model, tmp_path / "m.onnx", input_size=(3, size, size))
    int8 = quantize_onnx_int8(fp32, tmp_path / "m.int8.onnx")
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops, ops
    assert not list(tmp_path.glob(".*.tmp"))
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        ref = model(x)
    out = OnnxRunner(int8, threads=1)(x)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 0.1 * ref.abs().max()
