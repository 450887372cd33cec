"""The command line of ``python benchmarks/speed.py``: options, then one of four modes.

- the speed benchmark (default): every configuration, numprop against the other sides;
- ``--compare-with REV``: another commit's numprop against this tree's;
- ``--profile CONFIG``: the phases of one side's epoch, in this process;
- ``--worker ...`` (internal): serve one side to the parent.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

from speedbench.compare import SIDES as COMPARE_SIDES
from speedbench.configs import (
    BENCHMARKS,
    CONFIGS,
    DEFAULT_DATA,
    QUICK_CONFIGS,
    QUICK_N_TRAIN,
    UNSET_VARS,
)
from speedbench.runner import BF16_SIDES
from speedbench.runner import TIMED_ORDER as SPEED_SIDES

LIBRARY = {"torch": "torch", "sklearn": "sklearn", "torch-bf16": "torch"}  # side -> its module
# --precision bf16: numprop and PyTorch in float32 and in mixed precision, nothing else
BF16_DEFAULT = ["numprop", "torch", *BF16_SIDES]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--configs",
        default=None,
        help="comma-separated, from: " + ", ".join(CONFIGS) + " (default: all)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per side (default 3)")
    p.add_argument(
        "--sklearn-repeats",
        type=int,
        default=None,
        help="timed MLPClassifier epochs (default: min(repeats, 2))",
    )
    p.add_argument("--infer-repeats", type=int, default=5)
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument(
        "--no-products",
        dest="products",
        action="store_false",
        help="do not time numprop's matrix products and weight updates alone (timed by default)",
    )
    p.add_argument(
        "--no-trainer",
        dest="trainer",
        action="store_false",
        help="do not time numprop's Trainer.fit (timed by default when it exists)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {', '.join(QUICK_CONFIGS)}, {QUICK_N_TRAIN:,} images, 1 repeat",
    )
    p.add_argument("--n-train", type=int, default=None, help="training images per epoch (50000)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument(
        "--write",
        action="store_true",
        help="write the report: benchmarks/SPEED.md (and RESULTS.md's speed "
        "section), or with --compare-with benchmarks/REDESIGN.md",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="write the report here instead (implies --write); RESULTS.md is "
        "updated only when it is the default benchmarks/SPEED.md",
    )
    p.add_argument(
        "--compare-with",
        metavar="REV",
        help="time numprop of commit REV against this tree's, alternated in one "
        "run (e.g. 15e40d6); its src/ is extracted with git archive",
    )
    p.add_argument(
        "--sides",
        default=None,
        help="comma-separated sides to time. Benchmark: from "
        f"{','.join(SPEED_SIDES)} (default: all but the bf16 ones, less --no-*; with "
        f"--precision bf16: {','.join(BF16_DEFAULT)}); with "
        "--compare-with: from numprop,old,torch (default: numprop,old)",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: numprop in mixed precision (model.set_precision(BF16())) against PyTorch's "
        "torch.autocast('cpu', dtype=torch.bfloat16), beside both in float32; reported in "
        "benchmarks/BF16.md (default fp32: the float32 benchmark, SPEED.md)",
    )
    p.add_argument("--profile", metavar="CONFIG", help="time the phases of one side on one config")
    p.add_argument("--profile-side", choices=["numprop", "torch", *BF16_SIDES], default="numprop")
    p.add_argument("--cprofile", action="store_true", help="with --profile: also cProfile an epoch")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    return p


def fill_defaults(args) -> None:
    if args.n_train is None:
        args.n_train = QUICK_N_TRAIN if args.quick else 50000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.sklearn_repeats is None:
        args.sklearn_repeats = min(args.repeats, 2)


def choose_sides(args, p: argparse.ArgumentParser, log) -> list[str]:
    """The sides to time (with --compare-with, in the order of a round; the benchmark's order
    is fixed). Those whose library is missing are left out with a note, unless asked for
    by name."""
    if args.compare_with:
        allowed, default = COMPARE_SIDES, ["numprop", "old"]
    else:
        dropped = {
            "sklearn": args.no_sklearn,
            "products": not args.products,
            "trainer": not args.trainer,
        }
        allowed, default = (
            SPEED_SIDES,
            [s for s in SPEED_SIDES if not dropped.get(s) and s not in BF16_SIDES],
        )
        if args.precision == "bf16":
            default = BF16_DEFAULT
    sides = args.sides.split(",") if args.sides else default
    if "old" in sides and not args.compare_with:
        p.error("the old side needs --compare-with REV")
    unknown = [s for s in sides if s not in allowed]
    if unknown:
        p.error(f"unknown side(s) {unknown}; choose from {', '.join(allowed)}")
    required = ["numprop", "old"] if args.compare_with else ["numprop"]
    if any(s not in sides for s in required):
        p.error(f"--sides must include {' and '.join(required)}")
    missing = [s for s in sides if s in LIBRARY and importlib.util.find_spec(LIBRARY[s]) is None]
    if missing and args.sides:
        p.error(f"not installed: {', '.join(LIBRARY[s] for s in missing)}")
    for s in missing:
        log(f"note: {LIBRARY[s]} is not installed: the {s} side is left out")
    return [s for s in sides if s not in missing]


def config_names(args, p: argparse.ArgumentParser) -> list[str]:
    names = (
        args.configs.split(",") if args.configs else QUICK_CONFIGS if args.quick else list(CONFIGS)
    )
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    return names


class RunLog:
    """Prints, and keeps the lines for the report's raw log."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, msg: str) -> None:
        print(msg, flush=True)
        self.lines.append(msg)

    def text(self) -> str:
        return "\n".join(self.lines)


def note_env(log) -> None:
    for var in UNSET_VARS:
        if os.environ.get(var) is not None:
            log(f"note: {var}={os.environ[var]} is set here; unset in the benchmark subprocesses")


def run_speed(args, names: list[str], log: RunLog) -> None:
    from speedbench import report
    from speedbench.machine import speed_machine
    from speedbench.runner import run_config

    t0 = time.time()
    results = [run_config(n, CONFIGS[n], args, log) for n in names]
    log(f"\ntotal {time.time() - t0:.0f}s")
    if results[0]["numprop"]["random_data"]:
        log("!!! CIFAR-10 not found: RANDOM data of the same shape was used")
    if any(s in args.sides for s in BF16_SIDES):
        from speedbench import report_bf16

        print(f"\n{speed_machine(results[0])}\n\n{report_bf16.section(results)}")
        if args.write or args.output:
            path = args.output or report_bf16.DEFAULT_OUTPUT
            report_bf16.write_md(results, args, log.text(), path)
            print(f"\nwrote {path}")
        return
    print(f"\n{speed_machine(results[0])}\n\n{report.tables(results)}\n\n{report.targets(results)}")
    if args.write or args.output:
        path = args.output or report.DEFAULT_OUTPUT
        report.write_md(results, args, log.text(), path)
        print(f"\nwrote {path}")


def run_compare(args, names: list[str], log: RunLog) -> None:
    from speedbench import compare

    try:
        sha, old_src = compare.prepare(args.compare_with, log)
    except compare.CompareError as e:
        sys.exit(f"--compare-with: {e}")
    t0 = time.time()
    results = [compare.run_config(n, CONFIGS[n], args, log, old_src) for n in names]
    log(f"\ntotal {time.time() - t0:.0f}s")
    if results[0]["ready"]["numprop"]["random_data"]:
        log("!!! CIFAR-10 not found: RANDOM data of the same shape was used")
    print(f"\n{compare.ratio_table(results)}\n\n{compare.verdict(results)}")
    if any(r["torch_s"] == r["torch_s"] for r in results):
        print(f"\n{compare.torch_table(results)}")
    if args.write or args.output:
        path = args.output or BENCHMARKS / "REDESIGN.md"
        path.write_text(
            compare.markdown(results, args, log.text(), args.compare_with, sha, old_src)
        )
        print(f"\nwrote {path}")


def main(argv: list[str] | None = None, description: str = "") -> None:
    p = parser(description)
    args = p.parse_args(argv)
    if args.worker:
        from speedbench.worker import serve

        kind, cfg_json, data_dir, n_train = args.worker
        serve(kind, cfg_json, data_dir, int(n_train))
        return
    fill_defaults(args)
    if args.profile:
        from speedbench.profile import profile

        if args.profile not in CONFIGS:
            p.error(f"unknown config {args.profile}; choose from {', '.join(CONFIGS)}")
        for var in UNSET_VARS:
            if os.environ.get(var) is not None:
                print(
                    f"note: {var} is set; run `env -u {var}` for numbers comparable to the "
                    "benchmark"
                )
        profile(args.profile, args)
        return
    log = RunLog()
    names = config_names(args, p)
    args.sides = choose_sides(args, p, log)
    note_env(log)
    if args.compare_with:
        run_compare(args, names, log)
    else:
        run_speed(args, names, log)
