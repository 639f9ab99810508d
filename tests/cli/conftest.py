import contextlib
import io

import pytest

from vitkit.cli import main

TINY = "depth=1,embed_dim=16,num_heads=2"
TINY_TRAIN = [
    "--model", "vit_nano_patch4_28", "--model-args", TINY, "--data", "sample",
    "--max-train-samples", "128", "--max-val-samples", "64", "--epochs", "1", "--batch-size", "32",
    "--num-workers", "0", "--progress", "none", "--no-tensorboard", "--log-every", "1",
]  # fmt: skip


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny training run shared by the eval / predict tests: (output_dir, stdout of `vitkit train`)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["train", *TINY_TRAIN, "--output-dir", str(out)])
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()


def one_line_error(capsys, rc, *needles):
    """The error contract: exit status 2, exactly one line on stderr naming the problem, no traceback."""
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
