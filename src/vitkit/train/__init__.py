"""Training engine: ``train(TrainConfig(...))`` from scratch or fine-tuning, resumable, DDP-ready.

    from vitkit.train import TrainConfig, train
    result = train(TrainConfig(model="vit_tiny_patch4_28", data="fashion-mnist:/data/fm", epochs=10))
    result.best_checkpoint   # a directory vitkit.from_pretrained() loads

``vitkit train`` (``vitkit.cli``) runs the same from command-line flags generated from TrainConfig.
"""

from vitkit.train.config import TrainConfig, TrainResult
from vitkit.train.loop import train, validate

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "validate",
]
