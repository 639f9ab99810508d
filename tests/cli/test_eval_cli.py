"""`vitkit eval / predict / models / info`, in-process through `main`."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from tests.cli.conftest import one_line_error
from vitkit.cli import main


def test_eval_report_and_figures(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    out = tmp_path / "ev"
    rc = main(["eval", str(run_dir), "--data", "sample", "--max-samples", "100", "--output-dir", str(out)])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "top-1" in stdout and "macro-F1" in stdout and "Ankle boot" in stdout
    report = json.loads((out / "report.json").read_text())
    cm = report["confusion_matrix"]
    assert len(cm) == 10 and sum(map(sum, cm)) == report["num_samples"] == 100
    assert report["top1"] == pytest.approx(sum(cm[i][i] for i in range(10)) / 100)
    assert report["top1"] <= report["top5"] <= 1.0
    assert len(report["per_class"]) == 10
    for i, c in enumerate(report["per_class"]):
        col = sum(row[i] for row in cm)
        assert c["recall"] == pytest.approx(cm[i][i] / sum(cm[i]) if sum(cm[i]) else 0.0)
        assert c["precision"] == pytest.approx(cm[i][i] / col if col else 0.0)
    assert report["macro_f1"] == pytest.approx(sum(c["f1"] for c in report["per_class"]) / 10)
    assert report["per_class"][9]["name"] == "Ankle boot"
    for png in ("confusion_matrix.png", "misclassified.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_missing_data(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    one_line_error(capsys, main(["eval", str(run_dir), "--data", f"mnist:{tmp_path}"]), "not found")


def _images(tmp_path, n=3):
    from vitkit.data import build_dataset

    ds = build_dataset("sample", "test")
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        img, _ = ds[i]
        img.convert("RGB").resize((56, 56)).save(folder / f"img{i}.png")  # RGB and larger: converted + resized
    return folder


def test_predict_with_one_bad_file(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    folder = _images(tmp_path)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    rc = main(["predict", str(run_dir), str(folder), "--topk", "3"])
    captured = capsys.readouterr()
    assert rc == 1  # non-zero because one file failed ...
    rows = [ln for ln in captured.out.splitlines()[1:] if ln.strip()]
    assert len(rows) == 3  # ... but the three good images got answers
    assert all("%" in r for r in rows)
    assert "broken.png" in captured.err and "cannot read image" in captured.err
    assert "Traceback" not in captured.err


def test_predict_json_glob_and_missing(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    folder = _images(tmp_path, 2)
    rc = main(["predict", str(run_dir), str(folder / "*.png"), str(tmp_path / "nothere.jpg"), "--json", "-k", "2"])
    captured = capsys.readouterr()
    assert rc == 1
    results = json.loads(captured.out)
    ok = [r for r in results if "predictions" in r]
    assert len(ok) == 2 and all(len(r["predictions"]) == 2 for r in ok)
    from vitkit.data import FASHION_MNIST_CLASSES

    assert ok[0]["predictions"][0]["name"] in FASHION_MNIST_CLASSES
    assert sum(p["probability"] for p in ok[0]["predictions"]) <= 1.0 + 1e-6
    assert next(r for r in results if "error" in r)["path"].endswith("nothere.jpg")


def test_models_table_and_json(capsys):
    assert main(["models", "vit_nano*"]) == 0
    out = capsys.readouterr().out
    assert "vit_nano_patch4_28" in out and "GFLOPs" in out and "GMACs" in out and "28x28" in out
    assert main(["models", "vit_*_28", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    import vitkit

    assert set(rows) == set(vitkit.list_models("vit_*_28"))
    nano = rows["vit_nano_patch4_28"]
    assert nano["params"] == vitkit.create_model("vit_nano_patch4_28").num_params()
    assert nano["gflops"] > 0 and nano["gmacs"] == pytest.approx(nano["gflops"] / 2, rel=1e-3)
    assert nano["input_size"] == [1, 28, 28]
    one_line_error(capsys, main(["models", "nothing_*"]), "no registered model")


def test_info(capsys):
    assert main(["info", "vit_nano_patch4_28", "--model-args", "depth=3"]) == 0
    out = capsys.readouterr().out
    assert "tokens" in out and "heads" in out and "GFLOPs" in out
    assert main(["info", "vit_nano_patch4_28", "--json", "--img-size", "56"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["stages"][0]["tokens"] == 14 * 14 + 1 and info["stages"][0]["blocks"] == 6
    assert info["input_size"] == [1, 56, 56]


def test_info_on_a_checkpoint(trained_run, capsys):
    run_dir, _ = trained_run
    assert main(["info", str(run_dir / "best"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["depth"] == 1 and info["stages"][0]["channels"] == 16


def test_plots_missing_matplotlib_is_a_note(monkeypatch, trained_run, tmp_path, capsys):
    from vitkit.cli.train import plot_run

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    run_dir, _ = trained_run
    assert plot_run(run_dir) is None
    assert "vitkit[plots]" in capsys.readouterr().err
    out = tmp_path / "ev"
    assert main(["eval", str(run_dir), "--max-samples", "32", "--output-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "matplotlib" in report["plots"] and not (out / "confusion_matrix.png").exists()


def test_python_dash_m_vitkit():
    import os
    from pathlib import Path

    import vitkit

    src = str(Path(vitkit.__file__).parents[1])  # this checkout's src/, not another installed copy
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "vitkit", *a], capture_output=True, text=True, env=env)
    r = run("info", "nope")  # one start-up of the interpreter (a few seconds): the error path, end to end
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_image_helpers_keep_aspect(tmp_path):
    from vitkit.data import DataSpec
    from vitkit.predict import load_image

    path = tmp_path / "wide.png"
    Image.new("L", (120, 60), 255).save(path)
    x = load_image(path, DataSpec((28, 28), 1, (0.5,), (0.5,), crop_pct=1.0))
    assert x.shape == (1, 28, 28) and float(x.min()) == pytest.approx(1.0)


def test_eval_flip_tta_reports_both_scores(trained_run, tmp_path, capsys):
    run_dir, _ = trained_run
    out = tmp_path / "ev"
    argv = ["eval", str(run_dir), "--data", "sample", "--max-samples", "60", "--output-dir", str(out), "--tta", "flip"]
    assert main(argv) == 0
    assert "test-time augmentation: flip (top-1 without it" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["tta"] == "flip" and 0 <= report["top1_without_tta"] <= 1
    assert main(["eval", str(run_dir), "--data", "sample", "--max-samples", "60", "--output-dir", str(out)]) == 0
    capsys.readouterr()
    assert json.loads((out / "report.json").read_text())["top1"] == report["top1_without_tta"]
