"""Tiny models, images and in-process servers shared by the serving tests."""

import contextlib
import io
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.tiny import TINY
from vitkit.engine import optimize
from vitkit.factory import create_model

CLASSES = ["cat", "dog", "bird", "fish", "frog"]
SRC = Path(__file__).resolve().parents[2] / "src"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python process that imports this checkout's vitkit."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def tiny_model(optimized: bool = True) -> torch.nn.Module:
    """A 32 px ViT with named classes (random weights), as ``vitkit serve`` would load it."""
    name, overrides, size, _ = TINY["vit"]
    torch.manual_seed(0)
    model = create_model(name, img_size=size, **overrides).eval()
    model.class_names = list(CLASSES)
    return optimize(model, inplace=True) if optimized else model


def image_bytes(size=(40, 30), mode="RGB", fmt="PNG", seed=0, **save) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    if mode in ("I;16",):
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")
        img = img.convert(mode) if mode != "RGB" else img
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few dozen bytes (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def wait_until(condition, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition()`` until true (a bound on waiting for a server, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.01)


@contextlib.contextmanager
def started_client(app) -> Iterator:
    """A started app (lifespan run) that has finished its warm-up."""
    from starlette.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, what="/readyz 200")
        yield client


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free 127.0.0.1 port in a background thread; yields the base URL."""
    import urllib.request

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(ready, what="server ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
