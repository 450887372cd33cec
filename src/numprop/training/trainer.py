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
from numprop.nn.losses import SoftmaxCrossEntropy
from numprop.nn.module import Module
from numprop.nn.optim import Optimizer
from numprop.nn.schedules import Schedule

Batches = Iterable[tuple[np.ndarray, np.ndarray]]
FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


class History:
    """Per-epoch records: epoch, train_loss, train_acc, val_loss, val_acc, lr, seconds."""

    def __init__(self, records: Sequence[dict] = ()):
        self.records = [dict(r) for r in records]
        self.stop_reason = ""

    def append(self, record: dict) -> None:
        self.records.append(record)

    def __getitem__(self, key: str) -> list:
        return [r[key] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def to_list(self) -> list[dict]:
        return [dict(r) for r in self.records]


class Callback:
    """Hooks called by ``Trainer.fit``; override the ones you need."""

    def on_train_begin(self, trainer: Trainer) -> None: ...
    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Trainer, batch: int, loss: float, size: int) -> None: ...
    def on_epoch_end(self, trainer: Trainer, record: dict) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


class Trainer:
    """Minibatch training of ``model`` with ``loss`` and ``optimizer``.

    ``fit(train, val, epochs)`` iterates ``train`` once per epoch: any
    re-iterable of (x (B, D) float, y (B,) int) batches with a ``len``, such
    as ``numprop.batches.BatchLoader``. ``fused=True`` lets the optimizer take
    gradients straight from the backward pass (same numbers, less memory traffic).
    """

    def __init__(self, model: Module, loss: SoftmaxCrossEntropy, optimizer: Optimizer,
                 schedule: Schedule | None = None, callbacks: Iterable[Callback] = (),
                 fused: bool = True):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.schedule = schedule or Schedule()
        self.callbacks = list(callbacks)
        self.fused = fused
        self.history = History()
        self.stop_training = False
        self.epochs = self.steps_per_epoch = 0
        self.base_lr = optimizer.lr   # the schedule's peak; optimizer.lr moves during fit

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything needed to resume training: (arrays, JSON-able values).

        The model's weights are saved separately (``numprop.save``); this holds
        the optimizer's buffers, the schedule, the history and the epoch count.
        """
        opt = self.optimizer.state_dict()
        meta = {"optimizer": {k: v for k, v in opt.items() if k != "arrays"},
                "schedule": self.schedule.state(), "history": self.history.to_list(),
                "base_lr": self.base_lr}
        return opt["arrays"], meta

    def load_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore what ``state()`` returned (the model's weights are loaded by the caller)."""
        self.optimizer.load_state_dict({**meta["optimizer"], "arrays": arrays})
        self.optimizer.lr = meta["base_lr"]
        self.schedule.load_state(meta["schedule"])
        self.history = History(meta["history"])

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One optimizer step on a batch; returns (mean loss, number correct)."""
        logits = self.model.forward(x)
        value = self.loss.forward(logits, y)
        correct = self.loss.count_correct()
        dlogits = self.loss.backward()
        self.optimizer.zero_grad()
        if self.fused:
            with self.optimizer.fused_backward():
                self.model.backward_params(dlogits)
        else:
            self.model.backward_params(dlogits)
        self.optimizer.step()
        return value, correct

    def evaluate(self, batches: Batches) -> tuple[float, float]:
        """(mean loss, accuracy) over batches, in eval mode."""
        self.model.eval()
        total = correct = 0
        loss_sum = 0.0
        try:
            for x, y in batches:
                logits = self.model.forward(x)
                loss_sum += self.loss.forward(logits, y) * len(y)
                correct += self.loss.count_correct()
                total += len(y)
        finally:
            self.model.train()
        if total == 0:
            raise ConfigError("nothing to evaluate: no batches")
        return loss_sum / total, correct / total

    def fit(self, train: Batches, val: Batches | None = None, epochs: int = 1) -> History:
        if epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {epochs}")
        steps = len(train)
        if steps == 0:
            raise ConfigError("the training set gives no batches")
        self.epochs, self.stop_training, self.steps_per_epoch = epochs, False, steps
        base_lr = self.base_lr = self.optimizer.lr
        start_epoch = len(self.history)
        self.model.train()
        self._call("on_train_begin")
        for epoch in range(start_epoch, epochs):
            self._call("on_epoch_begin", epoch)
            started = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            for i, (x, y) in enumerate(train):
                self.optimizer.lr = self.schedule.lr(base_lr, epoch + i / steps, epochs)
                value, right = self.train_step(x, y)
                loss_sum += value * len(y)
                correct += right
                seen += len(y)
                self._call("on_batch_end", i, value, len(y))
                if self.stop_training:
                    break
            record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1),
                      "train_acc": correct / max(seen, 1), "val_loss": None, "val_acc": None,
                      "lr": self.optimizer.lr}
            if val is not None and not self.stop_training:
                record["val_loss"], record["val_acc"] = self.evaluate(val)
            record["seconds"] = time.perf_counter() - started
            self.history.append(record)
            metric = record["val_loss"] if record["val_loss"] is not None else record["train_loss"]
            self.schedule.epoch_end(metric)
            self._call("on_epoch_end", record)
            if self.stop_training:
                break
        self.optimizer.lr = base_lr
        self._call("on_train_end")
        return self.history
