"""The training loop: ``Trainer``, its ``History`` and the ``Callback`` hooks.

The Trainer only computes. Everything with a side effect (printing, progress
bars, checkpoints, logs, early stopping, the NaN guard) is a Callback, in
``numprop.training.callbacks``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np

from numprop.errors import ConfigError
from numprop.nn.losses import Loss
from numprop.nn.module import Module
from numprop.nn.optim import Optimizer
from numprop.nn.schedules import Constant, Schedule

Batches = Iterable[tuple[np.ndarray, np.ndarray]]
FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


class History:
    """Per-epoch records: epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds.

    ``history["val_acc"]`` is one field over all epochs, as a list; ``len`` is
    the number of epochs recorded. Accuracies are fractions in [0, 1], ``lr``
    the rate at the epoch's last step, ``seconds`` wall-clock time; fields that
    were not measured (no validation set, a loss without accuracy) are None.

    Parameters
    ----------
    records : sequence of dict, optional
        Earlier records (a resumed run's), copied.

    Attributes
    ----------
    records : list of dict
        One dict per epoch, keys as in ``FIELDS``.
    stop_reason : str
        Why training stopped early (set by a callback), or "".
    """

    def __init__(self, records: Sequence[dict] = ()):
        self.records = [dict(r) for r in records]
        self.stop_reason = ""

    def append(self, record: dict) -> None:
        """Add one epoch's record."""
        self.records.append(record)

    def __getitem__(self, key: str) -> list:
        """One field over all epochs, e.g. ``history["val_loss"]``."""
        return [r[key] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def to_list(self) -> list[dict]:
        """Copies of the records, JSON-able."""
        return [dict(r) for r in self.records]


class Callback:
    """Hooks called by ``Trainer.fit``; override the ones you need.

    Each hook gets the Trainer first: a callback may read ``trainer.model``,
    ``trainer.history`` or ``trainer.optimizer``, and stop the run by setting
    ``trainer.stop_training = True``. An exception raised in a hook ends ``fit``.
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once at the start of ``fit``, before the first epoch."""

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        """Called before each epoch; ``epoch`` counts from 0."""

    def on_batch_begin(self, trainer: Trainer, batch: int) -> None:
        """Called before each optimizer step; ``batch`` is its index in the epoch, from 0."""

    def on_batch_end(self, trainer: Trainer, batch: int, loss: float, size: int) -> None:
        """Called after each optimizer step.

        Parameters
        ----------
        trainer : Trainer
        batch : int
            Index of the batch in the epoch, from 0.
        loss : float
            The batch's mean loss.
        size : int
            Number of examples in the batch.
        """

    def on_epoch_end(self, trainer: Trainer, record: dict) -> None:
        """Called after each epoch with its record (already in ``trainer.history``)."""

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once when ``fit`` ends, normally or stopped early."""

    def state(self) -> tuple[dict[str, np.ndarray], dict] | None:
        """What this callback must keep for a resumed run to go on exactly: (arrays, JSON).

        None (the default) for callbacks without state; ``Trainer.state`` saves
        the others with the checkpoint and ``Trainer.load_state`` gives it back.
        """
        return None

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore what ``state()`` returned."""


class Trainer:
    """Minibatch training of ``model`` with ``loss`` and ``optimizer``.

    Parameters
    ----------
    model : Module
        Maps a batch x (B, D) to outputs (B, C).
    loss : Loss
        Any object with ``forward(outputs, target) -> float``, ``backward() ->
        (B, C)`` and, for accuracy, ``count_correct() -> int | None``
        (``numprop.nn.losses.Loss``).
    optimizer : Optimizer
        Its ``lr`` is the current rate, set from ``schedule`` before every step.
    schedule : Schedule, optional
        Owns the peak rate; without one, the optimizer's rate at construction
        is kept throughout (``Constant(optimizer.lr)``).
    callbacks : iterable of Callback
        Side effects: printing, checkpoints, early stopping, ...
    fused : bool
        Run the backward pass inside ``optimizer.fused_backward()``, so the
        optimizer may take gradients straight from it (same numbers, less
        memory traffic).

    ``fit(train, val, epochs)`` iterates ``train`` once per epoch: any
    re-iterable of (x (B, D) float, y (B,)) batches with a ``len``, such as
    ``numprop.data.batches.BatchLoader``. ``outputs`` holds the model's
    outputs (B, C) on the last training batch, for callbacks to look at.

    Raises
    ------
    ConfigError
        If ``loss`` lacks a ``forward`` or ``backward`` method.
    """

    def __init__(
        self,
        model: Module,
        loss: Loss,
        optimizer: Optimizer,
        schedule: Schedule | None = None,
        callbacks: Iterable[Callback] = (),
        fused: bool = True,
    ):
        for method in ("forward", "backward"):
            if not callable(getattr(loss, method, None)):
                raise ConfigError(
                    f"the loss needs a {method}() method (see numprop.nn.losses.Loss)"
                )
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.schedule = schedule if schedule is not None else Constant(optimizer.lr)
        self.callbacks = list(callbacks)
        self.fused = fused
        self.history = History()
        self.stop_training = False
        self.epochs = self.steps_per_epoch = 0
        self.outputs: np.ndarray | None = None  # the model's outputs on the last batch

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything needed to resume training: (arrays, JSON-able values).

        The model's weights are saved separately (``numprop.save``); this holds
        the optimizer's buffers, the schedule, the history and the epoch count.

        Returns
        -------
        arrays : dict of str to ndarray
            The optimizer's state arrays (copies), by ``"<state>.<parameter>"``.
        meta : dict
            ``{"optimizer": ..., "schedule": ..., "history": [...]}``, JSON-able;
            the epoch count is the history's length.
        """
        opt = self.optimizer.state_dict()
        arrays = dict(opt["arrays"])
        callbacks = {}
        for key, cb in self._keyed_callbacks():
            kept = cb.state()
            if kept is not None:
                cb_arrays, callbacks[key] = kept
                arrays.update((f"callback.{key}.{name}", a) for name, a in cb_arrays.items())
        meta = {
            "optimizer": {k: v for k, v in opt.items() if k != "arrays"},
            "schedule": self.schedule.state(),
            "history": self.history.to_list(),
            "stop_reason": self.history.stop_reason,
            "callbacks": callbacks,
        }
        return arrays, meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore what ``state()`` returned (the model's weights are loaded by the caller).

        Callbacks get back the state saved under their key (class name, and a
        count when a class appears twice); those without saved state keep theirs.
        """
        ours = {k: v for k, v in arrays.items() if not k.startswith("callback.")}
        self.optimizer.load_state_dict({**meta["optimizer"], "arrays": ours})
        self.schedule.load_state(meta["schedule"])
        self.history = History(meta["history"])
        self.history.stop_reason = meta.get("stop_reason", "")
        saved = meta.get("callbacks", {})
        for key, cb in self._keyed_callbacks():
            if key in saved:
                prefix = f"callback.{key}."
                mine = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
                cb.load_state(mine, saved[key])

    def _keyed_callbacks(self) -> list[tuple[str, Callback]]:
        """Callbacks with stable keys: class name, then ".1", ".2" for repeats of a class."""
        seen: dict[str, int] = {}
        keyed = []
        for cb in self.callbacks:
            name = type(cb).__name__
            keyed.append((name if name not in seen else f"{name}.{seen[name]}", cb))
            seen[name] = seen.get(name, 0) + 1
        return keyed

    def _call(self, hook: str, *args) -> None:
        """Call ``hook`` on every callback, in order."""
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _count_correct(self) -> int | None:
        """The loss's ``count_correct()``, or None where it has none."""
        count = getattr(self.loss, "count_correct", None)
        return None if count is None else count()

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int | None]:
        """One optimizer step on a batch; returns (mean loss, number correct or None).

        Parameters
        ----------
        x : ndarray, shape (B, D)
        y : ndarray, shape (B,) or (B, C)
            Targets, as the loss takes them.

        Returns
        -------
        loss : float
            The batch's mean loss, before the step.
        correct : int or None
            Examples classified right, None where the loss counts none.
        """
        outputs = self.outputs = self.model.forward(x)
        value = self.loss.forward(outputs, y)
        correct = self._count_correct()
        doutputs = self.loss.backward()
        self.optimizer.zero_grad()
        if self.fused:
            with self.optimizer.fused_backward():
                self.model.backward_params(doutputs)
        else:
            self.model.backward_params(doutputs)
        self.optimizer.step()
        return value, correct

    def evaluate(self, batches: Batches) -> tuple[float, float | None]:
        """(mean loss, accuracy or None) over batches, in eval mode.

        The model is put back in training mode afterwards.

        Parameters
        ----------
        batches : iterable of (ndarray (B, D), ndarray (B,))

        Returns
        -------
        loss : float
            Mean over all examples (batches weighted by their size).
        accuracy : float or None
            Fraction right, in [0, 1]; None where the loss counts none.

        Raises
        ------
        ConfigError
            If ``batches`` yields nothing.
        """
        self.model.eval()
        total = 0
        correct: int | None = 0
        loss_sum = 0.0
        try:
            for x, y in batches:
                outputs = self.model.forward(x)
                loss_sum += self.loss.forward(outputs, y) * len(y)
                correct = _plus(correct, self._count_correct())
                total += len(y)
        finally:
            self.model.train()
        if total == 0:
            raise ConfigError("nothing to evaluate: no batches")
        return loss_sum / total, None if correct is None else correct / total

    def fit(self, train: Batches, val: Batches | None = None, epochs: int = 1) -> History:
        """Train until ``epochs`` epochs are in the history; returns the history.

        A resumed run (history loaded with ``load_state``) goes on from where it
        was. The learning rate comes from the schedule before every step; a
        callback may stop training early (``stop_training``).

        Parameters
        ----------
        train : re-iterable of (ndarray (B, D), ndarray (B,)), with ``len``
            Iterated once per epoch (e.g. a shuffling ``BatchLoader``).
        val : iterable of batches, optional
            Evaluated after each epoch (``val_loss``, ``val_acc``); the schedule
            and callbacks then monitor it.
        epochs : int, default 1
            Total number of epochs, counting those already in the history.

        Returns
        -------
        History
            ``self.history``, one record per epoch.

        Raises
        ------
        ConfigError
            For ``epochs < 1`` or a training set with no batches.
        """
        if epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {epochs}")
        steps = len(train)
        if steps == 0:
            raise ConfigError("the training set gives no batches")
        self.epochs, self.stop_training, self.steps_per_epoch = epochs, False, steps
        start_epoch = len(self.history)
        self.model.train()
        self._call("on_train_begin")
        for epoch in range(start_epoch, epochs):
            if self.stop_training:  # a resumed run that had already decided to stop
                break
            self._call("on_epoch_begin", epoch)
            started = time.perf_counter()
            loss_sum, seen = 0.0, 0
            correct: int | None = 0
            for i, (x, y) in enumerate(train):
                self.optimizer.lr = self.schedule.lr(epoch + i / steps, epochs)
                self._call("on_batch_begin", i)
                value, right = self.train_step(x, y)
                loss_sum += value * len(y)
                correct = _plus(correct, right)
                seen += len(y)
                self._call("on_batch_end", i, value, len(y))
                if self.stop_training:
                    break
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(seen, 1),
                "train_acc": None if correct is None else correct / max(seen, 1),
                "val_loss": None,
                "val_acc": None,
                "lr": self.optimizer.lr,
            }
            if val is not None and not self.stop_training:
                record["val_loss"], record["val_acc"] = self.evaluate(val)
            record["seconds"] = time.perf_counter() - started
            self.history.append(record)
            metric = record["val_loss"] if record["val_loss"] is not None else record["train_loss"]
            self.schedule.epoch_end(metric)
            self._call("on_epoch_end", record)
            if self.stop_training:
                break
        self._call("on_train_end")
        return self.history


def _plus(total: int | None, count: int | None) -> int | None:
    """A running count of right answers, None once any batch has none."""
    return None if total is None or count is None else total + count
