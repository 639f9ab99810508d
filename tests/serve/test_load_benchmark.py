"""benchmarks/serve.py's load generator against a live server: every request is counted (never timings)."""

from benchmarks import serve as bench
from tests.serve.helpers import live_server
from vitkit.serve.app import create_app
from vitkit.serve.backend import make_backend
from vitkit.serve.config import ServeConfig


def test_the_load_generator_counts_answers_and_refusals(model):
    image = bench.make_image((32, 32), "PNG")
    with live_server(create_app(make_backend(model), ServeConfig(max_queue=2, max_files=1))) as url:
        tally, elapsed = bench.load(url, image, "image/png", clients=2, requests=40)
        ok = bench.summary(tally, elapsed)
        assert ok["requests"] >= 40 and ok["ok"] == ok["requests"] and ok["failed"] == 0
        assert 0 < ok["p50_ms"] <= ok["p95_ms"] <= ok["p99_ms"]
        tally, elapsed = bench.load(url, image, "image/png", clients=24, requests=200)  # more clients than room
        busy = bench.summary(tally, elapsed)
        passes, images = bench.batch_stats(bench.http_get(f"{url}/metrics")[1])
    assert busy["failed"] == 0 and busy["timeouts"] == 0 and busy["connection_errors"] == 0
    assert busy["ok"] + busy["rejected_503"] == busy["requests"]
    assert images >= ok["ok"] + busy["ok"] and passes >= 1


def test_the_report_names_the_numbers():
    row = {"model": "m", "throughput_rps": 10.0, "p50_ms": 1, "p95_ms": 2, "p99_ms": 3, "mean_batch": 4.0,
           "server_cpu_ms_per_request": 0.5, "requests": 100, "failed": 0, "rejected_503": 0}  # fmt: skip
    rows = [{**row, "batching": True}, {**row, "batching": False, "mean_batch": 1.0}]
    result = {
        "created": "2026-12-01T10:00:00",
        "machine": {"cpu": "Some CPU", "cpu_count": 2},
        "settings": {
            "threads": 1,
            "clients": 16,
            "seconds": 20.0,
            "max_batch_size": 16,
            "max_wait_ms": 5.0,
            "overload_clients": 64,
            "overload_queue": 8,
        },
        "load_before": [0.1, 0.2, 0.3],
        "load_after": [1.0, 0.5, 0.4],
        "throughput": rows,
    }
    text = bench.table(result)
    assert "| m | on | 10.0 | 1 | 2 | 3 | 4.0 | 0.5 | 100 | 0 | 0 |" in text
    assert "Some CPU, 2 cores" in text and "[0.1, 0.2, 0.3]" in text
