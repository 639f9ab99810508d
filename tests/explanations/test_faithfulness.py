"""Deletion / insertion curves and the pointing game: what they measure, on inputs where the answer is known."""

import numpy as np
import pytest
import torch

from vitkit.explanations import faithfulness as fa

pytestmark = pytest.mark.usefixtures("one_thread")


class Region(torch.nn.Module):
    """A classifier that provably looks at one place: logit 1 = 10 x (mean of rows 0-3, columns 0-3 - 0.5)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x[:, 0, :4, :4].mean(dim=(1, 2)) - 0.5) * self.scale
        return torch.stack([torch.zeros_like(s), s], dim=1)


def test_the_right_map_deletes_and_inserts_faster_than_random():
    x = torch.zeros(3, 1, 8, 8)
    x[:, :, :4, :4] = 1.0  # the square that decides class 1; the rest is empty
    right = x[:, 0].clone()
    wrong = 1.0 - right
    g = torch.Generator().manual_seed(0)
    targets = torch.ones(3, dtype=torch.long)
    model = Region()
    orders = {
        "right": fa.relevance_order(right, 4, g),
        "wrong": fa.relevance_order(wrong, 4, g),
        "random": fa.random_order(3, 4, g),
    }
    curves = {k: fa.curves(model, x, o, targets, block=4, blur_sigma=50.0) for k, o in orders.items()}
    auc = {k: {kind: float(fa.auc(c[kind]).mean()) for kind in c} for k, c in curves.items()}
    assert auc["right"]["deletion"] < auc["random"]["deletion"] < auc["wrong"]["deletion"]
    assert auc["right"]["insertion"] > auc["random"]["insertion"] > auc["wrong"]["insertion"]
    high, low = torch.sigmoid(torch.tensor(5.0)), torch.sigmoid(torch.tensor(-5.0))
    assert torch.allclose(curves["right"]["deletion"][:, 0], high.expand(3))  # step 0: the image itself
    assert torch.allclose(curves["right"]["deletion"][:, 1], low.expand(3))  # the square gone
    assert torch.allclose(curves["right"]["insertion"][:, 1], high.expand(3))  # the square back on the blur
    assert torch.allclose(curves["wrong"]["insertion"][:, :4], curves["wrong"]["insertion"][:, :1])  # nothing yet


def test_auc_of_a_constant_curve_is_the_constant():
    assert torch.allclose(fa.auc(torch.full((2, 11), 0.3)), torch.full((2,), 0.3))
    assert torch.allclose(fa.auc(torch.linspace(1, 0, 5)[None]), torch.tensor([0.5]))


def test_orders_cover_every_square_once():
    h = torch.rand(2, 10, 9)
    for order in (fa.relevance_order(h, 4), fa.random_order(2, fa.num_units((10, 9), 4))):
        assert order.shape == (2, 9) and all(sorted(o.tolist()) == list(range(9)) for o in order)
    assert fa.relevance_order(h, 1)[0, 0] == h[0].flatten().argmax()


def test_synthetic_pointing_data_puts_the_pattern_in_its_box():
    d = fa.synthetic_pointing_data(50, size=28, seed=3)
    assert d.images.shape == (50, 28, 28) and d.images.dtype == np.uint8
    for img, label, (t, left, b, r) in zip(d.images, d.labels, d.boxes, strict=True):
        pattern = np.array([[c == "#" for c in row] for row in fa.PATTERNS[d.classes[label]]])
        assert (img[t:b, left:r][pattern] == 255).all()  # the class pattern
        assert (img[t:b, left:r][~pattern] <= 100).all()  # noise between its strokes, nothing else bright
        outside = img.copy()
        outside[t:b, left:r] = 0
        assert (outside == 255).sum() == 16  # the distractor, elsewhere
    assert fa.synthetic_pointing_data(5, seed=3, distractor=False).images.max(axis=(1, 2)).tolist() == [255] * 5
    assert set(fa.synthetic_pointing_data(200, num_classes=2).labels.tolist()) == {0, 1}


def test_pointing_hits_and_chance():
    maps = torch.zeros(2, 10, 10)
    maps[0, 2, 3] = 1  # inside the box
    maps[1, 9, 9] = 1  # far away
    boxes = np.array([[1, 1, 4, 4], [1, 1, 4, 4]])
    assert fa.pointing_hits(maps, boxes).tolist() == [True, False]
    assert fa.pointing_hits(maps, boxes, tolerance=0).tolist() == [True, False]
    assert fa.chance_hit_rate(boxes, (10, 10), tolerance=1) == pytest.approx(25 / 100)


def test_the_peak_of_a_blocky_or_flat_map_is_the_centre_of_its_maximum():
    maps = torch.zeros(2, 12, 12)
    maps[0, 4:8, 8:12] = 1.0  # one 4x4 patch: its centre, not its first pixel
    maps[1] = 0.5  # flat: the middle of the image
    rows, cols = fa.peak_points(maps)
    assert rows.tolist() == [6, 6] and cols.tolist() == [10, 6]  # 5.5 and 9.5 round to even, 5.5 to 6
