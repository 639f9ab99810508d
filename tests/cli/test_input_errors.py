"""Hostile or careless input on the command line: every mistake is one line on stderr with exit status 2."""

import pytest

from tests.cli.conftest import one_line_error
from vitkit.cli import main

# (flags of `vitkit train`, text the error line must hold): each is refused by TrainConfig's one validation
TRAIN_FLAGS = [
    (["--max-train-samples", "-1"], "--max-train-samples (max_train_samples): must be >= 0"),
    (["--max-val-samples", "-5"], "--max-val-samples (max_val_samples): must be >= 0"),
    (["--early-stopping-patience", "-1"], "--early-stopping-patience (early_stopping_patience)"),
    (["--checkpoint-every-steps", "-2"], "--checkpoint-every-steps (checkpoint_every_steps)"),
    (["--lr", "nan"], "--lr (lr): must be a finite number >= 0, got nan"),
    (["--lr", "inf"], "--lr (lr): must be a finite number >= 0, got inf"),
    (["--lr=-0.1"], "--lr (lr): must be a finite number >= 0, got -0.1"),
    (["--min-lr", "nan"], "--min-lr (min_lr)"),
    (["--weight-decay=-inf"], "--weight-decay (weight_decay): must be a finite number >= 0, got -inf"),
    (["--clip-grad", "nan"], "--clip-grad (clip_grad)"),
    (["--warmup-epochs", "inf"], "--warmup-epochs (warmup_epochs)"),
    (["--label-smoothing", "nan"], "--label-smoothing (label_smoothing): must be in [0, 1), got nan"),
    (["--label-smoothing", "1"], "--label-smoothing (label_smoothing): must be in [0, 1), got 1.0"),
    (["--mixup", "nan"], "--mixup (mixup)"),
    (["--cutmix=-1"], "--cutmix (cutmix)"),
    (["--time-limit-minutes", "inf"], "--time-limit-minutes (time_limit_minutes): must be a finite number"),
    (["--time-limit-minutes", "nan"], "--time-limit-minutes (time_limit_minutes)"),
    (["--ema-decay", "nan"], "--ema-decay (ema_decay): must be in [0, 1), got nan"),
    (["--ema-decay", "1"], "--ema-decay (ema_decay): must be in [0, 1)"),
    (["--betas", "0.9", "1.0"], "--betas (betas): each must be in [0, 1), got (0.9, 1.0)"),
    (["--betas", "nan", "0.9"], "--betas (betas): each must be in [0, 1), got (nan, 0.9)"),
    (["--device", "tpu"], "--device (device): must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["--device", "cuda:x"], "--device (device)"),
    (["--img-size", "100000"], "--img-size (img_size): must be 0 (the model's own) or in [1, 8192], got 100000"),
    (["--img-size=-3"], "--img-size (img_size)"),
    (["--in-chans", "2"], "--in-chans (in_chans): must be 0 (the data's own), 1 or 3, got 2"),
    (["--epochs", "0"], "--epochs (epochs): must be >= 1, got 0"),
    (["--batch-size", "0"], "--batch-size (batch_size): must be >= 1"),
    (["--num-workers=-1"], "--num-workers (num_workers): must be >= 0"),
    (["--seed=-1"], "--seed (seed)"),
    (["--drop-path-rate", "1.5"], "--drop-path-rate (drop_path_rate): must be in [0, 1)"),
    (["--layer-decay", "0"], "--layer-decay (layer_decay): must be in (0, 1]"),
    (["--val-fraction", "nan"], "--val-fraction (val_fraction)"),
    (["--model-args", "depth"], "--model-args (model_args)"),
    (["--model", "", "--pretrained", ""], "--model (model)"),
    (["--output-dir", ""], "--output-dir (output_dir)"),
]


@pytest.mark.parametrize(("flags", "expected"), TRAIN_FLAGS, ids=[" ".join(f) for f, _ in TRAIN_FLAGS])
def test_train_flag_values_are_one_line_errors(tmp_path, capsys, flags, expected):
    out = tmp_path / "run"
    rc = main(["train", "--output-dir", str(out), "--data", f"mnist:{tmp_path / 'never-read'}", *flags])
    line = one_line_error(capsys, rc, expected)
    assert "internal error" not in line and "never-read" not in line  # refused before the data is looked at
    if "--output-dir" not in flags:
        assert not out.exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lr: .nan\n", "--lr (lr): must be a finite number >= 0, got nan"),
        ("device: tpu\n", "--device (device)"),
        ("betas: [0.9, 2]\n", "--betas (betas)"),
        ("in_chans: 2\n", "--in-chans (in_chans)"),
        ("max_val_samples: -3\n", "--max-val-samples (max_val_samples)"),
    ],
)
def test_settings_file_values_go_through_the_same_validation(tmp_path, capsys, text, expected):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    one_line_error(capsys, main(["train", "--config", str(path), "--print-config"]), expected)


def test_python_api_gets_the_same_messages():
    from vitkit.errors import VitkitError
    from vitkit.train import TrainConfig

    with pytest.raises(VitkitError, match=r"^--lr \(lr\): must be a finite number >= 0, got nan$"):
        TrainConfig(lr=float("nan"))
    with pytest.raises(VitkitError, match=r"--epochs \(epochs\): expected a whole number, got 1.5"):
        TrainConfig.from_dict({"epochs": 1.5})
    with pytest.raises(VitkitError, match=r"--betas \(betas\): expected 2 numbers"):
        TrainConfig(betas=(0.9,))
    assert TrainConfig(lr=1, betas=[0, 0.5]).lr == 1.0  # ints are numbers; a list is a pair


OTHER_FLAGS = [
    (["eval", "SRC", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["eval", "SRC", "--max-samples", "-1"], "argument --max-samples: must be >= 0, got -1"),
    (["eval", "SRC", "--num-misclassified", "-1"], "argument --num-misclassified: must be >= 0"),
    (["eval", "SRC", "--batch-size", "many"], "argument --batch-size: expected a whole number, got 'many'"),
    (["eval", "SRC", "--device", "tpu"], "argument --device: must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["predict", "SRC", "x.png", "--topk", "0"], "argument --topk/-k: must be >= 1, got 0"),
    (["predict", "SRC", "x.png", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["predict", "SRC", "x.png", "--device", "tpu"], "argument --device"),
    (["bench", "vit_nano_patch4_28", "--batch-size", "0"], "argument --batch-size/-b: must be >= 1, got 0"),
    (["bench", "vit_nano_patch4_28", "--iters", "x"], "argument --iters: expected a whole number"),
    (["bench", "vit_nano_patch4_28", "--device", "tpu"], "argument --device: must be cpu, cuda, cuda:N or auto"),
]


@pytest.mark.parametrize(("argv", "expected"), OTHER_FLAGS, ids=[" ".join(a) for a, _ in OTHER_FLAGS])
def test_eval_predict_bench_numbers_checked_at_parse_time(tmp_path, capsys, argv, expected):
    argv = [str(tmp_path / "missing") if a == "SRC" else a for a in argv]  # never opened: parsing fails first
    line = one_line_error(capsys, main(argv), expected)
    assert "missing" not in line
