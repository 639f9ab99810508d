"""Every training setting in one frozen dataclass, so a CLI and YAML/TOML files can be generated from it.

Each field has a type, a default and ``metadata["help"]``; ``TrainConfig.from_dict`` validates keys.
The engine's entry points (``vitkit.train``):

    train(cfg: TrainConfig, *, callbacks=None) -> TrainResult

Data sources (``data`` / ``val_data``) are strings understood by :func:`vitkit.data.build_dataset`.
"""

import dataclasses
import functools
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitkit.errors import VitkitError
from vitkit.models.config import LIMITS
from vitkit.models.registry import get_entry, list_models, parse_overrides, replace_config
from vitkit.utils.devices import DEVICE_NAMES, is_device_name

AMP_CHOICES = ("none", "bf16", "fp16")
AUG_CHOICES = ("none", "flip", "randaugment", "trivialaugment")
PROGRESS_CHOICES = ("auto", "bar", "log", "none")
STRATEGY_CHOICES = ("ddp", "fsdp")


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class TrainConfig:
    # --- model ---------------------------------------------------------------------------------
    model: str = _f(
        "cvt_nano_28", "registered model name (see `vitkit models`); the default is the Fashion-MNIST recipe"
    )
    pretrained: str = _f("", "fine-tune from this source: checkpoint dir, hf-hub:org/name, or a model name")
    model_args: str = _f("", "config overrides, comma-separated key=value, e.g. 'depth=6,embed_dim=128'")
    img_size: int = _f(0, "input resolution fed to the model (0 = the model's default)")
    in_chans: int = _f(0, "input channels (0 = the data set's own: 1 for (Fashion-)MNIST, 3 for RGB)")
    drop_path_rate: float = _f(0.1, "stochastic depth rate (ramps up with depth)")
    freeze_backbone: bool = _f(False, "train only the classifier head")
    grad_checkpointing: bool = _f(False, "recompute blocks in the backward pass to save memory")
    # --- data ----------------------------------------------------------------------------------
    data: str = _f(
        "sample",
        "data source: sample | fashion-mnist:DIR | mnist:DIR | cifar10:DIR | cifar100:DIR | folder:DIR | csv:FILE",
    )
    val_data: str = _f("", "separate validation source (default: the data set's val/test split)")
    val_fraction: float = _f(0.0, "hold out this fraction of the training set for validation (0 = use val/test split)")
    download: bool = _f(False, "download (Fashion-)MNIST into the given directory if its files are missing")
    max_train_samples: int = _f(0, "use only the first N training samples after shuffling (0 = all)")
    max_val_samples: int = _f(0, "use only N validation samples (0 = all)")
    skip_bad_images: bool = _f(False, "skip and count unreadable images instead of stopping with an error")
    num_workers: int = _f(2, "data-loading worker processes for image files (array data sets need none)")
    aug: str = _f("flip", "augmentation: none | flip | randaugment | trivialaugment", choices=AUG_CHOICES)
    random_resized_crop: bool = _f(False, "random-resized-crop (scale 0.08-1) instead of a plain resize in training")
    crop_padding: int = _f(0, "random crop of the image padded with this many black pixels a side (0 = off)")
    crop_min_epochs: float = _f(
        0.0,
        "use the random crop only in runs expected to last at least this many epochs (0 = always); with a time "
        "budget the length is estimated from the pace of the first epoch",
    )
    random_erasing: float = _f(0.0, "probability of erasing a random rectangle of each training image (0 = off)")
    mixup: float = _f(0.0, "mixup alpha (0 = off)")
    cutmix: float = _f(0.0, "cutmix alpha (0 = off); with mixup too, one of them is picked per batch")
    label_smoothing: float = _f(0.1, "label smoothing of the targets")
    # --- optimisation --------------------------------------------------------------------------
    epochs: int | None = _f(
        None, "number of epochs (default: 10 without a budget; with a time or image budget, as many as it allows)"
    )
    batch_size: int = _f(128, "batch size per process (global batch = batch_size x processes x accum_steps)")
    lr: float = _f(2e-3, "peak learning rate of AdamW (2e-3: the from-scratch 28 px recipe; fine-tune lower)")
    min_lr: float = _f(1e-6, "learning rate at the end of the cosine schedule")
    warmup_epochs: float = _f(1.0, "linear warm-up length in epochs (fractions allowed), without a budget")
    warmup_fraction: float = _f(0.05, "with a time or image budget: linear warm-up over this fraction of it")
    weight_decay: float = _f(0.05, "AdamW weight decay (never on norms, biases, position embeddings, tokens)")
    betas: tuple[float, float] = _f((0.9, 0.999), "AdamW betas")
    layer_decay: float = _f(1.0, "layer-wise lr decay for fine-tuning (e.g. 0.75; 1 = off)")
    clip_grad: float = _f(1.0, "clip the gradient norm to this value (0 = off)")
    accum_steps: int = _f(1, "accumulate gradients over this many batches per optimizer step")
    amp: str = _f("none", "mixed precision: none | bf16 (CPU, CUDA) | fp16 (CUDA + grad scaler)", choices=AMP_CHOICES)
    ema_decay: float = _f(0.0, "keep an exponential moving average of the weights (e.g. 0.9998; 0 = off)")
    early_stopping_patience: int = _f(0, "stop after this many epochs without a better val metric (0 = off)")
    time_limit_minutes: float = _f(
        0.0,
        "budget of training time (evaluation excluded): the lr schedule is laid over it and the run ends annealed "
        "when it is used up, then evaluates and checkpoints (0 = none)",
    )
    budget_images: int = _f(0, "budget of training images seen, laid out like the time budget (0 = none)")
    # --- run -----------------------------------------------------------------------------------
    output_dir: str = _f("runs/train", "where checkpoints, metrics.jsonl and the final model go")
    resume: str = _f("", "continue a run: a checkpoint dir, or 'auto' = output_dir/last if it exists")
    overwrite_output_dir: bool = _f(False, "start afresh even if output_dir already holds a checkpoint")
    checkpoint_every_steps: int = _f(0, "also write the 'last' checkpoint every N optimizer steps (0 = per epoch)")
    seed: int = _f(0, "seed for weights, data order and augmentation (a CPU run is reproducible)")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N | mps")
    log_every: int = _f(50, "log a metrics line every N optimizer steps")
    eval_every_epochs: int = _f(1, "evaluate every N epochs (the last epoch always)")
    progress: str = _f("auto", "progress bar: auto (only on a terminal) | bar | log | none", choices=PROGRESS_CHOICES)
    tensorboard: bool = _f(True, "also write TensorBoard event files when tensorboard is installed")
    deterministic: bool = _f(False, "use deterministic algorithms (slower; CPU runs are reproducible anyway)")
    compile: bool = _f(False, "torch.compile the model")
    # --- several processes (torchrun) ----------------------------------------------------------
    strategy: str = _f(
        "ddp",
        "with several processes: ddp (a full copy each) | fsdp (FSDP2: parameters, gradients and optimizer state "
        "sharded per block; Distributed Checkpoints)",
        choices=STRATEGY_CHOICES,
    )
    sync_bn: bool = _f(True, "with several processes, BatchNorm (CvT) uses the statistics of the global batch")

    def __post_init__(self) -> None:
        """The one check of every user value (flags, YAML/TOML/JSON files and Python all land here)."""
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        if isinstance(self.model_args, dict):  # allow a mapping from Python / YAML
            object.__setattr__(self, "model_args", ",".join(f"{k}={v}" for k, v in self.model_args.items()))
        for f in dataclasses.fields(self):
            _check_type(self, f.name, _field_types()[f.name])

        def bad(name: str, why: str) -> VitkitError:
            return VitkitError(f"{_flag(name)} ({name}): {why}, got {getattr(self, name)!r}")

        for name, choices in (
            ("amp", AMP_CHOICES),
            ("aug", AUG_CHOICES),
            ("progress", PROGRESS_CHOICES),
            ("strategy", STRATEGY_CHOICES),
        ):
            if getattr(self, name) not in choices:
                raise bad(name, f"must be one of {', '.join(choices)}")
        if self.strategy == "fsdp" and self.amp == "fp16":
            raise bad("amp", "fp16 (a gradient scaler) is not supported with strategy fsdp; use bf16")
        if not is_device_name(self.device):
            raise bad("device", f"must be {DEVICE_NAMES}")
        if self.epochs is not None and self.epochs < 1:
            raise bad("epochs", "must be >= 1")
        for name in ("batch_size", "accum_steps", "log_every", "eval_every_epochs"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        for name in (
            "max_train_samples",
            "max_val_samples",
            "early_stopping_patience",
            "checkpoint_every_steps",
            "budget_images",
            "crop_padding",
        ):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0 (0 = off)")
        if self.num_workers < 0:
            raise bad("num_workers", "must be >= 0")
        if not 0 <= self.seed < 2**63:
            raise bad("seed", "must be in [0, 2**63)")
        numbers = ("lr", "min_lr", "weight_decay", "warmup_epochs", "clip_grad", "mixup", "cutmix", "crop_min_epochs")
        for name in numbers:
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise bad(name, "must be a finite number >= 0")
        if not (math.isfinite(self.time_limit_minutes) and self.time_limit_minutes >= 0):
            raise bad("time_limit_minutes", "must be a finite number >= 0 (0 = no limit)")
        for name in ("label_smoothing", "val_fraction", "ema_decay", "drop_path_rate", "warmup_fraction"):
            if not 0 <= getattr(self, name) < 1:  # also false for nan
                raise bad(name, "must be in [0, 1)")
        if not 0 <= self.random_erasing <= 1:
            raise bad("random_erasing", "must be in [0, 1]")
        if not 0 < self.layer_decay <= 1:
            raise bad("layer_decay", "must be in (0, 1]")
        if not all(0 <= b < 1 for b in self.betas):
            raise bad("betas", "each must be in [0, 1)")
        lo, hi = LIMITS["img_size"]
        if self.img_size != 0 and not lo <= self.img_size <= hi:
            raise bad("img_size", f"must be 0 (the model's own) or in [{lo:g}, {hi:g}]")
        if self.in_chans not in (0, 1, 3):  # the data pipeline feeds 1 (grey) or 3 (RGB) channels
            raise bad("in_chans", "must be 0 (the data's own), 1 or 3")
        if not self.output_dir.strip():
            raise bad("output_dir", "must name a directory")
        if not self.model and not self.pretrained:
            raise bad("model", "give a model name (or --pretrained SOURCE)")
        try:  # fail early on a malformed string, or on a value the model's config refuses (depth=10**9)
            overrides = parse_overrides(self.model_args)
            if self.model in list_models() and not self.pretrained:
                replace_config(get_entry(self.model).config, **overrides)
        except VitkitError as e:
            raise VitkitError(f"{_flag('model_args')} (model_args): {e}") from None

    # --- conversions -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping (YAML/TOML/JSON); unknown keys are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise VitkitError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Read a .json, .yaml/.yml or .toml file whose top level holds TrainConfig fields."""
        path = Path(path)
        if not path.is_file():
            raise VitkitError(f"config file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                values = yaml.safe_load(text) or {}
            elif path.suffix == ".toml":
                import tomllib

                values = tomllib.loads(text)
            else:
                values = json.loads(text)
        except ImportError as e:
            raise VitkitError(f"{path}: reading {path.suffix} needs {e.name} (pip install 'vitkit[yaml]')") from None
        except Exception as e:
            raise VitkitError(f"{path}: cannot parse ({type(e).__name__}: {e})") from None
        if not isinstance(values, dict):
            raise VitkitError(f"{path}: expected a mapping of settings at the top level")
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _check_type(cfg: "TrainConfig", name: str, tp: Any) -> None:
    """The value of field ``name`` has the field's type (an int where a float is wanted becomes a float)."""
    value = getattr(cfg, name)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # Optional[X]: None or an X
        if value is None:
            return
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    try:
        if typing.get_origin(tp) is tuple:  # betas: a pair of numbers
            size = len(typing.get_args(tp))
            if not (isinstance(value, tuple) and len(value) == size and all(map(_is_number, value))):
                raise VitkitError(f"{_flag(name)} ({name}): expected {size} numbers, got {value!r}")
            object.__setattr__(cfg, name, tuple(float(v) for v in value))
        elif tp is float and _is_number(value):
            object.__setattr__(cfg, name, float(value))
        elif not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise VitkitError(f"{_flag(name)} ({name}): expected {_KINDS.get(tp, tp)}, got {value!r}")
    except OverflowError:  # an int too large for a float
        raise VitkitError(f"{_flag(name)} ({name}): the number is too large") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class TrainResult:
    """What :func:`vitkit.train.train` returns."""

    output_dir: Path
    best_checkpoint: Path | None  # a directory from_pretrained() loads (raw or EMA weights, whichever scored best)
    last_checkpoint: Path | None  # the resumable checkpoint (model weights + training state)
    final_model: Path | None  # output_dir/final: the weights to use (= best when validation ran)
    metrics: dict[str, float]  # last evaluation (val_loss, val_acc, val_top5, ...) plus train_loss
    history: list[dict[str, Any]]  # one record per epoch
    stopped_early: str | None = None  # why the run stopped before `epochs` (early stopping, time limit)
