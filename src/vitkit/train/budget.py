"""Training to a budget: the learning rate follows the fraction of the budget used, not the step count.

A budget is training time (``time_limit_minutes``), training images (``budget_images``), or both; ``epochs``, when
given too, is a third one. The fraction used is the largest of the three fractions (time / budget, images / budget,
optimizer steps / steps in ``epochs``), so the run ends annealed at whichever budget runs out first, on any machine,
however fast or busy. Without a time or image budget the per-step :class:`~vitkit.train.optim.WarmupCosine` over
``epochs`` is used, exactly as before.

Training time is measured by :class:`TrainingClock`: it runs while batches are trained and is paused for
evaluation and checkpoint writes, so a run spends its whole budget training; the last evaluation and checkpoint come
right after it. In DDP every process uses rank 0's clock (its reading travels with the per-step flags), so all agree
on the fraction. The clock's reading and the images seen are part of the checkpoint: a resumed run continues the
fraction where it stopped. With a real clock the step at which each fraction is reached depends on the machine's
speed after the resume; with an injected clock (tests) a resumed run is bitwise identical to an uninterrupted one.
"""

import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from vitkit.errors import VitkitError
from vitkit.train.config import TrainConfig
from vitkit.train.optim import WarmupCosine

DEFAULT_EPOCHS = 10  # without any budget and without `epochs`


def has_budget(cfg: TrainConfig) -> bool:
    """A time or image budget lays the schedule over the budget."""
    return cfg.time_limit_minutes > 0 or cfg.budget_images > 0


def planned_epochs(cfg: TrainConfig) -> int | None:
    """``epochs`` when given; else unbounded (None) with a budget, which ends the run, and 10 without one."""
    if cfg.epochs is not None:
        return cfg.epochs
    return None if has_budget(cfg) else DEFAULT_EPOCHS


def budget_text(cfg: TrainConfig) -> str:
    """The run's budget in words: ``10 min of training or 500,000 images, whichever comes first``."""
    parts = []
    if cfg.time_limit_minutes > 0:
        parts.append(f"{cfg.time_limit_minutes:g} min of training")
    if cfg.budget_images > 0:
        parts.append(f"{cfg.budget_images:,} images")
    if (epochs := planned_epochs(cfg)) is not None:
        parts.append(f"{epochs} epochs")
    return " or ".join(parts) + (", whichever comes first" if len(parts) > 1 else "")


def parse_budget(text: str) -> tuple[float, int]:
    """``--budget`` values: ``90s``, ``10m``, ``1.5h`` (training time) or ``500k``/``2M`` ``img`` (images).

    Returns (minutes, images), one of them 0. A bad value is a one-line error naming the flag.
    """
    s = text.strip().lower().replace(" ", "")
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(s|sec|m|min|h)", s)
    if m and float(m.group(1)) > 0:
        return float(m.group(1)) * {"s": 1 / 60, "sec": 1 / 60, "m": 1, "min": 1, "h": 60}[m.group(2)], 0
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([km]?)(img|images)", s)
    if m and float(m.group(1)) > 0:
        return 0.0, round(float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[m.group(2)])
    raise VitkitError(
        f"--budget: expected a training time such as 90s, 10m, 1.5h or an image count such as 500kimg, got {text!r}"
    )


class TrainingClock:
    """Seconds spent training: runs between ``start()`` and ``pause()``; ``now`` is injectable (a fake clock)."""

    def __init__(self, now: Callable[[], float] | None = None, elapsed: float = 0.0) -> None:
        self.now = now or time.perf_counter
        self._before, self._since = elapsed, None
        self.paused_at: float | None = None  # when training last stopped (the clock's own time)

    def start(self) -> None:
        if self._since is None:
            self._since = self.now()

    def pause(self) -> None:
        if self._since is not None:
            self.paused_at = self.now()
            self._before += self.paused_at - self._since
            self._since = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        running = self._since is not None
        self.pause()
        try:
            yield
        finally:
            if running:
                self.start()

    def since_pause(self) -> float | None:
        """Seconds since training last paused (the last evaluation and checkpoint), None if it never ran."""
        return None if self.paused_at is None else self.now() - self.paused_at

    def elapsed(self) -> float:
        return self._before + (self.now() - self._since if self._since is not None else 0.0)


class Budget:
    """How much of the run's budget is used, updated once per optimizer step with values every process agrees on."""

    def __init__(self, seconds: float, images: int, total_steps: int | None) -> None:
        self.seconds, self.images, self.total_steps = seconds, images, total_steps
        self.train_time_s, self.images_seen, self.step = 0.0, 0, 0

    @property
    def active(self) -> bool:
        return self.seconds > 0 or self.images > 0

    @property
    def fraction(self) -> float:
        """The largest fraction of any budget used, in [0, 1]."""
        parts = [0.0]
        if self.seconds > 0:
            parts.append(self.train_time_s / self.seconds)
        if self.images > 0:
            parts.append(self.images_seen / self.images)
        if self.total_steps:
            parts.append(self.step / self.total_steps)
        return min(max(parts), 1.0)

    def update(self, train_time_s: float, images: int, step: int) -> None:
        self.train_time_s, self.images_seen, self.step = train_time_s, self.images_seen + images, step

    def exhausted(self) -> str | None:
        """Why the run stops now (a time or image budget used up), or None; ``epochs`` ends a run in the loop."""
        if self.seconds > 0 and self.train_time_s >= self.seconds:
            return f"time limit of {self.seconds / 60:g} minutes of training reached"
        if self.images > 0 and self.images_seen >= self.images:
            return f"budget of {self.images:,} training images reached"
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"train_time_s": self.train_time_s, "images_seen": self.images_seen}

    def load_state_dict(self, state: dict[str, Any], step: int) -> None:
        """Checkpoints written before budgets existed have no such state: the count starts again."""
        self.train_time_s = float(state.get("train_time_s", 0.0))
        self.images_seen = int(state.get("images_seen", 0))
        self.step = step


def expected_epochs(budget: Budget, epochs: int | None, images_per_epoch: int) -> float | None:
    """How many epochs the run will last: known from the start for ``epochs`` or an image budget, estimated from the
    pace so far for a time budget (None before a first epoch is done); the shortest when there are several."""
    lengths = []
    if epochs is not None:
        lengths.append(float(epochs))
    if budget.images > 0:
        lengths.append(budget.images / images_per_epoch)
    if budget.seconds > 0:
        if budget.images_seen < images_per_epoch or budget.train_time_s <= 0:
            return None
        lengths.append(budget.images_seen / images_per_epoch * budget.seconds / budget.train_time_s)
    return min(lengths) if lengths else None


class BudgetSchedule:
    """lr factor by budget fraction f: linear 0 -> 1 over ``warmup_fraction``, then cosine 1 -> ``min_lr / lr`` at 1.

    ``step()`` reads the fraction from ``budget`` (updated just before it), so it has the same calling convention
    as :class:`WarmupCosine`; its state is the budget's, which the checkpoint keeps.
    """

    def __init__(self, optimizer, budget: Budget, base_lr: float, min_lr: float, warmup_fraction: float) -> None:
        self.optimizer, self.budget = optimizer, budget
        self.base_lr, self.min_lr, self.warmup_fraction = base_lr, min_lr, warmup_fraction
        self._apply()

    def lr_at(self, fraction: float) -> float:
        if fraction < self.warmup_fraction:
            return self.base_lr * fraction / self.warmup_fraction
        t = min((fraction - self.warmup_fraction) / max(1.0 - self.warmup_fraction, 1e-12), 1.0)
        floor = min(self.min_lr, self.base_lr)
        return floor + (self.base_lr - floor) * 0.5 * (1 + math.cos(math.pi * t))

    def _apply(self) -> None:
        lr = self.get_last_lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self) -> None:
        self._apply()

    def get_last_lr(self) -> float:
        return self.lr_at(self.budget.fraction)

    def state_dict(self) -> dict[str, Any]:
        # last_step lets a run resumed without its budget continue per step (WarmupCosine)
        return {"fraction": self.budget.fraction, "last_step": self.budget.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._apply()  # the fraction comes from the budget's own state


def build_schedule(cfg: TrainConfig, optimizer, steps_per_epoch: int) -> tuple[Any, Budget]:
    """The lr schedule and the budget it follows: over the budget when there is one, else per step over epochs."""
    epochs = planned_epochs(cfg)
    total_steps = steps_per_epoch * epochs if epochs else None
    budget = Budget(cfg.time_limit_minutes * 60, cfg.budget_images, total_steps)
    if budget.active:
        return BudgetSchedule(optimizer, budget, cfg.lr, cfg.min_lr, cfg.warmup_fraction), budget
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    return WarmupCosine(optimizer, cfg.lr, cfg.min_lr, warmup, total_steps or 1), budget
