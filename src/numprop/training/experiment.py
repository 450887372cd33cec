"""Train and evaluate a network on any data set from one configuration: what `numprop train` runs.

The CLI turns arguments into a ``TrainConfig``; this module turns names into
objects (the one place that does) and runs data -> model -> Trainer -> saved run.
The data is a named data set (CIFAR-10 by default, MNIST, ...) or a user's
.npz, .csv or image folder; images and tables take the same path, with the
batcher and preprocessing that suit each.
"""

from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from numprop.data.batches import ArrayLoader, Augment, BatchLoader, stratified_split
from numprop.data.catalog import load_data
from numprop.data.dataset import Dataset
from numprop.data.mixing import CutMix, MixedBatches, MixUp
from numprop.data.preprocess import PREPROCESSING, Preprocessing
from numprop.errors import ConfigError
from numprop.nn import models
from numprop.nn.layers import ACTIVATIONS, Linear
from numprop.nn.losses import LOSSES
from numprop.nn.optim import OPTIMIZERS, Optimizer
from numprop.nn.precision import PRECISIONS
from numprop.nn.precision import describe as describe_precision
from numprop.nn.precision import resolve as resolve_precision
from numprop.nn.schedules import SCHEDULES, Schedule
from numprop.training.callbacks import (
    EMA,
    Checkpoint,
    EarlyStopping,
    EpochSummary,
    HistoryLogger,
    ModelCheckpoint,
    NaNGuard,
    ProgressBar,
    StopAfter,
    atomic_write_text,
)
from numprop.training.diagnostics import Diagnostics
from numprop.training.doctor import read as read_diagnostics
from numprop.training.io import (
    SavedModel,
    available_memory,
    check_settings,
    load,
    lock_folder,
    one_line,
    save,
)
from numprop.training.predictions import write_predictions
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
    init : {"he", "glorot", "normal"}, optional
        Initial weights (``models.mlp``); by default what suits the activation.
    init_scale : float, optional
        Multiplies the He/Glorot std; for "normal", the std itself (0.01 if not given).
    optimizer : str, default "sgd"
        "sgd", "adam", "adamw" or "lion" (which wants a learning rate 3 to 10 times
        smaller than AdamW's).
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
    precision : {"fp32", "bf16", "auto"}, default "auto"
        What the matrix products compute in: float32, or bf16 operands with
        float32 sums (the CPU's bf16 matrix units, through MKL); "auto" takes
        bf16 where the CPU and MKL support it, float32 elsewhere. Weights,
        optimizer state and loss stay float32 either way.
    label_smoothing : float, default 0.0
    loss : str, default "softmax_cross_entropy"
    flip : bool, optional
        Random horizontal flips of training images; by default on where the
        data set says flips keep the class (CIFAR), off otherwise (digits,
        your own images, tables).
    crop : int, default 0
        Padding for random crops of training images, in pixels; 0 for none.
    preprocessing : str, optional
        A registered preprocessing name; by default "standardize" (per
        channel) for images and "columns" (per column) for tables.
    val_size : int, default 5000
        Training examples held out for validation (at most a fifth); 0 for none.
    test_fraction : float, default 0.2
        For data without a test split (a .csv, an .npz without X_test): the
        stratified fraction held out as the test set, in (0, 0.5].
    patience : int, default 0
        Early-stopping patience in epochs; 0 turns early stopping off.
    seed : int, default 0
        Seed of the one generator behind weights, split, shuffling, augmentation
        and dropout.
    limit : int, optional
        Train on a stratified subset of this many examples (>= 10; the test
        set shrinks to a fifth of it, at least 10).
    data : str, default "cifar10"
        A named data set ("cifar10", "cifar100", "mnist", "fashion-mnist") or
        the path of an .npz, a .csv or an image folder.
    target : str, optional
        The label column of a .csv.
    image_size : int, default 32
        Side, in pixels, that the images of a folder are resized to.
    data_dir : str, optional
        Where named data sets live (``resolve_data_dir`` by default).
    download : bool, default True
        Download a named data set when it is not there.
    diagnostics : bool, default True
        Record per-layer statistics into ``diagnostics.json`` in the run
        folder (``Diagnostics``), for ``numprop doctor RUN``.
    model : {"mlp", "bottleneck"}, default "mlp"
        ``models.mlp`` (``hidden``, ``activation``, ``batchnorm``, ``dropout``)
        or ``models.bottleneck_mlp`` (``width``, ``depth``, ``expansion``,
        ``dropout``): inverted-bottleneck residual blocks with LayerNorm and GELU.
    width, depth, expansion : int, default 512, 4, 4
        The bottleneck model's block width, number of blocks and expansion.
    mixup, cutmix : float, default 0.0
        Alpha of MixUp / CutMix on the training batches (0: off; both: each
        batch gets one of them, drawn evenly).
    ema : float, default 0.0
        Decay of an exponential moving average of the weights (0: off), used
        for the final model and the test (``EMA``).
    ema_every : int, default 1
        Update that average after every ``ema_every``-th optimizer step only
        (with the decay raised to that power: the same span, less work).
    tta : bool, default False
        Also report the test accuracy averaged over each image and its mirror.
    tta_shift : int, default 0
        Also average over the 3x3 grid of translations by 0 and +-tta_shift
        pixels (0: none); for a model trained with ``crop`` of that size.
    recipe : str, optional
        The name of the recipe the settings came from (``RECIPES``), for the record.
    """

    hidden: list[int] = field(default_factory=lambda: [1000])
    activation: str = "relu"
    dropout: float = 0.0
    batchnorm: bool = False
    init: str | None = None
    init_scale: float | None = None
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup: float = 1.0
    epochs: int = 20
    batch_size: int = 128
    precision: str = "auto"
    label_smoothing: float = 0.0
    loss: str = "softmax_cross_entropy"
    flip: bool | None = None
    crop: int = 0
    preprocessing: str | None = None
    val_size: int = 5000
    test_fraction: float = 0.2
    patience: int = 0
    seed: int = 0
    limit: int | None = None
    data: str = "cifar10"
    target: str | None = None
    image_size: int = 32
    data_dir: str | None = None
    download: bool = True
    diagnostics: bool = True
    model: str = "mlp"
    width: int = 512
    depth: int = 4
    expansion: int = 4
    mixup: float = 0.0
    cutmix: float = 0.0
    ema: float = 0.0
    ema_every: int = 1
    tta: bool = False
    tta_shift: int = 0
    recipe: str | None = None

    def validate(self) -> None:
        """Check every setting; raise a ConfigError (naming the choices) on the first bad one."""
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError(f"hidden sizes must be positive, got {self.hidden}")
        for registry, name in (
            (OPTIMIZERS, self.optimizer),
            (SCHEDULES, self.schedule),
            (ACTIVATIONS, self.activation),
            (LOSSES, self.loss),
        ):
            registry.get(name)  # a ConfigError that names the choices
        if self.preprocessing is not None:
            PREPROCESSING.get(self.preprocessing)
        if self.init is not None and self.init not in Linear.INITS:
            raise ConfigError(
                f"unknown init {self.init!r}; choose one of {', '.join(Linear.INITS)}"
            )
        if self.init_scale is not None and not self.init_scale > 0:
            raise ConfigError(f"init scale must be positive, got {self.init_scale}")
        if self.precision != "auto":
            PRECISIONS.get(self.precision)
        if self.model not in ("mlp", "bottleneck"):
            raise ConfigError(f"unknown model {self.model!r}; choose mlp or bottleneck")
        for name, value in (("width", self.width), ("depth", self.depth)):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.expansion < 1:
            raise ConfigError(f"expansion must be at least 1, got {self.expansion}")
        if self.mixup < 0 or self.cutmix < 0:
            raise ConfigError("mixup and cutmix take an alpha >= 0 (0: off)")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema decay must be in [0, 1), got {self.ema}")
        for name, value, low in (
            ("epochs", self.epochs, 1),
            ("batch size", self.batch_size, 1),
            ("validation size", self.val_size, 0),
            ("crop", self.crop, 0),
            ("patience", self.patience, 0),
            ("image size", self.image_size, 1),
            ("ema every", self.ema_every, 1),
            ("tta shift", self.tta_shift, 0),
        ):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if self.limit is not None and self.limit < 10:
            raise ConfigError(f"--limit must be at least 10 examples, got {self.limit}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("Nesterov momentum needs --momentum > 0")
        if self.weight_decay < 0 or self.warmup < 0:
            raise ConfigError("weight decay and warm-up must be >= 0")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be a whole number >= 0, got {self.seed}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if not 0.0 < self.test_fraction <= 0.5:
            raise ConfigError(f"test fraction must be in (0, 0.5], got {self.test_fraction}")
        if not isinstance(self.data, str) or not self.data:
            raise ConfigError(f"data must be a data set name or a path, got {self.data!r}")


def check_memory(config: TrainConfig, inputs: int, classes: int) -> None:
    """Refuse, before allocating, a network or batch that cannot fit in memory.

    The estimate counts float32 weights about five times (weights, gradient or
    velocity, Adam's second moment, bf16 copy, diagnostics' copy) and the batch
    buffers of every layer about eight times (outputs, gradients, masks, operands).

    Raises
    ------
    ConfigError
        When the estimate exceeds the memory available now.
    """
    sizes = [inputs, *config.hidden, classes]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    widest = max(sizes)
    batch = max(config.batch_size, 1000)  # evaluation batches are 1000
    need = 4 * (5 * params + 8 * batch * widest * (len(sizes) - 1))
    free = available_memory()
    if free is not None and need > free:
        raise ConfigError(
            f"the network ({params:,} parameters) with batches of {config.batch_size} needs "
            f"about {need / 2**30:.1f} GiB, more than the {free / 2**30:.1f} GiB available: "
            "use fewer or smaller hidden layers (--hidden) or a smaller --batch-size"
        )


def _resumed_config(checkpoint: SavedModel, last: Path, given: TrainConfig | None) -> TrainConfig:
    """The settings of the run a checkpoint was saved from, checked against it.

    A ConfigError naming the checkpoint for what resuming would trip over
    later: no training state or generator state, settings of the wrong type or
    value, hidden sizes that are not those of its model.
    """
    if checkpoint.training is None:
        raise ConfigError(f"{last} holds no training state to resume from")
    state = checkpoint.training[1].get("rng")
    if state is None:
        raise ConfigError(f"{last} holds no state of the generator ('rng') to resume from")
    try:  # the run's generator is a PCG64 (default_rng): its state must fit one
        np.random.default_rng().bit_generator.state = state
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(
            f"{last}: training.rng is not the state of a PCG64 generator ({one_line(exc)})"
        ) from None
    annotations = {f.name: f.type for f in fields(TrainConfig)}
    unknown = sorted(set(checkpoint.config) - set(annotations))
    if unknown:  # written by a newer numprop, say: go on without them, but say so
        warnings.warn(f"{last}: ignored unknown settings {', '.join(unknown)}", stacklevel=3)
    saved = {k: v for k, v in checkpoint.config.items() if k in annotations}
    check_settings(saved, annotations, str(last))
    if given is not None and given.data_dir is not None:
        saved["data_dir"] = given.data_dir  # the data may have moved
    config = TrainConfig(**saved)
    try:
        config.validate()
    except ConfigError as exc:
        raise ConfigError(f"{last}: {one_line(exc)}") from None
    # The model is built from the settings before the checkpoint's weights are copied in:
    # sizes that are not the checkpoint's would be allocated first, then refused.
    linears = [layer for layer in checkpoint.model if isinstance(layer, Linear)]
    hidden = [layer.out_features for layer in linears[:-1]]
    if hidden != config.hidden:
        raise ConfigError(
            f"{last}: its settings give hidden sizes {config.hidden}, its model has {hidden}"
        )
    return config


def make_model(config: TrainConfig, inputs: int, classes: int, rng: np.random.Generator):
    """The configured network, from ``inputs`` features to ``classes`` logits."""
    if config.model == "bottleneck":
        return models.bottleneck_mlp(
            inputs,
            config.width,
            config.depth,
            classes,
            expansion=config.expansion,
            dropout=config.dropout,
            rng=rng,
        )
    return models.mlp(
        [inputs, *config.hidden, classes],
        activation=config.activation,
        dropout=config.dropout,
        batchnorm=config.batchnorm,
        init=config.init,
        init_scale=config.init_scale,
        rng=rng,
    )


def make_loss(config: TrainConfig):
    """The configured loss."""
    return LOSSES.create_from(config.loss, settings={"label_smoothing": config.label_smoothing})


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
    test_loss : float or None
    test_acc : float or None
        Fraction right on the test set, in [0, 1]; None when it was not evaluated.
    seconds : float
        Wall-clock time of the whole run.
    history : list of dict
        The per-epoch records.
    data : Dataset
        The data set as loaded.
    """

    out_dir: Path
    model_path: Path
    test_loss: float | None
    test_acc: float | None
    seconds: float
    history: list[dict]
    data: Dataset  # the data set as loaded, so callers need not read it again


@dataclass
class Splits:
    """The examples a run uses: train and validation indices into ``x``, and the test set.

    Attributes
    ----------
    x, y : ndarray
        The examples that training and validation draw from (N, ...) and their labels (N,).
    train_idx, val_idx : ndarray of int64
        Disjoint indices into ``x``; ``val_idx`` may be empty.
    test_x, test_y : ndarray
        The test set, used once, at the end.
    held_out_test : bool
        True when the test set was held out of ``x`` (the data had none of its own).
    """

    x: np.ndarray
    y: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    held_out_test: bool


def load_config_data(config: TrainConfig, *, progress: bool = False) -> Dataset:
    """The data set ``config`` names (``data``, ``data_dir``, ``target``, ...), loaded."""
    return load_data(
        config.data,
        data_dir=config.data_dir,
        download=config.download,
        progress=progress,
        target=config.target,
        image_size=config.image_size,
    )


def split_data(data: Dataset, config: TrainConfig, rng: np.random.Generator) -> Splits:
    """Draw the run's test, train and validation sets from a data set, stratified, from ``rng``.

    Data without a test split gives ``config.test_fraction`` of its examples
    to the test set. ``config.limit`` then shrinks training to that many
    examples and the test set to a fifth of it; the validation set is
    ``config.val_size`` examples (at most a fifth) of what is left.
    """
    x, y = data.train_x, data.train_y
    held_out = data.test_x is None
    if held_out:
        n_test = max(1, round(config.test_fraction * len(y)))
        if len(y) - n_test < 2:
            raise ConfigError(f"{data.name}: {len(y)} examples are too few to hold out a test set")
        keep, test_idx = stratified_split(y, n_test, rng)
        test_x, test_y = x[test_idx], y[test_idx]
        x, y = x[keep], y[keep]
    else:
        test_x, test_y = data.test_x, data.test_y
    if config.limit is not None:
        x, y = subset(x, y, config.limit, rng)
        test_x, test_y = subset(test_x, test_y, max(10, config.limit // 5), rng)
    n_val = min(config.val_size, len(y) // 5) if config.val_size else 0
    train_idx, val_idx = stratified_split(y, n_val, rng)
    return Splits(x, y, train_idx, val_idx, test_x, test_y, held_out)


def make_preprocessing(data: Dataset, config: TrainConfig) -> Preprocessing:
    """The configured preprocessing, unfitted; by default per channel for images, per column for tables."""
    name = config.preprocessing or ("standardize" if data.is_images else "columns")
    return PREPROCESSING.create(name)


def make_batches(
    data: Dataset, splits: Splits, pre: Preprocessing, config, rng, *, bf16: bool = False
):
    """(train, validation or None, test) batch iterables of preprocessed float32 rows.

    Images are batched by ``BatchLoader`` (augmented, then preprocessed batch by
    batch); tables are preprocessed once and batched by ``ArrayLoader``. With
    ``bf16``, the rows come as bf16 bits, for a model whose first product
    reads bf16: rounded in the pass that makes each batch.
    """
    flip = data.flip if config.flip is None else config.flip
    if not data.is_images:
        if config.flip or config.crop:
            raise ConfigError(f"{data.name} is a table: flips and crops apply to images only")
        rows = pre.transform(splits.x)  # (N, D) float32, once
        dtype = "bf16" if bf16 else np.float32
        train = ArrayLoader(
            rows,
            splits.y,
            config.batch_size,
            rng=rng,
            indices=splits.train_idx,
            shuffle=True,
            dtype=dtype,
        )
        val = (
            ArrayLoader(rows, splits.y, 1000, shuffle=False, indices=splits.val_idx, dtype=dtype)
            if splits.val_idx.size
            else None
        )
        test_rows = pre.transform(splits.test_x)
        test = ArrayLoader(test_rows, splits.test_y, 1000, shuffle=False, dtype=dtype)
        return train, val, test
    augment = Augment(flip=flip, crop_padding=config.crop) if (flip or config.crop) else None
    mixing = _mixing(config, data)
    train = BatchLoader(
        splits.x,
        splits.y,
        pre,
        config.batch_size,
        shuffle=True,
        rng=rng,
        augment=augment,
        indices=splits.train_idx,
        bf16=bf16 and not mixing,  # mixing takes float batches: the first Linear rounds them
    )
    if mixing:
        train = MixedBatches(train, mixing, rng)
    val = (
        BatchLoader(splits.x, splits.y, pre, 1000, shuffle=False, indices=splits.val_idx, bf16=bf16)
        if splits.val_idx.size
        else None
    )
    test = BatchLoader(splits.test_x, splits.test_y, pre, 1000, shuffle=False, bf16=bf16)
    return train, val, test


def _mixing(config: TrainConfig, data: Dataset) -> list:
    """The MixUp / CutMix transforms the settings ask for (none: an empty list)."""
    mixing = []
    if config.mixup:
        mixing.append(MixUp(config.mixup, data.n_classes))
    if config.cutmix:
        if not data.is_images:
            raise ConfigError(f"{data.name} is a table: CutMix pastes image boxes")
        mixing.append(CutMix(config.cutmix, data.n_classes, data.train_x.shape[1:]))
    return mixing


def describe_inputs(data: Dataset) -> dict:
    """What a model's raw inputs are, saved with it so ``predict`` can read new ones."""
    if data.is_images:
        return {"kind": "images", "shape": [int(s) for s in data.train_x.shape[1:]]}
    columns = data.source.get("columns")
    return {"kind": "table", "width": int(data.train_x.shape[1]), "columns": columns}


def train(
    config: TrainConfig | None,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    print_fn=print,
    callbacks: list[Callback] | None = None,
    data: Dataset | None = None,
    stop_after: int | None = None,
    test: bool = True,
) -> RunResult:
    """Load the data, train the configured network, evaluate on the test set, save the run.

    After every epoch the run folder gets ``last.npz``, a checkpoint with
    everything needed to go on: ``resume=True`` continues an interrupted run
    from it, with the run's own configuration, and ends with the same weights
    as an uninterrupted run. ``stop_after`` cuts a run short on purpose (what
    ``numprop sweep`` does to a trial before deciding whether it goes on).

    The run folder also gets ``best.npz`` (best validation accuracy),
    ``history.csv``/``history.json``, and at the end ``model.npz``,
    ``predictions.npz`` (what the plots need of the test set) and ``summary.json``.

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
    data : Dataset, optional
        Data already in memory (from ``numprop.data.load_data`` or built by
        hand); by default ``config.data`` is loaded.
    stop_after : int, optional
        Stop once this many of the ``config.epochs`` epochs are done (at once,
        when a resumed run has them already); the learning-rate schedule is
        still that of the whole run, so resuming ends as an uninterrupted run would.
    test : bool, default True
        Evaluate on the test set. False leaves the test set unseen: no
        ``predictions.npz``, and None for the test loss and accuracy, in the
        result and in ``summary.json``.

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError
        For invalid settings, or ``resume=True`` without a checkpoint holding
        training state.
    DataError
        If the data cannot be found, downloaded or read.
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
        config = _resumed_config(checkpoint, last, config)
    config.validate()
    started = time.perf_counter()
    rng = np.random.default_rng(config.seed)

    if data is None:
        data = load_config_data(config, progress=progress)
    splits = split_data(data, config, rng)
    # Fitted on the training split only: validation and test stay unseen.
    pre = make_preprocessing(data, config).fit(splits.x[splits.train_idx])
    check_memory(config, pre.output_dim, data.n_classes)
    precision = resolve_precision(config.precision)
    # bf16 products: the batches come as bf16 already, rounded where they are made.
    train_batches, val, test_batches = make_batches(
        data, splits, pre, config, rng, bf16=precision.name == "bf16"
    )
    model = make_model(config, pre.output_dim, data.n_classes, rng)
    model.set_precision(precision)
    loss = make_loss(config)
    optimizer = make_optimizer(config, model)
    # Only now, with every setting checked, does the run get a folder; the lock on it
    # is held until this function returns (the file closes with the object).
    lock = make_run_folder(out_dir, resume=resume)  # noqa: F841
    meta = {
        "preprocessing": pre,
        "config": asdict(config),
        "class_names": data.class_names,
        "inputs": describe_inputs(data),
    }
    monitor = "val_acc" if val is not None else None
    cbs: list[Callback] = [NaNGuard()]
    if config.diagnostics:  # before the NaN guard: it keeps what it saw of a diverging epoch
        diagnostics = Diagnostics(path=out_dir / "diagnostics.json")
        cbs.insert(0, diagnostics)
    cbs += [
        EpochSummary(print_fn),
        HistoryLogger(out_dir),
        ModelCheckpoint(out_dir / "best.npz", monitor=monitor, **meta),
    ]
    if progress:
        cbs.insert(0, ProgressBar())
    if config.patience:
        cbs.append(
            EarlyStopping("val_loss" if val is not None else "train_loss", patience=config.patience)
        )
    ema = EMA(config.ema, config.ema_every) if config.ema else None
    if ema is not None:
        cbs.append(ema)
    # The checkpoint comes after every callback with state, so it saves this epoch's.
    cbs.append(Checkpoint(last, rng, **meta))
    if stop_after is not None:
        cbs.append(StopAfter(stop_after))
    cbs += callbacks or []

    n_train, n_val = len(splits.train_idx), len(splits.val_idx)
    kind = "images" if data.is_images else "rows"
    print_fn(
        f"training {model_summary(model)} on {n_train:,} {data.name} {kind} "
        f"({n_val:,} held out for validation, {len(splits.test_y):,} for the test"
        f"{', drawn from the training data' if splits.held_out_test else ''}), "
        f"{config.epochs} epochs of batch {config.batch_size}, {config.optimizer} lr {config.lr:g}, "
        f"{describe_precision(precision, config.precision)}"
    )
    print_fn(model.summary(pre.output_dim))
    trainer = Trainer(model, loss, optimizer, make_schedule(config), cbs)
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint.model.state_dict())
            trainer.load_state(*checkpoint.training)
        except ConfigError as exc:
            raise ConfigError(f"{last}: cannot resume from it: {one_line(exc)}") from None
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            # The schedule's state, say, which each schedule reads in its own way.
            raise ConfigError(
                f"{last}: cannot resume from it (its training state is malformed: "
                f"{type(exc).__name__}: {one_line(exc)})"
            ) from None
        rng.bit_generator.state = checkpoint.training[1]["rng"]  # checked by _resumed_config
        if config.diagnostics and (out_dir / "diagnostics.json").is_file():
            with contextlib.suppress(ConfigError):  # unreadable: start the record afresh
                diagnostics.restore(read_diagnostics(out_dir), len(trainer.history))
        print_fn(f"resuming after epoch {len(trainer.history)} of {config.epochs}")
    history = trainer.fit(train_batches, val, config.epochs)
    if history.stop_reason:
        print_fn(history.stop_reason)
    if ema is not None and ema.averages:  # the final model is the average of the weights
        ema.apply(model)
    saved_model = SavedModel(model, pre, data.class_names)
    final_val = {}
    tta_views = describe_tta(config) if data.is_images else None
    if val is not None and ema is not None:
        # The history's validation accuracies are the training weights'; model
        # selection between runs wants the final model's, as the test will see it.
        val_acc = final_val["val_acc_final"] = trainer.evaluate(val)[1]
        if val_acc is not None:
            line = f"validation accuracy of the final (averaged) model {100 * val_acc:.2f}%"
            if tta_views:
                x_val, y_val = splits.x[splits.val_idx], splits.y[splits.val_idx]
                val_tta = final_val["val_acc_final_tta"] = tta_accuracy(
                    saved_model, x_val, y_val, tta=config.tta, tta_shift=config.tta_shift
                )
                line += f", {100 * val_tta:.2f}% with {tta_views} averaged"
            print_fn(line)
    test_loss = test_acc = None
    tta = test and tta_views is not None
    if test:
        test_loss, test_acc = trainer.evaluate(test_batches)
        probs = saved_model.predict_proba(splits.test_x)
        if tta:
            tta_acc = tta_accuracy(
                saved_model,
                splits.test_x,
                splits.test_y,
                tta=config.tta,
                tta_shift=config.tta_shift,
            )
            print_fn(f"test accuracy with {tta_views} averaged (TTA) {100 * tta_acc:.2f}%")
        write_predictions(out_dir / "predictions.npz", splits.test_y, probs, splits.test_x)
    seconds = time.perf_counter() - started
    model_path = save(out_dir / "model.npz", model, history=history.to_list(), **meta)
    summary = {
        "test_loss": test_loss,
        "test_acc": test_acc,
        "seconds": seconds,
        "train_examples": n_train,
        "test_examples": len(splits.test_y),
        **final_val,
        "config": asdict(config),
    }
    if tta:
        summary["test_acc_tta"] = tta_acc
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    if test:
        print_fn(
            f"test accuracy {100 * test_acc:.2f}%  "
            f"(test loss {test_loss:.4f}, {seconds:.0f} s in all)"
        )
    else:
        print_fn(
            f"{len(history)} of {config.epochs} epochs done, the test set not used "
            f"({seconds:.0f} s in all)"
        )
    return RunResult(out_dir, model_path, test_loss, test_acc, seconds, history.to_list(), data)


def sanity_check(
    config: TrainConfig | None = None,
    *,
    examples: int = 20,
    steps: int = 300,
    data: Dataset | None = None,
    progress: bool = False,
):
    """The doctor's checks before a long run, on the network and data of ``config``.

    The loss at initialisation against ln(C), and whether full-batch training
    fits ``examples`` training examples (stratified) within ``steps`` steps;
    see ``doctor.sanity``.

    Returns
    -------
    list of doctor.SanityResult
    """
    from numprop.training import doctor

    config = config or TrainConfig()
    config.validate()
    rng = np.random.default_rng(config.seed)
    if data is None:
        data = load_config_data(config, progress=progress)
    splits = split_data(data, config, rng)
    pre = make_preprocessing(data, config).fit(splits.x[splits.train_idx])
    x, y = subset(splits.x[splits.train_idx], splits.y[splits.train_idx], examples, rng)
    x = pre.transform(x).astype(np.float32, copy=False)
    model = make_model(config, pre.output_dim, data.n_classes, rng)
    model.set_precision(resolve_precision(config.precision))
    return doctor.sanity(
        model, make_loss(config), lambda m: make_optimizer(config, m), x, y, steps=steps
    )


def make_run_folder(out_dir: Path, *, resume: bool = False):
    """Create the run folder and lock it; a one-line ConfigError where that is impossible.

    A folder holding a finished run (``model.npz``) is not written over, unless
    the run is being resumed, and a folder another process is training into
    (its ``.lock`` held, ``fcntl.flock``) is refused.

    Returns
    -------
    file object
        The open lock file: the folder stays locked until it is closed.
    """
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise ConfigError(f"the run folder {out_dir} is a file")
        if not resume and (out_dir / "model.npz").exists():
            raise ConfigError(
                f"{out_dir} holds a finished run (model.npz): choose another --out, "
                "or delete it first"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the run folder {out_dir}: {exc.strerror or exc}") from None
    return lock_folder(
        out_dir,
        "the run folder",
        f"another numprop process is training into {out_dir}: wait for it, or choose another --out",
    )


# Named recipes (`numprop train --recipe NAME`): settings that differ from TrainConfig's
# defaults, and what they are for. Their measured accuracy and time are in
# benchmarks/RESULTS.md (benchmarks/cifar10.py --runs recipe-NAME).
RECIPES = {
    "two-layer": (
        {
            "hidden": [4096],
            "epochs": 40,
            "batch_size": 256,
            "lr": 0.05,
            "flip": True,
            "crop": 1,
            "label_smoothing": 0.1,
            "mixup": 0.4,
            "ema": 0.999,
            "ema_every": 4,
            "tta": True,
            "tta_shift": 1,
        },
        "the question's own architecture, one hidden ReLU layer of 4096 units and nothing "
        "else in the network; MixUp, label smoothing, weight averaging, flips and 1-pixel "
        "shifts in training and at test time (benchmarks/TWO_LAYER.md, TTA.md)",
    ),
    "fast": (
        {
            "hidden": [2048],
            "epochs": 20,
            "batch_size": 256,
            "lr": 0.05,
            "flip": True,
            "label_smoothing": 0.1,
            "tta": True,
        },
        "one hidden ReLU layer of 2048 units, larger steps in batches of 256, label "
        "smoothing, flips in training and at test time (three layers of 1024 with "
        "BatchNorm took longer an epoch for less: benchmarks/RESULTS.md)",
    ),
    "best": (
        {
            "model": "bottleneck",
            "width": 512,
            "depth": 4,
            "expansion": 4,
            "optimizer": "lion",
            "lr": 5e-5,
            "weight_decay": 1.0,
            "epochs": 400,
            "batch_size": 512,
            "warmup": 5.0,
            "crop": 4,
            "flip": True,
            "mixup": 0.8,
            "label_smoothing": 0.3,
            "ema": 0.999,
            "tta": True,
            "tta_shift": 4,
        },
        "inverted-bottleneck residual MLP (LayerNorm, GELU) with LION, MixUp, label "
        "smoothing 0.3, crops, flips and weight averaging (Bachmann et al. 2023), 400 "
        "epochs; predictions averaged over flips and shifts of the crops' 4 pixels "
        "(benchmarks/BEST.md, TTA.md)",
    ),
}


def recipe_config(name: str, **overrides) -> TrainConfig:
    """The TrainConfig of recipe ``name``, with ``overrides`` on top.

    Raises
    ------
    ConfigError
        For an unknown recipe.
    """
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[name][0], **overrides, "recipe": name})


def describe_tta(config: TrainConfig) -> str | None:
    """The test-time views ``config`` asks for, in words ("flips"), or None for none."""
    views = ["flips"] if config.tta else []
    if config.tta_shift:
        views.append(f"shifts of {config.tta_shift} pixels")
    return " and ".join(views) or None


def tta_accuracy(
    saved_model: SavedModel,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    tta: bool = False,
    tta_shift: int = 0,
) -> float:
    """Accuracy in [0, 1] of ``saved_model`` on raw ``images`` (N, H, W, C), each
    prediction averaged over the test-time views ``tta`` and ``tta_shift`` ask for
    (``SavedModel.predict_proba``; none by default)."""
    from numprop.training.metrics import accuracy

    probs = saved_model.predict_proba(images, tta=tta, tta_shift=tta_shift)
    return accuracy(labels, probs.argmax(axis=1))


def validation_split(config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the validation split a run of ``config`` holds out.

    Drawn as ``train`` draws it, from ``config.seed``: for measuring a saved
    run's model again without touching its test set.
    """
    splits = split_data(load_config_data(config), config, np.random.default_rng(config.seed))
    return splits.x[splits.val_idx], splits.y[splits.val_idx]


def train_cifar10(config: TrainConfig | None, out_dir: str | Path, **kwargs) -> RunResult:
    """``train`` under its old name, from when CIFAR-10 was the only data set."""
    return train(config, out_dir, **kwargs)


def model_summary(model) -> str:
    """'3072-1000-10 MLP (3,083,010 parameters)': the Linear sizes of a Sequential, and its size."""
    from numprop.nn.layers import Linear

    sizes = [m.in_features for m in model if isinstance(m, Linear)]
    sizes.append([m.out_features for m in model if isinstance(m, Linear)][-1])
    n = sum(p.data.size for p in model.parameters())
    return f"{'-'.join(map(str, sizes))} MLP ({n:,} parameters)"
