"""The console entry point: glibc malloc tuned for vitkit's own commands, untouched for `vitkit bench`."""

import subprocess
import sys

import pytest

import vitkit.cli


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(vitkit.cli, "set_malloc", lambda preset: seen.append(preset) or True)
    monkeypatch.setattr(vitkit.cli, "main", lambda argv=None: 0)
    return seen


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["models"], None, ["tuned"]),
        (["predict", "x.png"], "pinned", ["pinned"]),
        (["bench", "vit_base_patch16_224"], None, []),  # bench has its own --malloc (default: untouched)
    ],
)
def test_console_main_sets_the_allocator(monkeypatch, calls, argv, env, expected):
    monkeypatch.setattr(sys, "argv", ["vitkit", *argv])
    if env is None:
        monkeypatch.delenv("VITKIT_MALLOC", raising=False)
    else:
        monkeypatch.setenv("VITKIT_MALLOC", env)
    assert vitkit.cli.console_main() == 0
    assert calls == expected


def test_bad_preset_is_a_clear_error(monkeypatch, calls, capsys):
    monkeypatch.setattr(sys, "argv", ["vitkit", "models"])
    monkeypatch.setenv("VITKIT_MALLOC", "fast")
    assert vitkit.cli.console_main() == 2
    assert "VITKIT_MALLOC='fast'; choose from default, pinned, tuned" in capsys.readouterr().err
    assert calls == []


def test_python_dash_m_runs_through_console_main():
    out = subprocess.run(
        [sys.executable, "-m", "vitkit", "models"], capture_output=True, text=True, env={"VITKIT_MALLOC": "nope"}
    )
    assert out.returncode == 2 and "VITKIT_MALLOC='nope'" in out.stderr
