"""Bad input never hurts the server: each case is a 4xx JSON error naming the problem, then a normal answer."""

import io

import pytest
from PIL import Image

from tests.serve.helpers import image_bytes, png_header_only

GOOD = image_bytes()


def part(data: bytes, filename: str = "x.png", ctype: str = "image/png") -> tuple:
    return ("file", (filename, data, ctype))


def solid_png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (30, 20), (0, 128, 255, 10)).save(buffer, format="JPEG")
    return buffer.getvalue()


def lab_tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("LAB", (30, 20), (50, 10, 200)).save(buffer, format="TIFF")
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (24, 24), i) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


# (name, request kwargs, expected status, words the error must contain)
CASES = [
    ("not an image", dict(files=[part(b"%PDF-1.4 not an image")]), 422, ["x.png", "unknown format"]),
    ("truncated png", dict(files=[part(GOOD[: len(GOOD) // 2])]), 422, ["x.png", "truncated"]),
    ("truncated jpeg", dict(files=[part(image_bytes(fmt="JPEG")[:300], "t.jpg")]), 422, ["t.jpg"]),
    ("decompression bomb", dict(files=[part(png_header_only(60_000, 60_000), "bomb.png")]), 422, ["bomb.png"]),
    ("over --max-pixels", dict(files=[part(solid_png((250, 200)), "big.png")]), 422, ["big.png", "40,000", "limit"]),
    ("extreme aspect ratio", dict(files=[part(solid_png((400, 4)), "strip.png")]), 422, ["strip.png", "aspect"]),
    ("empty raw body", dict(content=b"", headers={"Content-Type": "image/png"}), 400, ["no image"]),
    ("empty file part", dict(files=[part(b"", "empty.png")]), 422, ["empty.png", "empty"]),
    (
        "raw path, not a file",
        dict(content=b"/etc/passwd", headers={"Content-Type": "image/png"}),
        422,
        ["the request body", "unknown format"],
    ),
    ("body over --max-body-mb", dict(files=[part(image_bytes((180, 180)))]), 413, ["MiB", "--max-body-mb"]),
    ("too many files", dict(files=[part(GOOD, f"{i}.png") for i in range(4)]), 400, ["too many files", "3"]),
    ("json", dict(content=b"{}", headers={"Content-Type": "application/json"}), 415, ["application/json"]),
    ("text", dict(content=GOOD, headers={"Content-Type": "text/plain"}), 415, ["text/plain"]),
    ("no content type", dict(content=GOOD, headers={"Content-Type": ""}), 415, ["no Content-Type"]),
    ("form field", dict(data={"topk": "3"}, files=[part(GOOD)]), 400, ["form field 'topk'", "query string"]),
    ("no boundary", dict(content=GOOD, headers={"Content-Type": "multipart/form-data"}), 400, ["boundary"]),
    (
        "malformed multipart",
        dict(content=b"--xx\r\nbroken", headers={"Content-Type": "multipart/form-data; boundary=xx"}),
        400,
        [],
    ),
    ("bad Content-Length", dict(content=GOOD, headers={"Content-Type": "image/png", "Content-Length": "x"}), 400, []),
]
LIMITS = dict(max_pixels=40_000, max_body_mb=0.05, max_files=3)


@pytest.fixture(scope="module")
def limited(model):
    from tests.serve.helpers import started_client
    from vitkit.serve.app import create_app
    from vitkit.serve.backend import make_backend
    from vitkit.serve.config import ServeConfig

    with started_client(create_app(make_backend(model), ServeConfig(**LIMITS))) as client:
        yield client


@pytest.mark.parametrize(("case", "request_kw", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_refused_with_a_reason_then_served(limited, case, request_kw, status, words):
    r = limited.post("/v1/predict", **request_kw)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and "\n" not in error and "Traceback" not in error
    for w in words:
        assert w in error, error
    ok = limited.post("/v1/predict", files=[part(GOOD)])
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("16-bit.png", image_bytes((30, 20), mode="I;16")),
        ("cmyk.jpg", cmyk_jpeg()),
        ("grey-alpha.png", image_bytes(mode="LA")),
        ("palette.png", image_bytes(mode="P")),
        ("animated.gif", animated_gif()),
        ("photo.webp", image_bytes(fmt="WEBP")),
    ],
)
def test_unusual_but_valid_images_are_classified(limited, name, data):
    r = limited.post("/v1/predict", files=[part(data, name, "application/octet-stream")])
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["file"] == name


def test_other_colour_spaces_never_crash(limited):
    r = limited.post("/v1/predict", files=[part(lab_tiff(), "lab.tif")])
    assert r.status_code in (200, 422), r.text


def test_a_file_name_is_only_a_label(limited, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "../../../tmp/../etc/passwd"
    r = limited.post("/v1/predict", files=[part(GOOD, name)])
    assert r.status_code == 200 and r.json()["predictions"][0]["file"] == name
    assert list(tmp_path.iterdir()) == []  # nothing written where the server runs


def test_the_first_bad_file_is_named(limited):
    r = limited.post("/v1/predict", files=[part(GOOD, "a.png"), part(b"junk", "b.png"), part(b"junk", "c.png")])
    assert r.status_code == 422 and r.json()["error"].startswith("b.png: ")


def test_a_declared_oversized_body_is_refused_before_it_is_read(limited):
    r = limited.post("/v1/predict", content=GOOD, headers={"Content-Type": "image/png", "Content-Length": "999999999"})
    assert r.status_code == 413


SERVED = {"good", "sixteen_bit", "cmyk", "exif_rotated", "palette_alpha", "animated_gif"}


def test_the_bad_input_corpus_over_http(limited, tmp_path):
    """Every image file of the project's bad-input corpus: classified, or one 422 line naming it; never a 5xx."""
    from tests.robustness import corpus

    files = {name: p for name, p in corpus.images(tmp_path).items() if p.is_file() and not p.is_symlink()}
    assert {"truncated_png", "bomb", "wide", "text"} <= set(files)
    for name, path in files.items():
        r = limited.post("/v1/predict", files=[part(path.read_bytes(), path.name, "application/octet-stream")])
        if name in SERVED:
            assert r.status_code == 200, (name, r.text)
        else:
            assert r.status_code == 422, (name, r.text)
            assert r.json()["error"].startswith(f"{path.name}: "), (name, r.text)
        assert limited.post("/v1/predict", files=[part(GOOD)]).status_code == 200
