import io
import json

from vitkit.train.progress import MetricsLog, Progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_bar_on_a_terminal_shows_loss_accuracy_rate_and_eta():
    out = _Tty()
    p = Progress(4, "epoch 1/2", mode="auto", stream=out)
    for _ in range(4):
        p.update(32, loss=0.5, acc=0.75)
    p.close()
    text = out.getvalue()
    assert text.startswith("\r") and "[####################] 4/4" in text
    assert "loss 0.5" in text and "acc 0.75" in text and "img/s" in text and "<" in text  # elapsed<ETA


def test_log_lines_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(10, "epoch 1/1", mode="auto", log_every=5, stream=out)
    for _ in range(10):
        p.update(8, loss=1.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "5/10" in lines[0] and "10/10" in lines[1] and "\r" not in out.getvalue()


def test_metrics_log_truncates_records_after_a_resumed_step(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        log.write({"type": "train", "step": step, "loss": 1.0 / step})
    with open(log.path, "a") as f:
        f.write('{"type": "train", "st')  # a line cut by a crash
    log.truncate_after(2)
    assert [json.loads(x)["step"] for x in log.path.read_text().splitlines()] == [1, 2]


def test_tensorboard_mirror_when_installed(tmp_path, monkeypatch):
    import sys
    import types

    calls = []

    class FakeWriter:
        def __init__(self, logdir):
            calls.append(("init", logdir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            calls.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    log = MetricsLog(tmp_path, tensorboard=True)
    log.write({"type": "epoch", "step": 7, "epoch": 1, "val_acc": 0.5, "note": "text is skipped"})
    log.close()
    assert calls == [("init", str(tmp_path / "tensorboard")), ("epoch/val_acc", 0.5, 7), ("close",)]
