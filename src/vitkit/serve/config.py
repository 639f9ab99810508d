"""How a server batches and what it accepts: every setting of ``vitkit serve`` that shapes requests, checked once."""

from dataclasses import dataclass, fields

from vitkit.errors import VitkitError


@dataclass(frozen=True)
class ServeConfig:
    """Batching and request limits; the defaults suit one CPU model serving a team.

    ``max_queue`` counts images waiting for a forward pass: beyond it a request is answered 503 with Retry-After
    instead of waiting longer and longer. ``max_batch_size=1`` turns dynamic batching off.
    """

    max_batch_size: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 256
    max_body_mb: float = 16.0
    max_files: int = 16
    max_pixels: int = 40_000_000
    max_aspect_ratio: float = 20.0
    topk: int = 5
    decode_threads: int = 2

    def __post_init__(self) -> None:
        minimum = {"max_batch_size": 1, "max_queue": 1, "max_files": 1, "max_pixels": 1, "topk": 1}
        minimum |= {"decode_threads": 1, "max_aspect_ratio": 1, "max_wait_ms": 0}
        for f in fields(self):
            value = getattr(self, f.name)
            low = minimum.get(f.name, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or value != value:
                flag = "--" + f.name.replace("_", "-")
                raise VitkitError(f"{flag} must be a number >= {low}, got {value!r}")
        if self.max_body_mb <= 0:
            raise VitkitError(f"--max-body-mb must be > 0, got {self.max_body_mb!r}")
        if self.max_files > self.max_queue:
            raise VitkitError(
                f"--max-files ({self.max_files}) must be <= --max-queue ({self.max_queue}): a request's images "
                "enter the queue together"
            )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    def limits(self) -> dict[str, float]:
        """What a client may send, for ``GET /v1/model`` and the page."""
        return {
            "max_body_mb": self.max_body_mb,
            "max_files": self.max_files,
            "max_pixels": self.max_pixels,
            "max_aspect_ratio": self.max_aspect_ratio,
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_ms,
            "max_queue": self.max_queue,
        }
