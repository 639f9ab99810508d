"""save_pretrained in transformers' and timm's formats: the other library loads the files and computes the same.

transformers is loaded in this process; timm cannot be installed beside this torch, so a timm environment, when there
is one (``VITKIT_TIMM_PYTHON``, default /tmp/vitkit-timm-env/bin/python), loads the timm files in a subprocess. The
files' structure and the round trip through vitkit's own readers are always checked.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import vitkit
from tests.conftest import randomize_
from vitkit.data.transforms import DataSpec, eval_image
from vitkit.errors import CheckpointError

transformers = pytest.importorskip("transformers")

TIMM_PYTHON = Path(os.environ.get("VITKIT_TIMM_PYTHON", "/tmp/vitkit-timm-env/bin/python"))
NAMES = [f"class {c}" for c in "abcde"]
# tiny models every library can run at their native size (no Swin stage smaller than the window for transformers)
MODELS = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)),
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=32, patch_size=2, embed_dim=16, depths=(2, 2, 2), num_heads=(2, 2, 4), window_size=4),
    ),
    "cvt": ("cvt_13_224", dict(img_size=64, embed_dims=(16, 24, 32), depths=(1, 2, 3), num_heads=(1, 2, 2))),
}


def make(family: str, name: str | None = None, **kw):
    default, overrides = MODELS[family]
    if name is not None:  # a registered model as it is, with kw only
        default, overrides = name, {}
    model = vitkit.create_model(default, num_classes=5, **(overrides | kw))
    randomize_(model)
    model.class_names = list(NAMES)
    return model.eval()


def inputs(model, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *model.data_config["input_size"], generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("family", list(MODELS))
def test_transformers_loads_the_same_model(tmp_path, family):
    model = make(family, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), crop_pct=0.875, interpolation="bilinear")
    vitkit.save_pretrained(model, tmp_path, format="transformers")
    hf, info = transformers.AutoModelForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.id2label == dict(enumerate(NAMES))
    x = inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(hf.eval()(pixel_values=x).logits, model(x), atol=1e-5, rtol=1e-5)
    back = vitkit.from_pretrained(tmp_path)  # and vitkit reads the files back, data settings included
    assert back.config == model.config and back.class_names == NAMES
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("family", ["vit", "cvt"])
def test_the_image_processor_does_vitkits_evaluation_transform(tmp_path, family):
    model = make(family, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), crop_pct=0.875)
    vitkit.save_pretrained(model, tmp_path, format="transformers")
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    small = np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((130, 90), Image.BICUBIC)  # a smooth photo-like image, not square
    theirs = processor(img, return_tensors="pt")["pixel_values"][0]
    ours = eval_image(img, DataSpec.from_model(model))
    assert theirs.shape == ours.shape
    # the same resize, crop and normalisation (PIL resizes the whole image there, only the crop's region here):
    # at most one grey level apart, rarely
    diff = (theirs - ours).abs() * torch.tensor(model.config.std).view(3, 1, 1) * 255
    assert diff.max() < 1.01 and diff.mean() < 0.01


def test_a_backbone_saves_as_an_identity_classifier(tmp_path):
    model = make("vit")
    model.reset_classifier(0)
    vitkit.save_pretrained(model, tmp_path, format="transformers")
    hf = transformers.AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    x = inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(hf(pixel_values=x).logits, model(x), atol=1e-5, rtol=1e-5)


def test_what_transformers_cannot_run_is_refused(tmp_path):
    swin = make("swin", img_size=16)  # stages 8, 4, 2 tokens: the last is smaller than the window of 4
    with pytest.raises(CheckpointError, match=r"stage 2 is 2x2 tokens .* smaller than the window 4"):
        vitkit.save_pretrained(swin, tmp_path / "swin", format="transformers")
    cvt = make("cvt", depths=(1, 1, 3))  # transformers picks stage i's drop-path rate from depth[i] entries
    with pytest.raises(CheckpointError, match="stage 1 has 1 block"):
        vitkit.save_pretrained(cvt, tmp_path / "cvt", format="transformers")
    vit = make("vit", global_pool="avg")
    with pytest.raises(CheckpointError, match="CLS"):
        vitkit.save_pretrained(vit, tmp_path / "vit", format="transformers")
    with pytest.raises(CheckpointError, match="timm has no cvt models"):
        vitkit.save_pretrained(make("cvt"), tmp_path / "cvt-timm", format="timm")
    with pytest.raises(vitkit.VitkitError, match="format: must be one of vitkit, transformers, timm"):
        vitkit.save_pretrained(vit, tmp_path / "x", format="onnx")
    assert not any((tmp_path / d).exists() for d in ("swin", "cvt", "vit", "cvt-timm", "x"))


# --- timm -------------------------------------------------------------------------------------------------------
TIMM_CASES = {  # swin_clamp: the last stage (2x2 tokens) is smaller than the window, so timm's table is 3x3
    "vit": ("vit", {}),
    "vit_avg": ("vit", dict(global_pool="avg")),
    "swin": ("swin", {}),
    "swin_clamp": ("swin", dict(patch_size=4, depths=(2, 2, 2))),
    # names timm does not have (saved under a timm name of the family, everything in model_args); grayscale
    "vit_gray": ("vit", dict(name="vit_nano_patch4_28", depth=2)),
    "swin_gray": ("swin", dict(name="swin_nano_patch2_window7_28", depths=(2, 2))),
}


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_timm_files_have_timms_structure_and_read_back(tmp_path, case):
    family, kw = TIMM_CASES[case]
    model = make(family, **kw)
    vitkit.save_pretrained(model, tmp_path, format="timm")
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config) >= {"architecture", "num_classes", "model_args", "pretrained_cfg", "label_names"}
    generic = {"vit": "vit_base_patch16_224", "swin": "swin_tiny_patch4_window7_224"}[family]
    assert config["architecture"] == (generic if "name" in kw else MODELS[family][0])  # a name timm registers
    assert config["num_classes"] == 5 and config["model_args"]["in_chans"] == model.config.in_chans
    assert config["model_args"]["img_size"] == model.config.img_size
    pre = config["pretrained_cfg"]
    assert pre["input_size"] == list(model.data_config["input_size"]) and pre["mean"] == list(model.config.mean)
    weights = load_file(str(tmp_path / "model.safetensors"))
    if family == "swin":  # timm >= 0.9 names: head.fc, merging at the start of a stage, no buffers
        assert "head.fc.weight" in weights and "head.weight" not in weights
        assert "layers.1.downsample.reduction.weight" in weights
        assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in weights)
        last = len(model.config.depths) - 1
        table = weights[f"layers.{last}.blocks.0.attn.relative_position_bias_table"]
        window = model.config.window_size
        assert table.shape[0] == (9 if case == "swin_clamp" else (2 * window - 1) ** 2)
    else:
        assert set(weights) == set(model.state_dict())
    back = vitkit.from_pretrained(tmp_path)
    assert back.class_names == NAMES and back.config.img_size == model.config.img_size
    x = inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), atol=1e-6, rtol=1e-6)


def test_what_timm_would_compute_differently_is_refused(tmp_path):
    swin = make("swin", img_size=(32, 48), patch_size=4, depths=(2, 2, 2))  # stages 8x12, 4x6, 2x3; window 4
    with pytest.raises(CheckpointError, match=r"stage 1 is 4x6 tokens: timm shifts the windows of its odd blocks"):
        vitkit.save_pretrained(swin, tmp_path / "a", format="timm")
    swin = make("swin", img_size=(32, 48), patch_size=4, depths=(1, 1, 1))  # no shifted blocks
    with pytest.raises(CheckpointError, match=r"stage 2 is 2x3 tokens: timm's windows there are 2x3, vitkit's 2x2"):
        vitkit.save_pretrained(swin, tmp_path / "a", format="timm")
    swin = make("swin", img_size=64, patch_size=2, depths=(2, 2, 2))  # stages 32, 16, 8 tokens, shifted, window 4
    vitkit.save_pretrained(swin, tmp_path / "b", format="timm")  # multiples of the window: fine
    swin = make("swin", img_size=36, patch_size=2, depths=(2, 2, 2))  # stage 0: 18x18 tokens need padding
    with pytest.raises(CheckpointError, match="stage 0 is 18x18 tokens, not a multiple of the window 4"):
        vitkit.save_pretrained(swin, tmp_path / "c", format="timm")


@pytest.mark.skipif(not TIMM_PYTHON.is_file(), reason=f"no timm environment at {TIMM_PYTHON}")
def test_timm_loads_the_same_model(tmp_path):
    """timm.create_model("local-dir:DIR", pretrained=True) in the timm environment gives vitkit's logits."""
    expected = {}
    for case, (family, kw) in TIMM_CASES.items():
        model = make(family, **kw)
        vitkit.save_pretrained(model, tmp_path / case, format="timm")
        x = inputs(model)
        with torch.no_grad():
            expected[f"{case}.input"], expected[f"{case}.logits"] = x, model(x)
    save_file(expected, str(tmp_path / "io.safetensors"))
    script = textwrap.dedent(
        """
        import json, sys, timm, torch
        from safetensors.torch import load_file
        root = sys.argv[1]
        io = load_file(root + "/io.safetensors")
        out = {}
        for case in json.loads(sys.argv[2]):
            model = timm.create_model("local-dir:" + root + "/" + case, pretrained=True).eval()
            with torch.no_grad():
                logits = model(io[case + ".input"])
            out[case] = [float((logits - io[case + ".logits"]).abs().max()), model.pretrained_cfg.get("label_names")]
        print(json.dumps(out))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(TIMM_PYTHON), "-c", script, str(tmp_path), json.dumps(list(TIMM_CASES))],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for case, (diff, names) in result.items():
        assert diff < 1e-5, f"{case}: timm's logits differ by {diff}"
        assert names == NAMES
    print(json.dumps(result), file=sys.stderr)
