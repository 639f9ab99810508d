"""Checkpoints that do not fit the command: another family, invalid config.json values, other class names, broken
weights. Each is one line on stderr (exit status 2), or for `predict` one line per image (exit status 1)."""

import json
import time

import pytest
import torch

import vitkit
from tests.cli.conftest import TINY, one_line_error
from vitkit.cli import main
from vitkit.data import FASHION_MNIST_CLASSES

TINY_VIT = dict(depth=1, embed_dim=16, num_heads=2)


def _tiny_vit(path, **changes):
    torch.manual_seed(0)
    model = vitkit.create_model("vit_nano_patch4_28", **{**TINY_VIT, **changes})
    vitkit.save_pretrained(model, path)
    return path


def test_pretrained_checkpoint_of_another_family(tmp_path, capsys):
    swin = vitkit.create_model("swin_nano_patch2_window7_28", embed_dim=8, depths=(1, 1), num_heads=(1, 2))
    vitkit.save_pretrained(swin, tmp_path / "swin")
    argv = ["train", "--model", "vit_nano_patch4_28", "--model-args", TINY, "--pretrained", str(tmp_path / "swin")]
    argv += ["--data", "sample", "--max-train-samples", "128", "--output-dir", str(tmp_path / "run")]
    argv += ["--progress", "none", "--no-tensorboard"]
    one_line_error(capsys, main(argv), str(tmp_path / "swin"), "holds a swin model, not a vit one")
    assert not (tmp_path / "run").exists()


def _edit_config(ckpt, edit):
    path = ckpt / "config.json"
    cfg = json.loads(path.read_text())
    edit(cfg["vitkit"]["config"])
    path.write_text(json.dumps(cfg))


BAD_CONFIGS = {
    "negative width": (lambda c: c.update(embed_dim=-1), "embed_dim: -1 is outside"),
    "heads do not divide": (lambda c: c.update(num_heads=3), "num_heads: embed_dim 16 is not divisible by"),
    "string for a number": (lambda c: c.update(embed_dim="sixteen"), "embed_dim: expected an int, got 'sixteen'"),
    "unknown field": (lambda c: c.update(depht=2), "unknown vit config field(s) depht"),
    "float depth": (lambda c: c.update(depth=1e9), "depth: expected an int, got 1000000000.0"),
    "huge depth": (lambda c: c.update(depth=10**9), "depth: 1000000000 is outside [1, 1000]"),
}


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_invalid_config_json_names_the_file_and_field(tmp_path, capsys, command, case):
    edit, expected = BAD_CONFIGS[case]
    ckpt = _tiny_vit(tmp_path / "ckpt")
    _edit_config(ckpt, edit)
    argv = [command, str(ckpt), *(["--max-samples", "8"] if command == "eval" else [str(tmp_path / "x.png")])]
    start = time.perf_counter()
    one_line_error(capsys, main(argv), str(ckpt / "config.json"), expected)
    assert time.perf_counter() - start < 10  # refused from the numbers, nothing of that size is allocated


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_shard_index_pointing_outside_and_non_object_json(tmp_path, capsys, command):
    ckpt = _tiny_vit(tmp_path / "ckpt")
    tail = ["--max-samples", "8"] if command == "eval" else [str(tmp_path / "x.png")]
    (ckpt / "model.safetensors").rename(tmp_path / "x.safetensors")
    index = ckpt / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"head.weight": "../x.safetensors"}}))
    one_line_error(capsys, main([command, str(ckpt), *tail]), str(index), "'../x.safetensors'", "not a file inside")
    (ckpt / "config.json").write_text("[1, 2, 3]")
    one_line_error(capsys, main([command, str(ckpt), *tail]), str(ckpt / "config.json"), "JSON object", "list")


def test_eval_on_data_with_other_class_names(tmp_path, capsys):
    torch.manual_seed(0)
    model = vitkit.create_model("vit_nano_patch4_28", **TINY_VIT)
    model.class_names = [*FASHION_MNIST_CLASSES[:9], "Boot"]  # same count, the last name differs
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    rc = main(["eval", str(tmp_path / "ckpt"), "--data", "sample", "--output-dir", str(tmp_path / "ev")])
    one_line_error(capsys, rc, "other classes", "class 9 is 'Boot' for the model but 'Ankle boot' in the data")
    assert not (tmp_path / "ev").exists()


# --- broken weights --------------------------------------------------------------------------------
@pytest.fixture
def nan_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = vitkit.create_model("vit_nano_patch4_28", **TINY_VIT)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    return vitkit.save_pretrained(model, tmp_path / "nan-ckpt")


def test_eval_of_nan_weights(nan_checkpoint, tmp_path, capsys):
    rc = main(["eval", str(nan_checkpoint), "--max-samples", "16", "--output-dir", str(tmp_path / "ev")])
    one_line_error(capsys, rc, "NaN/inf logits", "weights are broken")
    assert not (tmp_path / "ev" / "report.json").exists()


def test_predict_with_nan_weights_reports_every_image(nan_checkpoint, tmp_path, capsys):
    from PIL import Image

    for i in range(3):
        Image.new("L", (28, 28), 40 * i).save(tmp_path / f"img{i}.png")
    rc = main(["predict", str(nan_checkpoint), *(str(tmp_path / f"img{i}.png") for i in range(3))])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    lines = err.splitlines()
    for i in range(3):
        assert any(f"img{i}.png" in ln and "NaN/inf logits" in ln for ln in lines), err
    assert lines[-1] == "vitkit predict: 3 of 3 inputs failed"
