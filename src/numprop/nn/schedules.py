"""Learning-rate schedules.

A schedule owns the peak learning rate, ``peak_lr``, and maps training
progress to the rate of the moment: ``lr(t, total)``, where ``t`` is the
number of epochs done so far as a float (2.5 = halfway through the third
epoch) and ``total`` the planned number of epochs. The Trainer sets
``optimizer.lr`` (always the current rate) from it before every step, and
calls ``epoch_end(metric)`` after each epoch (used by ReduceOnPlateau).
"""

from __future__ import annotations

import math

from numprop.errors import ConfigError
from numprop.registry import Registry


class Schedule:
    """Base class: a constant learning rate, ``peak_lr`` throughout."""

    def __init__(self, peak_lr: float):
        if not (isinstance(peak_lr, (int, float)) and math.isfinite(peak_lr) and peak_lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {peak_lr!r}")
        self.peak_lr = float(peak_lr)

    def lr(self, t: float, total: int) -> float:
        """The learning rate after ``t`` of ``total`` epochs."""
        return self.peak_lr

    def epoch_end(self, metric: float) -> None:
        pass

    def state(self) -> dict:
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """The base learning rate throughout."""


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, peak_lr: float, step_size: int = 10, gamma: float = 0.1):
        super().__init__(peak_lr)
        if step_size < 1 or not 0 < gamma <= 1:
            raise ConfigError("StepDecay needs step_size >= 1 and 0 < gamma <= 1")
        self.step_size, self.gamma = step_size, gamma

    def lr(self, t, total):
        return self.peak_lr * self.gamma ** (int(t) // self.step_size)


class Exponential(Schedule):
    """Multiply the rate by ``gamma`` every epoch, smoothly within epochs."""

    def __init__(self, peak_lr: float, gamma: float = 0.95):
        super().__init__(peak_lr)
        if not 0 < gamma <= 1:
            raise ConfigError("Exponential needs 0 < gamma <= 1")
        self.gamma = gamma

    def lr(self, t, total):
        return self.peak_lr * self.gamma**t


class WarmupCosine(Schedule):
    """Linear warm-up from 0 over ``warmup`` epochs, then cosine decay to ``min_lr``."""

    def __init__(self, peak_lr: float, warmup: float = 0.0, min_lr: float = 0.0):
        super().__init__(peak_lr)
        if warmup < 0 or min_lr < 0:
            raise ConfigError("WarmupCosine needs warmup >= 0 and min_lr >= 0")
        self.warmup, self.min_lr = warmup, min_lr

    def lr(self, t, total):
        if t < self.warmup:
            return self.peak_lr * t / self.warmup
        span = max(total - self.warmup, 1e-12)
        progress = min(1.0, (t - self.warmup) / span)
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class ReduceOnPlateau(Schedule):
    """Multiply the rate by ``factor`` when the metric (validation loss) has not
    improved by more than ``threshold`` (relative) for ``patience`` epochs."""

    def __init__(
        self,
        peak_lr: float,
        factor: float = 0.5,
        patience: int = 2,
        threshold: float = 1e-3,
        min_lr: float = 0.0,
    ):
        super().__init__(peak_lr)
        if not 0 < factor < 1 or patience < 0:
            raise ConfigError("ReduceOnPlateau needs 0 < factor < 1 and patience >= 0")
        self.factor, self.patience, self.threshold, self.min_lr = (
            factor,
            patience,
            threshold,
            min_lr,
        )
        self._best = math.inf
        self._bad_epochs = 0
        self._scale = 1.0

    def lr(self, t, total):
        return max(self.min_lr, self.peak_lr * self._scale)

    def epoch_end(self, metric):
        if metric < self._best * (1 - self.threshold):
            self._best, self._bad_epochs = metric, 0
        else:
            self._bad_epochs += 1
            if self._bad_epochs > self.patience:
                self._scale *= self.factor
                self._bad_epochs = 0

    def state(self):
        return {"best": self._best, "bad_epochs": self._bad_epochs, "scale": self._scale}

    def load_state(self, state):
        self._best, self._bad_epochs, self._scale = (
            state["best"],
            state["bad_epochs"],
            state["scale"],
        )


# The one table that turns schedule names (CLI, configs) into classes.
SCHEDULES = Registry("schedule")
SCHEDULES.add("constant", Constant)
SCHEDULES.add("step", StepDecay)
SCHEDULES.add("exponential", Exponential)
SCHEDULES.add("cosine", WarmupCosine)
SCHEDULES.add("plateau", ReduceOnPlateau)
