import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.data import ArrayDataset, DataSpec, build_dataset
from vitkit.data.transforms import array_eval_batch
from vitkit.errors import VitkitError
from vitkit.eval.evaluate import check_classes, evaluate, most_confident_mistakes, write_eval_outputs


def _tiny(num_classes=10, **kw):
    return vitkit.create_model("vit_nano_patch4_28", depth=1, embed_dim=16, num_heads=2, num_classes=num_classes, **kw)


def _sample(n=40):
    ds = build_dataset("sample", "test")
    return ArrayDataset(ds.images[:n], ds.targets[:n], ds.classes, "sample")


def test_in_memory_and_file_pipelines_agree(tmp_path):
    """The same images as an array and as PNG files in class folders give the same predictions."""
    ds = _sample(30)
    for i, (img, label) in enumerate(ds):
        folder = tmp_path / f"{label:02d}"
        folder.mkdir(exist_ok=True)
        img.save(folder / f"{i:03d}.png")
    files = build_dataset(f"folder:{tmp_path}", "all")
    order = np.argsort([int(p.split("/")[-1][:3]) for p, _ in files.samples])
    files.samples = [files.samples[i] for i in order]
    model = _tiny(num_classes=len(files.classes))
    a = evaluate(model, ArrayDataset(ds.images, ds.targets, files.classes), batch_size=7)
    b = evaluate(model, files, batch_size=7)
    assert torch.equal(a.preds, b.preds) and torch.equal(a.targets, b.targets)
    assert a.report.confusion.tolist() == b.report.confusion.tolist()


def test_array_batch_resizes_and_converts_channels():
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    x = array_eval_batch(images, DataSpec((56, 56), 3, (0.5,) * 3, (0.5,) * 3, crop_pct=1.0))
    assert x.shape == (4, 3, 56, 56) and torch.equal(x[:, 0], x[:, 2])
    rgb = np.stack([images] * 3, axis=-1)  # (N, H, W, 3) grey -> luma equals the grey value
    gray = array_eval_batch(rgb, DataSpec((28, 28), 1, (0.0,), (1.0,), crop_pct=1.0))
    assert torch.allclose(gray[:, 0], torch.from_numpy(images).float() / 255, atol=1e-5)


def test_evaluate_counts_and_report(tmp_path):
    ds = _sample(50)
    model = _tiny()
    r = evaluate(model, ds, batch_size=16, max_samples=45)
    assert len(r.preds) == 45 and int(r.report.confusion.sum()) == 45
    assert r.top1 == pytest.approx(float((r.preds == r.targets).float().mean()))
    mistakes = most_confident_mistakes(r, 5)
    assert all(r.preds[i] != r.targets[i] for i in mistakes)
    assert list(r.confidences[mistakes]) == sorted(r.confidences[mistakes].tolist(), reverse=True)
    report = write_eval_outputs(r, tmp_path, model=model, dataset=ds, num_misclassified=5, extra={"model": "x"})
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == report and on_disk["model"] == "x" and on_disk["num_samples"] == 45
    assert (tmp_path / "confusion_matrix.png").is_file() and (tmp_path / "misclassified.png").is_file()


def test_head_and_data_mismatch_is_an_error():
    with pytest.raises(VitkitError, match="predicts 3 classes but the data set"):
        evaluate(_tiny(num_classes=3), _sample(8))


def test_class_names_must_match_the_data_set():
    ds = _sample(8)
    model = _tiny()
    model.class_names = list(ds.classes)
    assert check_classes(model, ds) == list(ds.classes)
    model.class_names = [*ds.classes[:3], "Jumper", *ds.classes[4:]]  # same count, one name differs
    with pytest.raises(VitkitError, match=r"class 3 is 'Jumper' for the model but 'Dress' in the data \(1 of 10"):
        evaluate(model, ds)
    model.class_names = None  # a model without names is judged by its head size alone
    assert check_classes(model, ds) == list(ds.classes)
    with pytest.raises(VitkitError, match="predicts 10 classes but the data set sample has 3"):
        check_classes(model, ArrayDataset(ds.images, ds.targets % 3, ["a", "b", "c"], "sample"))


def test_split_val_of_a_run_is_the_part_it_held_out(tmp_path):
    """`vitkit eval RUN --split val` scores the images that run held out (its val_fraction and seed), and only when
    the run trained on the same data."""
    from vitkit.eval.evaluate import load_dataset, run_split_settings

    data = f"folder:{tmp_path / 'data'}"
    for c in range(2):
        (tmp_path / "data" / f"c{c}").mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((4, 4), i, np.uint8)).save(tmp_path / "data" / f"c{c}" / f"{i}.png")
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "train_config.json").write_text(json.dumps({"data": data, "val_fraction": 0.3, "seed": 5}))
    assert run_split_settings(run / "best", data) == run_split_settings(run, data) == (0.3, 5)
    assert run_split_settings(run, "sample") == (0.0, 0)
    held_out = build_dataset(data, "val", val_fraction=0.3, seed=5).samples
    assert load_dataset(data, "val", val_fraction=0.3, seed=5).samples == held_out
    assert len(held_out) == 6 and held_out != build_dataset(data, "val").samples


def test_flip_tta_averages_the_image_and_its_mirror():
    ds = _sample(40)
    model = _tiny().eval()
    plain = evaluate(model, ds, batch_size=16)
    tta = evaluate(model, ds, batch_size=16, tta="flip")
    x = array_eval_batch(ds.images, DataSpec.from_model(model))
    with torch.no_grad():
        prob = (model(x).softmax(-1) + model(x.flip(-1)).softmax(-1)) / 2
    assert torch.equal(tta.preds, prob.argmax(-1)) and torch.allclose(tta.confidences, prob.max(-1).values)
    assert tta.extra == {"tta": "flip", "top1_without_tta": plain.top1} and plain.extra == {}
    assert tta.to_dict()["top1_without_tta"] == plain.top1
    with pytest.raises(VitkitError, match="tta must be one of none, flip"):
        evaluate(model, ds, tta="crops")
