"""A 16-trial `numprop sweep` on a CIFAR-10 subset: the local Dask cluster against one trial at a time.

    python benchmarks/sweep.py --write      # writes benchmarks/SWEEP.md and a RESULTS.md section
    python benchmarks/sweep.py --quick      # 4 tiny trials, to try the script (prints only)

Both sides run the same command on the same space file with the same seed, so
the same 16 trials (checked): random search over width and depth, learning
rate, weight decay, dropout and flips, each trial 6 epochs on 8,000 training
images (a stratified subset of 10,000, 2,000 of them held out for validation).

* parallel: `numprop sweep SPACE` with its defaults: a local cluster sized to
  the machine, one worker per core, each trial with BLAS threads = cores / workers;
* one at a time: `numprop sweep SPACE --workers 1 --threads CORES`: one worker
  process with every core, the trials one after another.

Wall time is the whole command (cluster start, data loading on each worker,
the 16 trials, the best model's test). Needs the dask extra
(`pip install -e '.[dask]'`) and CIFAR-10 in --data-dir or NUMPROP_DATA_DIR.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

SPACE = """\
# benchmarks/sweep.py: 16 random trials on a CIFAR-10 subset
data = "cifar10"
limit = {limit}
val_size = {val_size}
epochs = {epochs}
batch_size = 128
hidden = {{ choice = [[256], [512], [256, 256]] }}
lr = {{ log_uniform = [0.002, 0.05] }}
weight_decay = {{ log_uniform = [1e-5, 1e-2] }}
dropout = {{ uniform = [0.0, 0.3] }}
flip = {{ choice = [true, false] }}
{data_dir}"""


# The benchmark's size: 8,000 training images and 2,000 for validation, 6 epochs a trial.
FULL = {"limit": 10000, "val_size": 2000, "epochs": 6}


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since it started (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def our_seconds() -> float:
    """CPU seconds of this process's finished children (the sweep and its workers)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def run(space: Path, out: Path, extra: list[str]) -> dict:
    """One `numprop sweep`, timed; what it printed and wrote; how busy others kept the machine."""
    cmd = [sys.executable, "-m", "numprop.cli", "sweep", str(space), "--out", str(out), *extra]
    busy, ours = busy_seconds(), our_seconds()
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    # The machine is shared: the share of all cores that other processes used meanwhile.
    others = (busy_seconds() - busy - (our_seconds() - ours)) / (seconds * os.cpu_count())
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    trials = json.loads((out / "trials.json").read_text())
    best = json.loads((out / "best.json").read_text())
    cluster = next(line for line in done.stdout.splitlines() if "Dask cluster" in line)
    return {
        "seconds": seconds,
        "trials": trials,
        "best": best,
        "cluster": cluster,
        "trial_seconds": [t["seconds"] for t in trials],
        "printed": done.stdout,
        "others": max(0.0, others),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="default: $NUMPROP_DATA_DIR")
    parser.add_argument("--write", action="store_true", help="write SWEEP.md and RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="4 trials of 2 epochs on 2,000 images")
    args = parser.parse_args()
    if args.quick and args.write:
        parser.error("--quick only tries the script: it writes nothing")
    size = {"limit": 2000, "val_size": 400, "epochs": 2} if args.quick else FULL
    trials = ["--trials", "4" if args.quick else "16"]
    cores = len(os.sched_getaffinity(0))
    folder = Path(tempfile.mkdtemp(prefix="numprop-bench-sweep-"))
    data_dir = f'data_dir = "{args.data_dir}"\n' if args.data_dir else ""
    space = folder / "space.toml"
    space.write_text(SPACE.format(data_dir=data_dir, **size))

    one = ["--workers", "1", "--threads", str(cores)]
    alone = run(space, folder / "one-at-a-time", [*trials, *one])
    print(f"one at a time: {alone['seconds']:.0f} s ({alone['cluster']})", flush=True)
    print(f"  other processes kept {100 * alone['others']:.0f}% of the cores busy", flush=True)
    parallel = run(space, folder / "parallel", trials)
    print(f"parallel: {parallel['seconds']:.0f} s ({parallel['cluster']})", flush=True)
    print(f"  other processes kept {100 * parallel['others']:.0f}% of the cores busy", flush=True)
    same = [t["settings"] for t in alone["trials"]] == [t["settings"] for t in parallel["trials"]]
    if not same:
        raise SystemExit("the two sweeps ran different trials: the seed did not fix them")

    ratio = parallel["seconds"] / alone["seconds"]
    rows = [
        "| | `numprop sweep` | cluster | wall time | mean trial time | best validation accuracy | its test accuracy | cores busy with other work meanwhile |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r, extra in (
        ("one at a time", alone, f"`--workers 1 --threads {cores}`"),
        ("parallel", parallel, "its defaults"),
    ):
        b = r["best"]
        rows.append(
            f"| {name} | {extra} | {r['cluster'].split(': ', 1)[1]} | {r['seconds']:.0f} s | "
            f"{np.mean(r['trial_seconds']):.1f} s | {100 * b['val_acc']:.2f}% (trial {b['trial']}) | "
            f"{100 * b['test_acc']:.2f}% | {100 * r['others']:.0f}% |"
        )
    same_acc = [t["val_acc"] for t in alone["trials"]] == [t["val_acc"] for t in parallel["trials"]]
    table = "\n".join(rows)
    summary = (
        f"Wall-time ratio, parallel / one at a time: **{ratio:.2f}** "
        f"({parallel['seconds']:.0f} s against {alone['seconds']:.0f} s). "
        f"The trials' validation accuracies are "
        f"{'identical on both sides' if same_acc else 'not all identical on both sides'}."
    )
    others = max(alone["others"], parallel["others"])
    if others > 0.1:
        summary += (
            f" Other processes kept {100 * alone['others']:.0f}% and "
            f"{100 * parallel['others']:.0f}% of the cores busy during the two runs (the "
            "machine is shared): a trial with more BLAS threads than there are free cores "
            "waits for the busy ones at every product, which is why a trial with "
            f"{cores} threads took {np.mean(alone['trial_seconds']):.1f} s on average and one "
            f"with {cores // 2 or 1} beside another trial {np.mean(parallel['trial_seconds']):.1f} s. "
            "On a quiet machine the ratio is bounded by the cores: no better than "
            f"1/{cores}, and nearer 1 when {cores} threads already keep every core busy."
        )
    print(table)
    print(summary)
    if not args.write:
        return
    sys.path.insert(0, str(HERE))
    from results_md import machine, update_section

    command = "python benchmarks/sweep.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    best = parallel["best"]
    settings = ", ".join(f"{k} {json.dumps(v)}" for k, v in best["settings"].items())
    text = (
        "## Sweeps: 16 trials on the local Dask cluster against one at a time\n\n"
        f"Measured {datetime.date.today().isoformat()} on {machine()}.\n\n"
        f"Command: `{command}` (the space is in the script: random search over width and "
        "depth, learning rate, weight decay, dropout and flips; each trial 6 epochs on "
        "8,000 CIFAR-10 training images, 2,000 held out for validation).\n\n"
        f"{table}\n\n{summary}\n\n"
        f"The best trial: {settings}.\n"
    )
    update_section("sweep", text)
    detail = [
        "# `numprop sweep` on the local cluster against one trial at a time\n",
        text.split("\n", 2)[2],
        "\n## Every trial\n",
        "| trial | settings | validation accuracy | seconds, one at a time | seconds, parallel |",
        "| --- | --- | --- | --- | --- |",
    ]
    for a, p in zip(alone["trials"], parallel["trials"]):
        settings = ", ".join(f"{k} {json.dumps(v)}" for k, v in a["settings"].items())
        detail.append(
            f"| {a['trial']} | {settings} | {100 * p['val_acc']:.2f}% | "
            f"{a['seconds']:.1f} | {p['seconds']:.1f} |"
        )
    (HERE / "SWEEP.md").write_text("\n".join(detail) + "\n")
    print(f"wrote {HERE / 'SWEEP.md'} and {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
