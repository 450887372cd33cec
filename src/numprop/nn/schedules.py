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
    """Base class: a constant learning rate, ``peak_lr`` throughout.

    Subclasses override ``lr``, and ``epoch_end``, ``state`` and ``load_state``
    when they keep state that depends on the run.

    Parameters
    ----------
    peak_lr : float
        The largest (usually the initial) learning rate, > 0 and finite.

    Raises
    ------
    ConfigError
        If ``peak_lr`` is not a positive finite number.
    """

    def __init__(self, peak_lr: float):
        if not (isinstance(peak_lr, (int, float)) and math.isfinite(peak_lr) and peak_lr > 0):
            raise ConfigError(f"learning rate must be a positive number, got {peak_lr!r}")
        self.peak_lr = float(peak_lr)

    def lr(self, t: float, total: int) -> float:
        """The learning rate after ``t`` of ``total`` epochs.

        Parameters
        ----------
        t : float
            Epochs done so far, fractional within an epoch (2.5 = halfway
            through the third).
        total : int
            The planned number of epochs.

        Returns
        -------
        float
        """
        return self.peak_lr

    def epoch_end(self, metric: float) -> None:
        """Called by the Trainer after each epoch with the monitored metric (validation loss)."""
        pass

    def state(self) -> dict:
        """What changes during a run, for checkpoints (JSON-able; empty by default)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what ``state()`` returned."""
        pass

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """The base learning rate throughout.

    Parameters
    ----------
    peak_lr : float
        The learning rate, > 0.
    """


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs.

    ``lr = peak_lr * gamma ** (floor(t) // step_size)``.

    Parameters
    ----------
    peak_lr : float
        The initial learning rate, > 0.
    step_size : int, default 10
        Epochs between reductions, >= 1.
    gamma : float, default 0.1
        Factor per reduction, in (0, 1].

    Raises
    ------
    ConfigError
        For ``step_size < 1`` or ``gamma`` outside (0, 1].
    """

    def __init__(self, peak_lr: float, step_size: int = 10, gamma: float = 0.1):
        super().__init__(peak_lr)
        if step_size < 1 or not 0 < gamma <= 1:
            raise ConfigError("StepDecay needs step_size >= 1 and 0 < gamma <= 1")
        self.step_size, self.gamma = step_size, gamma

    def lr(self, t, total):
        """``peak_lr * gamma ** (floor(t) // step_size)``."""
        return self.peak_lr * self.gamma ** (int(t) // self.step_size)


class Exponential(Schedule):
    """Multiply the rate by ``gamma`` every epoch, smoothly within epochs.

    ``lr = peak_lr * gamma ** t``.

    Parameters
    ----------
    peak_lr : float
        The initial learning rate, > 0.
    gamma : float, default 0.95
        Factor per epoch, in (0, 1].

    Raises
    ------
    ConfigError
        For ``gamma`` outside (0, 1].
    """

    def __init__(self, peak_lr: float, gamma: float = 0.95):
        super().__init__(peak_lr)
        if not 0 < gamma <= 1:
            raise ConfigError("Exponential needs 0 < gamma <= 1")
        self.gamma = gamma

    def lr(self, t, total):
        """``peak_lr * gamma ** t``."""
        return self.peak_lr * self.gamma**t


class WarmupCosine(Schedule):
    """Linear warm-up from 0 over ``warmup`` epochs, then cosine decay to ``min_lr``.

    After the warm-up, with ``progress = (t - warmup) / (total - warmup)``:
    ``lr = min_lr + (peak_lr - min_lr) * (1 + cos(pi * progress)) / 2``, which
    reaches ``min_lr`` at the end of the planned ``total`` epochs.

    Parameters
    ----------
    peak_lr : float
        The rate at the end of the warm-up, > 0.
    warmup : float, default 0.0
        Warm-up length in epochs (fractional allowed), >= 0.
    min_lr : float, default 0.0
        The final rate, >= 0.

    Raises
    ------
    ConfigError
        For a negative ``warmup`` or ``min_lr``.
    """

    def __init__(self, peak_lr: float, warmup: float = 0.0, min_lr: float = 0.0):
        super().__init__(peak_lr)
        if warmup < 0 or min_lr < 0:
            raise ConfigError("WarmupCosine needs warmup >= 0 and min_lr >= 0")
        self.warmup, self.min_lr = warmup, min_lr

    def lr(self, t, total):
        """``peak_lr * t / warmup`` during the warm-up, then the cosine decay."""
        if t < self.warmup:
            return self.peak_lr * t / self.warmup
        span = max(total - self.warmup, 1e-12)
        progress = min(1.0, (t - self.warmup) / span)
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class ReduceOnPlateau(Schedule):
    """Multiply the rate by ``factor`` when the metric stops improving.

    The metric (validation loss, lower is better) must improve on its best by
    more than ``threshold`` (relative); after more than ``patience`` epochs
    without such an improvement, the rate is multiplied by ``factor``.

    Parameters
    ----------
    peak_lr : float
        The initial learning rate, > 0.
    factor : float, default 0.5
        Factor per reduction, in (0, 1).
    patience : int, default 2
        Epochs without improvement that are tolerated, >= 0.
    threshold : float, default 1e-3
        Relative improvement that counts.
    min_lr : float, default 0.0
        The rate never goes below this.

    Raises
    ------
    ConfigError
        For ``factor`` outside (0, 1) or a negative ``patience``.
    """

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
        """The current rate, ``max(min_lr, peak_lr * factor ** reductions)``."""
        return max(self.min_lr, self.peak_lr * self._scale)

    def epoch_end(self, metric):
        """Record the epoch's metric; reduce the rate after too many epochs without progress."""
        if metric < self._best * (1 - self.threshold):
            self._best, self._bad_epochs = metric, 0
        else:
            self._bad_epochs += 1
            if self._bad_epochs > self.patience:
                self._scale *= self.factor
                self._bad_epochs = 0

    def state(self):
        """``{"best", "bad_epochs", "scale"}``: the plateau bookkeeping."""
        return {"best": self._best, "bad_epochs": self._bad_epochs, "scale": self._scale}

    def load_state(self, state):
        """Restore what ``state()`` returned."""
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
