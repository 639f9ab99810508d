"""The geometry explanations map back through: token grids as the models make them, and spread() checked against a
matrix built position by position."""

import pytest
import torch

from tests.tiny import TINY
from vitkit.explanations.geometry import Window, spread, stages, window_weights
from vitkit.factory import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def dense_share(size, grid, window):
    """(h*w, H*W): the share of every input position in every output token's window, built one by one."""
    H, W = size
    h, w = grid
    k, s, p = window.kernel, window.stride, window.padding
    weights = window_weights(window)[0, 0]
    m = torch.zeros(h * w, H * W, dtype=torch.float64)
    for u in range(h):
        for v in range(w):
            for i in range(k):
                for j in range(k):
                    y, x = u * s - p + i, v * s - p + j
                    if 0 <= y < H and 0 <= x < W:
                        m[u * w + v, y * W + x] = weights[i, j]
    return m


CASES = [  # (input size, window): ViT / Swin patches, Swin merging of odd sides, CvT embeddings and key grids
    ((8, 12), Window(4, 4, 0, pad_end=True)),
    ((30, 30), Window(4, 4, 0, pad_end=True)),
    ((7, 5), Window(2, 2, 0, pad_end=True)),
    ((28, 28), Window(3, 2, 1)),
    ((7, 9), Window(3, 2, 1)),
    ((37, 41), Window(7, 4, 2)),
    ((45, 46), Window(7, 4, 2)),
]


@pytest.mark.parametrize(("size", "window"), CASES)
def test_spread_is_the_window_share_matrix(size, window):
    grid = (window.out_size(size[0]), window.out_size(size[1]))
    values = torch.rand(2, *grid, dtype=torch.float64)
    share = dense_share(size, grid, window)
    full = window_weights(window).sum().double()  # a window's whole weight, padding included
    mass = (values.flatten(1) / full) @ share  # each token's value shared over its window, padding's share dropped
    assert torch.allclose(spread(values, size, window, "mass").flatten(1), mass)
    if share.sum(1).allclose(full):  # no window reaches into padding: the total is kept
        assert torch.allclose(spread(values, size, window, "mass").sum((1, 2)), values.sum((1, 2)))
    mean = (values.flatten(1) @ share) / share.sum(0).clamp_min(1e-12)  # each position: weighted mean of tokens
    assert torch.allclose(spread(values, size, window, "mean").flatten(1), mean)


@pytest.mark.parametrize(("size", "window"), [((28, 28), Window(3, 2, 1)), ((56, 60), Window(7, 4, 2))])
def test_a_uniform_grid_spreads_to_a_uniform_map(size, window):
    """Overlapping windows (CvT): no stride-periodic checkerboard inside, no bright border from the padding's share."""
    grid = (window.out_size(size[0]), window.out_size(size[1]))
    out = spread(torch.ones(1, *grid), size, window, "mass")[0]
    assert out.max() <= out[size[0] // 2, size[1] // 2] + 1e-6  # nowhere more than in the middle
    inner = out[window.kernel : -window.kernel, window.kernel : -window.kernel]
    assert torch.allclose(inner, inner.mean().expand_as(inner))


SIZES = {"vit": [(32, 32), (40, 24)], "swin": [(32, 32), (40, 24), (37, 45)], "cvt": [(32, 32), (40, 24), (37, 45)]}


@pytest.mark.parametrize(("family", "size"), [(f, s) for f, sizes in SIZES.items() for s in sizes])
def test_stage_grids_are_the_models_own(family, size):
    name, overrides, _, _ = TINY[family]
    model = create_model(name, **overrides).eval()
    with torch.no_grad():
        maps = model.get_attention_maps(torch.randn(1, 3, *size))
    chain = stages(model, size)
    for amap in maps:
        stage = amap.meta.get("stage", 0)
        if family == "swin":
            H, W = chain[stage].grid
            Hp, Wp = amap.meta["grid"]
            ws = amap.meta["window_size"]
            assert (Hp, Wp) == (H + (-H) % ws, W + (-W) % ws)
        else:
            assert tuple(amap.meta.get("q_grid", amap.meta["grid"])) == chain[stage].grid
