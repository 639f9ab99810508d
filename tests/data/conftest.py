import contextlib
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    yield


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A reproducible random (width, height) image: every pixel differs, so a shifted or rotated copy never matches."""
    w, h = size
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    a = np.random.default_rng(seed).integers(0, 256, (h, w, bands), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if bands == 1 else a).convert(mode)


def save(img: Image.Image, path: Path, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def class_folders(root: Path, counts: dict[str, int], size: tuple[int, int] = (6, 5)) -> Path:
    """``root/<class>/<i>.png`` with ``counts[class]`` small distinct images each."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            save(noise(size, seed=100 * c + i), root / name / f"{i:03d}.png")
    return root


def finishes(fn: Callable[[], Any], timeout: float = 20.0, unblock: Path | None = None) -> Any:
    """``fn()``'s result or exception, failing if it does not return within ``timeout`` seconds (it blocked).

    ``unblock``: a FIFO to open for writing afterwards, so a reader stuck on it wakes up and the thread ends.
    """
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    blocked = t.is_alive()
    if blocked and unblock is not None:
        with contextlib.suppress(OSError):
            os.close(os.open(unblock, os.O_WRONLY | os.O_NONBLOCK))
        t.join(5)
    assert not blocked, f"still running after {timeout} s: blocked"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def with_warnings(fn: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``fn()``'s result and the messages of every warning it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn()
    return value, [str(w.message) for w in caught]
