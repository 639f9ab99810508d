"""examples/segmentation.py end to end, small: synthetic shapes, an FPN head on a features_only backbone, mIoU."""

import json

import pytest
import torch

from examples import segmentation

TINY = ["--model-args", "embed_dim=16,depths=(1,1,1),num_heads=(1,2,4)", "--size", "32", "--width", "32",
        "--train-size", "256", "--val-size", "32", "--batch-size", "8", "--threads", "1", "--quiet"]  # fmt: skip


def test_the_generated_set():
    images, masks = segmentation.make_shapes(16, 32, seed=3)
    assert images.shape == (16, 3, 32, 32) and masks.shape == (16, 32, 32) and masks.dtype == torch.long
    assert set(masks.unique().tolist()) == {0, 1, 2, 3}  # background and every shape
    assert images.abs().mean() < 3  # normalised
    again, _ = segmentation.make_shapes(16, 32, seed=3)
    assert torch.equal(images, again)


def test_iou():
    cm = torch.tensor([[5, 1], [1, 3]])  # rows: true class, columns: predicted
    torch.testing.assert_close(segmentation.iou_per_class(cm), torch.tensor([5 / 7, 3 / 5], dtype=torch.float64))
    assert segmentation.miou(torch.tensor([[4, 0], [0, 0]])) == 1.0  # a class absent everywhere is not counted


def test_training_beats_predicting_background(tmp_path):
    args = [*TINY, "--steps", "240", "--lr", "3e-3", "--class-weights", "sqrt", "--out", str(tmp_path / "r.json")]
    result = segmentation.main(args)
    assert json.loads((tmp_path / "r.json").read_text())["mIoU"] == result["mIoU"]
    assert result["feature_reduction"] == [4, 8, 16] and result["feature_channels"] == [16, 32, 64]
    assert result["mIoU"] > result["mIoU_all_background"] + 0.03 > 2 * result["mIoU_random"]
    assert all(result["IoU"][c] > 0 for c in segmentation.CLASSES)


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_or_checkpointed_backbone(frozen):
    args = segmentation.parser().parse_args([*TINY, "--steps", "3", "--grad-checkpointing"] + ["--freeze"] * frozen)
    model = segmentation.build(args)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    x, y = segmentation.make_shapes(4, 32, seed=0)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    changed = any(not torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert changed != frozen
    assert model.backbone.model.grad_checkpointing
