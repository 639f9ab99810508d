"""SIGTERM on a real `vitkit serve` process: requests in flight are answered, then it exits 0."""

import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from tests.serve.helpers import child_env, image_bytes, tiny_model, wait_until
from vitkit.hub import save_pretrained

IN_FLIGHT = 3


def get(url: str) -> str:
    """The body, whatever the status (/readyz answers 503 while warming up)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()
    except urllib.error.HTTPError as e:
        return e.read().decode()


def post_image(url: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=image_bytes(), headers={"Content-Type": "image/png"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, json.loads(r.read())


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is a POSIX signal")
def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path):
    checkpoint = save_pretrained(tiny_model(optimized=False), tmp_path / "tiny")
    # a batch closes when IN_FLIGHT images are there or after a minute: the requests sit in the queue until SIGTERM
    cmd = [sys.executable, "-m", "vitkit", "serve", str(checkpoint), "--port", "0", "--threads", "1",
           "--max-batch-size", str(IN_FLIGHT + 1), "--max-wait-ms", "60000", "--no-access-log"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        line = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        url = match.group(1)
        wait_until(lambda: json.loads(get(f"{url}/readyz"))["status"] == "ready", what="ready")
        answers: list = []
        clients = [
            threading.Thread(target=lambda: answers.append(post_image(f"{url}/v1/predict"))) for _ in range(IN_FLIGHT)
        ]
        for c in clients:
            c.start()
        wait_until(lambda: f"vitkit_queue_depth {IN_FLIGHT}" in get(f"{url}/metrics"), what="requests in flight")
        proc.send_signal(signal.SIGTERM)
        for c in clients:
            c.join(timeout=60)
        assert [status for status, _ in answers] == [200] * IN_FLIGHT
        assert all(len(body["predictions"][0]["topk"]) == 5 for _, body in answers)
        assert proc.wait(timeout=60) == 0
        out, err = proc.communicate(timeout=10)
        assert "vitkit serve: stopped" in out
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
