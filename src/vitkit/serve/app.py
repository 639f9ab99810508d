"""The Starlette application: routes, JSON errors, metrics, warm-up and drain around one :class:`Backend`.

Nothing here blocks the event loop: uploads are decoded in a small pool of decode threads, the model runs in its
own thread (:class:`~vitkit.serve.batcher.Batcher`), and every answer is built from data already in memory.
"""

import asyncio
import base64
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vitkit.errors import VitkitError
from vitkit.predict import NON_FINITE, top_classes
from vitkit.serve.backend import Backend
from vitkit.serve.batcher import Batcher, QueueFull, ShuttingDown
from vitkit.serve.config import ServeConfig
from vitkit.serve.errors import RequestError
from vitkit.serve.explain import DEFAULT_METHOD, UNAVAILABLE, ExplainUnavailable, explain_available, explain_png
from vitkit.serve.metrics import CONTENT_TYPE, ServerMetrics
from vitkit.serve.openapi import openapi_document
from vitkit.serve.uploads import Upload, decode_upload, prepare, read_body, split_uploads
from vitkit.version import __version__

log = logging.getLogger("vitkit.serve")

ENDPOINTS = ("/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/model", "/v1/predict", "/v1/explain")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
RETRY_AFTER_S = 1
MAX_EXPLAIN_WAITING = 2  # explanations queue in the model thread; beyond this many, 503


def page_html() -> str:
    return resources.files("vitkit.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def content_security_policy(html: str) -> str:
    """Only this server, and only the page's own inline style and script (by hash): nothing from elsewhere runs."""

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class RequestMetrics:
    """ASGI middleware: count every request by endpoint, method and status, time it, add hardening headers."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff")]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path, method = scope.get("path", ""), scope.get("method", "")
            self.metrics.request(
                path if path in ENDPOINTS else "other",
                method if method in METHODS else "other",
                status,
                time.perf_counter() - start,
            )


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(400, f"query parameter {name}={raw[:40]!r} is not a whole number") from None
    if value < low:
        raise RequestError(400, f"query parameter {name} must be >= {low}, got {value}")
    return min(value, high)


class Service:
    """The state behind the routes: backend, batcher, decode threads, metrics, readiness."""

    def __init__(self, backend: Backend, config: ServeConfig) -> None:
        self.backend, self.config = backend, config
        self.metrics = ServerMetrics(queue_depth=lambda: self.batcher.depth, ready=lambda: float(self.ready))
        self.batcher = Batcher(
            backend,
            max_batch_size=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            on_batch=self.metrics.batch,
        )
        self.decoders = ThreadPoolExecutor(max_workers=config.decode_threads, thread_name_prefix="vitkit-decode")
        self.ready = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.warm_up_error: str | None = None
        self.explaining = 0
        self.description = {**backend.describe(), "vitkit_version": __version__}

    # --- lifecycle --------------------------------------------------------------------------------
    async def warm_up(self) -> None:
        """One forward pass at batch 1 and one at the largest batch, before /readyz says ready."""
        c, h, w = self.description["input_size"]
        try:
            for size in sorted({1, self.config.max_batch_size}):
                await self.batcher.in_model_thread(self.backend, torch.zeros(size, c, h, w))
        except Exception as e:
            self.warm_up_error = f"{type(e).__name__}: {e}"
            log.error("warm-up failed, not ready: %s", self.warm_up_error)
            return
        self.ready = True
        log.info("model %s warmed up: ready", self.description["name"])

    def drain(self) -> None:
        """The server got SIGTERM: run what is queued now instead of waiting for fuller batches (signal-safe)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.batcher.drain)

    @asynccontextmanager
    async def lifespan(self, app: Starlette):
        self.loop = asyncio.get_running_loop()
        self.batcher.start()
        warm = asyncio.get_running_loop().create_task(self.warm_up())
        try:
            yield
        finally:
            warm.cancel()
            self.ready = False
            await self.batcher.stop()
            self.decoders.shutdown(wait=False, cancel_futures=True)

    # --- helpers ----------------------------------------------------------------------------------
    async def uploads(self, request: Request) -> list[Upload]:
        body = await read_body(request.stream(), request.headers.get("content-length"), self.config.max_body_bytes)
        # a 16 MiB form takes a while to split: in a decode thread, not on the event loop
        return await self.in_decoder(split_uploads, request.headers.get("content-type"), body, self.config.max_files)

    async def in_decoder(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.decoders, fn, *args)

    # --- routes -----------------------------------------------------------------------------------
    async def predict(self, request: Request) -> Response:
        start = time.perf_counter()
        topk = _query_int(request, "topk", self.config.topk, 1, self.description["num_classes"])
        uploads = await self.uploads(request)
        prepared = await asyncio.gather(
            *(self.in_decoder(prepare, u, self.config, self.backend.spec) for u in uploads), return_exceptions=True
        )
        for p in prepared:  # the first bad file, in the order sent
            if isinstance(p, BaseException):
                raise p
        rows = await self.batcher.submit(list(prepared))
        tops = top_classes(self.backend.model, torch.stack(rows), topk)
        if any(t is None for t in tops):
            raise RequestError(500, NON_FINITE)
        return JSONResponse(
            {
                "model": self.description["name"],
                "predictions": [
                    {"file": u.label, "topk": [{"class": i, "name": n, "probability": p} for i, n, p in top]}
                    for u, top in zip(uploads, tops, strict=True)
                ],
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
            }
        )

    async def explain(self, request: Request) -> Response:
        if not explain_available():
            raise ExplainUnavailable(UNAVAILABLE)
        method = request.query_params.get("method", DEFAULT_METHOD)
        target: int | str | None = request.query_params.get("target")
        if target is not None and target.isdigit():
            target = int(target)
        uploads = await self.uploads(request)
        if len(uploads) != 1:
            raise RequestError(400, f"send one image to explain, not {len(uploads)}")
        image = await self.in_decoder(decode_upload, uploads[0], self.config)
        if self.explaining >= MAX_EXPLAIN_WAITING:
            raise QueueFull
        self.explaining += 1
        try:
            png = await self.batcher.in_model_thread(explain_png, self.backend.model, image, method, target)
        except VitkitError as e:
            raise RequestError(400, f"{uploads[0].label}: {e}") from None
        finally:
            self.explaining -= 1
        return Response(png, media_type="image/png")

    async def model(self, request: Request) -> Response:
        return JSONResponse(
            {**self.description, "limits": self.config.limits(), "explain_available": explain_available()}
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ready", "model": self.description["name"]})
        if self.warm_up_error:
            return JSONResponse({"status": "failed", "error": f"warm-up failed: {self.warm_up_error}"}, 503)
        return JSONResponse({"status": "warming up"}, 503, headers={"Retry-After": str(RETRY_AFTER_S)})

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)


def json_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Every refusal as ``{"error": ...}`` with its status; an unexpected failure as a 500 line, logged in full."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except RequestError as e:
            return error_response(e.status, e.message, e.headers)
        except QueueFull:
            return error_response(
                503, "server busy: the queue is full, retry shortly", {"Retry-After": str(RETRY_AFTER_S)}
            )
        except ShuttingDown:
            return error_response(503, "server is shutting down", {"Retry-After": str(RETRY_AFTER_S)})
        except ExplainUnavailable as e:
            return error_response(501, str(e))
        except ClientDisconnect:  # the client left while sending: nobody to answer, nothing to log
            return error_response(400, "the client disconnected before the request body was complete")
        except Exception as e:
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response(500, f"internal error ({type(e).__name__}); see the server log")

    return wrapped


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.url.path[:100]} (see /openapi.json)"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, dict(exc.headers or {}))


def create_app(backend: Backend, config: ServeConfig | None = None) -> Starlette:
    """The ASGI application serving ``backend``; run it with :func:`vitkit.serve.server.serve_forever` or any ASGI
    server (one process: the model and its batcher live in it)."""
    service = Service(backend, config or ServeConfig())
    html = page_html()
    csp = content_security_policy(html)
    openapi = openapi_document(service.description)

    async def page(request: Request) -> Response:
        return Response(html, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": csp})

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi)

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/healthz", service.healthz, methods=["GET"]),
        Route("/readyz", service.readyz, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/v1/model", service.model, methods=["GET"]),
        Route("/v1/predict", json_errors(service.predict), methods=["POST"]),
        Route("/v1/explain", json_errors(service.explain), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=service.lifespan, exception_handlers={HTTPException: _http_error})
    app.state.service = service
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    return app
