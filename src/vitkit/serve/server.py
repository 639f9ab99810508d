"""Run an app with uvicorn on a socket bound here, so that a busy port is a one-line error before anything starts.

SIGTERM (and Ctrl-C) make uvicorn stop accepting connections, finish the requests in flight (up to
``drain_seconds``) and run the app's shutdown; then :func:`serve_forever` returns, and ``vitkit serve`` exits 0.
"""

import contextlib
import ipaddress
import logging
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from vitkit.errors import VitkitError


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: any free port; ``sock.getsockname()[1]`` tells which)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise VitkitError(f"--host {host}: cannot resolve ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise VitkitError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def _stop_quietly() -> Iterator[None]:
    """uvicorn raises a caught SIGTERM / SIGINT again once it has drained; the handlers it finds then do nothing,
    so a drained stop ends with exit status 0 instead of death by the signal."""
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda signum, frame: None) for s in stops}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _log_to_stderr() -> None:
    logger = logging.getLogger("vitkit.serve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app when a signal starts the drain."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None] | None) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.on_stop is not None:
            self.on_stop()


def serve_forever(
    app: ASGIApp,
    sock: socket.socket,
    *,
    on_stop: Callable[[], None] | None = None,
    drain_seconds: float = 30.0,
    max_connections: int | None = None,
    access_log: bool = True,
    log_level: str = "info",
) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM / SIGINT, then drain and return; ``on_stop`` is called (from the
    signal handler) when the drain begins."""
    _log_to_stderr()
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=drain_seconds,
        limit_concurrency=max_connections,
        server_header=False,
    )
    server = _Server(config, on_stop)
    with _stop_quietly():
        server.run(sockets=[sock])
