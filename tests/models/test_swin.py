"""Swin Transformer: the note's relative position index, shapes at any size, caches, gradients, API."""

import pytest
import torch
import torch.nn.functional as F

import vitkit
from vitkit.errors import VitkitError
from vitkit.models import swin
from vitkit.models.registry import get_entry
from vitkit.models.swin import SwinConfig, SwinTransformer, relative_position_index

TINY = dict(embed_dim=16, drop_path_rate=0.0)


def tiny(name: str = "swin_tiny_patch4_window7_224", **kw) -> SwinTransformer:
    stages = len(get_entry(name).config.depths)
    args = dict(TINY, depths=(1,) * stages, num_heads=(2,) * stages) | kw
    return vitkit.create_model(name, **args)


def test_relative_position_index_matches_the_note_window_2():
    # the note's steps for ws = 2: dy, dx in {-1, 0, 1} -> +1 -> dy * 3 + dx
    expected = torch.tensor([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    idx = relative_position_index(2)
    assert idx.dtype == torch.long and idx.shape == (4, 4)
    assert torch.equal(idx, expected)


@pytest.mark.parametrize("ws", [1, 3, 7])
def test_relative_position_index_is_a_function_of_the_offset(ws):
    idx = relative_position_index(ws)
    assert idx.shape == (ws * ws, ws * ws)
    assert idx.min() == 0 and idx.max() == (2 * ws - 1) ** 2 - 1
    assert torch.equal(idx.diagonal(), torch.full((ws * ws,), (ws - 1) * (2 * ws - 1) + ws - 1))
    rows, cols = torch.arange(ws).repeat_interleave(ws), torch.arange(ws).repeat(ws)
    offset = (rows[:, None] - rows[None, :]) * 100 + (cols[:, None] - cols[None, :])
    for value in idx.unique():  # one (dy, dx) per table entry
        assert offset[idx == value].unique().numel() == 1


def test_bias_table_shape():
    m = tiny(window_size=5)
    assert m.layers[0].blocks[0].attn.relative_position_bias_table.shape == (81, 2)
    assert "relative_position_index" not in " ".join(m.state_dict())  # only the tables are stored


@pytest.mark.parametrize(
    "name, params",
    [
        ("swin_tiny_patch4_window7_224", 28_288_354),
        ("swin_small_patch4_window7_224", 49_606_258),
        ("swin_base_patch4_window7_224", 87_768_224),
    ],
)
def test_parameter_counts_match_the_references(name, params):
    with torch.device("meta"):
        model = vitkit.create_model(name)
    assert model.num_params() == params


@pytest.mark.parametrize("name", vitkit.list_models("swin_*"))
def test_every_registered_swin_runs(name):
    cfg = get_entry(name).config
    model = tiny(name, num_classes=3).eval()
    h, w = (cfg.img_size, cfg.img_size) if isinstance(cfg.img_size, int) else cfg.img_size
    x = torch.randn(1, cfg.in_chans, h, w)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model.forward_head(feats)
    stride = cfg.patch_size * 2 ** (len(cfg.depths) - 1)
    assert feats.shape == (1, -(-h // stride), -(-w // stride), model.num_features)
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    assert model.data_config["input_size"] == (cfg.in_chans, h, w)


def test_registered_configs():
    t = get_entry("swin_tiny_patch4_window7_224")
    assert t.hub_id == "hf-hub:microsoft/swin-tiny-patch4-window7-224"
    b = get_entry("swin_base_patch4_window12_384").config
    assert (b.img_size, b.window_size, b.embed_dim) == (384, 12, 128)
    gray = get_entry("swin_nano_patch2_window7_28").config
    assert (gray.in_chans, gray.num_classes, gray.mean, gray.std) == (1, 10, (0.2860,), (0.3530,))
    for name in ("swin_nano_patch2_window7_28", "swin_tiny_patch2_window4_32", "swin_tiny_patch4_window4_64"):
        c = get_entry(name).config
        side = c.img_size // c.patch_size
        for _ in c.depths:  # every stage is tiled by whole windows or is exactly one window
            assert side % c.window_size == 0 or side == c.window_size
            side //= 2


@pytest.mark.parametrize("size", [(28, 28), (27, 27), (30, 45), (28, 64), (13, 20), (5, 9)])
def test_any_input_size(size):
    model = tiny("swin_nano_patch2_window7_28", num_classes=4).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 4) and torch.isfinite(out).all()


def test_window_and_shift_rule():
    assert swin.window_and_shift(14, 14, 7, 3) == (7, 3)
    assert swin.window_and_shift(7, 7, 7, 3) == (7, 0)  # not larger than the window: no shift
    assert swin.window_and_shift(7, 10, 7, 3) == (7, 0)  # the smaller side decides (as transformers)
    assert swin.window_and_shift(4, 9, 7, 3) == (4, 0)  # one window of the smaller side


def test_window_partition_and_reverse():
    x = torch.arange(2 * 4 * 6 * 3).float().view(2, 4, 6, 3)
    windows = swin.window_partition(x, 2)
    assert windows.shape == (2, 6, 4, 3)
    torch.testing.assert_close(windows[1, 4], x[1, 2:4, 2:4].reshape(4, 3))  # window (row 1, column 2), row-major
    assert torch.equal(swin.window_reverse(windows, 2, 4, 6), x)


def test_clamped_window_reads_the_centre_of_the_table():
    """A stage smaller than the window attends within one smaller window; its offsets are the table's centre."""
    attn = swin.WindowAttention(8, 2, window_size=4, qkv_bias=True, attn_drop=0.0, proj_drop=0.0)
    torch.nn.init.normal_(attn.relative_position_bias_table)
    small = attn.relative_position_bias(2)  # (heads, 4, 4)
    full = attn.relative_position_bias(4)  # (heads, 16, 16)
    tokens = [0, 1, 4, 5]  # the top-left 2 x 2 tokens of the 4 x 4 window keep their offsets
    torch.testing.assert_close(small, full[:, tokens][:, :, tokens])


def test_patch_merging_order_matches_strided_slices():
    merge = swin.PatchMerging(3, 1e-5)
    x = torch.randn(2, 6, 4, 3)
    with torch.no_grad():
        cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        torch.testing.assert_close(merge(x), merge.reduction(merge.norm(cat)))


def test_shift_mask_separates_regions():
    mask = swin.shift_mask(8, 8, 4, 2)
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window is one region
    assert (mask[3] == -100).any() and (mask.diagonal(dim1=1, dim2=2) == 0).all()


def test_bias_table_gets_gradients():
    model = tiny("swin_tiny_patch2_window4_32", num_classes=3).train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    tables = [p for n, p in model.named_parameters() if n.endswith("relative_position_bias_table")]
    assert len(tables) == 3
    for t in tables:
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_grad_checkpointing_gives_the_same_gradients():
    model = tiny("swin_tiny_patch2_window4_32", depths=(2, 2, 1), num_classes=3, drop_path_rate=0.0).train()
    x = torch.randn(2, 3, 24, 24)
    model(x).square().sum().backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in model.layers)
    model(x).square().sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], msg=n)


def test_attention_maps():
    model = tiny("swin_tiny_patch2_window4_32", depths=(2, 2, 1), num_heads=(2, 2, 4)).eval()
    x = torch.randn(2, 3, 32, 28)  # 16x14 -> padded to 16x16 at stage 0
    with torch.no_grad():
        maps = model.get_attention_maps(x)
        ref = model(x)
    assert len(maps) == 5
    first, shifted, last = maps[0], maps[1], maps[-1]
    assert first.weights.shape == (2, 16, 2, 16, 16)
    assert first.meta == dict(window_size=4, shift_size=0, grid=(16, 16), num_windows=(4, 4), stage=0, block=0)
    assert shifted.meta["shift_size"] == 2 and shifted.meta["block"] == 1
    assert last.meta["stage"] == 2 and last.meta["window_size"] == 4 and last.meta["shift_size"] == 0
    assert last.weights.shape == (2, 1, 4, 16, 16)
    for m in maps:
        torch.testing.assert_close(m.weights.sum(-1), torch.ones(m.weights.shape[:-1]))
    with torch.no_grad():  # recording takes the explicit path; results are unchanged and flags reset
        torch.testing.assert_close(model(x), ref)
    assert not any(getattr(m, "record_attention", False) for m in model.modules())


def test_reset_classifier_and_head():
    model = tiny(num_classes=5)
    assert model.get_classifier().out_features == 5
    model.reset_classifier(7)
    assert model.num_classes == 7 and model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)
    assert model.forward_head(model.forward_features(torch.randn(1, 3, 64, 64)), pre_logits=True).shape == (1, 128)


def test_layer_ids_and_no_weight_decay():
    model = tiny(depths=(2, 2, 2, 2), num_heads=(2, 2, 2, 2))
    assert model.num_layers() == 8
    assert model.layer_id("patch_embed.proj.weight") == 0
    assert model.layer_id("layers.0.blocks.0.norm1.weight") == 1
    assert model.layer_id("layers.0.blocks.1.attn.qkv.weight") == 2
    assert model.layer_id("layers.1.downsample.reduction.weight") == 2  # shares the id of the block before
    assert model.layer_id("layers.1.blocks.0.mlp.fc1.weight") == 3
    assert model.layer_id("layers.3.blocks.1.mlp.fc2.bias") == 8
    assert model.layer_id("norm.weight") == model.layer_id("head.weight") == 9
    nwd = model.no_weight_decay()
    assert len(nwd) == 8 and all(n.endswith("relative_position_bias_table") for n in nwd)
    assert nwd <= {n for n, _ in model.named_parameters()}


def test_adapt_state_dict():
    src = tiny(window_size=7)
    sd = src.state_dict()
    key = "layers.0.blocks.0.attn.relative_position_bias_table"
    sd["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    sd["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    dst = tiny(window_size=12, in_chans=1)
    out = dst.adapt_state_dict(sd)
    assert not any(k.endswith(("relative_position_index", "attn_mask")) for k in out)
    assert out[key].shape == (23 * 23, 2)
    grid = sd[key].T.reshape(1, 2, 13, 13)
    expected = F.interpolate(grid, size=(23, 23), mode="bicubic", align_corners=False).reshape(2, -1).T
    torch.testing.assert_close(out[key], expected)
    assert out["patch_embed.proj.weight"].shape[1] == 1
    torch.testing.assert_close(out["patch_embed.proj.weight"], sd["patch_embed.proj.weight"].sum(1, keepdim=True))
    dst.load_state_dict(out)


def test_save_and_load_roundtrip(tmp_path):
    model = tiny("swin_nano_patch2_window7_28").eval()
    vitkit.save_pretrained(model, tmp_path / "ckpt")
    loaded = vitkit.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config and loaded.model_name == "swin_nano_patch2_window7_28"
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(depths=(2, 2), num_heads=(3,)), "depths"),
        (dict(embed_dim=96, num_heads=(5, 6, 12, 24)), "num_heads"),
        (dict(window_size=0), "window_size"),
        (dict(depths=(2, 0, 2, 2)), "depths"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
    ],
)
def test_config_validation(kw, field):
    with pytest.raises(ValueError, match=field):
        SwinConfig(**kw)
    with pytest.raises(VitkitError, match=field):
        vitkit.create_model("swin_tiny_patch4_window7_224", **kw)


def test_wrong_channel_count_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match="expects 3"):
        model(torch.randn(1, 1, 32, 32))


def test_model_built_under_inference_mode_runs():
    with torch.inference_mode():
        model = tiny("swin_tiny_patch2_window4_32", depths=(2, 1, 1)).eval()
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_training_after_a_first_call_under_inference_mode():
    """Nothing built during a first call under inference mode (index buffer, masks) may break a later training step."""
    model = tiny("swin_tiny_patch2_window4_32", depths=(2, 2, 1))
    with torch.inference_mode():
        model.eval()(torch.randn(1, 3, 32, 32))
    model.train()(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.layers[0].blocks[0].attn.relative_position_bias_table.grad is not None
    assert not model.layers[0].blocks[0].attn.relative_position_index.is_inference()
