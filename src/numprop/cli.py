"""The `numprop` command: train, evaluate, predict, plot, gradcheck.

``main(argv)`` parses arguments, builds a configuration and calls the library;
tests call it directly. Bad input ends with one line on stderr and exit code 2,
a diverging run with exit code 1; never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from numprop.errors import ConfigError, NumpropError, TrainingError

EXIT_BAD_INPUT, EXIT_TRAINING_FAILED = 2, 1


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            word = "a positive number" if low == 1 else f"a number >= {low}"
            raise argparse.ArgumentTypeError(f"expected {word}, got {value}")
        return value

    return parse


_positive_int, _nonneg_int = _int_at_least(1), _int_at_least(0)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2)."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from numprop.data.preprocess import PREPROCESSING
    from numprop.nn.layers import ACTIVATIONS
    from numprop.nn.optim import OPTIMIZERS
    from numprop.nn.schedules import SCHEDULES
    from numprop.training.experiment import TrainConfig

    d = TrainConfig()
    parser = _Parser(
        prog="numprop", description="Neural networks from scratch in NumPy, on CIFAR-10."
    )
    from numprop import __version__

    parser.add_argument("--version", action="version", version=f"numprop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a network on CIFAR-10 and report test accuracy",
        description="Train a multi-layer perceptron on CIFAR-10. Defaults: the "
        "two-layer network (one hidden ReLU layer of 1000 units, softmax output).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    arch = t.add_argument_group("architecture")
    arch.add_argument(
        "--hidden",
        type=_positive_int,
        nargs="+",
        default=d.hidden,
        metavar="UNITS",
        help="hidden layer sizes, e.g. --hidden 1024 512",
    )
    arch.add_argument("--activation", choices=ACTIVATIONS.names(), default=d.activation)
    arch.add_argument("--dropout", type=_float, default=d.dropout, help="dropout probability")
    arch.add_argument("--batchnorm", action="store_true", help="BatchNorm after each hidden Linear")
    opt = t.add_argument_group("optimization")
    opt.add_argument("--optimizer", choices=OPTIMIZERS.names(), default=d.optimizer)
    opt.add_argument("--lr", type=_float, default=d.lr, help="peak learning rate")
    opt.add_argument("--momentum", type=_float, default=d.momentum, help="SGD momentum")
    opt.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    opt.add_argument("--weight-decay", type=_float, default=d.weight_decay)
    opt.add_argument("--schedule", choices=SCHEDULES.names(), default=d.schedule)
    opt.add_argument(
        "--warmup", type=_float, default=d.warmup, help="warm-up epochs of the cosine schedule"
    )
    opt.add_argument("--epochs", type=_positive_int, default=d.epochs)
    opt.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    opt.add_argument("--label-smoothing", type=_float, default=d.label_smoothing)
    opt.add_argument(
        "--patience",
        type=_nonneg_int,
        default=d.patience,
        help="early stopping after this many epochs without improvement (0: off)",
    )
    data = t.add_argument_group("data")
    data.add_argument(
        "--data-dir",
        default=None,
        help="folder holding cifar-10-batches-bin/ (default: $NUMPROP_DATA_DIR, "
        "else ~/.cache/numprop, downloaded if missing)",
    )
    data.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="fail instead of downloading CIFAR-10",
    )
    data.add_argument("--preprocessing", choices=PREPROCESSING.names(), default=d.preprocessing)
    data.add_argument(
        "--no-flip", dest="flip", action="store_false", help="no random horizontal flips"
    )
    data.add_argument(
        "--crop",
        type=_nonneg_int,
        default=d.crop,
        metavar="PAD",
        help="random crops after zero-padding by PAD pixels (0: off)",
    )
    data.add_argument(
        "--val-size",
        type=_nonneg_int,
        default=d.val_size,
        help="validation images held out of the training set (0: none)",
    )
    data.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train on a stratified subset of N images (quick runs)",
    )
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<timestamp>)")
    t.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN",
        help="continue an interrupted run from its last.npz, with its own settings",
    )
    t.add_argument("--no-plots", dest="plots", action="store_false")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser(
        "evaluate", help="test accuracy, per-class precision/recall, confusion matrix"
    )
    e.add_argument("model", type=Path, help="a model .npz (or a run folder)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--no-download", dest="download", action="store_false")

    p = sub.add_parser("predict", help="top-3 classes for PNG or JPEG images")
    p.add_argument("model", type=Path, help="a model .npz (or a run folder)")
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--top", type=_positive_int, default=3)

    pl = sub.add_parser(
        "plot", help="figures of a run: curves, confusion matrix, weights, mistakes"
    )
    pl.add_argument("run", type=Path, help="a run folder written by `numprop train`")
    pl.add_argument("--data-dir", default=None)
    pl.add_argument("--no-download", dest="download", action="store_false")

    g = sub.add_parser(
        "gradcheck",
        help="check gradients of a model configuration or your own Module",
        description="Finite-difference check (float64) of a small network with "
        "the given architecture, or of the Module classes defined in FILE.",
    )
    g.add_argument(
        "file",
        nargs="?",
        type=Path,
        help="a Python file defining Module subclasses (constructible with no "
        "arguments or via a make_module() function) to check",
    )
    g.add_argument("--hidden", type=_positive_int, nargs="+", default=[7])
    g.add_argument("--activation", choices=ACTIVATIONS.names(), default="relu")
    g.add_argument("--dropout", type=_float, default=0.0)
    g.add_argument("--batchnorm", action="store_true")
    g.add_argument("--inputs", type=_positive_int, default=9, help="input features of the test net")
    g.add_argument("--classes", type=_positive_int, default=4)
    g.add_argument("--batch", type=_positive_int, default=6)
    g.add_argument("--seed", type=int, default=0)

    sub.add_parser(
        "info",
        help="version, BLAS, compiled kernels, threads and CPU extensions in use",
        description="What numprop runs on here: its version, the BLAS library it calls, "
        "whether the compiled kernels (numba) are active, thread counts and the CPU's "
        "vector and matrix extensions.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainingError as exc:
        print(f"numprop: {exc}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except NumpropError as exc:
        print(f"numprop {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("numprop: interrupted", file=sys.stderr)
        return 130


# -- commands ------------------------------------------------------------------------


def cmd_train(args) -> int:
    from numprop.training.experiment import TrainConfig, train_cifar10

    names = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    if args.resume is not None and args.out is not None and args.out != args.resume:
        raise ConfigError("--resume continues in the run's own folder; leave out --out")
    out = args.resume or args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    result = train_cifar10(config, out, resume=args.resume is not None, progress=not args.quiet)
    model_path, data = result.model_path, result.data
    del result
    if args.plots:
        # The plots need the test split only: let the 150 MB of training images go first.
        test_only = replace(
            data,
            train_images=data.train_images[:0].copy(),
            train_labels=data.train_labels[:0].copy(),
        )
        del data
        written = make_plots(out, data=test_only)
        print(f"plots: {', '.join(p.name for p in written)}")
    print(f"saved the model to {model_path} and the run to {out}/")
    return 0


def _model_path(path: Path) -> Path:
    if path.is_dir():
        path = path / "model.npz"
    if not path.is_file():
        raise ConfigError(f"no model at {path}")
    return path


def _test_predictions(saved, data_dir, download, data=None):
    from numprop.data.cifar10 import load_cifar10

    if data is None:
        data = load_cifar10(data_dir, download=download)
    probs = saved.predict_proba(data.test_images)
    return data, probs


def cmd_evaluate(args) -> int:
    from numprop.training.io import load
    from numprop.training.metrics import (
        accuracy,
        classification_report,
        confusion_matrix,
    )

    saved = load(_model_path(args.model))
    data, probs = _test_predictions(saved, args.data_dir, args.download)
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(data.test_labels, pred, len(data.class_names))
    print(f"test accuracy {100 * accuracy(data.test_labels, pred):.2f}% on {len(pred):,} images")
    print(classification_report(cm, data.class_names))
    print("confusion matrix (rows: true class, columns: predicted)")
    width = max(len(n) for n in data.class_names)
    print(" " * (width + 1) + " ".join(f"{n[:5]:>5}" for n in data.class_names))
    for name, row in zip(data.class_names, cm):
        print(f"{name:>{width}} " + " ".join(f"{v:>5}" for v in row))
    return 0


def cmd_predict(args) -> int:
    from numprop.data.images import read_images
    from numprop.training.io import load

    saved = load(_model_path(args.model))
    probs = saved.predict_proba(read_images(args.images))
    names = saved.class_names or [str(i) for i in range(probs.shape[1])]
    for path, p in zip(args.images, probs):
        top = np.argsort(p)[::-1][: args.top]
        print(f"{path}: " + ", ".join(f"{names[i]} {100 * p[i]:.1f}%" for i in top))
    return 0


def make_plots(run: Path, data_dir=None, download=True, data=None) -> list[Path]:
    """Write the figures of a run folder; returns the paths written.

    ``data``: CIFAR-10 already in memory; otherwise it is loaded from ``data_dir``
    (by default the run's own).
    """
    from numprop.plots import (
        plot_confusion,
        plot_first_layer,
        plot_history,
        plot_misclassified,
    )
    from numprop.training.io import load
    from numprop.training.metrics import confusion_matrix

    saved = load(_model_path(run))
    run = run if run.is_dir() else run.parent
    written = [plot_history(saved.history, run / "curves.png")]
    data, probs = _test_predictions(
        saved, data_dir if data_dir is not None else saved.config.get("data_dir"), download, data
    )
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(data.test_labels, pred, len(data.class_names))
    written.append(plot_confusion(cm, data.class_names, run / "confusion.png"))
    # First-layer weights that are not images (e.g. after PCA): nothing to show.
    with contextlib.suppress(ConfigError):
        written.append(plot_first_layer(saved.model[0].weight.data, run / "weights.png"))
    written.append(
        plot_misclassified(
            data.test_images,
            data.test_labels,
            pred,
            data.class_names,
            run / "mistakes.png",
            probs=probs,
        )
    )
    return written


def cmd_plot(args) -> int:
    if not args.run.is_dir():
        raise ConfigError(f"{args.run} is not a run folder")
    for path in make_plots(args.run, args.data_dir, args.download):
        print(path)
    return 0


def cmd_gradcheck(args) -> int:
    from numprop.nn import models
    from numprop.nn.gradcheck import gradcheck
    from numprop.nn.losses import SoftmaxCrossEntropy

    rng = np.random.default_rng(args.seed)
    if args.file is not None:
        return _gradcheck_file(args.file, rng)
    model = models.mlp(
        [args.inputs, *args.hidden, args.classes],
        activation=args.activation,
        dropout=args.dropout,
        batchnorm=args.batchnorm,
        rng=rng,
        dtype=np.float64,
    )
    x = rng.standard_normal((args.batch, args.inputs))
    y = rng.integers(0, args.classes, args.batch)
    report = gradcheck(model, x, y, loss=SoftmaxCrossEntropy())
    print(report)
    return 0 if report.ok else EXIT_TRAINING_FAILED


def _gradcheck_file(path: Path, rng) -> int:
    """Check every Module defined in a user's file (or the one make_module() returns)."""
    import importlib.util

    from numprop.nn.gradcheck import gradcheck
    from numprop.nn.module import Module

    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    spec = importlib.util.spec_from_file_location(f"user_module_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code: report it in one line, whatever it raised
        raise ConfigError(f"could not run {path}: {type(exc).__name__}: {exc}") from None
    if hasattr(module, "make_module"):
        candidates = {"make_module()": module.make_module}
    else:
        candidates = {
            name: obj
            for name, obj in vars(module).items()
            if isinstance(obj, type)
            and issubclass(obj, Module)
            and obj.__module__ == module.__name__
        }
    if not candidates:
        raise ConfigError(f"{path} defines no Module subclass and no make_module() function")
    all_ok = True
    for name, factory in candidates.items():
        try:
            layer = factory()
        except TypeError as exc:
            raise ConfigError(
                f"cannot construct {name} with no arguments ({exc}); define make_module() in {path}"
            ) from None
        features = getattr(layer, "in_features", None) or getattr(module, "INPUT_FEATURES", 5)
        x = rng.standard_normal((4, features))
        try:
            report = gradcheck(layer, x)
        except NumpropError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"{name} failed on an input of shape {x.shape}: {type(exc).__name__}: {exc}"
            ) from None
        print(f"== {name}")
        print(report)
        all_ok &= report.ok
    return 0 if all_ok else EXIT_TRAINING_FAILED


def cmd_info(args) -> int:
    from numprop import config

    print(config.describe())
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "plot": cmd_plot,
    "gradcheck": cmd_gradcheck,
    "info": cmd_info,
}


if __name__ == "__main__":
    sys.exit(main())
