"""The textbook's workflow: fine-tune RGB weights on grey images, then predict with the result."""

import json

from PIL import Image

import vitkit
from tests.cli.conftest import one_line_error
from vitkit.cli import main


def test_rgb_weights_fine_tuned_on_grey_data_then_predict(tmp_path, capsys):
    rgb = vitkit.create_model("swin_tiny_patch4_window7_224", embed_dim=16, depths=(1, 1), num_heads=(2, 2),
                              window_size=7, num_classes=4)  # fmt: skip
    vitkit.save_pretrained(rgb, tmp_path / "rgb")  # ImageNet's 3-channel mean / std
    run = tmp_path / "run"
    argv = ["train", "--pretrained", str(tmp_path / "rgb"), "--model", "swin_tiny_patch4_window7_224",
            "--model-args", "embed_dim=16,depths=(1,1),num_heads=(2,2)", "--img-size", "28", "--data", "sample",
            "--max-train-samples", "32", "--max-val-samples", "16", "--epochs", "1", "--batch-size", "16",
            "--num-workers", "0", "--progress", "none", "--no-tensorboard", "--output-dir", str(run)]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((run / "last" / "config.json").read_text())["vitkit"]["config"]
    assert saved["in_chans"] == 1 and len(saved["mean"]) == len(saved["std"]) == 1  # statistics follow the channels
    img = tmp_path / "shoe.png"
    Image.new("L", (28, 28), 200).save(img)
    capsys.readouterr()
    assert main(["predict", str(run), str(img), "--json"]) == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert len(answer["predictions"]) == 5 and answer["path"] == str(img)


def test_pretrained_of_another_family_is_one_line(tmp_path, capsys):
    swin = vitkit.create_model("swin_tiny_patch4_window7_224", embed_dim=16, depths=(1, 1), num_heads=(2, 2))
    vitkit.save_pretrained(swin, tmp_path / "swin")
    rc = main(["train", "--pretrained", str(tmp_path / "swin"), "--model", "vit_nano_patch4_28", "--data", "sample",
               "--epochs", "1", "--output-dir", str(tmp_path / "run"), "--progress", "none"])  # fmt: skip
    one_line_error(capsys, rc, "holds a swin model, not a vit one")
