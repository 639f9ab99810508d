"""The one exception a request handler raises to refuse a request: a status and a line naming the problem."""

from vitkit.errors import VitkitError


class RequestError(VitkitError):
    """Answered as ``status`` with ``{"error": message}`` (and ``headers``, e.g. Retry-After); never a traceback."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
