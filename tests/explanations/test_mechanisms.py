"""The study note's mechanisms as numbers: the relative-position index example with the note's own numbers, and the
grids, windows and key / value grids of real models."""

import json

import pytest
import torch

from tests.tiny import TINY
from vitkit.explanations.mechanisms import (
    cvt_layout,
    mechanism_numbers,
    position_similarity,
    relative_position_steps,
    shift_regions,
    swin_layout,
)
from vitkit.factory import create_model
from vitkit.models.swin import relative_position_index, shift_mask, window_partition

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_notes_window_2_example_step_by_step():
    s = relative_position_steps(2)
    assert s["relative_coords_x"].tolist() == [[0, 0, -1, -1], [0, 0, -1, -1], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert s["relative_coords_y"].tolist() == [[0, -1, 0, -1], [1, 0, 1, 0], [0, -1, 0, -1], [1, 0, 1, 0]]
    assert s["x_coords_plus"].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [2, 2, 1, 1], [2, 2, 1, 1]]  # + (ws - 1)
    assert s["y_coords_plus"].tolist() == [[1, 0, 1, 0], [2, 1, 2, 1], [1, 0, 1, 0], [2, 1, 2, 1]]
    assert s["x_coords_times"].tolist() == [[3, 3, 0, 0], [3, 3, 0, 0], [6, 6, 3, 3], [6, 6, 3, 3]]  # x (2ws - 1)
    assert s["relative_position_index"].tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


@pytest.mark.parametrize("ws", [2, 3, 7])
def test_the_steps_build_the_models_index(ws):
    assert torch.equal(relative_position_steps(ws)["relative_position_index"], relative_position_index(ws))


def test_shift_regions_are_the_masks_regions():
    regions = shift_regions(9, 12, 3, 1)
    windows = window_partition(regions.view(1, 9, 12, 1), 3).view(-1, 9)
    same = windows[:, :, None] == windows[:, None, :]
    assert torch.equal(same, shift_mask(9, 12, 3, 1) == 0)


def test_swin_layout_of_the_28px_model():
    model = create_model("swin_nano_patch2_window7_28")
    stages = swin_layout(model, (28, 28))
    assert [s["grid"] for s in stages] == [(14, 14), (7, 7)]
    assert [(b["window"], b["shift"], b["windows"]) for b in stages[0]["blocks"]] == [(7, 0, (2, 2)), (7, 3, (2, 2))]
    assert all((b["window"], b["shift"]) == (7, 0) for b in stages[1]["blocks"])  # one window, no shift
    padded = swin_layout(model, (30, 26))[0]  # 15 x 13 tokens -> 21 x 14 in whole windows
    assert padded["grid"] == (15, 13) and padded["blocks"][1]["padded"] == (21, 14)


def test_cvt_layout_is_the_notes_picture_at_real_sizes():
    model = create_model("cvt_nano_28")
    stages = cvt_layout(model, (28, 28))
    assert [s["grid"] for s in stages] == [(14, 14), (7, 7), (4, 4)]
    assert [s["kv_grid"] for s in stages] == [(7, 7), (4, 4), (2, 2)]
    assert [(s["queries"], s["keys"]) for s in stages] == [(196, 49), (49, 16), (17, 5)]  # [CLS] in the last
    assert [s["channels"] for s in stages] == [32, 64, 128]
    with torch.no_grad():
        maps = model.get_attention_maps(torch.randn(1, 1, 28, 28))
    for amap in maps:  # the recorded attention has exactly these shapes
        st = stages[amap.meta["stage"]]
        assert amap.weights.shape[-2:] == (st["queries"], st["keys"])


def test_vit_position_similarity_is_a_cosine():
    model = create_model("vit_nano_patch4_28")
    sim = position_similarity(model)
    assert sim.shape == (7, 7, 7, 7)
    assert torch.allclose(torch.diagonal(sim.view(49, 49)), torch.ones(49), atol=1e-5)
    assert sim.abs().max() <= 1 + 1e-5


@pytest.mark.parametrize("family", list(TINY))
def test_numbers_for_every_family_are_plain_json(family):
    """The figures themselves are drawn in tests/cli/test_explain_cli.py (one page per family)."""
    name, overrides, size, _ = TINY[family]
    model = create_model(name, **overrides).eval()
    numbers = mechanism_numbers(model, (size + 4, size + 4) if family != "vit" else (size, size))
    assert numbers["family"] == family
    assert json.loads(json.dumps(numbers)) == numbers  # lists and numbers only
