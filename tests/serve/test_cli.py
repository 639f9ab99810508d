"""`vitkit serve` as a command: options, one-line errors, no serving stack imported by `import vitkit`."""

import subprocess
import sys

import pytest

from tests.cli.conftest import one_line_error
from tests.serve.helpers import child_env, tiny_model
from vitkit.cli import main
from vitkit.hub import save_pretrained


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_pretrained(tiny_model(optimized=False), tmp_path_factory.mktemp("serve") / "tiny")


def test_help_lists_the_options(capsys):
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--max-batch-size", "--max-wait-ms", "--max-queue", "--threads", "--backend",
                 "--device", "--max-body-mb", "--max-files", "--max-pixels", "--drain-seconds"):  # fmt: skip
        assert flag in out


def test_without_the_extra_it_says_what_to_install(monkeypatch, capsys, checkpoint):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    rc = main(["serve", str(checkpoint)])
    one_line_error(capsys, rc, "pip install 'vitkit[serve]'", "uvicorn")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--max-batch-size", "0"], "--max-batch-size must be"),
        (["--max-wait-ms", "-1"], "--max-wait-ms must be"),
        (["--max-files", "500"], "--max-files (500) must be <= --max-queue"),
        (["--host", "no-such-host.invalid"], "--host no-such-host.invalid"),
    ],
)
def test_bad_settings_are_one_line(capsys, checkpoint, flags, needle):
    rc = main(["serve", str(checkpoint), "--port", "0", *flags])
    one_line_error(capsys, rc, needle)


def test_a_busy_port_is_one_line(capsys, checkpoint):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        rc = main(["serve", str(checkpoint), "--port", str(port)])
    one_line_error(capsys, rc, f"cannot listen on 127.0.0.1:{port}")


def test_a_missing_checkpoint_is_one_line(capsys, tmp_path):
    rc = main(["serve", str(tmp_path / "nowhere"), "--port", "0"])
    one_line_error(capsys, rc, "nowhere")


def test_import_vitkit_does_not_load_the_serving_stack():
    code = (
        "import sys, vitkit, vitkit.serve, vitkit.serve.config\n"
        "from vitkit.cli import build_parser\n"
        "build_parser(['serve'])\n"
        "loaded = sorted(m for m in ('starlette', 'uvicorn', 'python_multipart') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=child_env())


def test_onnx_runs_on_the_cpu_only():
    from vitkit.errors import VitkitError
    from vitkit.serve.backend import make_backend

    with pytest.raises(VitkitError, match="--backend onnx runs on the CPU"):
        make_backend(tiny_model(), "onnx", device="cuda")
