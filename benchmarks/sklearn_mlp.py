"""numprop.sklearn.MLPClassifier against scikit-learn's MLPClassifier: test accuracy and fit time.

    python benchmarks/sklearn_mlp.py             # every data set; writes benchmarks/SKLEARN.md
    python benchmarks/sklearn_mlp.py --quick     # small versions, to try the script (prints only)

Both estimators get the same arrays and the same settings: network, solver
(Adam, scikit-learn's default, learning rate 1e-3), L2 penalty (alpha 1e-4),
batch size 200 and number of epochs, with ``n_iter_no_change`` equal to the
epochs so that neither stops early. Each run fits numprop's estimator, then
scikit-learn's (A B A B ...), both with ``random_state`` = the repeat's number,
in this one process, on the same OpenBLAS (NumPy's, all cores); a pause of
0.25 s before each fit lets the BLAS threads of the previous one go idle. We
report the medians over the repeats: test accuracy, fit time (the whole
``fit`` call: input checks, numprop's conversion to float32, training) and
their ratio.

Data sets: scikit-learn's digits (pixels / 16; a stratified 75/25 split), a
``make_classification`` problem of 100,000 x 100 (10 classes, 50 informative
features; 80/20 split, standardised with the training split's statistics) and
CIFAR-10 flattened (50,000 training and 10,000 test images of 3,072 values,
/ 255 then standardised per value with the training set's statistics), read by
``numprop.data.cifar10.load_cifar10`` from ``--data-dir`` or NUMPROP_DATA_DIR.
scikit-learn computes in the inputs' dtype, float64; numprop in float32, its default.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier

import numprop
from numprop.data.cifar10 import load_cifar10
from numprop.sklearn import MLPClassifier

HERE = Path(__file__).resolve().parent

# The networks measured on every data set: scikit-learn's default hidden layer, and a wider one.
NETWORKS = {"100": (100,), "512": (512,)}
# Epochs per data set (full run, --quick).
EPOCHS = {"digits": (100, 20), "synthetic": (20, 3), "cifar10": (10, 2)}
SETTINGS = dict(solver="adam", learning_rate_init=1e-3, alpha=1e-4, batch_size=200, tol=1e-4)
SIDES = {"numprop": MLPClassifier, "sklearn": SkMLPClassifier}
NOTES_BEGIN, NOTES_END = "<!-- begin notes -->", "<!-- end notes -->"


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both splits in float64, centred and scaled by the training split's column statistics."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std[std == 0] = 1.0
    return (train - mean) / std, (test - mean) / std


def load(name: str, quick: bool, data_dir: str | None):
    """(X_train, X_test, y_train, y_test, description) for one data set, X in float64."""
    if name == "digits":
        X, y = load_digits(return_X_y=True)
        parts = train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)
        return (*parts, "scikit-learn's digits, 8×8 pixels / 16")
    if name == "synthetic":
        n = 20_000 if quick else 100_000
        X, y = make_classification(
            n, 100, n_informative=50, n_redundant=10, n_classes=10, random_state=0
        )
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=0.2, stratify=y, random_state=0
        )
        return (
            *standardise(X_train, X_test),
            y_train,
            y_test,
            f"make_classification({n:,}, 100, n_informative=50, n_redundant=10, n_classes=10)",
        )
    data = load_cifar10(data_dir, download=False, progress=False)
    X_train = data.train_x.reshape(len(data.train_x), -1)
    X_test = data.test_x.reshape(len(data.test_x), -1)
    y_train, y_test = data.train_y, data.test_y
    what = "CIFAR-10 flattened (3,072 values), / 255, standardised"
    if quick:  # a stratified tenth of each split
        keep, _ = train_test_split(
            np.arange(len(y_train)), train_size=0.1, stratify=y_train, random_state=0
        )
        keep_test, _ = train_test_split(
            np.arange(len(y_test)), train_size=0.1, stratify=y_test, random_state=0
        )
        X_train, y_train, X_test, y_test = (
            X_train[keep],
            y_train[keep],
            X_test[keep_test],
            y_test[keep_test],
        )
        what += " (a stratified tenth)"
    X_train, X_test = standardise(X_train / 255.0, X_test / 255.0)
    return X_train, X_test, y_train, y_test, what


def fit_once(side: str, hidden, epochs: int, seed: int, X_train, y_train, X_test, y_test):
    """One fit of one side: (fit seconds, test accuracy)."""
    est = SIDES[side](
        hidden_layer_sizes=hidden,
        max_iter=epochs,
        n_iter_no_change=epochs,  # the no-improvement count never exceeds the epochs
        random_state=seed,
        **SETTINGS,
    )
    gc.collect()
    time.sleep(0.25)  # BLAS threads spin ~0.1 s after their last product
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is reached on purpose
        started = time.perf_counter()
        est.fit(X_train, y_train)
        seconds = time.perf_counter() - started
    assert est.n_iter_ == epochs, f"{side} stopped after {est.n_iter_} of {epochs} epochs"
    return seconds, float(est.score(X_test, y_test))


def measure(name, network, data, epochs, repeats):
    """Alternate the two sides ``repeats`` times on one data set and network; the record."""
    X_train, X_test, y_train, y_test, what = data
    hidden = NETWORKS[network]
    for side in SIDES:  # untimed: compiles numprop's kernels, warms caches on both sides
        fit_once(side, hidden, 1, 0, X_train[:1000], y_train[:1000], X_test, y_test)
    runs = {side: [] for side in SIDES}
    load_before = os.getloadavg()[0]
    for seed in range(repeats):
        for side in SIDES:
            seconds, acc = fit_once(side, hidden, epochs, seed, X_train, y_train, X_test, y_test)
            runs[side].append({"seconds": seconds, "accuracy": acc})
            print(
                f"  {name:9} {network:>4} repeat {seed}  {side:8} {seconds:8.2f} s  "
                f"accuracy {100 * acc:.2f}%",
                flush=True,
            )
    med = {
        side: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "accuracy")}
        for side, rs in runs.items()
    }
    paired = [n["seconds"] / s["seconds"] for n, s in zip(runs["numprop"], runs["sklearn"])]
    return {
        "data": name,
        "what": what,
        "shape": f"{len(X_train):,} train / {len(X_test):,} test × {X_train.shape[1]:,}",
        "classes": int(len(np.unique(y_train))),
        "network": network,
        "epochs": epochs,
        "repeats": repeats,
        "runs": runs,
        "median": med,
        "ratio": med["numprop"]["seconds"] / med["sklearn"]["seconds"],
        "paired_ratios": paired,
        "load": [load_before, os.getloadavg()[0]],
    }


def verdict(r) -> tuple[bool, bool]:
    """(accuracy target met, time target met) for one record."""
    delta = r["median"]["numprop"]["accuracy"] - r["median"]["sklearn"]["accuracy"]
    return delta >= -0.005, r["ratio"] <= 0.5


def table(records) -> str:
    lines = [
        "| data set | hidden | epochs | numprop accuracy (range) | scikit-learn accuracy (range) | difference | "
        "numprop fit | scikit-learn fit | time ratio (paired range) | accuracy ≥ sklearn − 0.5 pt | time ≤ 0.5× |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        n, s = r["median"]["numprop"], r["median"]["sklearn"]
        acc_ok, time_ok = verdict(r)
        lo, hi = min(r["paired_ratios"]), max(r["paired_ratios"])
        spread = {
            side: "{:.2f}–{:.2f}".format(*(100 * f(x["accuracy"] for x in rs) for f in (min, max)))
            for side, rs in r["runs"].items()
        }
        lines.append(
            f"| {r['data']} | {r['network']} | {r['epochs']} | "
            f"{100 * n['accuracy']:.2f}% ({spread['numprop']}) | "
            f"{100 * s['accuracy']:.2f}% ({spread['sklearn']}) | "
            f"{100 * (n['accuracy'] - s['accuracy']):+.2f} pt | "
            f"{n['seconds']:.2f} s | {s['seconds']:.2f} s | {r['ratio']:.2f} ({lo:.2f}–{hi:.2f}) | "
            f"{'yes' if acc_ok else '**no**'} | {'yes' if time_ok else '**no**'} |"
        )
    return "\n".join(lines)


def machine() -> str:
    from results_md import cpu_name

    return (
        f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores; Python {platform.python_version()}, "
        f"NumPy {np.__version__}, scikit-learn {sklearn.__version__}, numprop {numprop.__version__}"
    )


def write(records, command: str, started: str) -> None:
    data_lines = []
    for name in dict.fromkeys(r["data"] for r in records):
        r = next(r for r in records if r["data"] == name)
        data_lines.append(f"- **{name}**: {r['what']}; {r['shape']}, {r['classes']} classes.")
    raw = {
        f"{r['data']} {r['network']}": {side: rs for side, rs in r["runs"].items()} for r in records
    }
    loads = ", ".join(
        f"{r['data']} {r['network']}: {r['load'][0]:.2f} → {r['load'][1]:.2f}" for r in records
    )
    # Notes written by hand between the markers survive a new run.
    notes = ""
    if (HERE / "SKLEARN.md").exists():
        old = (HERE / "SKLEARN.md").read_text()
        begin, end = old.find(NOTES_BEGIN), old.find(NOTES_END)
        if 0 <= begin < end:
            notes = old[begin : end + len(NOTES_END)] + "\n\n"
    text = f"""# numprop.sklearn.MLPClassifier against scikit-learn's MLPClassifier

Written by `benchmarks/sklearn_mlp.py`, started {started}; command (from the
repository root): `{command}`.

- Machine: {machine()}
- Both estimators run in one process on NumPy's OpenBLAS ({_blas_threads()} threads), one
  after the other (numprop, scikit-learn, numprop, ...), with `random_state` = the repeat's
  number; medians over the repeats. Time is the whole `fit` call.
- Settings for both: Adam (scikit-learn's default solver), learning rate 1e-3, alpha 1e-4,
  batch size 200, one hidden layer of ReLU units (100, scikit-learn's default, or 512),
  `n_iter_no_change` = epochs (neither stops early; both ran every epoch).
- scikit-learn computes in float64 (the inputs' dtype); numprop in float32 (its default).
- One-minute load average before → after each block (the machine is shared; 2 cores): {loads}.

## Data

{chr(10).join(data_lines)}

## Results

{table(records)}

Targets: test accuracy within 0.5 point of scikit-learn's or better, and fit time at
most 0.5× scikit-learn's, on each data set.

{notes}## Raw measurements (seconds, test accuracy)

```json
{json.dumps(raw, indent=1)}
```
"""
    (HERE / "SKLEARN.md").write_text(text)
    print(f"wrote {HERE / 'SKLEARN.md'}")


def _blas_threads() -> str:
    try:
        from numprop._fast import blas

        lib = blas._openblas()
        return str(lib.get_num_threads()) if lib is not None and lib.get_num_threads else "?"
    except Exception:  # only a label in the report
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small versions; prints only")
    parser.add_argument("--data", nargs="+", choices=list(EPOCHS), default=list(EPOCHS))
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=list(NETWORKS))
    parser.add_argument(
        "--repeats", type=int, help="fits per side (default 5; 3 for CIFAR-10; 1 with --quick)"
    )
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-bin/")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    records = []
    for name in args.data:
        data = load(name, args.quick, args.data_dir)
        epochs = EPOCHS[name][1 if args.quick else 0]
        repeats = args.repeats or (1 if args.quick else 3 if name == "cifar10" else 5)
        for network in args.networks:
            records.append(measure(name, network, data, epochs, repeats))
        del data
    print(table(records))
    if not (args.quick or args.no_write):
        command = "python benchmarks/sklearn_mlp.py " + " ".join(map(shlex.quote, sys.argv[1:]))
        write(records, command.strip(), started)


if __name__ == "__main__":
    main()
