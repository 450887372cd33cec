"""Python overhead per training step: this tree against another commit, in microseconds.

    python benchmarks/step_overhead.py --compare-with 15e40d6 --write

Epoch times on a shared 2-core machine drift by 10-20% from one repeat to the
next, which hides a 3% difference between two versions of the library. What
a redesign can change, though, is the Python around the operations, since
the operations themselves (BLAS calls, kernels) are the same. This measures
exactly that: ``Trainer.train_step`` on networks so small that the step is
nearly all overhead, in two subprocesses (this tree and commit REV, its src/
extracted as ``speed.py --compare-with`` does) that alternate rounds. The
difference in microseconds per step, set against the step times of the speed
benchmark's configurations, bounds what the change costs them. Results go to
benchmarks/STEP_OVERHEAD.md with --write.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from speedbench.compare import extract_src, resolve  # noqa: E402

# name -> what the tiny network has (every layer and update kind of the speed benchmark)
NETWORKS = {
    "mlp-sgd": "32-16-4, ReLU, SGD momentum (fused), batch 8",
    "bn-dropout-adam": "32-16-16-4, BatchNorm, ReLU, Dropout 0.2, Adam, batch 8",
}

WORKER = r"""
import json, sys, time
import numpy as np
import numprop as npp

name, steps, rounds, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
if name == "mlp-sgd":
    model = npp.models.mlp([32, 16, 4], rng=0)
    opt = npp.SGD(model.named_parameters(), lr=0.01, momentum=0.9)
else:
    model = npp.models.mlp([32, 16, 16, 4], batchnorm=True, dropout=0.2, rng=0)
    opt = npp.Adam(model.named_parameters(), lr=1e-3)
trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), opt)
x = rng.standard_normal((8, 32)).astype(np.float32)
y = rng.integers(0, 4, 8)
for _ in range(200):
    trainer.train_step(x, y)
if mode == "calls":  # function calls per step (Python and C), counted by cProfile: no noise
    import cProfile, pstats
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(100):
        trainer.train_step(x, y)
    profile.disable()
    print(json.dumps({"calls": pstats.Stats(profile).total_calls / 100, "file": npp.__file__}))
    sys.exit()
times = []
for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(x, y)
    times.append((time.perf_counter() - start) / steps * 1e6)
print(json.dumps({"us": times, "file": npp.__file__}))
"""


def worker(src: Path, name: str, steps: int, rounds: int, mode: str) -> dict:
    """The worker's reply, with numprop imported from ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, "-c", WORKER, name, str(steps), str(rounds), mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=src.parent,
    )
    reply = json.loads(out.stdout)
    assert reply["file"].startswith(str(src)), (src, reply["file"])
    return reply


def call_cost_ns() -> float:
    """What one call of a trivial Python function costs here, in nanoseconds."""
    import timeit

    def f():
        pass

    return min(timeit.repeat(f, number=200_000, repeat=5)) / 200_000 * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare-with", required=True, metavar="REV")
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds per side")
    parser.add_argument("--steps", type=int, default=2000, help="steps per timed block")
    parser.add_argument("--write", action="store_true", help="write benchmarks/STEP_OVERHEAD.md")
    args = parser.parse_args()
    sha = resolve(args.compare_with)
    sources = {"new": HERE.parent / "src", "old": extract_src(sha)}
    rows = []
    for name, what in NETWORKS.items():
        us = {"new": [], "old": []}
        calls = {side: worker(src, name, 0, 0, "calls")["calls"] for side, src in sources.items()}
        for r in range(args.rounds):
            for side in ("new", "old") if r % 2 == 0 else ("old", "new"):
                times = worker(sources[side], name, args.steps, 3, "time")["us"]
                us[side].append(min(times))  # the block least disturbed by the machine
        new, old = statistics.median(us["new"]), statistics.median(us["old"])
        print(
            f"{name}: new {new:.1f} us/step, old {old:.1f} us/step, new - old {new - old:+.1f} us;"
            f" calls per step new {calls['new']:.0f}, old {calls['old']:.0f}",
            flush=True,
        )
        rows.append((name, what, new, old, calls["new"], calls["old"]))
    cost = call_cost_ns()
    lines = [
        "# Python overhead per training step: this tree against another commit",
        "",
        f"Measured {datetime.date.today()} on {platform.node() or 'this machine'} "
        f"(Python {platform.python_version()}), against commit {sha[:12]} "
        f"(`{args.compare_with}`), {args.rounds} alternating rounds per side, each the best "
        f"of 3 blocks of {args.steps} steps:",
        "",
        "    python benchmarks/" + Path(__file__).name + " " + shlex.join(sys.argv[1:]),
        "",
        "| tiny network | what it has | new (us/step) | old (us/step) | new - old (us/step) "
        "| calls per step, new / old | extra calls x call cost (us/step) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {n} | {w} | {new:.1f} | {old:.1f} | {new - old:+.1f} | {cn:.0f} / {co:.0f} "
        f"| {(cn - co) * cost / 1000:+.1f} |"
        for n, w, new, old, cn, co in rows
    ]
    lines += [
        "",
        "Times: median over the rounds of each process's best block. Calls: every Python and "
        "C function call of a step, counted by cProfile (exact, unlike the times); one trivial "
        f"Python call costs {cost:.0f} ns here, so the last column is what the extra calls cost. "
        "Both versions make the same BLAS calls and run the same compiled kernels "
        "(benchmarks/SAME_NUMBERS.md: identical weights), so the Python around them is all a "
        "redesign can change.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        (HERE / "STEP_OVERHEAD.md").write_text(text)


if __name__ == "__main__":
    main()
