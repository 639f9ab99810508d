"""Every case of the bad-input corpus through the command line: a one-line error (exit 2) or handled correctly —
never a traceback, an internal error, a hang or code that runs from a file."""

import io
import os
import threading
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

import vitkit
from tests.robustness import corpus
from vitkit.cli import main

TIMEOUT_S = 120  # a hang fails the case instead of stalling the suite
PWNED = Path("/tmp/vitkit-corpus-pwned")
SHAPES = corpus.cases(Path("/corpus"), Path("/model"))  # names and commands; paths are filled in by `written`
NAMES = [c.name for c in SHAPES]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    good = root / "good-model"
    vitkit.save_pretrained(vitkit.create_model("vit_nano_patch4_28", depth=1, embed_dim=16, num_heads=2), good)
    corpus.write(root, good)
    return {c.name: c for c in corpus.cases(root, good)}


def run_cli(argv: list[str], timeout: float = TIMEOUT_S) -> tuple[int, str, str]:
    """``vitkit argv`` in this process, on a thread that must finish within ``timeout``."""
    out, err, result = io.StringIO(), io.StringIO(), {}

    def target():
        with redirect_stdout(out), redirect_stderr(err):
            result["rc"] = main(argv)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"vitkit {' '.join(argv)} did not finish within {timeout} s (a hang)"
    return result["rc"], out.getvalue(), err.getvalue()


@pytest.mark.parametrize("name", NAMES)
def test_corpus_case(written, name):
    case = written[name]
    PWNED.unlink(missing_ok=True)
    rc, out, err = run_cli(case.argv)
    assert "Traceback" not in out + err and "internal error" not in err, err
    assert not PWNED.exists(), "a file made vitkit run code"
    errors = [line for line in err.splitlines() if line.strip() and "warning:" not in line]
    if case.expect == "error":
        assert rc == 2, (rc, err)
        assert len(errors) == 1, err
        assert case.needle in errors[0], errors[0]
    else:
        assert rc == case.status, (rc, err)
        if case.needle:
            assert case.needle in err, err


def test_every_class_of_the_issue_is_covered():
    """The corpus keeps one case per class of bad input it was built for."""
    must = {
        "decompression_bomb", "extreme_aspect_wide", "sixteen_bit", "exif_rotated", "checkpoint_malicious_pickle",
        "checkpoint_huge_depth", "checkpoint_index_outside_folder", "csv_non_utf8", "train_all_bad_images_skipped",
        "train_symlink_loop", "flag_lr_nan", "flag_device_tpu", "flag_in_chans_2",
    }  # fmt: skip
    if hasattr(os, "mkfifo"):
        must.add("fifo_named_png")
    assert must <= set(NAMES)


IMAGE_CASES = [c.name for c in SHAPES if c.argv[0] == "predict" and not c.name.startswith("checkpoint_")]
SOURCE_CASES = [c.name for c in SHAPES if c.name.startswith("checkpoint_") or c.argv[0] == "eval"]


@pytest.mark.parametrize("name", IMAGE_CASES)
def test_corpus_images_through_the_api(written, name):
    """``vitkit.predict.predict`` answers every image case with predictions or a named error, never an exception."""
    from vitkit.predict import predict

    case = written[name]
    model = vitkit.from_pretrained(case.argv[1])
    [result] = predict(model, case.argv[2:])
    if case.status == 0:
        assert result.error is None and len(result.topk) == 5, result.error
    else:
        assert result.error and case.needle in result.error, result.error


@pytest.mark.parametrize("name", SOURCE_CASES)
def test_corpus_checkpoints_and_data_through_the_api(written, name):
    """``from_pretrained`` and ``build_dataset`` + ``evaluate`` raise a VitkitError naming the problem."""
    from vitkit.data import build_dataset
    from vitkit.eval.evaluate import evaluate

    case = written[name]
    PWNED.unlink(missing_ok=True)
    with pytest.raises(vitkit.VitkitError) as info:
        if case.argv[0] == "predict":
            vitkit.from_pretrained(case.argv[1])
        else:
            split = case.argv[case.argv.index("--split") + 1] if "--split" in case.argv else "test"
            dataset = build_dataset(case.argv[case.argv.index("--data") + 1], split)
            evaluate(vitkit.from_pretrained(case.argv[1]), dataset)
    assert case.needle in str(info.value)
    assert not PWNED.exists(), "a file made vitkit run code"
