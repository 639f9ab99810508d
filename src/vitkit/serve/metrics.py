"""Prometheus text exposition (format 0.0.4), written out here: a few counters, gauges and histograms.

Small enough not to need ``prometheus_client`` (one less dependency, no process-global registry shared between
apps in one process). Labels come from a fixed set of endpoints and methods, so a client cannot grow the series
without bound by requesting random paths.
"""

import bisect
import math
import threading
from collections.abc import Callable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return repr(float(v)) if isinstance(v, float) and not v.is_integer() else str(int(v))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self.values.items()) or ([((), 0.0)] if not self.label_names else [])
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {_number(v)}" for k, v in items]


class Gauge(_Metric):
    """A value read when the metrics are scraped (``read()``), e.g. the queue depth."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self.read = read

    def render(self) -> list[str]:
        return [*self.header(), f"{self.name} {_number(self.read())}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self.bounds = tuple(sorted(buckets))
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # labels -> (bucket counts, [sum])

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            counts, total = self.series.setdefault(labels, ([0] * (len(self.bounds) + 1), [0.0]))
            counts[bisect.bisect_left(self.bounds, value)] += 1
            total[0] += value

    def render(self) -> list[str]:
        lines = self.header()
        with self._lock:
            items = sorted((k, (list(c), t[0])) for k, (c, t) in self.series.items())
        if not items and not self.label_names:
            items = [((), ([0] * (len(self.bounds) + 1), 0.0))]
        for key, (counts, total) in items:
            cumulative = 0
            for bound, count in zip((*self.bounds, math.inf), counts, strict=True):
                cumulative += count
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.label_names, key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.label_names, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.label_names, key)} {cumulative}")
        return lines


class ServerMetrics:
    """What ``GET /metrics`` shows: requests and errors by endpoint and status, latency, batch sizes, queue depth."""

    def __init__(self, queue_depth: Callable[[], float], ready: Callable[[], float]) -> None:
        self.requests = Counter(
            "vitkit_http_requests_total",
            "HTTP requests by endpoint, method and status.",
            ("endpoint", "method", "status"),
        )
        self.errors = Counter(
            "vitkit_http_request_errors_total", "Requests answered with a 4xx or 5xx status.", ("endpoint", "status")
        )
        self.latency = Histogram(
            "vitkit_http_request_duration_seconds", "Time from request to response.", LATENCY_BUCKETS, ("endpoint",)
        )
        self.batch_size = Histogram("vitkit_batch_size", "Images per forward pass.", BATCH_BUCKETS)
        self.inference = Histogram("vitkit_inference_duration_seconds", "Time of one forward pass.", LATENCY_BUCKETS)
        self.images = Counter("vitkit_images_total", "Images classified.")
        self.queue_depth = Gauge("vitkit_queue_depth", "Images waiting for a forward pass.", queue_depth)
        self.ready = Gauge("vitkit_ready", "1 once the model is loaded and warmed up, else 0.", ready)

    def request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.inc(endpoint, method, str(status))
        if status >= 400:
            self.errors.inc(endpoint, str(status))
        self.latency.observe(seconds, endpoint)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.images.inc(amount=size)

    def render(self) -> str:
        metrics = (
            self.requests, self.errors, self.latency, self.batch_size, self.inference, self.images,
            self.queue_depth, self.ready,
        )  # fmt: skip
        return "\n".join(line for m in metrics for line in m.render()) + "\n"
