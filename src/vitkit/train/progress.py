"""A small progress bar (no tqdm) and the metrics log (JSONL, plus TensorBoard when installed)."""

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """One line per epoch redrawn in place on a terminal; periodic log lines otherwise.

    ``mode``: 'bar' (redraw with \\r), 'log' (a line every ``log_every`` updates), 'none', or 'auto'
    (bar on a TTY, log otherwise).
    """

    def __init__(self, total: int, desc: str, *, mode: str = "auto", log_every: int = 50, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if getattr(self.stream, "isatty", lambda: False)() else "log"
        self.mode, self.total, self.desc, self.log_every = mode, total, desc, max(log_every, 1)
        self.n, self.images, self.start = 0, 0, time.perf_counter()
        self._last_draw = 0.0

    def update(self, n_images: int, **stats: float) -> None:
        self.n += 1
        self.images += n_images
        if self.mode == "none":
            return
        now = time.perf_counter()
        if self.mode == "bar" and (now - self._last_draw > 0.1 or self.n == self.total):
            self._last_draw = now
            self.stream.write("\r" + self._line(stats, now) + "\x1b[K")
            self.stream.flush()
        elif self.mode == "log" and (self.n % self.log_every == 0 or self.n == self.total):
            self.stream.write(self._line(stats, now) + "\n")
            self.stream.flush()

    def _line(self, stats: dict[str, float], now: float) -> str:
        elapsed = now - self.start
        rate = self.images / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.n) * elapsed / self.n if self.n else float("inf")
        frac = self.n / self.total if self.total else 1.0
        width = 20
        filled = int(width * frac)
        bar = "#" * filled + "-" * (width - filled)
        parts = " ".join(f"{k} {v:.4g}" for k, v in stats.items())
        return (
            f"{self.desc} [{bar}] {self.n}/{self.total} {parts} {rate:.0f} img/s {_fmt_time(elapsed)}<{_fmt_time(eta)}"
        )

    def close(self) -> None:
        if self.mode == "bar":
            self.stream.write("\n")
            self.stream.flush()


class MetricsLog:
    """Append records to ``metrics.jsonl`` (one JSON object per line) and mirror scalars to TensorBoard."""

    def __init__(self, output_dir: Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(output_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: JSONL only
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self.tb is not None:
            step = record.get("step", 0)
            kind = record.get("type", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def truncate_after(self, step: int) -> None:
        """On resume: drop records written after the checkpoint's step (they will be written again)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("step", 0) <= step:
                keep.append(line)
        from vitkit.utils.io import atomic_write_text

        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
