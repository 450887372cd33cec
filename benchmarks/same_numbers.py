"""Does this tree train to the same numbers as another commit? Bit for bit, on CIFAR-10.

    python benchmarks/same_numbers.py --compare-with 15e40d6 --write

Runs `numprop train` with the same arguments on this tree and on commit REV
(its src/ extracted with `git archive`, as `speed.py --compare-with` does), one
after the other, and compares what each run wrote: every weight of model.npz,
the per-epoch history (all but the seconds) and the test loss and accuracy.
A redesign that "keeps every number the same" must give identical files. Needs
CIFAR-10 where `numprop train` finds it (NUMPROP_DATA_DIR). Results go to
benchmarks/SAME_NUMBERS.md with --write.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speedbench.compare import extract_src, resolve  # noqa: E402

# name -> (arguments to `numprop train`, what they exercise)
RUNS = {
    "default": ([], "the defaults: 3072-1000-10, SGD momentum, cosine, flips"),
    "mixed": (
        [
            "--hidden",
            "512",
            "256",
            "--batchnorm",
            "--dropout",
            "0.2",
            "--optimizer",
            "adam",
            "--lr",
            "0.001",
            "--schedule",
            "step",
            "--crop",
            "4",
            "--epochs",
            "3",
        ],
        "BatchNorm, Dropout, Adam, step schedule, crops and flips (every compiled kernel)",
    ),
}


def train(src: Path, args: list[str], out: Path) -> None:
    """`numprop train ARGS` with numprop imported from ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [
        sys.executable,
        "-m",
        "numprop.cli",
        "train",
        "--quiet",
        "--no-plots",
        "--out",
        str(out),
        *args,
    ]
    subprocess.run(cmd, env=env, check=True, cwd=src.parent, stdout=subprocess.DEVNULL)


def outcome(run: Path) -> tuple[dict[str, np.ndarray], list[dict], dict]:
    """(weights, history without seconds, test loss and accuracy) of a run folder."""
    with np.load(run / "model.npz", allow_pickle=False) as f:
        weights = {k: f[k] for k in f.files if k.startswith("param/")}
    history = json.loads((run / "history.json").read_text())
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    summary = json.loads((run / "summary.json").read_text())
    return weights, history, {k: summary[k] for k in ("test_loss", "test_acc")}


def compare(new: Path, old: Path) -> dict:
    (w_new, h_new, s_new), (w_old, h_old, s_old) = outcome(new), outcome(old)
    same_names = sorted(w_new) == sorted(w_old)
    differing = [k for k in w_new if same_names and not np.array_equal(w_new[k], w_old[k])]
    return {
        "weights": len(w_new),
        "same_weights": same_names and not differing,
        "differing": differing,
        "same_history": h_new == h_old,
        "same_test": s_new == s_old,
        "test_acc": s_new["test_acc"],
        "old_test_acc": s_old["test_acc"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare-with", required=True, metavar="REV")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--write", action="store_true", help="write benchmarks/SAME_NUMBERS.md")
    args = parser.parse_args()
    sha = resolve(args.compare_with)
    sources = {"new": HERE.parent / "src", "old": extract_src(sha)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:
            train_args, what = RUNS[name]
            for side, src in sources.items():
                print(f"{name}: training with the {side} numprop ({src})", flush=True)
                train(src, train_args, Path(tmp) / name / side)
            result = compare(Path(tmp) / name / "new", Path(tmp) / name / "old")
            print(f"{name}: {result}", flush=True)
            rows.append((name, train_args, what, result))
    same = all(r["same_weights"] and r["same_history"] and r["same_test"] for *_, r in rows)
    lines = [
        "# Same numbers: this tree against another commit",
        "",
        f"Measured {datetime.date.today()} on {platform.node() or 'this machine'} "
        f"(Python {platform.python_version()}, NumPy {np.__version__}), "
        f"against commit {sha[:12]} (`{args.compare_with}`):",
        "",
        "    python benchmarks/" + Path(__file__).name + " " + shlex.join(sys.argv[1:]),
        "",
        "| run | `numprop train` arguments | what it exercises | weights identical | "
        "history identical | test loss and accuracy identical | test accuracy (new / old) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, train_args, what, r in rows:
        weights = "yes" if r["same_weights"] else f"no: {', '.join(r['differing']) or 'names'}"
        lines.append(
            f"| {name} | `{shlex.join(train_args) or '(none)'}` | {what} | "
            f"{weights} ({r['weights']} arrays) | {'yes' if r['same_history'] else 'no'} | "
            f"{'yes' if r['same_test'] else 'no'} | "
            f"{100 * r['test_acc']:.2f}% / {100 * r['old_test_acc']:.2f}% |"
        )
    lines += ["", f"Every number the same: **{'YES' if same else 'NO'}**", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        (HERE / "SAME_NUMBERS.md").write_text(text)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
