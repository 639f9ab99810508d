"""`vitkit explain`: heat maps on the original images, the numbers, one self-contained HTML page, one-line errors;
`--mechanism` figures for each family."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

import vitkit
from tests.cli.conftest import one_line_error
from tests.tiny import TINY
from vitkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def images(tmp_path):
    """Two grey images of other sizes than the model's 28 px (one not square), and a broken one."""
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in (("tall", (60, 40)), ("square", (28, 28))):
        p = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(p)
        paths.append(p)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    return paths, broken


def test_explain_writes_figures_numbers_and_one_page(trained_run, images, tmp_path, capsys):
    run, _ = trained_run
    (tall, square), _ = images
    out = tmp_path / "out"
    rc = main(["explain", str(run), str(tall), str(square), "--method", "all", "--class", "Sneaker",
               "-o", str(out), "--progress", "none"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "explanations.json").read_text())
    assert summary["methods"] == ["rollout", "grad-rollout", "gradcam", "integrated-gradients"]
    first = summary["images"][0]
    assert first["path"] == str(tall) and first["size"] == [60, 40]
    assert {e["target"]["name"] for e in first["explanations"]} == {"Sneaker"}
    for e in first["explanations"]:
        heat = np.load(out / e["heatmap"])
        assert heat.shape == (60, 40)  # on the original image, not the 28 px input
        assert np.nanmin(heat) >= 0 and np.nanmax(heat) <= 1
    assert np.nanmax(np.load(out / first["explanations"][0]["heatmap"])) == pytest.approx(1.0)  # rollout
    assert (out / first["figure"]).read_bytes().startswith(b"\x89PNG")
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "http" not in page and "<script" not in page
    printed = capsys.readouterr().out
    assert "tall.png: predicted" in printed and "index.html" in printed


def test_a_bad_file_is_reported_and_the_others_explained(trained_run, images, tmp_path, capsys):
    run, _ = trained_run
    (tall, _), broken = images
    rc = main(["explain", str(run), str(tall), str(broken), "-o", str(tmp_path / "out"), "--progress", "none",
               "--no-figures"])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 of 2 inputs failed" in err
    summary = json.loads((tmp_path / "out" / "explanations.json").read_text())
    assert len(summary["images"]) == 1 and summary["failed"][0]["path"] == str(broken)


def test_without_matplotlib_the_numbers_are_still_written(trained_run, images, tmp_path, capsys, monkeypatch):
    run, _ = trained_run
    (tall, _), _ = images
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    rc = main(["explain", str(run), str(tall), "-o", str(tmp_path / "out"), "--progress", "none"])
    assert rc == 0
    assert "figures skipped" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*.npy"))) == 1 and not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--class", "Sneakers"], ["unknown class 'Sneakers'", "did you mean 'Sneaker'"]),
        (["--class", "12"], ["class 12 is out of range"]),
        (["--method", "gradcams"], ["unknown explanation method 'gradcams'"]),
        (["--mechanism", "swin"], ["--mechanism swin", "is a vit model"]),
        (["--size", "32"], ["--size applies to --mechanism"]),
    ],
)
def test_user_errors_are_one_line(trained_run, images, tmp_path, capsys, args, needles):
    run, _ = trained_run
    (tall, _), _ = images
    rc = main(["explain", str(run), str(tall), "-o", str(tmp_path / "out"), *args])
    one_line_error(capsys, rc, *needles)


def test_no_image_is_one_line(trained_run, capsys):
    run, _ = trained_run
    one_line_error(capsys, main(["explain", str(run)]), "give at least one image")


def test_rollout_with_a_class_warns_that_it_is_not_class_specific(trained_run, images, tmp_path, capsys):
    run, _ = trained_run
    (tall, _), _ = images
    rc = main(["explain", str(run), str(tall), "--method", "rollout", "--class", "Bag", "-o", str(tmp_path / "o"),
               "--no-figures", "--progress", "none"])  # fmt: skip
    assert rc == 0
    assert "vitkit: warning: rollout does not depend on the class" in capsys.readouterr().err


@pytest.mark.parametrize("family", list(TINY))
def test_mechanism_page_per_family(tmp_path, capsys, family):
    name, overrides, _, _ = TINY[family]
    vitkit.save_pretrained(vitkit.create_model(name, **overrides), tmp_path / "model")
    size_arg = ["--size", "36x40"] if family == "swin" else []  # padded windows and a shift at this size
    rc = main(["explain", "--mechanism", family, str(tmp_path / "model"), "-o", str(tmp_path / "out"), *size_arg])
    assert rc == 0, capsys.readouterr().err
    page = (tmp_path / "out" / "index.html").read_text()
    pngs = list((tmp_path / "out").glob("*.png"))
    assert pngs and page.count("data:image/png;base64,") == len(pngs) and "http" not in page
    numbers = json.loads((tmp_path / "out" / "mechanism.json").read_text())
    assert numbers["family"] == family
    if family == "swin":
        assert numbers["note_example"]["relative_position_index"] == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3],
                                                                      [8, 7, 5, 4]]  # fmt: skip
        assert "step 4: x_coords *= 2 * window_size - 1" in page
        assert any(b["padded"] != st["grid"] for st in numbers["stages"] for b in st["blocks"])


def test_a_bare_weights_file_with_its_architecture(images, tmp_path, capsys):
    """`--model NAME` reads a bare state dict (a paper's release file) as `vitkit predict` does."""
    from safetensors.torch import save_file

    weights = tmp_path / "release.safetensors"
    save_file(vitkit.create_model("vit_nano_patch4_28").state_dict(), str(weights))
    (tall, _), _ = images
    out = tmp_path / "out"
    rc = main(["explain", str(weights), str(tall), "--model", "vit_nano_patch4_28", "--method", "rollout",
               "-o", str(out), "--progress", "none", "--no-figures"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    heat = np.load(out / json.loads((out / "explanations.json").read_text())["images"][0]["explanations"][0]["heatmap"])
    assert heat.shape == (60, 40)
