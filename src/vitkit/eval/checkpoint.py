"""Find the model to evaluate: a training run directory, a checkpoint, or any ``from_pretrained`` source."""

import os
import warnings
from pathlib import Path
from typing import Any

from vitkit.errors import CheckpointError

RUN_SUBDIRS = ("final", "best", "last")  # what `vitkit train` writes, in order of preference


def resolve_checkpoint(source: str | os.PathLike) -> str:
    """A training run directory -> its final (else best, else last) checkpoint; anything else unchanged."""
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        for sub in RUN_SUBDIRS:
            if (path / sub / "config.json").is_file():
                return str(path / sub)
        raise CheckpointError(
            f"{path}: no config.json here, nor a {', '.join(f'{s}/' for s in RUN_SUBDIRS)} checkpoint inside "
            "(pass a checkpoint directory, a training output_dir, or hf-hub:org/name)"
        )
    return str(source)


def load_model(source: str | os.PathLike, **overrides: Any) -> Any:
    """``from_pretrained`` on the resolved source, in eval mode, warnings about re-initialised heads shown once."""
    from vitkit.hub import from_pretrained

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        return from_pretrained(resolve_checkpoint(source), **overrides).eval()
