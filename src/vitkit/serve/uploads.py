"""Request bodies -> checked, decoded images -> model inputs; every refusal is a RequestError naming file and limit.

Everything happens in memory: the body is read up to ``--max-body-mb`` (413 beyond), multipart parts are collected
into bytes (never spooled to disk), and nothing a client sends is ever used as a path, so no request can read or
write a file on the server. Images are decoded by :func:`vitkit.data.images.decode_image` (a pixel limit checked from
the header, decompression bombs refused) and prepared by :func:`vitkit.data.transforms.eval_image`, the pipeline of
``vitkit predict`` and ``vitkit eval``, so the server answers what ``vitkit predict`` answers for the same file.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass

import torch
from PIL import Image
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from vitkit.data.images import decode_image
from vitkit.data.transforms import DataSpec, eval_image
from vitkit.errors import VitkitError
from vitkit.serve.config import ServeConfig
from vitkit.serve.errors import RequestError

RAW_TYPES = ("image/", "application/octet-stream")
ACCEPTED = "multipart/form-data with image file parts, or one raw image body (image/* or application/octet-stream)"
NAME_CHARS = 80  # a file name is echoed in errors: keep it short


@dataclass(frozen=True)
class Upload:
    """One image as sent: ``label`` names it in answers and errors (its file name, or "the request body")."""

    label: str
    data: bytes


async def read_body(chunks: AsyncIterator[bytes], content_length: str | None, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it is known to be over ``limit`` bytes."""
    too_large = RequestError(413, f"request body over the limit of {limit / 2**20:.3g} MiB (--max-body-mb)")
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise RequestError(400, f"Content-Length {content_length[:40]!r} is not a number") from None
        if declared > limit:
            raise too_large
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def split_uploads(content_type: str | None, body: bytes, max_files: int) -> list[Upload]:
    """The images of a request: each file part of a multipart form, or the raw body as one image."""
    mime, params = parse_options_header(content_type or "")
    mime_s = mime.decode("latin-1").lower()
    if mime_s == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise RequestError(400, "multipart/form-data without a boundary parameter")
        uploads = parse_multipart(body, boundary, max_files)
    elif mime_s.startswith(RAW_TYPES):
        uploads = [Upload("the request body", body)] if body else []
    else:
        shown = f"Content-Type {mime_s!r}" if mime_s else "no Content-Type"
        raise RequestError(415, f"{shown}; send {ACCEPTED}")
    if not uploads:
        raise RequestError(400, f"no image in the request; send {ACCEPTED}")
    return uploads


def parse_multipart(body: bytes, boundary: bytes, max_files: int) -> list[Upload]:
    """File parts of a multipart/form-data body, in order; a text field or a part too many is refused."""
    uploads: list[Upload] = []
    headers: dict[bytes, bytes] = {}
    field, value, data = bytearray(), bytearray(), bytearray()
    current: list[str] = []  # the label of the part being read

    def on_part_begin() -> None:
        headers.clear()
        data.clear()

    def on_header_field(chunk: bytes, start: int, end: int) -> None:
        field.extend(chunk[start:end])

    def on_header_value(chunk: bytes, start: int, end: int) -> None:
        value.extend(chunk[start:end])

    def on_header_end() -> None:
        headers[bytes(field).strip().lower()] = bytes(value).strip()
        field.clear()
        value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")[:NAME_CHARS]
        filename = options.get(b"filename")
        if filename is None:
            raise RequestError(
                400, f"form field {name!r} is not a file; send images as file parts (options go in the query string)"
            )
        if len(uploads) >= max_files:
            raise RequestError(400, f"too many files: at most {max_files} per request (--max-files)")
        label = filename.decode("utf-8", "replace")[:NAME_CHARS] or f"file {len(uploads) + 1}"
        current[:] = [label]

    def on_part_data(chunk: bytes, start: int, end: int) -> None:
        data.extend(chunk[start:end])

    def on_part_end() -> None:
        if current:
            uploads.append(Upload(current[0], bytes(data)))
            current.clear()

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, FormParserError) as e:
        raise RequestError(400, f"malformed multipart/form-data body ({e})") from None
    return uploads


def decode_upload(upload: Upload, config: ServeConfig) -> Image.Image:
    """The decoded image, refused (422) when it is not one, too large, or of an extreme aspect ratio."""
    if not upload.data:
        raise RequestError(422, f"{upload.label}: empty file")
    try:
        img = decode_image(upload.data, upload.label, max_pixels=config.max_pixels)
    except VitkitError as e:
        raise RequestError(422, str(e)) from None
    w, h = img.size
    if max(w, h) > config.max_aspect_ratio * min(w, h):
        raise RequestError(
            422, f"{upload.label}: {w}x{h} has an aspect ratio over {config.max_aspect_ratio:g}:1; crop it first"
        )
    return img


def model_input(img: Image.Image, label: str, spec: DataSpec) -> torch.Tensor:
    """The model's (C, H, W) input for a decoded image (422 for a colour mode that cannot be converted)."""
    try:
        return eval_image(img, spec)
    except (VitkitError, ValueError, OSError) as e:
        raise RequestError(422, f"{label}: cannot convert a {img.mode} image for the model ({e})") from None


def prepare(upload: Upload, config: ServeConfig, spec: DataSpec) -> torch.Tensor:
    """Decode, check and preprocess one upload (runs in a decode thread, never on the event loop)."""
    return model_input(decode_upload(upload, config), upload.label, spec)
