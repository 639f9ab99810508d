import json

import pytest
import torch

from vitkit.eval.metrics import classification_report, confusion_matrix, topk_correct

# hand-worked example: rows = true class, columns = prediction
PREDS = torch.tensor([0, 0, 1, 1, 2, 2, 2])
TARGETS = torch.tensor([0, 1, 1, 1, 2, 0, 2])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PREDS, TARGETS, 3)
    assert cm.tolist() == [[1, 0, 1], [1, 2, 0], [0, 0, 2]]
    assert cm.dtype == torch.long


def test_precision_recall_f1_by_hand():
    r = classification_report(confusion_matrix(PREDS, TARGETS, 3))
    # precision = tp / column sum, recall = tp / row sum
    assert r.precision == pytest.approx([1 / 2, 2 / 2, 2 / 3])
    assert r.recall == pytest.approx([1 / 2, 2 / 3, 2 / 2])
    assert r.f1 == pytest.approx([0.5, 0.8, 0.8])
    assert r.macro_f1 == pytest.approx(0.7)
    assert r.macro_precision == pytest.approx((0.5 + 1 + 2 / 3) / 3)
    assert r.accuracy == pytest.approx(5 / 7)
    assert r.support == [2, 3, 2]


def test_absent_class_scores_zero_in_macro_average():
    # like scikit-learn's f1_score(average="macro", labels=range(4), zero_division=0)
    r = classification_report(confusion_matrix(PREDS, TARGETS, 4))
    assert r.f1[3] == 0.0 and r.precision[3] == 0.0 and r.recall[3] == 0.0
    assert r.macro_f1 == pytest.approx(2.1 / 4)


def test_never_predicted_class_has_zero_precision_not_nan():
    cm = confusion_matrix(torch.tensor([0, 0, 0]), torch.tensor([0, 1, 1]), 2)
    r = classification_report(cm)
    assert r.precision == pytest.approx([1 / 3, 0.0])
    assert r.recall == pytest.approx([1.0, 0.0])
    assert r.f1 == pytest.approx([0.5, 0.0])


def test_topk_correct():
    logits = torch.tensor(
        [
            [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],  # target 1: top-1 hit
            [0.5, 0.4, 0.3, 0.0, 0.0, 0.0],  # target 2: rank 3 -> top-5 hit only
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # target 5: rank 6 -> no hit
        ]
    )
    assert topk_correct(logits, torch.tensor([1, 2, 5]), (1, 5)) == {1: 1, 5: 2}
    # k larger than the number of classes counts every target
    assert topk_correct(logits[:, :3], torch.tensor([1, 2, 0]), (1, 5)) == {1: 2, 5: 3}


def test_report_dict_is_json_and_names_classes():
    r = classification_report(confusion_matrix(PREDS, TARGETS, 3), {1: 5 / 7, 5: 1.0})
    d = json.loads(json.dumps(r.to_dict(["a", "b", "c"])))
    assert d["top1"] == pytest.approx(5 / 7) and d["top5"] == 1.0
    assert [c["name"] for c in d["per_class"]] == ["a", "b", "c"]
    assert d["confusion_matrix"] == [[1, 0, 1], [1, 2, 0], [0, 0, 2]]
    assert d["num_samples"] == 7


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), 3)
