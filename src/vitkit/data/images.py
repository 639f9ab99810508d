"""Open image files safely and convert them to the channel count a model wants: the one way vitkit reads an image
file, for training, evaluation, prediction and serving alike.

* Only regular files are opened (a FIFO or a device named ``*.png`` would block or never end).
* Truncated or unreadable files raise :class:`VitkitError` naming the file (PIL's ``LOAD_TRUNCATED_IMAGES`` stays
  off, so a cut-off JPEG is an error, not a grey band).
* Decompression bombs: an image with more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels is refused (PIL only warns
  between 1x and 2x that limit; we turn the warning into the same error).
* The EXIF orientation tag is applied, so a photo is seen the way viewers show it.
* Transparency (RGBA, LA, palette with a transparent colour) is composited on **white**, the usual background of
  product photos and scanned documents, then converted: 1 channel = ITU-R 601 luma (PIL's ``L``), 3 channels = RGB
  (a grey image is repeated).
* 16-bit and float images are scaled to 8 bits from their own range; other colour spaces (LAB, HSV) become RGB.
"""

import io
import os
import stat
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vitkit.errors import VitkitError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm")


# the modes to_channels() converts itself; any other (LAB, HSV, ...) becomes RGB when the file is opened, so that a
# conversion PIL cannot do fails there, naming the file
DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # scaled to 8 bits
CHANNEL_MODES = frozenset(
    ("1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr", *DEEP_MODES)
)


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully (so errors surface here, not in a later transform), upright as EXIF says.

    The file is opened without blocking and checked through its descriptor, so a FIFO or device that takes the
    place of an image after a folder was scanned is refused, not waited on forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise VitkitError(f"{path}: image file not found") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise VitkitError(f"{path}: cannot read image ({getattr(e, 'strerror', None) or e})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise VitkitError(f"{path}: not a regular file")
    with open(fd, "rb") as f:
        return _decode(f, str(path), bomb_hint="; raise PIL.Image.MAX_IMAGE_PIXELS if the image is genuine")


def decode_image(data: bytes, name: str = "image", *, max_pixels: int | None = None) -> Image.Image:
    """Decode an image held in memory (an upload) as :func:`open_image` decodes a file; errors name ``name``.

    ``max_pixels`` refuses a larger image from its header, before a single pixel is decoded: a server can set a
    limit well below PIL's process-wide ``MAX_IMAGE_PIXELS``.
    """
    return _decode(io.BytesIO(data), name, max_pixels=max_pixels)


def _decode(f: BinaryIO, name: str, max_pixels: int | None = None, bomb_hint: str = "") -> Image.Image:
    """The decoding both share: fully loaded, upright, in a mode :func:`to_channels` converts; one-line errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as img:
                w, h = img.size
                if max_pixels is not None and w * h > max_pixels:
                    raise VitkitError(
                        f"{name}: {w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,} (decompression bomb?)"
                    )
                img.load()
                img = ImageOps.exif_transpose(img)  # a copy, upright
                if img.mode == "P":
                    return img.convert("RGBA")
                return img if img.mode in CHANNEL_MODES else img.convert("RGB")
    except VitkitError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise VitkitError(f"{name}: refused to decode ({e}){bomb_hint}") from None
    except UnidentifiedImageError:
        raise VitkitError(f"{name}: cannot read image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise VitkitError(f"{name}: cannot read image ({type(e).__name__}: {e}); corrupt or truncated?") from None
    except Exception as e:  # a decoder's own failure on a malformed file (struct.error, IndexError, ...)
        raise VitkitError(f"{name}: cannot read image ({type(e).__name__}: {e}); corrupt?") from None


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> ``L`` (channels=1) or ``RGB`` (channels=3); transparency on white."""
    if channels not in (1, 3):
        raise VitkitError(f"images can be fed with 1 or 3 channels, not {channels}")
    if img.mode in DEEP_MODES:
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        if img.mode.startswith("I;16") or hi > 255:
            hi_range = 65535.0 if img.mode.startswith("I;16") else max(hi, 1.0)
            a = a / hi_range * 255.0
        elif img.mode == "F" and hi <= 1.0 and lo >= 0.0:
            a = a * 255.0
        img = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def array_to_image(a: np.ndarray) -> Image.Image:
    """A uint8 (H, W) or (H, W, C) array from an in-memory data set -> PIL image."""
    if a.ndim == 2:
        return Image.fromarray(a, mode="L")
    if a.shape[-1] == 1:
        return Image.fromarray(a[..., 0], mode="L")
    return Image.fromarray(a, mode="RGB")
