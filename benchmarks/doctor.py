"""What the doctor's Diagnostics callback costs: epoch time with it against without it.

    python benchmarks/doctor.py                  # prints the table
    python benchmarks/doctor.py --write          # and writes benchmarks/DOCTOR.md

Each configuration trains one epoch of CIFAR-10 (45,000 images, the
`numprop train` pipeline: uint8 batches standardised per channel, the
configured network, SGD with momentum) with and without `Diagnostics`,
alternating the two sides, from the same weights and batch order; the ratio
of the medians is the cost. Target (issue 13): at most 3% of epoch time.
Needs CIFAR-10 where `numprop train` finds it (NUMPROP_DATA_DIR).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import numprop as npp
from numprop.nn.precision import resolve
from numprop.training.diagnostics import Diagnostics
from numprop.training.experiment import (
    TrainConfig,
    make_batches,
    make_model,
    make_optimizer,
    make_preprocessing,
    split_data,
)

HERE = Path(__file__).resolve().parent
TARGET = 1.03

CONFIGS = {
    "default": TrainConfig(),
    "bn3x1024-b512": TrainConfig(
        hidden=[1024, 1024, 1024], batchnorm=True, dropout=0.2, batch_size=512, lr=0.05
    ),
}


class TimedDiagnostics(Diagnostics):
    """Diagnostics that add up the time spent in their own hooks."""

    seconds = 0.0

    def _timed(name):  # noqa: N805 - a decorator factory used in the class body
        def hook(self, *args):
            started = time.perf_counter()
            getattr(Diagnostics, name)(self, *args)
            self.seconds += time.perf_counter() - started

        return hook

    on_train_begin = _timed("on_train_begin")
    on_epoch_begin = _timed("on_epoch_begin")
    on_batch_begin = _timed("on_batch_begin")
    on_batch_end = _timed("on_batch_end")
    on_epoch_end = _timed("on_epoch_end")


def epoch_seconds(config, data, with_diagnostics: bool, hooks: list | None = None) -> float:
    rng = np.random.default_rng(config.seed)
    splits = split_data(data, config, rng)
    pre = make_preprocessing(data, config).fit(splits.x[splits.train_idx])
    train, _, _ = make_batches(data, splits, pre, config, rng)
    model = make_model(config, pre.output_dim, data.n_classes, rng)
    model.set_precision(resolve(config.precision))
    diagnostics = TimedDiagnostics() if with_diagnostics else None
    trainer = npp.Trainer(
        model,
        npp.SoftmaxCrossEntropy(),
        make_optimizer(config, model),
        callbacks=[diagnostics] if diagnostics else [],
    )
    started = time.perf_counter()
    trainer.fit(train, None, 1)
    seconds = time.perf_counter() - started
    if diagnostics is not None and hooks is not None:
        hooks.append(diagnostics.seconds / seconds)  # the share of the epoch in the hooks
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    data = npp.load_data("cifar10")
    rows = []
    for name in args.configs:
        config = CONFIGS[name]
        epoch_seconds(config, data, True)  # warm-up: compile, allocate, fault pages in
        times = {False: [], True: []}
        hooks: list[float] = []
        for i in range(args.repeats):
            for side in (bool(i % 2), not i % 2):  # alternate which side goes first
                times[side].append(epoch_seconds(config, data, side, hooks))
                print(f"{name} repeat {i + 1} diagnostics={side}: {times[side][-1]:.2f} s")
        off, on = statistics.median(times[False]), statistics.median(times[True])
        ratios = [a / b for a, b in zip(times[True], times[False])]
        share = statistics.median(hooks)
        rows.append((name, config, off, on, on / off, min(ratios), max(ratios), share))
    lines = [
        "| config | time in the Diagnostics hooks (share of the epoch, median) | "
        "epoch without s | epoch with s | ratio of medians | paired ratios (min – max) | "
        "target ≤ 3% |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, config, off, on, ratio, lo, hi, share in rows:
        what = f"{name} ({'-'.join(map(str, config.hidden))}, batch {config.batch_size})"
        verdict = "MET" if share <= TARGET - 1 else "MISSED"
        lines.append(
            f"| {what} | {100 * share:.2f}% | {off:.2f} | {on:.2f} | {ratio:.3f} | "
            f"{lo:.3f} – {hi:.3f} | {verdict} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.write:
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "unknown CPU",
        )
        command = "python benchmarks/doctor.py " + " ".join(sys.argv[1:])
        (HERE / "DOCTOR.md").write_text(
            "# The cost of the doctor's diagnostics\n\n"
            f"Written by `benchmarks/doctor.py` on {datetime.datetime.now():%Y-%m-%d %H:%M}.\n\n"
            f"Command (from the repository root): `{command.strip()}`\n\n"
            f"Machine: {cpu}, Python {platform.python_version()}, NumPy {np.__version__}; "
            "products in the precision `numprop train` picks here (auto).\n\n"
            "One CIFAR-10 epoch (45,000 images) with and without `Diagnostics` "
            f"(10 sampled steps per epoch), alternated, {args.repeats} repeats each after a "
            "warm-up, same weights and batch order; medians. The cost is the time spent "
            "inside the callback's hooks (all of its work happens there), as a share of "
            "the epoch it ran in: that holds on a noisy machine, where the ratio of two "
            "epochs' times swings by ±20% (the paired ratios show the spread).\n\n"
            f"{table}\n"
        )
        print(f"wrote {HERE / 'DOCTOR.md'}")


if __name__ == "__main__":
    main()
