"""Train and evaluate a network on CIFAR-10 from one configuration: what `numprop train` runs.

The CLI turns arguments into a ``TrainConfig``; this module turns names into
objects (the one place that does) and runs data -> model -> Trainer -> saved run.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from numprop.data.batches import Augment, BatchLoader, stratified_split
from numprop.data.cifar10 import Cifar10, load_cifar10
from numprop.data.preprocess import PREPROCESSING
from numprop.errors import ConfigError
from numprop.nn import models
from numprop.nn.layers import ACTIVATIONS
from numprop.nn.losses import LOSSES
from numprop.nn.optim import OPTIMIZERS, Optimizer
from numprop.nn.schedules import SCHEDULES, Schedule
from numprop.training.callbacks import (
    Checkpoint,
    EarlyStopping,
    EpochSummary,
    HistoryLogger,
    ModelCheckpoint,
    NaNGuard,
    ProgressBar,
    atomic_write_text,
)
from numprop.training.io import load, save
from numprop.training.trainer import Callback, Trainer


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved with the model as JSON.

    Names (optimizer, schedule, activation, preprocessing, loss) are looked up
    in their registries; each factory takes the settings it has.

    Parameters
    ----------
    hidden : list of int, default [1000]
        Hidden layer sizes of the MLP.
    activation : str, default "relu"
        A registered activation name.
    dropout : float, default 0.0
        Dropout probability after each hidden activation, in [0, 1).
    batchnorm : bool, default False
        BatchNorm1d after each hidden Linear.
    optimizer : str, default "sgd"
        "sgd", "adam" or "adamw".
    lr : float, default 0.01
        Peak learning rate, > 0.
    momentum : float, default 0.9
        SGD only.
    nesterov : bool, default False
        SGD only.
    weight_decay : float, default 5e-4
    schedule : str, default "cosine"
        "constant", "step", "exponential", "cosine" or "plateau".
    warmup : float, default 1.0
        Warm-up epochs of the cosine schedule (at most half the run).
    epochs : int, default 20
    batch_size : int, default 128
    label_smoothing : float, default 0.0
    loss : str, default "softmax_cross_entropy"
    flip : bool, default True
        Random horizontal flips of training images.
    crop : int, default 0
        Padding for random crops of training images, in pixels; 0 for none.
    preprocessing : str, default "standardize"
        A registered preprocessing name.
    val_size : int, default 5000
        Training images held out for validation (at most a fifth); 0 for none.
    patience : int, default 0
        Early-stopping patience in epochs; 0 turns early stopping off.
    seed : int, default 0
        Seed of the one generator behind weights, split, shuffling, augmentation
        and dropout.
    limit : int, optional
        Train on a stratified subset of this many images (>= 10; the test set
        shrinks to a fifth of it, at least 10).
    data_dir : str, optional
        The CIFAR-10 folder (``resolve_data_dir`` by default).
    download : bool, default True
        Download CIFAR-10 when it is not there.
    """

    hidden: list[int] = field(default_factory=lambda: [1000])
    activation: str = "relu"
    dropout: float = 0.0
    batchnorm: bool = False
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup: float = 1.0
    epochs: int = 20
    batch_size: int = 128
    label_smoothing: float = 0.0
    loss: str = "softmax_cross_entropy"
    flip: bool = True
    crop: int = 0
    preprocessing: str = "standardize"
    val_size: int = 5000
    patience: int = 0
    seed: int = 0
    limit: int | None = None
    data_dir: str | None = None
    download: bool = True

    def validate(self) -> None:
        """Check every setting; raise a ConfigError (naming the choices) on the first bad one."""
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden sizes must be positive, got {self.hidden}")
        for registry, name in (
            (OPTIMIZERS, self.optimizer),
            (SCHEDULES, self.schedule),
            (ACTIVATIONS, self.activation),
            (PREPROCESSING, self.preprocessing),
            (LOSSES, self.loss),
        ):
            registry.get(name)  # a ConfigError that names the choices
        for name, value, low in (
            ("epochs", self.epochs, 1),
            ("batch size", self.batch_size, 1),
            ("validation size", self.val_size, 0),
            ("crop", self.crop, 0),
            ("patience", self.patience, 0),
        ):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if self.limit is not None and self.limit < 10:
            raise ConfigError(f"--limit must be at least 10 examples, got {self.limit}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")


def make_optimizer(config: TrainConfig, model) -> Optimizer:
    """The optimizer named in the config, over the model's named parameters.

    Each optimizer takes the settings it has (SGD: momentum and Nesterov).

    Parameters
    ----------
    config : TrainConfig
    model : Module

    Returns
    -------
    Optimizer
    """
    settings = {
        "lr": config.lr,
        "momentum": config.momentum,
        "nesterov": config.nesterov,
        "weight_decay": config.weight_decay,
    }
    return OPTIMIZERS.create_from(config.optimizer, model.named_parameters(), settings=settings)


def make_schedule(config: TrainConfig) -> Schedule:
    """The schedule named in the config, peaking at ``config.lr``.

    Each schedule takes the settings it has (cosine: the warm-up, at most half the run).

    Parameters
    ----------
    config : TrainConfig

    Returns
    -------
    Schedule
    """
    settings = {"warmup": min(config.warmup, config.epochs / 2)}
    return SCHEDULES.create_from(config.schedule, config.lr, settings=settings)


def subset(images, labels, n: int, rng: np.random.Generator):
    """A stratified random subset of n examples (all of them when n is not smaller).

    Parameters
    ----------
    images : ndarray, shape (N, ...)
    labels : ndarray of int, shape (N,)
    n : int
        Size of the subset.
    rng : numpy.random.Generator

    Returns
    -------
    images : ndarray, shape (n, ...)
    labels : ndarray, shape (n,)
        Copies, or the inputs themselves when ``n >= N``.
    """
    if n >= len(labels):
        return images, labels
    _, idx = stratified_split(labels, n, rng)
    return images[idx], labels[idx]


@dataclass
class RunResult:
    """What a training run produced.

    Attributes
    ----------
    out_dir : Path
        The run folder.
    model_path : Path
        The final model, ``out_dir / "model.npz"``.
    test_loss : float
    test_acc : float
        Fraction right on the test set, in [0, 1].
    seconds : float
        Wall-clock time of the whole run.
    history : list of dict
        The per-epoch records.
    data : Cifar10
        The data set as loaded.
    """

    out_dir: Path
    model_path: Path
    test_loss: float
    test_acc: float
    seconds: float
    history: list[dict]
    data: Cifar10  # the data set as loaded, so callers need not read it again


def train_cifar10(
    config: TrainConfig | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    print_fn=print,
    callbacks: list[Callback] | None = None,
) -> RunResult:
    """Load CIFAR-10, train the configured network, evaluate on the test set, save the run.

    After every epoch the run folder gets ``last.npz``, a checkpoint with
    everything needed to go on: ``resume=True`` continues an interrupted run
    from it, with the run's own configuration, and ends with the same weights
    as an uninterrupted run.

    The run folder also gets ``best.npz`` (best validation accuracy),
    ``history.csv``/``history.json``, and at the end ``model.npz`` and
    ``summary.json``.

    Parameters
    ----------
    config : TrainConfig or None
        The run's settings; None only with ``resume=True`` (the saved
        configuration is used, with ``config.data_dir`` if one is given).
    out_dir : str or path-like
        The run folder, created if needed.
    resume : bool, default False
        Continue from ``out_dir / "last.npz"``.
    progress : bool, default True
        Show download and per-epoch progress bars.
    print_fn : callable, default print
        Called with each line of the run's report.
    callbacks : list of Callback, optional
        Added after the standard ones.

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError
        For invalid settings, or ``resume=True`` without a checkpoint holding
        training state.
    DataError
        If CIFAR-10 cannot be found, downloaded or read.
    TrainingError
        If training diverges (``NaNGuard``).
    """
    out_dir = Path(out_dir)
    last = out_dir / "last.npz"
    checkpoint = None
    if resume:
        if not last.is_file():
            raise ConfigError(f"nothing to resume in {out_dir}: no last.npz checkpoint")
        checkpoint = load(last)
        if checkpoint.training is None:
            raise ConfigError(f"{last} holds no training state to resume from")
        known = {f.name for f in fields(TrainConfig)}
        unknown = sorted(set(checkpoint.config) - known)
        if unknown:  # written by a newer numprop, say: go on without them, but say so
            warnings.warn(f"{last}: ignored unknown settings {', '.join(unknown)}", stacklevel=2)
        saved_config = {k: v for k, v in checkpoint.config.items() if k in known}
        if config is not None and config.data_dir is not None:
            saved_config["data_dir"] = config.data_dir  # the data may have moved
        config = TrainConfig(**saved_config)
    config.validate()
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    data = load_cifar10(config.data_dir, download=config.download, progress=progress)
    train_x, train_y = data.train_images, data.train_labels
    test_x, test_y = data.test_images, data.test_labels
    if config.limit is not None:
        train_x, train_y = subset(train_x, train_y, config.limit, rng)
        test_x, test_y = subset(test_x, test_y, max(10, config.limit // 5), rng)
    n_val = min(config.val_size, len(train_y) // 5) if config.val_size else 0
    train_idx, val_idx = stratified_split(train_y, n_val, rng)

    # Fitted on the training split only: validation and test stay unseen.
    pre = PREPROCESSING.create(config.preprocessing).fit(train_x[train_idx])
    augment = (
        Augment(flip=config.flip, crop_padding=config.crop)
        if (config.flip or config.crop)
        else None
    )
    train = BatchLoader(
        train_x,
        train_y,
        pre,
        config.batch_size,
        shuffle=True,
        rng=rng,
        augment=augment,
        indices=train_idx,
    )
    val = (
        BatchLoader(train_x, train_y, pre, 1000, shuffle=False, indices=val_idx) if n_val else None
    )
    test = BatchLoader(test_x, test_y, pre, 1000, shuffle=False)

    model = models.mlp(
        [pre.output_dim, *config.hidden, len(data.class_names)],
        activation=config.activation,
        dropout=config.dropout,
        batchnorm=config.batchnorm,
        rng=rng,
    )
    loss = LOSSES.create_from(config.loss, settings={"label_smoothing": config.label_smoothing})
    optimizer = make_optimizer(config, model)
    meta = {"preprocessing": pre, "config": asdict(config), "class_names": data.class_names}
    monitor = "val_acc" if val is not None else None
    cbs: list[Callback] = [
        NaNGuard(),
        EpochSummary(print_fn),
        HistoryLogger(out_dir),
        ModelCheckpoint(out_dir / "best.npz", monitor=monitor, **meta),
        Checkpoint(last, rng, **meta),
    ]
    if progress:
        cbs.insert(0, ProgressBar())
    if config.patience:
        cbs.append(
            EarlyStopping("val_loss" if val is not None else "train_loss", patience=config.patience)
        )
    cbs += callbacks or []

    print_fn(
        f"training {model_summary(model)} on {len(train_idx):,} images "
        f"({n_val:,} held out for validation), {config.epochs} epochs of batch "
        f"{config.batch_size}, {config.optimizer} lr {config.lr:g}"
    )
    trainer = Trainer(model, loss, optimizer, make_schedule(config), cbs)
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model.state_dict())
        trainer.load_state(*checkpoint.training)
        rng.bit_generator.state = checkpoint.training[1]["rng"]
        print_fn(f"resuming after epoch {len(trainer.history)} of {config.epochs}")
    history = trainer.fit(train, val, config.epochs)
    if history.stop_reason:
        print_fn(history.stop_reason)
    test_loss, test_acc = trainer.evaluate(test)
    seconds = time.perf_counter() - started
    model_path = save(out_dir / "model.npz", model, history=history.to_list(), **meta)
    summary = {
        "test_loss": test_loss,
        "test_acc": test_acc,
        "seconds": seconds,
        "train_images": len(train_idx),
        "config": asdict(config),
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    print_fn(
        f"test accuracy {100 * test_acc:.2f}%  (test loss {test_loss:.4f}, {seconds:.0f} s in all)"
    )
    return RunResult(out_dir, model_path, test_loss, test_acc, seconds, history.to_list(), data)


def model_summary(model) -> str:
    """'3072-1000-10 MLP (3,083,010 parameters)': the Linear sizes of a Sequential, and its size."""
    from numprop.nn.layers import Linear

    sizes = [m.in_features for m in model if isinstance(m, Linear)]
    sizes.append([m.out_features for m in model if isinstance(m, Linear)][-1])
    n = sum(p.data.size for p in model.parameters())
    return f"{'-'.join(map(str, sizes))} MLP ({n:,} parameters)"
