"""A training configuration small enough for unit tests (about a second per epoch on one core), and image folders."""

from pathlib import Path

from vitkit.train import TrainConfig

TINY = dict(
    model="vit_tiny_patch4_28",
    model_args="depth=1,embed_dim=32,num_heads=2",
    img_size=16,
    data="sample",
    max_train_samples=64,
    max_val_samples=32,
    batch_size=16,
    epochs=2,
    lr=2e-3,
    warmup_epochs=0.5,
    progress="none",
    log_every=1,
    tensorboard=False,
    num_workers=0,
)


def tiny(tmp_path, **changes) -> TrainConfig:
    return TrainConfig(**{**TINY, "output_dir": str(tmp_path / "run"), **changes})


def image_folder(root: Path, *, train: tuple[int, int] = (4, 0), val: tuple[int, int] = (4, 0)) -> Path:
    """root/{train,val}/class{0,1}/: (good, unreadable) images per class in each split."""
    from PIL import Image

    for split, (good, bad) in (("train", train), ("val", val)):
        for c, color in enumerate(((220, 30, 30), (30, 30, 220))):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(good):
                Image.new("RGB", (20 + i, 18), color).save(d / f"{i}.png")
            for i in range(bad):
                (d / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return root
