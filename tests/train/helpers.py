"""A training configuration small enough for unit tests (about a second per epoch on one core)."""

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
