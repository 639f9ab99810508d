"""The HTTP API in-process: predictions equal `vitkit predict`'s, the model description, health, metrics, OpenAPI."""

import base64
import hashlib
import io
import os
import re
import sys
import threading

import pytest
import torch

from tests.serve.helpers import CLASSES, image_bytes, wait_until
from vitkit.predict import predict
from vitkit.serve.backend import TorchBackend


def files(*blobs: bytes, name: str = "file") -> list:
    return [(name, (f"img{i}.png", b, "image/png")) for i, b in enumerate(blobs)]


def same_answer(a: list[dict], b: list[dict], tol: float = 1e-5) -> None:
    """The same classes in the same order with the same probabilities (to float rounding: batches differ)."""
    assert [c["class"] for c in a] == [c["class"] for c in b]
    assert [c["name"] for c in a] == [c["name"] for c in b]
    assert [c["probability"] for c in a] == pytest.approx([c["probability"] for c in b], abs=tol)


def test_predict_answers_what_vitkit_predict_answers(client, model, tmp_path):
    data = image_bytes((50, 37), seed=3)
    (tmp_path / "x.png").write_bytes(data)
    expected = predict(model, [str(tmp_path / "x.png")], topk=3)[0]
    r = client.post("/v1/predict?topk=3", files=files(data))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model.model_name
    assert body["latency_ms"] > 0
    (pred,) = body["predictions"]
    assert pred["file"] == "img0.png"
    assert [c["class"] for c in pred["topk"]] == [i for i, _, _ in expected.topk]
    assert [c["name"] for c in pred["topk"]] == [n for _, n, _ in expected.topk]
    assert [c["probability"] for c in pred["topk"]] == pytest.approx([p for _, _, p in expected.topk], abs=1e-6)


def test_several_files_and_a_raw_body(client):
    blobs = [image_bytes(seed=s) for s in range(3)]
    r = client.post("/v1/predict", files=files(*blobs))
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["file"] for p in preds] == ["img0.png", "img1.png", "img2.png"]
    assert all(len(p["topk"]) == 5 and {c["name"] for c in p["topk"]} == set(CLASSES) for p in preds)
    raw = client.post("/v1/predict", content=blobs[1], headers={"Content-Type": "image/png"})
    assert raw.status_code == 200
    assert raw.json()["predictions"][0]["file"] == "the request body"
    same_answer(raw.json()["predictions"][0]["topk"], preds[1]["topk"])
    octets = client.post("/v1/predict", content=blobs[1], headers={"Content-Type": "application/octet-stream"})
    same_answer(octets.json()["predictions"][0]["topk"], preds[1]["topk"])


@pytest.mark.parametrize(("query", "status", "count"), [("topk=1", 200, 1), ("topk=99", 200, 5), ("topk=0", 400, 0),
                                                        ("topk=two", 400, 0)])  # fmt: skip
def test_topk(client, query, status, count):
    r = client.post(f"/v1/predict?{query}", files=files(image_bytes()))
    assert r.status_code == status, r.text
    if status == 200:
        assert len(r.json()["predictions"][0]["topk"]) == count
    else:
        assert "topk" in r.json()["error"]


def test_model_description(client, model):
    info = client.get("/v1/model").json()
    assert info["name"] == model.model_name and info["family"] == "vit"
    assert info["classes"] == CLASSES and info["num_classes"] == 5
    assert info["input_size"] == [3, 32, 32]
    assert info["mean"] == list(model.data_config["mean"]) and info["std"] == list(model.data_config["std"])
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["backend"] == "torch" and info["device"] == "cpu"
    assert info["limits"]["max_files"] == 16


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    client.post("/v1/predict", files=files(image_bytes(), image_bytes(seed=1)))
    client.post("/v1/predict", content=b"nope", headers={"Content-Type": "image/png"})
    text = client.get("/metrics").text
    assert client.get("/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'vitkit_http_requests_total{endpoint="/v1/predict",method="POST",status="200"} 1' in text
    assert 'vitkit_http_request_errors_total{endpoint="/v1/predict",status="422"} 1' in text
    assert 'vitkit_http_request_duration_seconds_count{endpoint="/v1/predict"} 2' in text
    assert "vitkit_queue_depth 0" in text
    assert "vitkit_ready 1" in text
    images = float(re.search(r"^vitkit_images_total (\S+)$", text, re.M).group(1))
    assert images >= 2  # the warm-up passes are not counted as requests, the two images are
    for line in text.splitlines():  # the text format: comments, or name{labels} value
        assert line.startswith("# ") or re.fullmatch(r"[a-z_]+(\{[^}]*\})? [-+0-9.eInf]+", line), line


def test_ready_only_after_the_warm_up(make_client, model):
    gate = threading.Event()

    class SlowToWarm(TorchBackend):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            gate.wait(timeout=30)
            return super().__call__(x)

    from starlette.testclient import TestClient

    from vitkit.serve.app import create_app

    with TestClient(create_app(SlowToWarm(model))) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["status"] == "warming up" and r.headers["Retry-After"]
        gate.set()
        wait_until(lambda: client.get("/readyz").status_code == 200, what="ready after the warm-up")


def test_openapi_documents_every_route(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    routes = {r.path for r in client.app.routes}
    assert routes == set(doc["paths"])
    assert set(doc["paths"]["/v1/predict"]["post"]["responses"]) >= {"200", "400", "413", "415", "422", "503"}


def test_the_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), "the page must not load anything from elsewhere"
    assert "http://" not in html and "https://" not in html
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp  # the page's own script is the only one allowed to run


def test_unknown_routes_and_methods_are_json(client):
    r = client.get("/etc/passwd")
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]
    r = client.get("/v1/predict")
    assert r.status_code == 405 and "GET" in r.json()["error"]
    text = client.get("/metrics").text
    assert 'endpoint="other",method="GET",status="404"' in text  # random paths share one label


def test_a_model_failure_is_a_500_line_and_the_next_request_works(make_client, model):
    failing = threading.Event()

    class Flaky(TorchBackend):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            if failing.is_set():
                raise RuntimeError("out of memory")
            return super().__call__(x)

    client = make_client(Flaky(model))
    failing.set()
    r = client.post("/v1/predict", files=files(image_bytes()))
    assert r.status_code == 500
    assert r.json() == {"error": "internal error (RuntimeError); see the server log"}
    failing.clear()
    assert client.post("/v1/predict", files=files(image_bytes())).status_code == 200


def test_nan_logits_are_reported(make_client, model):
    class Broken(TorchBackend):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 5), float("nan"))

    r = make_client(Broken(model)).post("/v1/predict", files=files(image_bytes()))
    assert r.status_code == 500 and "NaN" in r.json()["error"]


def test_a_full_queue_answers_503_with_retry_after(make_client, model):
    entered, gate = threading.Event(), threading.Event()

    class Blocking(TorchBackend):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            if x.abs().sum() > 0:  # the warm-up feeds zeros and passes
                entered.set()
                gate.wait(timeout=30)
            return super().__call__(x)

    client = make_client(Blocking(model), max_batch_size=1, max_wait_ms=0, max_queue=2, max_files=2)
    batcher = client.app.state.service.batcher
    answers: list = []

    def send() -> None:
        answers.append(client.post("/v1/predict", files=files(image_bytes())).status_code)

    threads = [threading.Thread(target=send) for _ in range(3)]  # one in the model, two waiting
    threads[0].start()
    wait_until(entered.is_set, what="the first request in the model")
    for t in threads[1:]:
        t.start()
    wait_until(lambda: batcher.depth == 2, what="two images queued")
    r = client.post("/v1/predict", files=files(image_bytes()))
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "queue is full" in r.json()["error"]
    gate.set()
    for t in threads:
        t.join(timeout=30)
    assert answers == [200, 200, 200]
    assert client.post("/v1/predict", files=files(image_bytes())).status_code == 200


def test_explain_is_a_clear_501_without_vitkit_explanations(client, monkeypatch):
    monkeypatch.setitem(sys.modules, "vitkit.explanations", None)
    r = client.post("/v1/explain", files=files(image_bytes()))
    assert r.status_code == 501
    assert "vitkit.explanations" in r.json()["error"]
    assert client.get("/v1/model").json()["explain_available"] is False
    assert client.post("/v1/predict", files=files(image_bytes())).status_code == 200


def test_explain_overlay_where_vitkit_explanations_exists(client):
    pytest.importorskip("vitkit.explanations")
    from PIL import Image

    r = client.post("/v1/explain", files=files(image_bytes((40, 30))))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (40, 30)


def test_the_server_defaults_to_the_library_s_explanation_method():
    pytest.importorskip("vitkit.explanations")
    from vitkit.explanations import DEFAULT_METHOD
    from vitkit.serve import explain
    from vitkit.serve.openapi import openapi_document

    assert explain.DEFAULT_METHOD == DEFAULT_METHOD
    params = openapi_document({"name": "m", "family": "vit", "num_classes": 2})["paths"]["/v1/explain"]["post"][
        "parameters"
    ]
    assert next(p for p in params if p["name"] == "method")["schema"]["default"] == DEFAULT_METHOD


def test_overlay_png_keeps_the_image_size():
    from PIL import Image

    from vitkit.serve.explain import overlay_png

    img = Image.new("RGB", (6, 4), (10, 200, 10))
    heat = torch.rand(4, 6)
    heat[:, 0] = float("nan")  # cut off by the centre crop: dimmed, not coloured
    out = Image.open(io.BytesIO(overlay_png(img, heat)))
    assert out.size == (6, 4) and out.mode == "RGB"
    assert out.getpixel((0, 0)) == (4, 70, 4)


def test_onnx_backend_answers_like_torch(make_client, model):
    pytest.importorskip("onnxruntime")
    from vitkit.serve.backend import OnnxBackend

    reference = make_client().post("/v1/predict", files=files(image_bytes(seed=7))).json()
    backend = OnnxBackend(model)
    folder = backend._folder.name
    try:
        onnx = make_client(backend).post("/v1/predict", files=files(image_bytes(seed=7)))
        info = make_client(backend).get("/v1/model").json()
    finally:
        backend.close()
    assert info["backend"] == "onnx"
    same_answer(reference["predictions"][0]["topk"], onnx.json()["predictions"][0]["topk"])
    assert not os.path.exists(folder)  # the exported file is removed on close
