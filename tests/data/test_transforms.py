import random

import numpy as np
import pytest
import torch
from PIL import Image

from vitkit.data import DataSpec, Loader, PILTransform, build_dataset, mixup_cutmix
from vitkit.data.datasets import FileDataset
from vitkit.data.transforms import OP_NAMES, pil_op, tensor_eval_transform, tensor_op, tensor_train_transform
from vitkit.errors import VitkitError
from vitkit.models.config import match_channels

SPEC16 = DataSpec((16, 16), 1, (0.5,), (0.5,), "bilinear", 1.0)


def test_match_channels():
    assert match_channels((0.5,), (0.25,), 3) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    mean, std = match_channels((0.1, 0.2, 0.3), (0.2, 0.2, 0.2), 1)
    assert mean == pytest.approx((0.2,)) and std == pytest.approx((0.2,))
    with pytest.raises(ValueError):
        match_channels((0.1, 0.2), (0.1, 0.2), 3)


@pytest.mark.parametrize("name", OP_NAMES)
def test_every_aug_op_keeps_shape_and_range(name):
    x = torch.rand(6, 3, 12, 12)
    y = tensor_op(x, name, torch.linspace(-0.9, 0.9, 6) if name != "posterize" else torch.full((6,), 4.0))
    assert y.shape == x.shape and y.min() >= -1e-6 and y.max() <= 1 + 1e-6
    img = Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    assert pil_op(img, name, 0.5 if name != "posterize" else 4.0).size == (12, 12)


def test_tensor_ops_match_pil_where_exact():
    x = torch.randint(0, 256, (1, 1, 8, 8)).float() / 255
    img = Image.fromarray((x[0, 0] * 255).round().byte().numpy(), mode="L")
    for name, m in (("solarize", 0.5), ("posterize", 4.0), ("autocontrast", 0.0)):
        ours = (tensor_op(x, name, torch.tensor([m]))[0, 0] * 255).round()
        ref = torch.from_numpy(np.asarray(pil_op(img, name, m), dtype=np.float32))
        assert (ours - ref).abs().max() <= 1, name


def test_train_transforms_are_seeded_and_sized():
    x = torch.rand(8, 1, 28, 28)
    for aug in ("none", "flip", "randaugment", "trivialaugment"):
        a = tensor_train_transform(x, SPEC16, aug, True, torch.Generator().manual_seed(1))
        b = tensor_train_transform(x, SPEC16, aug, True, torch.Generator().manual_seed(1))
        assert a.shape == (8, 1, 16, 16) and torch.equal(a, b)


def test_eval_resize_and_centre_crop_agree_between_pil_and_tensor():
    spec = DataSpec((16, 16), 3, (0.0,) * 3, (1.0,) * 3, "bilinear", 0.8)
    img = Image.effect_noise((40, 30), 40).convert("RGB")
    pil = PILTransform(spec, train=False)(img)
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    ten = tensor_eval_transform(t, spec)[0]
    assert pil.shape == ten.shape == (3, 16, 16)
    assert (pil - ten).abs().mean() < 0.05  # same geometry; resampling kernels differ slightly


def test_pil_train_transform_is_deterministic_per_seed():
    spec = DataSpec((16, 16), 3, (0.5,) * 3, (0.5,) * 3)
    img = Image.effect_noise((24, 24), 40).convert("RGBA")
    t = PILTransform(spec, train=True, aug="randaugment", random_resized_crop=True)
    assert torch.equal(t(img, random.Random(5)), t(img, random.Random(5)))
    assert t(img, random.Random(5)).shape == (3, 16, 16)


def test_mixup_cutmix_soft_targets():
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    _, t = mixup_cutmix(x, y, 4, mixup=0, cutmix=0, smoothing=0.1, rng=np.random.default_rng(0))
    assert torch.allclose(t.sum(1), torch.ones(4)) and t[0, 0] == pytest.approx(0.925)
    for mix, cut in ((0.8, 0), (0, 1.0), (0.8, 1.0)):
        xm, t = mixup_cutmix(x, y, 4, mixup=mix, cutmix=cut, smoothing=0.1, rng=np.random.default_rng(1))
        assert xm.shape == x.shape and torch.allclose(t.sum(1), torch.ones(4))
        assert torch.allclose(t[0], t[3].flip(0))  # image 0 is paired with image 3


def test_loader_order_sharding_and_resume():
    ds = build_dataset("sample", "test").subset(np.arange(50))
    full = Loader(ds, SPEC16, batch_size=8, train=True, aug="trivialaugment", seed=3)
    batches = list(full.batches(epoch=2))
    assert len(batches) == len(full) == 6  # 50 // 8, last partial batch dropped in training
    resumed = list(full.batches(epoch=2, start=4))
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(batches[4:], resumed, strict=True))
    assert not torch.equal(batches[0].y, next(full.batches(epoch=3)).y)
    # two ranks: disjoint shards that together cover the (padded) permutation
    shards = [Loader(ds, SPEC16, batch_size=8, train=True, rank=r, world_size=2, seed=3).indices(2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 25
    assert set(shards[0]) | set(shards[1]) == set(range(50))
    ev = [Loader(ds, SPEC16, batch_size=8, train=False, rank=r, world_size=3).indices(0) for r in range(3)]
    assert sorted(np.concatenate(ev).tolist()) == list(range(50))


def test_file_loader_workers_skip_and_errors(tmp_path):
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (10, 10), (i * 40, 0, 0)).save(p)
        paths.append((str(p), i % 2))
    (tmp_path / "2.png").write_bytes(b"\x89PNG broken")
    ds = FileDataset(paths, ["a", "b"], "test")
    spec = DataSpec((8, 8), 3, (0.5,) * 3, (0.5,) * 3)
    loader = Loader(ds, spec, batch_size=3, train=False, num_workers=1, skip_bad_images=True)
    got = list(loader.batches(0))
    assert sum(b.skipped for b in got) == 1 and sum(len(b.y) for b in got) == 5
    assert got[0].x.shape == (2, 3, 8, 8)
    strict = Loader(ds, spec, batch_size=3, train=False, num_workers=1)
    with pytest.raises(VitkitError, match=r"2.png: cannot read image") as e:
        list(strict.batches(0))
    assert "Traceback" not in str(e.value)


def test_crop_padding_shifts_and_random_erasing_masks():
    spec = DataSpec((16, 16), 1, (0.0,), (1.0,), "bilinear", 1.0)  # normalisation as identity: pixels stay pixels
    x = torch.rand(32, 1, 16, 16) + 0.1  # no zero pixel of its own
    y = tensor_train_transform(x, spec, "none", False, torch.Generator().manual_seed(0), crop_padding=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(32):  # each image is its padded copy cropped at one of the 25 offsets
        crops = [padded[i, :, dy : dy + 16, dx : dx + 16] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(c, y[i]) for c in crops)
    assert not torch.equal(y, x)
    z = tensor_train_transform(x, spec, "none", False, torch.Generator().manual_seed(0), random_erasing=1.0)
    erased = (z == 0).flatten(1).float().mean(1)
    assert ((erased > 0.01) & (erased < 0.4)).all()  # one rectangle of about 2-33 % of each image: the mean
    again = tensor_train_transform(x, spec, "none", False, torch.Generator().manual_seed(0), random_erasing=1.0)
    assert torch.equal(z, again)  # seeded: a resumed run sees the same augmentation
    img = Image.fromarray((x[0, 0].numpy() * 200).astype(np.uint8))
    out = PILTransform(spec, True, "none", random_erasing=1.0)(img, random.Random(0))
    assert out.shape == (1, 16, 16) and 0.01 < (out == 0).float().mean() < 0.4
    shifted = PILTransform(spec, True, "none", crop_padding=2)(img, random.Random(0))
    padded = torch.nn.functional.pad(torch.from_numpy(np.asarray(img)).float()[None] / 255, (2, 2, 2, 2))
    assert any(torch.equal(padded[:, dy : dy + 16, dx : dx + 16], shifted) for dy in range(5) for dx in range(5))
