"""`vitkit train / demo / compare`, settings files and the error contract, in-process through `main`."""

import json

import pytest

from tests.cli.conftest import TINY, TINY_TRAIN, one_line_error
from vitkit.cli import COMMANDS, main
from vitkit.errors import VitkitError


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_train_help_explains_each_field(capsys):
    from vitkit.train import TrainConfig

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--drop-path-rate" in out and "stochastic depth" in out and "--no-tensorboard" in out
    import dataclasses

    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out


def test_train_writes_checkpoint_and_curves(trained_run):
    out, stdout = trained_run
    assert (out / "metrics.jsonl").is_file()
    assert (out / "plots" / "training_curves.png").stat().st_size > 1000
    assert "finished" in stdout and "training curves" in stdout


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_file_then_flags_override(tmp_path, capsys, suffix):
    path = tmp_path / f"run{suffix}"
    if suffix == ".yaml":
        path.write_text("model: vit_nano_patch4_28\nepochs: 3\nlr: 0.01\nbetas: [0.9, 0.95]\nmixup: 1\n")
    else:
        path.write_text('model = "vit_nano_patch4_28"\nepochs = 3\nlr = 0.01\nbetas = [0.9, 0.95]\nmixup = 1\n')
    assert main(["train", "--config", str(path), "--epochs", "2", "--aug", "none", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["epochs"] == 2  # the flag wins over the file
    assert cfg["lr"] == 0.01 and cfg["betas"] == [0.9, 0.95] and cfg["mixup"] == 1.0  # from the file
    assert cfg["aug"] == "none" and cfg["model"] == "vit_nano_patch4_28"
    assert cfg["weight_decay"] == 0.05  # the default


def test_multi_process_flags(capsys):
    assert main(["train", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["strategy"] == "ddp" and cfg["sync_bn"] is True
    assert main(["train", "--strategy", "fsdp", "--no-sync-bn", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["strategy"] == "fsdp" and cfg["sync_bn"] is False


def test_config_file_errors(tmp_path, capsys):
    bad_key = tmp_path / "a.yaml"
    bad_key.write_text("epochz: 3\n")
    one_line_error(capsys, main(["train", "--config", str(bad_key)]), "epochz")
    bad_type = tmp_path / "b.toml"
    bad_type.write_text('epochs = "many"\n')
    one_line_error(capsys, main(["train", "--config", str(bad_type)]), "epochs", "int")
    broken = tmp_path / "c.yaml"
    broken.write_text("epochs: [1\n")
    one_line_error(capsys, main(["train", "--config", str(broken)]), "c.yaml", "cannot parse")
    one_line_error(capsys, main(["train", "--config", str(tmp_path / "missing.yaml")]), "does not exist")


def test_error_lines(tmp_path, capsys):
    out = ["--output-dir", str(tmp_path / "x"), "--progress", "none", "--no-tensorboard"]
    one_line_error(capsys, main(["train", "--model", "vit_nnao_patch4_28", *out]), "unknown model", "did you mean")
    one_line_error(capsys, main(["train", "--data", f"fashion-mnist:{tmp_path}/nope", *out]), "not found")
    one_line_error(capsys, main(["train", "--lr", "fast"]), "--lr", "fast")
    one_line_error(capsys, main(["train", "--epochs", "0", "--print-config"]), "epochs")
    one_line_error(capsys, main(["train", "--amp", "fp8"]), "--amp", "fp8")
    one_line_error(capsys, main(["train", "--strategy", "fsdp", "--amp", "fp16"]), "--amp", "strategy fsdp")
    one_line_error(capsys, main(["info", "vit_nope"]), "unknown model")
    one_line_error(capsys, main(["eval", str(tmp_path)]), "config.json")
    one_line_error(capsys, main(["nope"]), "nope")
    one_line_error(capsys, main(["predict", str(tmp_path), "x.png", "--threads", "many"]), "--threads", "many")


def test_debug_shows_the_exception():
    with pytest.raises(VitkitError, match="unknown model"):
        main(["--debug", "info", "vit_nope"])


def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    small = ["--model-args", TINY, "--max-train-samples", "128", "--max-val-samples", "64", "--epochs", "1"]
    rc = main(["demo", "--output-dir", str(out), *small, "--progress", "none"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "test accuracy (top-1)" in stdout and str(out) in stdout
    assert (out / "eval" / "report.json").is_file()
    assert (out / "eval" / "confusion_matrix.png").is_file()
    assert (out / "plots" / "training_curves.png").is_file()


def test_compare_skips_unregistered_names(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = [a for a in TINY_TRAIN if a not in ("--model", "vit_nano_patch4_28")]
    rc = main(["compare", "--models", "vit_nano_patch4_28,swin_notyet_28", *args, "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "skipping swin_notyet_28" in captured.err
    summary = json.loads((out / "compare.json").read_text())
    (row,) = summary["results"]
    assert row["model"] == "vit_nano_patch4_28" and 0 <= row["top1"] <= 100 and row["params_m"] > 0
    assert row["gflops"] > 0 and row["sec_per_epoch"] > 0
    assert (out / "vit_nano_patch4_28" / "eval" / "confusion_matrix.png").is_file()
    assert "top-1 %" in captured.out and "macro-F1" in captured.out
    assert "without TTA" not in captured.out and "top1_without_tta" not in row and summary["tta"] == "none"


def test_compare_with_flip_tta_keeps_the_plain_score(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = [a for a in TINY_TRAIN if a not in ("--model", "vit_nano_patch4_28")]
    assert main(["compare", "--models", "vit_nano_patch4_28", *args, "--tta", "flip", "--output-dir", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads((out / "compare.json").read_text())
    (row,) = summary["results"]
    assert summary["tta"] == "flip" and 0 <= row["top1_without_tta"] <= 100
    report = json.loads((out / "vit_nano_patch4_28" / "eval" / "report.json").read_text())
    assert report["tta"] == "flip" and row["top1_without_tta"] == round(report["top1_without_tta"] * 100, 2)
    assert "without TTA %" in captured.out and "test-time augmentation: flip" in captured.out


def test_default_compare_models_cover_each_registered_family(capsys):
    from vitkit.cli.compare import default_models
    from vitkit.models.registry import get_entry

    chosen = default_models()
    assert "vit_nano_patch4_28" in chosen
    assert len({get_entry(n).family for n in chosen}) == len(chosen)
    assert all(n.endswith("_28") for n in chosen)
