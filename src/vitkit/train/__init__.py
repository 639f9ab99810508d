"""Training engine: ``train(TrainConfig(...))`` from scratch or fine-tuning, resumable, DDP-ready.

    from vitkit.train import TrainConfig, train
    result = train(TrainConfig(model="vit_tiny_patch4_28", data="fashion-mnist:/data/fm", epochs=10))
    result.best_checkpoint   # a directory vitkit.from_pretrained() loads

``cli_entry(argv)`` runs the same from command-line flags generated from TrainConfig.
"""

from vitkit.train.cli import add_train_arguments, cli_entry, config_from_args
from vitkit.train.config import TrainConfig, TrainResult, parse_model_args
from vitkit.train.loop import evaluate, train

__all__ = [
    "TrainConfig",
    "TrainResult",
    "add_train_arguments",
    "cli_entry",
    "config_from_args",
    "evaluate",
    "parse_model_args",
    "train",
]
