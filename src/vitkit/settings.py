"""Every switch and environment variable vitkit reads, in one place.

Environment variables are read when they are used, so a script or a test may set them at run time:

* ``VITKIT_NATIVE``: ``0`` / ``false`` / ``off`` and the inference engine never builds or calls the native C
  kernels (:mod:`vitkit.kernels`). Default: on.
* ``VITKIT_CACHE``: folder for the compiled kernels (default ``$XDG_CACHE_HOME/vitkit``, else ``~/.cache/vitkit``).
  It is used only while it is the user's own private folder (owned by them, not writable by group or others);
  otherwise the kernels are built in a private temporary folder for the process, with a warning.
* ``CC``: the C compiler for the kernels (default: the first of ``cc``, ``gcc``, ``clang`` on ``PATH``).
* ``VITKIT_KERNEL_ARCH``: the compiler's target flags for the kernels instead of ``-march=native``, e.g.
  ``-march=x86-64-v3`` (AVX2, no AVX-512) to build what a CPU without AVX-512 would run, or to work around a
  compiler that misdetects this CPU. Default: unset (``-march=native``, else ``-mcpu=native``, else none).
* ``VITKIT_MALLOC``: glibc malloc preset of the ``vitkit`` command, ``tuned`` (default), ``pinned`` or ``default``
  (:mod:`vitkit.engine.malloc`).
* ``VITKIT_DEBUG``: ``1`` and the command line shows tracebacks instead of one-line errors.

The inference engine's switches are the fields of :class:`EngineSettings`; ``vitkit.optimize(model, **switches)``
takes them as keyword arguments.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

from vitkit.errors import VitkitError

_FALSE = ("0", "false", "no", "off")


def env_flag(name: str, default: bool) -> bool:
    """A boolean environment variable: unset -> ``default``; 0/false/no/off -> False; anything else True."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in _FALSE


def native_kernels_enabled() -> bool:
    return env_flag("VITKIT_NATIVE", True)


def debug_enabled() -> bool:
    return env_flag("VITKIT_DEBUG", False)


def malloc_preset() -> str:
    return os.environ.get("VITKIT_MALLOC", "tuned").strip() or "tuned"


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: ``$VITKIT_CACHE`` (absolute), else the XDG cache folder.

    A relative ``XDG_CACHE_HOME`` is ignored, as the XDG specification says; a relative ``VITKIT_CACHE`` is an error
    (it would depend on the working directory, possibly a shared one).
    """
    explicit = os.environ.get("VITKIT_CACHE", "").strip()
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_absolute():
            raise VitkitError(f"VITKIT_CACHE={explicit!r} is not an absolute path")
        return path / "kernels"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "vitkit" / "kernels"


def c_compiler_name() -> str | None:
    return os.environ.get("CC", "").strip() or None


def kernel_arch_flags() -> tuple[str, ...] | None:
    """``$VITKIT_KERNEL_ARCH`` split into compiler flags; None when unset. Only ``-m...`` flags are taken."""
    value = os.environ.get("VITKIT_KERNEL_ARCH", "").strip()
    if not value:
        return None
    flags = tuple(value.split())
    if bad := [f for f in flags if not f.startswith("-m")]:
        raise VitkitError(f"VITKIT_KERNEL_ARCH={value!r}: only target flags (-m...) are allowed, not {bad[0]!r}")
    return flags


@dataclass(frozen=True)
class EngineSettings:
    """What :func:`vitkit.optimize` may do to a model; every swap can be switched off on its own."""

    fused_linear: bool = True  # bias + GELU and residual adds inside oneDNN's matmul (CPU float32 and bf16)
    native_kernels: bool = field(default_factory=native_kernels_enabled)  # C attention kernels (CPU float32)
    fold_batchnorm: bool = True  # CvT: each projection's BatchNorm folded into its depthwise conv
    precompute_bias: bool = True  # Swin: relative-position bias + shift mask built once per resolution
    micro_batch_bytes: int = 32 * 2**20  # CPU: slices of the batch where a temporary would exceed this; 0 = off
    pack_weights: bool = True  # CPU float32 Linear weights in oneDNN's blocked layout instead of the plain one
    bf16_weights: bool = False  # weights and activations in bfloat16 (native bf16 CPUs, CUDA); float32 logits out
    probe: bool = True  # measure, then choose: oneDNN or F.linear (GELU in or after), kernels, bf16 or float32 products
    lowp_linear: bool = True  # bf16 / fp16 matmuls (autocast, bf16_weights): Linear weights cast (CPU: packed) once
    # CPU bf16 linears (and Swin's window attention) as float32 products of the bf16-rounded values, where the probe
    # finds float32 faster (CPUs without AMX): the same products (exact in float32) and float32 sums as bf16 kernels
    bf16_in_float32: bool = True
    cls_only_head: bool = True  # logits of a [CLS]-reading head: the last block computes the [CLS] row alone

    def __post_init__(self) -> None:
        for name in (
            "fused_linear",
            "native_kernels",
            "fold_batchnorm",
            "precompute_bias",
            "pack_weights",
            "bf16_weights",
            "lowp_linear",
            "bf16_in_float32",
            "probe",
            "cls_only_head",
        ):
            if not isinstance(getattr(self, name), bool):
                raise VitkitError(f"optimize: {name} must be True or False, got {getattr(self, name)!r}")
        if isinstance(self.micro_batch_bytes, bool) or not isinstance(self.micro_batch_bytes, int):
            raise VitkitError(f"optimize: micro_batch_bytes must be an int, got {self.micro_batch_bytes!r}")
        if self.micro_batch_bytes < 0:
            raise VitkitError(f"optimize: micro_batch_bytes must be >= 0, got {self.micro_batch_bytes}")
