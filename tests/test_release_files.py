"""create_model(name, pretrained=FILE): bare state dicts in the key layouts of the papers' official Swin and CvT
releases, timm's and transformers' files, built here from vitkit models (no downloads)."""

import pickle
import re

import pytest
import torch
from safetensors.torch import save_file

import vitkit
from tests.cli.conftest import one_line_error
from tests.conftest import randomize_
from vitkit.cli import main
from vitkit.convert.swin import state_dict_to_hf
from vitkit.errors import CheckpointError

SWIN = ("swin_tiny_patch4_window7_224", dict(img_size=64, embed_dim=16, depths=(2, 2, 2), num_heads=(2, 2, 4)))
CVT = ("cvt_13_224", dict(img_size=64, embed_dims=(16, 24, 32), depths=(1, 1, 2), num_heads=(1, 2, 2)))


def model_of(spec, **kw):
    name, overrides = spec
    return randomize_(vitkit.create_model(name, num_classes=6, **(overrides | kw))).eval()


def official_swin(model) -> dict[str, torch.Tensor]:
    """Microsoft's Swin-Transformer repository: merging at the END of stage i (``layers.i.downsample``), every
    block's ``relative_position_index`` buffer and, in shifted blocks, its ``attn_mask``; ``head.weight``."""
    out = {}
    for k, v in model.state_dict().items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        out[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else k] = v
    cfg = model.config
    res = -(-cfg.img_size // cfg.patch_size)
    for i, stage in enumerate(model.layers):
        ws = min(cfg.window_size, res)
        for j, blk in enumerate(stage.blocks):
            out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = blk.attn.relative_position_index.clone()
            if j % 2 and res > cfg.window_size:  # (windows, N, N) of -100 / 0 there; dropped on loading
                out[f"layers.{i}.blocks.{j}.attn_mask"] = torch.zeros((-(-res // ws)) ** 2, ws * ws, ws * ws)
        res = -(-res // 2)
    return out


def logits_equal(a, b, size: int = 64) -> None:
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=1e-6)


def test_official_swin_release_pth(tmp_path):
    model = model_of(SWIN)
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save({"model": official_swin(model), "epoch": 300}, path)  # the release wraps the weights in 'model'
    loaded = vitkit.create_model(SWIN[0], pretrained=str(path), **SWIN[1])
    assert loaded.training and loaded.num_classes == 6  # the classifier's size comes from the file
    logits_equal(loaded.eval(), model)


def test_official_cvt_release_pth(tmp_path):
    model = model_of(CVT)
    path = tmp_path / "CvT-13-224x224-IN-1k.pth"
    torch.save(model.state_dict(), path)  # the release is a bare state dict in vitkit's (the official) names
    logits_equal(vitkit.create_model(CVT[0], pretrained=str(path), **CVT[1]).eval(), model)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)  # DDP training
    logits_equal(vitkit.create_model(CVT[0], pretrained=str(path), **CVT[1]).eval(), model)


def test_timm_and_transformers_bare_files(tmp_path):
    swin = model_of(SWIN)
    timm_sd = {("head.fc." + k[5:] if k.startswith("head.") else k): v for k, v in swin.state_dict().items()}
    save_file({k: v.contiguous() for k, v in timm_sd.items()}, str(tmp_path / "swin.safetensors"))
    logits_equal(vitkit.create_model(SWIN[0], pretrained=str(tmp_path / "swin.safetensors"), **SWIN[1]).eval(), swin)
    torch.save(state_dict_to_hf(swin.state_dict(), swin.config), tmp_path / "pytorch_model.bin")  # no config.json
    logits_equal(vitkit.create_model(SWIN[0], pretrained=str(tmp_path / "pytorch_model.bin"), **SWIN[1]).eval(), swin)

    vit = model_of(("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)))
    save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    loaded = vitkit.create_model("vit_tiny_patch16_224", pretrained=str(tmp_path / "vit.safetensors"),
                                 patch_size=8, embed_dim=32, depth=2, num_heads=2, img_size=48)  # fmt: skip
    assert loaded.pos_embed.shape[1] == 1 + 36  # resampled to the new grid
    logits_equal(loaded.eval(), vit, size=48)


def test_a_different_num_classes_starts_a_new_head(tmp_path):
    model = model_of(CVT)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    with pytest.warns(UserWarning, match="has 6 classes: classifier initialised for 3 classes"):
        loaded = vitkit.create_model(CVT[0], pretrained=str(tmp_path / "w.pth"), num_classes=3, **CVT[1])
    assert loaded.head.out_features == 3
    torch.testing.assert_close(loaded.stage2.blocks[1].mlp.fc1.weight, model.stage2.blocks[1].mlp.fc1.weight)
    backbone = vitkit.create_model(CVT[0], pretrained=str(tmp_path / "w.pth"), num_classes=0, **CVT[1])
    assert backbone.num_classes == 0
    features = vitkit.create_model(CVT[0], pretrained=str(tmp_path / "w.pth"), features_only=True, **CVT[1])
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        torch.testing.assert_close(features.eval()(x)[-1], model.forward_intermediates(x, intermediates_only=True)[-1])


def test_mismatches_are_itemised(tmp_path):
    model = model_of(CVT)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"w\.pth: checkpoint does not match the model; missing keys: stage2\."):
        vitkit.create_model(CVT[0], pretrained=str(tmp_path / "w.pth"), **(CVT[1] | {"depths": (1, 1, 3)}))
    with pytest.raises(CheckpointError, match=r"shape mismatch for stage0\.patch_embed\.proj\.weight"):
        vitkit.create_model(CVT[0], pretrained=str(tmp_path / "w.pth"), **(CVT[1] | {"embed_dims": (8, 24, 32)}))


def test_files_that_are_not_weights(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError, match="refused to load"):
        vitkit.create_model(CVT[0], pretrained=str(tmp_path / "evil.pth"))
    torch.save({"model": {"a": 1}}, tmp_path / "notensors.pth")
    with pytest.raises(CheckpointError, match="expected a mapping of parameter names to tensors"):
        vitkit.create_model(CVT[0], pretrained=str(tmp_path / "notensors.pth"))
    torch.save(model_of(CVT).state_dict(), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="a bare weights file names no architecture"):
        vitkit.from_pretrained(tmp_path / "w.pth")


def test_the_command_line_takes_a_release_file_with_model(tmp_path, capsys):
    """`vitkit export FILE DIR --format vitkit --model NAME`; eval / predict / train take --model likewise."""
    name = "swin_nano_patch2_window7_28"
    torch.save({"model": official_swin(model_of(SWIN))}, tmp_path / "other.pth")
    args = ["export", str(tmp_path / "other.pth"), str(tmp_path / "out"), "--format", "vitkit", "--model", name]
    one_line_error(capsys, main(args), "shape mismatch")  # weights of another configuration
    torch.save({"model": official_swin(model_of((name, {})))}, tmp_path / "release.pth")
    rc = main(["export", str(tmp_path / "release.pth"), str(tmp_path / "out"), "--format", "vitkit", "--model", name])
    assert rc == 0, capsys.readouterr().err
    assert vitkit.from_pretrained(tmp_path / "out").model_name == name
    one_line_error(capsys, main(["export", str(tmp_path / "release.pth"), str(tmp_path / "o2"), "--format", "vitkit"]),
                   "names no architecture", "--model")  # fmt: skip


def test_train_and_eval_take_a_release_file(tmp_path, capsys):
    """`vitkit train --pretrained FILE --model NAME` fine-tunes it; `vitkit eval FILE --model NAME` scores it."""
    from tests.cli.conftest import TINY_TRAIN

    small = vitkit.create_model("vit_nano_patch4_28", depth=1, embed_dim=16, num_heads=2)
    save_file(small.state_dict(), str(tmp_path / "small.safetensors"))
    rc = main(["train", *TINY_TRAIN, "--pretrained", str(tmp_path / "small.safetensors"), "--output-dir",
               str(tmp_path / "run")])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "model card:" in capsys.readouterr().out
    full = vitkit.create_model("vit_nano_patch4_28")
    torch.save({"model": full.state_dict()}, tmp_path / "full.pth")
    out = tmp_path / "ev"
    rc = main(["eval", str(tmp_path / "full.pth"), "--model", "vit_nano_patch4_28", "--max-samples", "20",
               "--output-dir", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert (out / "report.json").is_file() and "`vit_nano_patch4_28`" in (out / "README.md").read_text()
