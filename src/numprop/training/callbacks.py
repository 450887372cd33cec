"""Callbacks: everything with a side effect around ``Trainer.fit``.

Printing, progress bars, logs, checkpoints, early stopping, the NaN guard and
the moving average of the weights live here, so the Trainer only computes and
a test or a notebook can run the same loop silently.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from numprop._fast.blas import axpby
from numprop.errors import ConfigError, TrainingError
from numprop.training.trainer import FIELDS, Callback


class ProgressBar(Callback):
    """A tqdm bar per epoch: batches, running loss, images per second, time left.

    Parameters
    ----------
    file : file-like, optional
        Where the bar is drawn; ``sys.stderr`` by default.
    """

    def __init__(self, file=None):
        self.file = file or sys.stderr
        self.bar = None

    def on_epoch_begin(self, trainer, epoch):
        from tqdm import tqdm

        self.bar = tqdm(
            total=trainer.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{trainer.epochs}",
            unit="batch",
            leave=False,
            file=self.file,
            dynamic_ncols=True,
        )
        self.loss_sum, self.seen, self.started = 0.0, 0, time.perf_counter()

    def on_batch_end(self, trainer, batch, loss, size):
        self.loss_sum += loss * size
        self.seen += size
        self.bar.update(1)
        if batch % 10 == 0:
            rate = self.seen / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix_str(
                f"loss {self.loss_sum / self.seen:.4f}, {rate:,.0f} img/s", refresh=False
            )

    def on_epoch_end(self, trainer, record):
        if self.bar is not None:
            self.bar.close()

    def on_train_end(self, trainer):
        self.on_epoch_end(trainer, {})


def format_record(record: dict, epochs: int) -> str:
    """One line: epoch, losses, accuracies, learning rate, seconds.

    Parameters
    ----------
    record : dict
        A ``History`` record.
    epochs : int
        The planned number of epochs (for "epoch 3/20").

    Returns
    -------
    str
        E.g. ``"epoch  3/20  train loss 1.4312 acc 49.10%  val loss ...  lr 0.01  12.3 s"``.
    """

    def loss_and_accuracy(split):
        text = f"{split} loss {record[split + '_loss']:.4f}"
        accuracy = record.get(split + "_acc")
        return text if accuracy is None else f"{text} acc {100 * accuracy:5.2f}%"

    width = len(str(epochs))
    parts = [f"epoch {record['epoch']:>{width}}/{epochs}", loss_and_accuracy("train")]
    if record.get("val_loss") is not None:
        parts.append(loss_and_accuracy("val"))
    parts += [f"lr {record['lr']:.3g}", f"{record['seconds']:.1f} s"]
    return "  ".join(parts)


class EpochSummary(Callback):
    """Prints one line per epoch (``format_record``).

    Parameters
    ----------
    print_fn : callable, default print
        Called with each line.
    """

    def __init__(self, print_fn=print):
        self.print_fn = print_fn

    def on_epoch_end(self, trainer, record):
        self.print_fn(format_record(record, trainer.epochs))


def _better(mode: str, value: float, best: float, min_delta: float) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` ("min": lower is better)."""
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _monitored(record: dict, monitor: str) -> float:
    """The monitored field of a record; a ConfigError where it was not recorded."""
    value = record.get(monitor)
    if value is None:
        raise ConfigError(
            f"cannot monitor '{monitor}': it is not recorded "
            f"(no validation set?); choose one of {', '.join(FIELDS[1:5])}"
        )
    return value


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; restore the best weights.

    Fields ending in "loss" must decrease, others (accuracies) increase. The
    reason for stopping goes to ``trainer.history.stop_reason``.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A History field: "train_loss", "train_acc", "val_loss" or "val_acc".
    patience : int, default 3
        Epochs without improvement before stopping.
    min_delta : float, default 0.0
        Smallest change that counts as an improvement.
    restore_best : bool, default True
        Load the best epoch's weights into the model when training ends.

    Raises
    ------
    ConfigError
        At the end of an epoch, if ``monitor`` is not recorded (e.g. "val_loss"
        without a validation set).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best: bool = True,
    ):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = "min" if monitor.endswith("loss") else "max"
        self.restore_best = restore_best
        self.best, self.best_state, self.best_epoch, self.wait = None, None, None, 0

    def on_epoch_end(self, trainer, record):
        """Keep the best weights so far; stop after ``patience`` epochs without progress."""
        value = _monitored(record, self.monitor)
        if self.best is None or _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, record["epoch"], 0
            self.best_state = trainer.model.state_dict()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True
                trainer.history.stop_reason = (
                    f"early stopping: {self.monitor} has not improved for {self.patience} "
                    f"epochs (best {self.best:.4f} at epoch {self.best_epoch})"
                )

    def on_train_begin(self, trainer):
        """A resumed run that had run out of patience stops before another epoch."""
        if self.best is not None and self.wait >= self.patience:
            trainer.stop_training = True

    def on_train_end(self, trainer):
        """Load the best epoch's weights into the model (with ``restore_best``)."""
        if self.restore_best and self.best_state is not None:
            trainer.model.load_state_dict(self.best_state)

    def state(self):
        """The best value, its epoch and weights, and the epochs waited since."""
        meta = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}
        return dict(self.best_state or {}), meta

    def load_state(self, arrays, meta):
        self.best, self.best_epoch, self.wait = meta["best"], meta["best_epoch"], meta["wait"]
        self.best_state = {k: v.copy() for k, v in arrays.items()} or None


class StopAfter(Callback):
    """Stops the run once ``epochs`` epochs are in its history, to be resumed later.

    Unlike early stopping it leaves no stop reason behind: the checkpoint
    resumes into the remaining epochs, on the schedule of the whole run.
    """

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_begin(self, trainer):
        """A resumed run that has its epochs already trains none."""
        if len(trainer.history) >= self.epochs:
            trainer.stop_training = True

    def on_epoch_end(self, trainer, record):
        if len(trainer.history) >= self.epochs:
            trainer.stop_training = True


class NaNGuard(Callback):
    """Stop at once when the loss becomes NaN/inf or grows past ``factor`` times its first value.

    Parameters
    ----------
    factor : float, default 10.0
        A batch loss above ``factor * max(first loss, 1e-3)`` counts as divergence.

    Raises
    ------
    TrainingError
        From the batch where training diverged, with a suggestion (a lower
        learning rate, a warm-up, BatchNorm).
    """

    def __init__(self, factor: float = 10.0):
        self.factor = factor
        self.first = None

    def on_batch_end(self, trainer, batch, loss, size):
        """Raise TrainingError if this batch's loss is not finite or has grown too far."""
        if self.first is None and math.isfinite(loss):
            self.first = loss
        diverged = self.first is not None and loss > self.factor * max(self.first, 1e-3)
        if not math.isfinite(loss) or diverged:
            what = (
                "is not a number"
                if math.isnan(loss)
                else (
                    "is infinite"
                    if not math.isfinite(loss)
                    else f"grew from {self.first:.4g} to {loss:.4g}"
                )
            )
            epoch = len(trainer.history) + 1
            raise TrainingError(
                f"training diverged: the loss {what} at epoch {epoch}, batch {batch + 1} "
                f"(learning rate {trainer.optimizer.lr:.3g}). Try a lower learning rate "
                f"(for example {trainer.schedule.peak_lr / 10:.3g}), a warm-up, or BatchNorm."
            )


class EMA(Callback):
    """An exponential moving average of the weights, updated after every optimizer step.

    For every parameter ``ema = decay * ema + (1 - decay) * w``, starting from
    the weights training starts with. The average of the last steps' weights
    is usually a better model than the last weights alone, late in training or
    with a noisy optimizer. ``with ema.swap(): ...`` puts the averages into the
    model (to evaluate or save it) and the training weights back afterwards,
    bit for bit; ``apply()`` puts them in for good. The averages are kept with
    the checkpoint (``state``), so a resumed run's average is the same as an
    uninterrupted one's. BatchNorm's running statistics are not averaged: the
    model's own go with the averaged weights.

    Parameters
    ----------
    decay : float, default 0.999
        In [0, 1): the old average's weight per optimizer step; the average
        spans about ``1 / (1 - decay)`` steps.
    every : int, default 1
        Update the average after every ``every``-th step only, with the decay
        ``decay ** every``: the same span, sampled more sparsely, for an
        ``every``-th of the cost (each update is a pass over all the weights,
        on a wide layer about as long as the optimizer step itself).

    Attributes
    ----------
    averages : dict of str to ndarray
        The average of each parameter, by dotted name, in the parameter's
        shape and dtype; empty until training begins (or a state is loaded).
    updates : int
        Updates of the average so far (optimizer steps / ``every``).

    Raises
    ------
    ConfigError
        For ``decay`` outside [0, 1); at the start of training, for loaded
        averages that do not match the model's parameters.
    """

    def __init__(self, decay: float = 0.999, every: int = 1):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"EMA decay must be in [0, 1), got {decay}")
        if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
            raise ConfigError(f"EMA every must be a whole number of steps >= 1, got {every!r}")
        self.decay, self.every = float(decay), int(every)
        self.averages: dict[str, np.ndarray] = {}
        self.updates = 0
        self.steps = 0  # optimizer steps seen, to know which ones update the average
        self.model = None
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (average, its parameter's data)

    def on_train_begin(self, trainer):
        """Start the averages from the model's weights, or check the loaded ones fit it."""
        self.model = trainer.model
        params = dict(trainer.model.named_parameters())
        if not self.averages:
            self.averages = {name: p.data.copy() for name, p in params.items()}
        self._check(params)
        for name, p in params.items():  # loaded averages in the model's dtype
            self.averages[name] = self.averages[name].astype(p.data.dtype, copy=False)
        self._pairs = [(self.averages[name], p.data) for name, p in params.items()]

    def on_batch_end(self, trainer, batch, loss, size):
        """Move each average towards the weights the optimizer step just made (every ``every``)."""
        self.steps += 1
        if self.steps % self.every:
            return
        decay = self.decay**self.every  # ``every`` steps' worth of decay in one update
        for average, weights in self._pairs:
            axpby(1.0 - decay, weights, decay, average)  # in place, no temporary
        self.updates += 1

    @contextmanager
    def swap(self, model=None):
        """Inside the block the model holds the averages; afterwards its own weights, exactly.

        Parameters
        ----------
        model : Module, optional
            The model averaged; by default the one trained last.

        Raises
        ------
        ConfigError
            Before any training (no averages yet), or for a model whose
            parameters are not the averaged ones.
        """
        params = self._params(model)
        kept = {name: p.data.copy() for name, p in params.items()}
        self._put(params, self.averages)
        try:
            yield
        finally:
            self._put(params, kept)

    def apply(self, model=None) -> None:
        """Put the averages into the model for good (e.g. before saving the final model).

        Raises
        ------
        ConfigError
            As ``swap``.
        """
        self._put(self._params(model), self.averages)

    def _params(self, model) -> dict:
        """The named parameters of ``model`` (or the trained one), checked against the averages."""
        model = model if model is not None else self.model
        if model is None or not self.averages:
            raise ConfigError("the EMA has no averages yet: train with it as a callback first")
        params = dict(model.named_parameters())
        self._check(params)
        return params

    def _check(self, params: dict) -> None:
        """A ConfigError unless the averages have the names and shapes of ``params``."""
        if set(params) != set(self.averages) or any(
            self.averages[name].shape != p.shape for name, p in params.items()
        ):
            raise ConfigError(
                "the EMA's averages do not match the model's parameters "
                "(a state saved for another model?)"
            )

    @staticmethod
    def _put(params: dict, arrays: dict) -> None:
        """Copy ``arrays`` into the parameters of the same names."""
        for name, p in params.items():
            np.copyto(p.data, arrays[name])
            p.changed()  # derived copies (bf16) are made again

    def state(self):
        """The averages (copies), the number of updates and of steps seen."""
        meta = {"updates": self.updates, "steps": self.steps}
        return {name: a.copy() for name, a in self.averages.items()}, meta

    def load_state(self, arrays, meta):
        self.averages = {name: a.copy() for name, a in arrays.items()}
        self.updates = int(meta["updates"])
        # Checkpoints from before ``every`` existed updated after every step.
        self.steps = int(meta.get("steps", self.updates))


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never half of it.

    Parameters
    ----------
    path : path-like
        The file; its folder must exist.
    text : str
        Written as UTF-8.

    Raises
    ------
    WriteError
        If the file cannot be written (disk full, no permission); the old one
        is left as it was (see ``numprop.training.io.atomic_write``).
    """
    from numprop.training.io import atomic_write

    data = text.encode()
    atomic_write(path, lambda f: f.write(data))


class HistoryLogger(Callback):
    """Rewrites ``history.csv`` and ``history.json`` in ``folder`` after every epoch.

    Parameters
    ----------
    folder : str or path-like
        An existing folder.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def on_epoch_end(self, trainer, record):
        """Rewrite both files with the whole history so far."""
        rows = trainer.history.to_list()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.folder / "history.csv", buf.getvalue())
        atomic_write_text(self.folder / "history.json", json.dumps(rows, indent=1))


class Checkpoint(Callback):
    """Saves everything needed to resume after each epoch.

    That is weights, optimizer state, schedule, history and the state of
    ``rng`` (the generator that shuffles batches and draws dropout masks). To
    resume: ``saved = numprop.load(path)``, load ``saved.model``'s weights,
    ``trainer.load_state(*saved.training)`` and restore the generator from
    ``saved.training[1]["rng"]`` (as ``train_cifar10(resume=True)`` does).

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file, overwritten each epoch.
    rng : numpy.random.Generator
        The generator whose state is saved.
    **metadata
        Passed to ``numprop.save`` (``preprocessing``, ``config``, ``class_names``).
    """

    def __init__(self, path: str | Path, rng: np.random.Generator, **metadata):
        self.path, self.rng, self.metadata = Path(path), rng, metadata

    def on_epoch_end(self, trainer, record):
        """Save the model with the trainer's state and the generator's state."""
        from numprop.training.io import save

        arrays, meta = trainer.state()
        meta["rng"] = self.rng.bit_generator.state
        save(
            self.path,
            trainer.model,
            history=trainer.history.to_list(),
            training=(arrays, meta),
            **self.metadata,
        )


class ModelCheckpoint(Callback):
    """Saves the model with ``numprop.save`` after each epoch that improves ``monitor``.

    Every epoch is saved when ``monitor`` is None. Fields ending in "loss" must
    decrease, others increase; a resumed run starts from the best value in its
    history.

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file.
    monitor : str or None, default "val_acc"
        A History field, or None.
    **metadata
        Passed to ``numprop.save`` (``preprocessing``, ``config``, ``class_names``).

    Raises
    ------
    ConfigError
        At the end of an epoch, if ``monitor`` is not recorded.
    """

    def __init__(self, path: str | Path, monitor: str | None = "val_acc", **metadata):
        self.path, self.monitor, self.metadata = Path(path), monitor, metadata
        self.mode = "min" if (monitor or "").endswith("loss") else "max"
        self.best = None

    def on_train_begin(self, trainer):
        """On a resumed run, start from the best monitored value in the history."""
        if self.monitor is not None and self.best is None:  # resumed: best so far
            seen = [
                r[self.monitor] for r in trainer.history.records if r.get(self.monitor) is not None
            ]
            if seen:
                self.best = min(seen) if self.mode == "min" else max(seen)

    def on_epoch_end(self, trainer, record):
        """Save the model if the monitored value improved (or always, without a monitor)."""
        if self.monitor is not None:
            value = _monitored(record, self.monitor)
            if self.best is not None and not _better(self.mode, value, self.best, 0.0):
                return
            self.best = value
        from numprop.training.io import save

        save(self.path, trainer.model, history=trainer.history.to_list(), **self.metadata)
