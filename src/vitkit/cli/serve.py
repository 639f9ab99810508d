"""``vitkit serve SOURCE``: the model behind an HTTP API with dynamic batching, metrics and a web page."""

import argparse
import sys

from vitkit.cli._args import add_device, add_reference, add_threads, apply_threads, inference_model, resolve_device
from vitkit.serve.config import ServeConfig

DEFAULTS = ServeConfig()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a training output_dir, a checkpoint directory, hf-hub:org/name or a model name")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port; 0 = any free port (default: 8000)")
    p.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="torch: the inference-optimised model; onnx: exported and run by onnxruntime (default: torch)",
    )
    add_device(p)
    add_threads(p)
    add_reference(p)
    g = p.add_argument_group("batching")
    g.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULTS.max_batch_size,
        help=f"images per forward pass; 1 turns dynamic batching off (default: {DEFAULTS.max_batch_size})",
    )
    g.add_argument(
        "--max-wait-ms",
        type=float,
        default=DEFAULTS.max_wait_ms,
        help=f"how long the oldest waiting image may wait for others (default: {DEFAULTS.max_wait_ms:g})",
    )
    g.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULTS.max_queue,
        help=f"images waiting at most; more are answered 503 + Retry-After (default: {DEFAULTS.max_queue})",
    )
    g = p.add_argument_group("request limits")
    g.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULTS.max_body_mb,
        help=f"largest request body, MiB; larger is 413 (default: {DEFAULTS.max_body_mb:g})",
    )
    g.add_argument(
        "--max-files", type=int, default=DEFAULTS.max_files, help=f"images per request (default: {DEFAULTS.max_files})"
    )
    g.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULTS.max_pixels,
        help=f"largest image, width x height, checked before decoding (default: {DEFAULTS.max_pixels:,})",
    )
    g.add_argument(
        "--max-aspect-ratio",
        type=float,
        default=DEFAULTS.max_aspect_ratio,
        help=f"long side / short side at most (default: {DEFAULTS.max_aspect_ratio:g})",
    )
    g.add_argument(
        "--topk",
        "-k",
        type=int,
        default=DEFAULTS.topk,
        help=f"classes per image unless a request asks (?topk=N) (default: {DEFAULTS.topk})",
    )
    g = p.add_argument_group("server")
    g.add_argument(
        "--decode-threads",
        type=int,
        default=DEFAULTS.decode_threads,
        help=f"threads that decode uploads (default: {DEFAULTS.decode_threads})",
    )
    g.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="open connections at most; beyond, uvicorn answers 503 (default: 1000)",
    )
    g.add_argument(
        "--drain-seconds",
        type=float,
        default=30.0,
        help="on SIGTERM / Ctrl-C, how long in-flight requests may take to finish (default: 30)",
    )
    g.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log one line per request (default: on)",
    )


def run(args: argparse.Namespace) -> int:
    from vitkit.serve import require_extra

    require_extra()
    from vitkit.serve.app import create_app
    from vitkit.serve.backend import make_backend
    from vitkit.serve.server import is_loopback, listen, serve_forever, url_of

    config = ServeConfig(
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_body_mb=args.max_body_mb,
        max_files=args.max_files,
        max_pixels=args.max_pixels,
        max_aspect_ratio=args.max_aspect_ratio,
        topk=args.topk,
        decode_threads=args.decode_threads,
    )
    device = resolve_device(args.device)
    threads = apply_threads(args.threads)
    sock = listen(args.host, args.port)  # a busy port fails here, before the model is loaded
    try:
        model = inference_model(args.source, reference=args.reference or args.backend == "onnx")
        backend = make_backend(model, args.backend, device=device, threads=threads)
        try:
            app = create_app(backend, config)
            info = app.state.service.description
            if not is_loopback(args.host):
                print(
                    f"vitkit: warning: listening on {args.host}: other machines can reach this server; it has no "
                    "authentication or TLS (put a reverse proxy in front)",
                    file=sys.stderr,
                )
            print(
                f"vitkit serve: {info['name']} ({info['family']}, {info['num_classes']} classes, {backend.name} on "
                f"{backend.device}) at {url_of(sock)}/ - batches of up to {config.max_batch_size}, waiting up to "
                f"{config.max_wait_ms:g} ms, queue {config.max_queue}; Ctrl-C or SIGTERM drains and stops",
                flush=True,
            )
            serve_forever(
                app,
                sock,
                on_stop=app.state.service.drain,
                drain_seconds=args.drain_seconds,
                max_connections=args.max_connections,
                access_log=args.access_log,
            )
        finally:
            backend.close()
    finally:
        sock.close()
    print("vitkit serve: stopped", flush=True)
    return 0
