"""Training engine: ``train(TrainConfig(...))`` from scratch or fine-tuning, resumable, DDP-ready."""

from vitkit.train.config import TrainConfig, TrainResult, parse_model_args

__all__ = ["TrainConfig", "TrainResult", "parse_model_args"]
