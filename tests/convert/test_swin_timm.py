"""Parity with timm's Swin through golden fixtures (timm cannot be installed beside the CPU torch here).

tests/fixtures/timm/<name>/ holds what ``timm.models.save_for_hf`` wrote for a tiny random-weight timm Swin
(config.json + model.safetensors, timm >= 0.9 names: merging at the start of a stage, ``head.fc``) and timm's
logits on fixed inputs (io.safetensors); see tests/fixtures/timm/README.md. The extra sizes are ones where
timm's and transformers' padding conventions agree (vitkit follows transformers).
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import vitkit
from tests.convert.timm_fixtures import FIXTURES, assert_matches_timm, cases, io_keys_expected, io_of, load_models, meta
from vitkit.errors import CheckpointError

SWIN_FIXTURES = ["swin_2stage", "swin_3stage_clamp", "swin_3stage"]


@pytest.fixture(scope="module")
def loaded():
    return load_models(SWIN_FIXTURES)


@pytest.fixture(scope="module")
def io():
    return {name: io_of(name) for name in SWIN_FIXTURES}


def test_every_fixture_and_size_is_tested():
    """The parametrisation reads meta.json; make sure it found what the README promises."""
    assert len(list(cases(SWIN_FIXTURES))) == 6
    for name in SWIN_FIXTURES:
        assert sorted(io_of(name).keys()) == io_keys_expected(name)


@pytest.mark.parametrize(("name", "size"), list(cases(SWIN_FIXTURES)))
def test_logits_match_timm(loaded, io, name, size):
    assert_matches_timm(loaded[name], io[name], size)


@pytest.mark.parametrize("name", SWIN_FIXTURES)
def test_windows_and_shifts_match_timm(loaded, name):
    """The window / shift each block used, as timm recorded it, equals vitkit's choice at that size."""
    model = loaded[name]
    cfg = model.config
    for entry in meta(name)["sizes"]:
        h, w = (-(-s // cfg.patch_size) for s in entry["size"])
        for i, stage in enumerate(entry["stages"]):
            if i:
                h, w = (h + 1) // 2, (w + 1) // 2
            assert [h, w] == stage["resolution"]
            for blk, shift in zip(model.layers[i].blocks, stage["shift_sizes"], strict=True):
                window, s = vitkit.models.swin.window_and_shift(h, w, blk.window_size, blk.shift_size)
                assert [window, window] == stage["window_size"] and [s, s] == shift


def test_config_from_timm(loaded):
    cfg = loaded["swin_3stage"].config
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depths, cfg.num_heads) == (
        (64, 64),
        4,
        12,
        (2, 2, 2),
        (2, 4, 8),
    )
    assert (cfg.window_size, cfg.num_classes, cfg.norm_eps, cfg.interpolation, cfg.crop_pct) == (
        4,
        7,
        1e-5,
        "bicubic",
        0.9,
    )
    assert loaded["swin_3stage"].model_name == "swin_tiny_patch4_window7_224"
    for name in SWIN_FIXTURES:
        assert loaded[name].num_params() >= meta(name)["num_params"]  # clamped tables are embedded in full ones


def test_clamped_table_is_embedded_in_the_centre(loaded):
    """timm sized the last stage's table for its clamped 2x2 window (3x3 rows); vitkit keeps a 7x7 table."""
    weights = load_file(str(FIXTURES / "swin_3stage_clamp" / "model.safetensors"))
    key = "layers.2.blocks.0.attn.relative_position_bias_table"
    assert weights[key].shape == (9, 8)
    table = loaded["swin_3stage_clamp"].state_dict()[key]
    assert table.shape == (49, 8)
    torch.testing.assert_close(table.view(7, 7, 8)[2:5, 2:5].reshape(9, 8), weights[key])


def test_old_timm_layout_is_recognised(tmp_path, io):
    """timm < 0.9 checkpoints: merging at the end of a stage and head.* instead of head.fc.*."""
    src = FIXTURES / "swin_3stage"
    shutil.copy(src / "config.json", tmp_path / "config.json")
    old = {}
    for k, v in load_file(str(src / "model.safetensors")).items():
        if ".downsample." in k:
            stage = int(k.split(".")[1])
            k = k.replace(f"layers.{stage}.", f"layers.{stage - 1}.", 1)
        old[k.replace("head.fc.", "head.")] = v
    old["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    save_file(old, str(tmp_path / "model.safetensors"))
    model = vitkit.from_pretrained(tmp_path)
    x = io["swin_3stage"]["input_64x64"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), io["swin_3stage"]["logits_64x64"], atol=1e-5, rtol=1e-5)


def test_unsupported_timm_option_is_a_clear_error(tmp_path):
    src = FIXTURES / "swin_2stage"
    shutil.copy(src / "model.safetensors", tmp_path / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_args"]["always_partition"] = True
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="always_partition"):
        vitkit.from_pretrained(tmp_path)
