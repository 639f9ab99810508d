"""`vitkit export`: a checkpoint becomes an ONNX file whose onnxruntime logits equal PyTorch's."""

import pytest
import torch

import vitkit
from vitkit.cli import main

pytest.importorskip("onnxruntime")


def test_export_checkpoint_dynamic_batch_and_size(tmp_path, capsys):
    model = vitkit.create_model("vit_nano_patch4_28", depth=1, embed_dim=32, num_heads=2).eval()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "size dynamic" in out and "max |logit difference|" in out
    from vitkit.export import OnnxRunner

    runner = OnnxRunner(tmp_path / "m.onnx")
    for shape in [(1, 1, 28, 28), (4, 1, 32, 24)]:
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), model(x), atol=1e-4, rtol=1e-4)


def test_export_bad_source_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "vitkit" in err and "Traceback" not in err and not (tmp_path / "m.onnx").exists()


def test_export_int8(tmp_path, capsys):
    model = vitkit.create_model("vit_nano_patch4_28", depth=1, embed_dim=32, num_heads=2).eval()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "m.onnx"), "--int8"]) == 0
    captured = capsys.readouterr()
    assert "int8 weight matmuls" in captured.out and "top-1 agreement" in captured.out
    assert "pre-processing" not in captured.err and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "m.onnx"]
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--format", "transformers", "--int8"]) == 2
    assert "--int8: only with --format onnx" in capsys.readouterr().err
