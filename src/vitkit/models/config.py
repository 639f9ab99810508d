"""The one configuration vocabulary of the three families: shared fields, their meaning, their validation.

Each family's config is a frozen dataclass on :class:`ModelConfig`. A field name means the same in every family
(``drop_rate`` is always the dropout before the head); names that hold one value per stage are plural (``depths``,
``embed_dims``). Values are checked here, once, for type and range, so a bad ``config.json`` or keyword override is a
one-line error naming the field, and a config that would allocate absurd amounts (``depth=10**9``) is refused before
anything is built. Families add their structural checks (heads dividing widths, per-stage lengths) in ``check()``.
"""

import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, ClassVar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
MAX_PARAMS = 30e9  # larger than any released ViT / Swin / CvT by 10x; beyond it a config is a mistake

# inclusive ranges for numbers (and for every element of per-stage tuples), by field name
LIMITS: dict[str, tuple[float, float]] = {
    "img_size": (1, 8192),
    "in_chans": (1, 64),
    "num_classes": (0, 1_000_000),
    "patch_size": (1, 1024),
    "patch_sizes": (1, 1024),
    "patch_strides": (1, 1024),
    "patch_paddings": (0, 1024),
    "embed_dim": (1, 65536),
    "embed_dims": (1, 65536),
    "depth": (1, 1000),
    "depths": (1, 1000),
    "num_heads": (1, 4096),
    "window_size": (1, 256),
    "kernel_qkv": (1, 63),
    "padding_q": (0, 63),
    "padding_kv": (0, 63),
    "stride_q": (1, 63),
    "stride_kv": (1, 63),
    "mlp_ratio": (1e-3, 64),
    "norm_eps": (1e-12, 0.1),
    "crop_pct": (1e-3, 1.0),
    "mean": (-10.0, 10.0),
    "std": (1e-6, 100.0),
}
RATES = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")  # each in [0, 1)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def to_2tuple(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair (height, width), got {x!r}")
        return int(x[0]), int(x[1])
    return int(x), int(x)


def match_channels(mean, std, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation statistics for ``channels`` inputs from ones for 1 or 3: a grey channel gets the average mean and
    the root-mean-square std of the RGB ones; one grey statistic is repeated for RGB."""
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != len(std):
        raise ValueError(f"mean {mean} and std {std} have different lengths")
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1:
        return mean * channels, std * channels
    if channels == 1:
        return (sum(mean) / len(mean),), (math.sqrt(sum(s * s for s in std) / len(std)),)
    raise ValueError(f"{len(mean)} normalisation values (mean / std) do not fit {channels} input channels")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        kind = "a list" if len(args) == 2 and args[1] is Ellipsis else "a pair"
        return f"{kind} of {_PLURAL.get(args[0], str(args[0]))}"
    return {int: "an int", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


_PLURAL = {int: "ints", float: "numbers", bool: "booleans", str: "strings"}


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (lists become tuples, ints become floats where a float is wanted), or TypeError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option)
            except TypeError:
                continue
        raise TypeError
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (tuple, list)):
            raise TypeError
        if not (len(args) == 2 and args[1] is Ellipsis) and len(value) != len(args):
            raise TypeError
        return tuple(_coerce(v, args[0]) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    return value


@dataclass(frozen=True)
class ModelConfig:
    """Fields every family has, with one meaning each."""

    img_size: int | tuple[int, int] = 224  # the resolution the weights expect (``data_config``)
    in_chans: int = 3
    num_classes: int = 1000  # 0: no head, the model returns pooled features
    drop_rate: float = 0.0  # dropout before the classifier head
    pos_drop_rate: float = 0.0  # dropout after the patch / token embedding (and position embedding)
    proj_drop_rate: float = 0.0  # dropout after attention's output projection and inside the MLP
    attn_drop_rate: float = 0.0  # dropout on the attention weights
    drop_path_rate: float = 0.0  # stochastic depth, ramping linearly from 0 at the first block to this at the last
    mlp_ratio: float = 4.0  # MLP hidden width / block width
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    mean: tuple[float, ...] = IMAGENET_MEAN  # one value per input channel
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"  # resize filter of the evaluation pipeline
    crop_pct: float = 0.9  # centre crop = img_size / crop_pct of the shorter side

    family: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = getattr(self, f.name)
            try:
                value = _coerce(value, hints[f.name])
            except TypeError:
                raise ValueError(f"{f.name}: expected {_describe(hints[f.name])}, got {value!r}") from None
            object.__setattr__(self, f.name, value)
            if f.name in LIMITS:
                lo, hi = LIMITS[f.name]
                items = value if isinstance(value, tuple) else (value,)
                bad = [v for v in items if not lo <= v <= hi]
                if bad:
                    raise ValueError(f"{f.name}: {bad[0]!r} is outside [{lo:g}, {hi:g}]")
            if f.name in RATES and not 0.0 <= value < 1.0:
                raise ValueError(f"{f.name}: must be in [0, 1), got {value!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation: must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        try:  # one statistic per input channel, whatever the weights were trained with
            mean, std = match_channels(self.mean, self.std, self.in_chans)
        except ValueError as e:
            raise ValueError(f"mean / std: {e}") from None
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        self.check()
        params = self.approx_params()
        if params > MAX_PARAMS:
            raise ValueError(f"this config would have about {params:.3g} parameters (limit {MAX_PARAMS:.0g})")

    def check(self) -> None:
        """A family's structural rules; raise ValueError naming the field."""

    def approx_params(self) -> float:
        """Rough parameter count (to refuse absurd configs before allocating them)."""
        return 0.0

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.in_chans, *to_2tuple(self.img_size))

    def block_params(self, dim: int, blocks: int) -> float:
        """Weights of ``blocks`` transformer blocks of width ``dim`` (attention 4 d^2 + MLP 2 r d^2)."""
        return blocks * (4 + 2 * self.mlp_ratio) * dim * dim
