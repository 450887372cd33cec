"""The `numprop` command: train, sweep, evaluate, predict, plot, gradcheck, info.

``main(argv)`` parses arguments, builds a configuration and calls the library;
tests call it directly. Bad input ends with one line on stderr and exit code 2,
a diverging run with exit code 1; never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from dataclasses import fields
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
    from numprop.nn.layers import ACTIVATIONS
    from numprop.training.experiment import TrainConfig

    d = TrainConfig()
    parser = _Parser(
        prog="numprop",
        description="Neural networks from scratch in NumPy: CIFAR-10, MNIST, ... or your own data.",
    )
    from numprop import __version__

    parser.add_argument("--version", action="version", version=f"numprop {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (or NUMPROP_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a network (CIFAR-10 by default, or --data) and report test accuracy",
        description="Train a multi-layer perceptron on a named data set or your own "
        ".npz, .csv or image folder. Defaults: CIFAR-10 and the two-layer network "
        "(one hidden ReLU layer of 1000 units, softmax output).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _run_arguments(t, d)
    t.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<timestamp>)")
    t.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN",
        help="continue an interrupted run from its last.npz, with its own settings",
    )
    t.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="do not record the per-layer statistics `numprop doctor` reads",
    )
    t.add_argument("--no-plots", dest="plots", action="store_false")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    _sweep_parser(sub)

    e = sub.add_parser(
        "evaluate",
        help="test accuracy, per-class precision/recall, confusion matrix",
        description="Evaluate a model on the test split of its own data set, or on --data: "
        "a named data set's test split, or every example of a file (its X_test/y_test "
        "when an .npz has them, or an image folder's test/ part).",
    )
    e.add_argument("model", type=Path, help="a model .npz (or a run folder)")
    e.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the class probabilities of each image and "
        "its mirror image (for images whose class a flip keeps)",
    )
    e.add_argument(
        "--tta-shift",
        type=_nonneg_int,
        default=0,
        metavar="PIXELS",
        help="test-time augmentation: also average over the image shifted by 0 and "
        "+-PIXELS across and down (9 copies; for models trained with --crop PIXELS)",
    )
    _data_arguments(e, default=None)
    _precision_argument(e, "auto")

    p = sub.add_parser(
        "predict",
        help="the most likely classes of images, or of the rows of .csv / .npz files",
    )
    p.add_argument("model", type=Path, help="a model .npz (or a run folder)")
    p.add_argument("inputs", type=Path, nargs="+", metavar="FILE", help="images, .csv or .npz")
    p.add_argument("--top", type=_positive_int, default=3)
    _precision_argument(p, "auto")

    pl = sub.add_parser(
        "plot",
        help="figures of a run: curves, confusion matrix, weights, mistakes",
        description="Draw a run's figures from what `numprop train` saved in its "
        "folder; never loads or downloads a data set.",
    )
    pl.add_argument("run", type=Path, help="a run folder written by `numprop train`")

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

    doc = sub.add_parser(
        "doctor",
        help="what is wrong with a training run, in plain words (or --sanity checks)",
        description="Read a run folder's diagnostics and say what is wrong, most serious "
        "first, with the evidence and what to do; draws doctor.png into the run. Exits 0 "
        "when it finds nothing, 1 when it does. With --sanity, instead check a network "
        "before a long run: its loss at initialisation against ln(C), and that it can "
        "overfit 20 examples (give the options you would give `numprop train`).",
    )
    doc.add_argument("run", type=Path, nargs="?", help="a run folder of `numprop train`")
    doc.add_argument(
        "--sanity", action="store_true", help="check a network (train's options) before a run"
    )
    doc.add_argument("--examples", type=_positive_int, default=20, help="with --sanity")
    doc.add_argument("--steps", type=_positive_int, default=300, help="with --sanity")
    _run_arguments(doc, d)

    sub.add_parser(
        "info",
        help="version, BLAS, compiled kernels, threads and CPU extensions in use",
        description="What numprop runs on here: its version, the BLAS library it calls, "
        "whether the compiled kernels (numba) are active, thread counts and the CPU's "
        "vector and matrix extensions.",
    )
    return parser


def _run_arguments(t, d) -> None:
    """The options of a run (architecture, optimization, data, seed): train's and doctor's."""
    from numprop.data.preprocess import PREPROCESSING
    from numprop.nn.layers import ACTIVATIONS
    from numprop.nn.optim import OPTIMIZERS
    from numprop.nn.schedules import SCHEDULES

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
    arch.add_argument(
        "--model",
        choices=["mlp", "bottleneck"],
        default=d.model,
        help="mlp: --hidden layers; bottleneck: residual inverted-bottleneck blocks "
        "(LayerNorm, GELU) of --width, --depth, --expansion",
    )
    arch.add_argument("--width", type=_positive_int, default=d.width, help="bottleneck width")
    arch.add_argument("--depth", type=_positive_int, default=d.depth, help="bottleneck blocks")
    arch.add_argument("--expansion", type=_positive_int, default=d.expansion)
    arch.add_argument(
        "--init",
        choices=["he", "glorot", "normal"],
        default=d.init,
        help="initial weights (default: he for ReLU-like activations, glorot for tanh/sigmoid)",
    )
    arch.add_argument(
        "--init-scale",
        type=_float,
        default=d.init_scale,
        metavar="S",
        help="multiplies the he/glorot std; the std itself for normal (default 0.01)",
    )
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
    _precision_argument(opt, d.precision)
    opt.add_argument("--label-smoothing", type=_float, default=d.label_smoothing)
    opt.add_argument("--mixup", type=_float, default=d.mixup, metavar="ALPHA", help="0: off")
    opt.add_argument("--cutmix", type=_float, default=d.cutmix, metavar="ALPHA", help="0: off")
    opt.add_argument(
        "--ema",
        type=_float,
        default=d.ema,
        metavar="DECAY",
        help="average the weights (e.g. 0.999) for the final model; 0: off",
    )
    opt.add_argument(
        "--ema-every",
        type=_positive_int,
        default=d.ema_every,
        metavar="STEPS",
        help="update the average every STEPS optimizer steps (decay**STEPS): less work",
    )
    opt.add_argument(
        "--tta", action="store_true", help="also report the test accuracy averaged over flips"
    )
    opt.add_argument(
        "--tta-shift",
        type=_nonneg_int,
        default=d.tta_shift,
        metavar="PIXELS",
        help="also average over shifts by 0 and +-PIXELS across and down (9 copies; "
        "for models trained with --crop PIXELS); 0: off",
    )
    opt.add_argument(
        "--patience",
        type=_nonneg_int,
        default=d.patience,
        help="early stopping after this many epochs without improvement (0: off)",
    )
    data = t.add_argument_group("data")
    _data_arguments(data, default=d.data)
    data.add_argument(
        "--image-size",
        type=_positive_int,
        default=d.image_size,
        metavar="PIXELS",
        help="side that the images of a folder are resized to",
    )
    data.add_argument(
        "--preprocessing",
        choices=PREPROCESSING.names(),
        default=None,
        help="default: standardize (per channel) for images, columns for tables",
    )
    data.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips of training images (default: where the data set "
        "allows them, e.g. CIFAR yes, digits no)",
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
        help="validation examples held out of the training set (0: none)",
    )
    data.add_argument(
        "--test-fraction",
        type=_float,
        default=d.test_fraction,
        help="share held out as the test set when the data has no test split",
    )
    data.add_argument(
        "--limit",
        type=_positive_int,
        default=None,
        metavar="N",
        help="train on a stratified subset of N examples (quick runs)",
    )
    t.add_argument("--seed", type=int, default=d.seed)
    from numprop.training.experiment import RECIPES

    t.add_argument(
        "--recipe",
        choices=list(RECIPES),
        default=None,
        help="a named recipe's settings (options given explicitly override them): "
        + "; ".join(f"{name}: {what}" for name, (_, what) in RECIPES.items()),
    )


def _sweep_parser(sub) -> None:
    """`numprop sweep`: its space file, where it runs and how it searches."""
    from numprop.training.sweep import SAMPLERS, SEARCHES, SweepSettings

    d = SweepSettings()
    s = sub.add_parser(
        "sweep",
        help="a hyperparameter sweep: many `numprop train` runs on a Dask cluster",
        description="Train trials of the settings in a TOML space file (fixed values, "
        "ranges, choices of train's options) as Dask futures: on a local cluster sized to "
        "this machine, or with --scheduler on a running one. Writes one run folder per "
        "trial, trials.csv/.json, the best model (the only one tested) and a figure.",
    )
    s.add_argument("space", nargs="?", type=Path, help="the space file (.toml)")
    s.add_argument("--out", type=Path, default=None, help="default: sweeps/<timestamp>")
    s.add_argument(
        "--resume", type=Path, default=None, metavar="DIR", help="continue a stopped sweep"
    )
    where = s.add_argument_group("where the trials run")
    where.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="a running Dask scheduler, tcp://HOST:PORT (default: start a local cluster)",
    )
    where.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="the local cluster's worker processes (default: one per core, at most one per trial)",
    )
    where.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="BLAS threads per trial (default: each machine's cores shared among the "
        "trials running on it)",
    )
    where.add_argument(
        "--retries",
        type=_nonneg_int,
        default=3,
        help="local cluster: how often a trial may lose its worker before it fails "
        "(default 3; a --scheduler's cluster has its own allowed-failures)",
    )
    where.add_argument(
        "--connect-timeout",
        type=_float,
        default=20.0,
        metavar="SECONDS",
        help="how long to try to reach --scheduler (default 20)",
    )
    how = s.add_argument_group("how to search")
    how.add_argument("--search", choices=SEARCHES, default=d.search, help="default: random")
    how.add_argument(
        "--sampler",
        choices=list(SAMPLERS),
        default=d.sampler,
        help="Optuna's sampler for --search optuna (default: tpe)",
    )
    how.add_argument(
        "--trials", type=_positive_int, default=None, help="default: 16; grid: every combination"
    )
    how.add_argument("--seed", type=_nonneg_int, default=d.seed, help="the search's (default 0)")
    how.add_argument(
        "--min-epochs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="successive halving: every trial trains N epochs, the best 1/eta go on to "
        "eta times as many from their checkpoints, and so on (default: no halving)",
    )
    how.add_argument(
        "--eta", type=_int_at_least(2), default=d.eta, help="halving's factor (default 3)"
    )


def _data_arguments(group, default: str | None) -> None:
    """--data, --target, --data-dir and --no-download: where the examples come from."""
    from numprop.data.catalog import DATASETS

    group.add_argument(
        "--data",
        default=default,
        metavar="NAME|PATH",
        help=f"a data set ({', '.join(DATASETS.names())}) or your own .npz "
        "(X, y, optional X_test, y_test), .csv (with --target) or image folder "
        "(one subfolder per class)" + ("" if default else "; default: the model's own data set"),
    )
    group.add_argument("--target", default=None, metavar="COLUMN", help="label column of a .csv")
    group.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the named data sets (default: $NUMPROP_DATA_DIR, "
        "else ~/.cache/numprop; downloaded if missing)",
    )
    group.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="fail instead of downloading a named data set",
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv``; returns the exit code.

    0: done; 1: a failure during a run (divergence, a write that failed, a
    bug); 2: bad input; 130: interrupted. Errors are one line on stderr; with
    ``--debug`` or ``NUMPROP_DEBUG=1`` the traceback follows.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("NUMPROP_DEBUG", "") not in ("", "0")
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        # The reader went away (`numprop predict ... | head -1`): stop quietly, and
        # point stdout at nothing so Python's own flush at exit does not complain.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_TRAINING_FAILED
    except KeyboardInterrupt:
        print("numprop: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes one line
        if debug:
            traceback.print_exc()
        code, line = _one_line(args.command, exc)
        if code == EXIT_TRAINING_FAILED and not isinstance(exc, NumpropError) and not debug:
            line += "  (NUMPROP_DEBUG=1 shows the traceback)"
        print(line, file=sys.stderr)
        return code


def _one_line(command: str, exc: Exception) -> tuple[int, str]:
    """The exit code and the one line an error becomes."""
    from numprop.training.io import one_line

    text = one_line(exc) or type(exc).__name__
    if isinstance(exc, TrainingError):
        return EXIT_TRAINING_FAILED, f"numprop: {text}"
    if isinstance(exc, NumpropError):
        return EXIT_BAD_INPUT, f"numprop {command}: error: {text}"
    if isinstance(exc, MemoryError):
        return EXIT_TRAINING_FAILED, (
            f"numprop {command}: out of memory: use a smaller network or --batch-size"
        )
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return EXIT_TRAINING_FAILED, (
            f"numprop {command}: could not read or write{where}: {exc.strerror or text}"
        )
    return EXIT_TRAINING_FAILED, f"numprop {command}: internal error: {type(exc).__name__}: {text}"


# -- commands ------------------------------------------------------------------------


def _precision_argument(parser, default: str) -> None:
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "auto"],
        default=default,
        help="matrix products in float32, or bf16 operands with float32 sums (AMX/AVX512-BF16 "
        "through MKL: pip install 'numprop[mkl]'); auto: bf16 where that is faster "
        f"(default: {default})",
    )


def _load_model(args):
    """The saved model ``args.model``, its products in ``args.precision``."""
    from numprop.nn.precision import resolve
    from numprop.training.io import load

    saved = load(_model_path(args.model))
    dtype = saved.model.parameters()[0].data.dtype
    saved.model.set_precision(resolve(args.precision, dtype))
    return saved


def _given(args) -> dict:
    """The run settings in ``args`` given explicitly: those that differ from the defaults."""
    from numprop.training.experiment import TrainConfig

    default = TrainConfig()
    names = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v != getattr(default, k)}


def _config(args):
    """The TrainConfig of the run options in ``args``, on top of ``--recipe`` if given."""
    from numprop.training.experiment import TrainConfig, recipe_config

    given = _given(args)
    return TrainConfig(**given) if args.recipe is None else recipe_config(args.recipe, **given)


def cmd_train(args) -> int:
    from numprop.training.experiment import train

    config = _config(args)
    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise ConfigError("--resume continues in the run's own folder; leave out --out")
        # The run goes on with the settings it was started with: say so, not ignore them.
        given = sorted(  # --recipe among them: it is a setting too
            f"--{name.replace('_', '-')}" for name in set(_given(args)) - {"data_dir", "download"}
        )
        if given:
            raise ConfigError(
                f"--resume continues the run with its own settings; leave out {', '.join(given)}"
            )
    out = args.resume or args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    result = train(config, out, resume=args.resume is not None, progress=not args.quiet)
    model_path = result.model_path
    del result  # let the data go before drawing
    if args.plots:
        written = make_plots(out)
        print(f"plots: {', '.join(p.name for p in written)}")
    print(f"saved the model to {model_path} and the run to {out}/")
    return 0


def cmd_sweep(args) -> int:
    import functools

    from numprop.training import sweep

    where = {
        "scheduler": args.scheduler,
        "workers": args.workers,
        "threads": args.threads,
        "retries": args.retries,
        "timeout": args.connect_timeout,
        "print_fn": functools.partial(print, flush=True),
    }
    search = {
        "search": args.search,
        "sampler": args.sampler,
        "trials": args.trials,
        "seed": args.seed,
        "min_epochs": args.min_epochs,
        "eta": args.eta,
    }
    if args.resume is not None:
        default = sweep.SweepSettings()
        given = [k for k, v in search.items() if v != getattr(default, k)]
        if args.space is not None or args.out is not None or given:
            what = ["the space file"] * (args.space is not None) + ["--out"] * (
                args.out is not None
            )
            what += [f"--{k.replace('_', '-')}" for k in given]
            raise ConfigError(
                f"--resume continues the sweep with its own settings; leave out {', '.join(what)}"
            )
        out = args.resume
    elif args.space is None:
        raise ConfigError("give a space file (numprop sweep SPACE.toml) or --resume DIR")
    else:
        out = args.out or Path("sweeps") / time.strftime("%Y%m%d-%H%M%S")
    try:
        if args.resume is not None:
            sweep.resume_sweep(out, **where)
        else:
            sweep.start_sweep(args.space, out, sweep.SweepSettings(**search), **where)
    except KeyboardInterrupt:
        print(
            f"numprop sweep: stopped; finished trials are kept, running ones from their "
            f"checkpoints: numprop sweep --resume {out}",
            file=sys.stderr,
        )
        return 130
    return 0


def _model_path(path: Path) -> Path:
    if path.is_dir():
        path = path / "model.npz"
    if not path.is_file():
        raise ConfigError(f"no model at {path}")
    return path


def _evaluation_data(saved, args):
    """(inputs, class indices, measure, what they are) to evaluate ``saved`` on, as ``args`` say."""
    from numprop.data.catalog import load_data

    own = saved.config or {}
    data = args.data if args.data is not None else own.get("data", "cifar10")
    dataset = load_data(
        data,
        data_dir=args.data_dir if args.data_dir is not None else own.get("data_dir"),
        download=args.download,
        target=args.target if args.target is not None else own.get("target"),
        # images of a folder are resized to what the model takes
        image_size=saved.inputs["shape"][0] if saved.inputs["kind"] == "images" else 32,
        class_names=saved.class_names or None,
    )
    if dataset.test_x is not None:
        return dataset.test_x, dataset.test_y, "test accuracy", f"the {dataset.name} test set"
    if args.data is None:
        raise ConfigError(
            f"the model's data ({data}) has no separate test split (its run held one out: "
            "see summary.json); pass --data FILE with the examples to evaluate on"
        )
    return dataset.train_x, dataset.train_y, "accuracy", f"all of {dataset.name}"


def _check_inputs(saved, x) -> None:
    """A one-line error when inputs are not what the model was trained on."""
    inputs = saved.inputs
    if inputs["kind"] == "images":
        if x.ndim != 4 or list(x.shape[1:]) != inputs["shape"]:
            raise ConfigError(
                f"the model takes images of shape {tuple(inputs['shape'])}, "
                f"got {'images' if x.ndim == 4 else 'rows'} of shape {x.shape[1:]}"
            )
    elif x.ndim != 2 or x.shape[1] != inputs["width"]:
        raise ConfigError(
            f"the model takes rows of {inputs['width']} features, got shape {x.shape[1:]}"
        )


def cmd_evaluate(args) -> int:
    from numprop.training.metrics import (
        accuracy,
        classification_report,
        confusion_matrix,
    )

    saved = _load_model(args)
    x, y, measure, what = _evaluation_data(saved, args)
    _check_inputs(saved, x)
    names = saved.class_names or [str(i) for i in range(saved.model[-1].out_features)]
    pred = saved.predict_proba(x, tta=args.tta, tta_shift=args.tta_shift).argmax(axis=1)
    cm = confusion_matrix(y, pred, len(names))
    print(
        f"{measure} {100 * accuracy(y, pred):.2f}% on {len(pred):,} examples ({what}), "
        f"{saved.model.precision.name} products"
        + (", with flipped copies (--tta)" if args.tta else "")
        + (f", with copies shifted by {args.tta_shift} pixels" if args.tta_shift else "")
    )
    print(classification_report(cm, names))
    if len(names) <= 20:  # beyond that the matrix is a wall of numbers: plot it instead
        print("confusion matrix (rows: true class, columns: predicted)")
        width = max(len(n) for n in names)
        print(" " * (width + 1) + " ".join(f"{n[:5]:>5}" for n in names))
        for name, row in zip(names, cm):
            print(f"{name:>{width}} " + " ".join(f"{v:>5}" for v in row))
    return 0


def cmd_predict(args) -> int:
    from numprop.data.files import read_inputs

    saved = _load_model(args)
    inputs = saved.inputs
    x, rows = read_inputs(
        args.inputs,
        image_shape=tuple(inputs["shape"]) if inputs["kind"] == "images" else None,
        columns=inputs.get("columns") if inputs["kind"] == "table" else None,
    )
    _check_inputs(saved, x)
    probs = saved.predict_proba(x)
    names = saved.class_names or [str(i) for i in range(probs.shape[1])]
    for row, p in zip(rows, probs):
        top = np.argsort(p)[::-1][: args.top]
        print(f"{row}: " + ", ".join(f"{names[i]} {100 * p[i]:.1f}%" for i in top))
    return 0


def make_plots(run: Path) -> list[Path]:
    """Write the figures of a run folder from what it saved; returns the paths written.

    Reads ``model.npz`` (history, weights, class names) and ``predictions.npz``
    (the test predictions and mistakes); never the data set.
    """
    from numprop.plots import (
        plot_confusion,
        plot_first_layer,
        plot_history,
        plot_misclassified,
    )
    from numprop.training.io import load
    from numprop.training.metrics import confusion_matrix
    from numprop.training.predictions import read_predictions

    saved = load(_model_path(run))
    run = run if run.is_dir() else run.parent
    written = [plot_history(saved.history, run / "curves.png")]
    names = saved.class_names or [str(i) for i in range(saved.model[-1].out_features)]
    if not (run / "predictions.npz").is_file():
        raise ConfigError(
            f"{run} has no predictions.npz (runs of numprop before 0.3 did not save it): "
            "only curves.png was drawn; `numprop evaluate` still works on it"
        )
    found = read_predictions(run / "predictions.npz")
    cm = confusion_matrix(found.y_true, found.y_pred, len(names))
    written.append(plot_confusion(cm, names, run / "confusion.png"))
    if saved.inputs["kind"] == "images":
        # First-layer weights that are not images (e.g. after PCA): nothing to show.
        with contextlib.suppress(ConfigError):
            written.append(
                plot_first_layer(
                    saved.model[0].weight.data,
                    run / "weights.png",
                    image_shape=saved.inputs["shape"],
                )
            )
    if found.mistake_images is not None:
        idx = found.mistake_index
        written.append(
            plot_misclassified(
                found.mistake_images,
                found.y_true[idx],
                found.y_pred[idx],
                names,
                run / "mistakes.png",
                probs=found.mistake_probs,
                counts=(int((found.y_true != found.y_pred).sum()), len(found.y_true)),
            )
        )
    return written


def cmd_plot(args) -> int:
    if not args.run.is_dir():
        raise ConfigError(f"{args.run} is not a run folder")
    for path in make_plots(args.run):
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


def cmd_doctor(args) -> int:
    from numprop.training import doctor

    if args.sanity:
        from numprop.training.experiment import sanity_check

        config = _config(args)
        results = sanity_check(config, examples=args.examples, steps=args.steps)
        for r in results:
            print(f"{'pass' if r.ok else 'FAIL'}  {r.name}: {r.detail}")
            if not r.ok:
                print(f"      {r.meaning}")
        return 0 if all(r.ok for r in results) else 1
    if args.run is None:
        raise ConfigError("give a run folder (numprop doctor RUN), or --sanity")
    record = doctor.read(args.run)
    findings = doctor.examine(record)
    epochs = len(record["epochs"])
    if findings:
        print(
            f"{args.run}: {len(findings)} finding{'s' * (len(findings) > 1)} "
            f"in {epochs} epoch{'s' * (epochs != 1)}, most serious first"
        )
        for i, finding in enumerate(findings, 1):
            print(f"\n{i}. {finding}")
    else:
        print(f"{args.run}: nothing wrong found in {epochs} epoch{'s' * (epochs != 1)}")
    for note in doctor.notes(record):
        print(f"\nnote: {note}")
    if args.run.is_dir():
        print(f"\nper-layer statistics: {doctor.plot(record, args.run / 'doctor.png')}")
    return 1 if findings else 0


def cmd_info(args) -> int:
    from numprop import config

    print(config.describe())
    return 0


COMMANDS = {
    "train": cmd_train,
    "sweep": cmd_sweep,
    "doctor": cmd_doctor,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "plot": cmd_plot,
    "gradcheck": cmd_gradcheck,
    "info": cmd_info,
}


if __name__ == "__main__":
    sys.exit(main())
