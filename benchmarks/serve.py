"""Load benchmark of ``vitkit serve``: throughput and latency with dynamic batching on and off, overload, memory.

Each configuration runs a real ``vitkit serve`` process on 127.0.0.1 (a free port) and a bounded load generator in
this process: N clients, each on its own keep-alive connection, send one image per request (raw PNG / JPEG body)
back to back for T seconds. Reported: successful requests per second, p50 / p95 / p99 latency as the client sees
it, failures by kind, and the mean batch size the server ran (from its /metrics).

Phases:
  1. throughput: a small model (28 px) and a 224 px model, batching on (``--max-batch-size`` B, ``--max-wait-ms`` W)
     and off (batch 1), N clients, below the queue limit: every request must succeed;
  2. overload: more clients than the queue holds (``--max-queue`` small): the excess must be 503 + Retry-After,
     never a timeout, a reset connection or a crash;
  3. memory: the server's resident memory (VmRSS) sampled every 1,000 requests over ``--rss-requests`` requests.

Models have random weights (no downloads), written with ``save_pretrained`` to a temporary folder. The clients and
the server share the machine's cores, as they would on a one-box deployment.

    python benchmarks/serve.py --threads 1 --clients 16 --seconds 20 --out benchmarks/results/serve
"""

import argparse
import asyncio
import datetime
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

MODELS = {  # name: (registered model, image sent, format)
    "small": ("vit_nano_patch4_28", (28, 28), "PNG"),
    "224px": ("vit_small_patch16_224", (256, 256), "JPEG"),
}


# --- fixtures: checkpoints and images ----------------------------------------------------------------------
def make_checkpoint(model_name: str, folder: Path) -> Path:
    import torch

    from vitkit.factory import create_model
    from vitkit.hub import save_pretrained

    torch.manual_seed(0)
    return save_pretrained(create_model(model_name).eval(), folder / model_name)


def make_image(size: tuple[int, int], fmt: str) -> bytes:
    """A smooth picture with some noise (compresses like a photo, unlike pure noise)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    rgb = np.stack([np.sin(6 * x + 1), np.cos(5 * y), np.sin(4 * (x + y))], axis=-1) * 100 + 128
    rgb += np.random.default_rng(0).normal(0, 12, rgb.shape)
    buffer = io.BytesIO()
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB").save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


# --- the server under test ---------------------------------------------------------------------------------
def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def rss_mb(pid: int) -> float:
    m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_stats(metrics_text: str) -> tuple[float, float]:
    """(forward passes, images) the server ran so far, from its /metrics."""
    count = re.search(r"^vitkit_batch_size_count (\S+)$", metrics_text, re.M)
    total = re.search(r"^vitkit_batch_size_sum (\S+)$", metrics_text, re.M)
    return (float(count.group(1)) if count else 0.0), (float(total.group(1)) if total else 0.0)


@contextmanager
def server(checkpoint: Path, threads: int, flags: list[str]):
    """A ``vitkit serve`` process; yields (url, pid). Stopped with SIGTERM; its exit status is checked."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    cmd = [sys.executable, "-m", "vitkit", "serve", str(checkpoint), "--port", "0", "--threads", str(threads),
           "--no-access-log", *flags]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"at (http://[\d.]+:\d+)/", line)
        if not match:
            raise RuntimeError(f"vitkit serve did not start: {line}{proc.stderr.read()}")
        url = match.group(1)
        deadline = time.monotonic() + 120
        while http_get(f"{url}/readyz")[0] != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("vitkit serve did not become ready")
            time.sleep(0.05)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0:
                print(f"warning: vitkit serve exited with status {code}", file=sys.stderr)


# --- the load generator ------------------------------------------------------------------------------------
class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []  # seconds, successful requests
        self.status: dict[int, int] = {}
        self.timeouts = 0
        self.connection_errors = 0

    @property
    def sent(self) -> int:
        return sum(self.status.values()) + self.timeouts + self.connection_errors


async def _request(reader, writer, head: bytes, body: bytes) -> tuple[int, bool]:
    writer.write(head + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length, close = 0, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"connection" and value.strip().lower() == b"close":
            close = True
    await reader.readexactly(length)
    return status, close


async def _client(host: str, port: int, head: bytes, body: bytes, tally: Tally, done, timeout: float) -> None:
    conn = None
    while not done():
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            start = time.perf_counter()
            status, close = await asyncio.wait_for(_request(*conn, head, body), timeout)
            tally.status[status] = tally.status.get(status, 0) + 1
            if status == 200:
                tally.latencies.append(time.perf_counter() - start)
            if close:
                conn[1].close()
                conn = None
        except asyncio.TimeoutError:
            tally.timeouts += 1
            conn = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            tally.connection_errors += 1
            conn = None
            await asyncio.sleep(0.01)
    if conn is not None:
        conn[1].close()


def load(url: str, body: bytes, ctype: str, clients: int, seconds: float = 0, requests: int = 0,
         timeout: float = 30.0) -> tuple[Tally, float]:  # fmt: skip
    """``clients`` connections sending ``body`` for ``seconds`` (or until ``requests`` were sent); (tally, elapsed)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head = (
        f"POST /v1/predict?topk=5 HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    tally = Tally()
    start = time.perf_counter()

    def done() -> bool:
        if requests:
            return tally.sent >= requests
        return time.perf_counter() - start >= seconds

    async def main() -> None:
        await asyncio.gather(*(_client(host, int(port), head, body, tally, done, timeout) for _ in range(clients)))

    asyncio.run(main())
    return tally, time.perf_counter() - start


def summary(tally: Tally, elapsed: float) -> dict:
    lat = sorted(tally.latencies)

    def pct(q: float) -> float | None:
        return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None

    ok = tally.status.get(200, 0)
    return {
        "requests": tally.sent,
        "ok": ok,
        "status": {str(k): v for k, v in sorted(tally.status.items())},
        "rejected_503": tally.status.get(503, 0),
        "failed": tally.sent - ok - tally.status.get(503, 0),
        "timeouts": tally.timeouts,
        "connection_errors": tally.connection_errors,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(ok / elapsed, 1) if elapsed else 0.0,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(1000 * statistics.fmean(lat), 2) if lat else None,
    }


# --- phases ------------------------------------------------------------------------------------------------
def throughput(ckpt: Path, image: bytes, ctype: str, args, batching: bool) -> dict:
    flags = ["--max-batch-size", str(args.max_batch_size if batching else 1), "--max-wait-ms",
             str(args.max_wait_ms if batching else 0), "--max-queue", str(args.max_queue)]  # fmt: skip
    with server(ckpt, args.threads, flags) as (url, pid):
        load(url, image, ctype, args.clients, seconds=min(3.0, args.seconds))  # warm the connections and caches
        before, cpu_before = batch_stats(http_get(f"{url}/metrics")[1]), cpu_seconds(pid)
        tally, elapsed = load(url, image, ctype, args.clients, seconds=args.seconds)
        after, cpu_after = batch_stats(http_get(f"{url}/metrics")[1]), cpu_seconds(pid)
    passes, images = after[0] - before[0], after[1] - before[1]
    return {
        **summary(tally, elapsed),
        "mean_batch": round(images / passes, 2) if passes else None,
        "server_cpu_ms_per_request": round(1000 * (cpu_after - cpu_before) / tally.sent, 2) if tally.sent else None,
    }


def overload(ckpt: Path, image: bytes, ctype: str, args) -> dict:
    flags = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
             "--max-queue", str(args.overload_queue), "--max-files", "1"]  # fmt: skip
    with server(ckpt, args.threads, flags) as (url, _pid):
        tally, elapsed = load(url, image, ctype, args.overload_clients, seconds=args.seconds)
        alive = http_get(f"{url}/healthz")[0] == 200
    return {**summary(tally, elapsed), "server_alive_after": alive}


def memory(ckpt: Path, image: bytes, ctype: str, args) -> dict:
    flags = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
    samples = []
    with server(ckpt, args.threads, flags) as (url, pid):
        samples.append((0, round(rss_mb(pid), 1)))
        sent, failed = 0, 0
        step = 1000
        while sent < args.rss_requests:
            tally, _ = load(url, image, ctype, args.clients, requests=min(step, args.rss_requests - sent))
            sent += tally.sent
            failed += tally.sent - tally.status.get(200, 0)
            samples.append((sent, round(rss_mb(pid), 1)))
    after_first = [mb for n, mb in samples if n >= step]
    return {
        "requests": sent,
        "failed": failed,
        "rss_mb": samples,
        "rss_start_mb": samples[0][1],
        "rss_after_1000_mb": after_first[0] if after_first else None,
        "rss_end_mb": samples[-1][1],
        "growth_after_1000_mb": round(samples[-1][1] - after_first[0], 1) if after_first else None,
    }


# --- report ------------------------------------------------------------------------------------------------
def table(result: dict) -> str:
    s, m = result["settings"], result["machine"]
    lines = [
        f"### vitkit serve under load ({m['cpu']}, {m['cpu_count']} cores; server --threads {s['threads']}; "
        f"{result['created'][:10]})",
        "",
        f"{s['clients']} clients for {s['seconds']:g} s each, one image per request over keep-alive connections; "
        f"batching on = --max-batch-size {s['max_batch_size']} --max-wait-ms {s['max_wait_ms']:g}, "
        f"off = --max-batch-size 1. Load average before / after: {result['load_before']} / {result['load_after']}.",
        "",
        "| model | batching | req/s | p50 ms | p95 ms | p99 ms | mean batch | server CPU ms/req | requests | failed "
        "| 503 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["throughput"]:
        lines.append(
            f"| {r['model']} | {'on' if r['batching'] else 'off'} | {r['throughput_rps']} | {r['p50_ms']} | "
            f"{r['p95_ms']} | {r['p99_ms']} | {r['mean_batch']} | {r.get('server_cpu_ms_per_request')} | "
            f"{r['requests']} | {r['failed']} | {r['rejected_503']} |"
        )
    o = result.get("overload")
    if o:
        lines += [
            "",
            f"Overload ({s['overload_clients']} clients, --max-queue {s['overload_queue']}, {o['model']}): "
            f"{o['requests']} requests, {o['ok']} answered 200 ({o['throughput_rps']} req/s), {o['rejected_503']} "
            f"answered 503 + Retry-After, {o['failed']} other failures, {o['timeouts']} timeouts, "
            f"{o['connection_errors']} connection errors; server alive after: {o['server_alive_after']}.",
        ]
    mem = result.get("memory")
    if mem:
        lines += [
            "",
            f"Memory ({mem['model']}, {mem['requests']} requests, {mem['failed']} failed): server RSS "
            f"{mem['rss_start_mb']} MiB after warm-up, {mem['rss_after_1000_mb']} MiB after 1,000 requests, "
            f"{mem['rss_end_mb']} MiB at the end ({mem['growth_after_1000_mb']:+} MiB over the last "
            f"{mem['requests'] - 1000:,}).",
            "",
            "RSS every 1,000 requests (MiB): " + ", ".join(f"{mb}" for _, mb in mem["rss_mb"]),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="small,224px", help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--overload-clients", type=int, default=64)
    p.add_argument("--overload-queue", type=int, default=8)
    p.add_argument("--rss-requests", type=int, default=10_000, help="0 skips the memory phase")
    p.add_argument("--no-overload", action="store_true")
    p.add_argument("--out", default="benchmarks/results/serve")
    args = p.parse_args(argv)

    import torch

    from vitkit.bench.machine import device_tag, load_avg, machine_info
    from vitkit.utils.io import atomic_write_json, atomic_write_text

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    result: dict = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**machine_info(torch.device("cpu")), "threads": args.threads},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "load_before": load_avg(),
        "throughput": [],
    }
    with tempfile.TemporaryDirectory(prefix="vitkit-serve-bench-") as tmp:
        for key in models:
            name, size, fmt = MODELS[key]
            ckpt = make_checkpoint(name, Path(tmp))
            image, ctype = make_image(size, fmt), f"image/{fmt.lower()}"
            for batching in (True, False):
                row = {"model": name, "image": f"{size[0]}x{size[1]} {fmt}, {len(image)} bytes", "batching": batching}
                row.update(throughput(ckpt, image, ctype, args, batching))
                result["throughput"].append(row)
                print(json.dumps(row), flush=True)
        name, size, fmt = MODELS[models[0]]
        ckpt = make_checkpoint(name, Path(tmp))
        image, ctype = make_image(size, fmt), f"image/{fmt.lower()}"
        if not args.no_overload:
            result["overload"] = {"model": name, **overload(ckpt, image, ctype, args)}
            print(json.dumps(result["overload"]), flush=True)
        if args.rss_requests:
            result["memory"] = {"model": name, **memory(ckpt, image, ctype, args)}
            print(json.dumps(result["memory"]), flush=True)
    result["load_after"] = load_avg()
    out = Path(args.out)
    stem = f"serve_{device_tag(result['machine'])}_t{args.threads}_{result['created'][:10]}"
    atomic_write_json(out / f"{stem}.json", result)
    atomic_write_text(out / f"{stem}.md", table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
