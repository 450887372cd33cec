"""The ``best`` recipe's epoch time: this tree against another commit, alternated in one run.

Each side runs in its own subprocess with ``PYTHONPATH`` at its own ``src``
(the old side's is exported from git with ``git archive``: no worktree is
made). A side builds the recipe's run as ``experiment.train`` does, on real
CIFAR-10, and times ``--steps`` training steps after a warm-up, each step as
``Trainer.fit`` makes it: the next (augmented, mixed) batch, the callbacks
``train`` installs that run per step (EMA, Diagnostics), the step itself. The
epoch time is the median step times the recipe's steps per epoch (the
validation pass at the epoch's end is not counted). The sides alternate
``--rounds`` times; medians over the rounds.

    NUMPROP_DATA_DIR=/work/shared/datasets python benchmarks/best_epoch.py --old 317bfff
    python benchmarks/best_epoch.py --old 317bfff --rounds 3 --write   # BEST_EPOCH.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, statistics, sys, time
import numprop
from numprop.training import experiment as ex
from numprop.training.trainer import Trainer

steps, warmup = int(sys.argv[1]), int(sys.argv[2])
sys.path.insert(0, sys.argv[3])  # benchmarks/: the run is built as recipe_profile builds it
from recipe_profile import build

cfg, train, model, loss, opt, callbacks, precision = build()
trainer = Trainer(model, loss, opt, ex.make_schedule(cfg), callbacks)
trainer.steps_per_epoch, trainer.epochs = len(train), cfg.epochs
for cb in callbacks:
    cb.on_train_begin(trainer)
    cb.on_epoch_begin(trainer, 0)
times, losses, i = [], [], 0
while len(times) < steps:
    t0 = time.perf_counter()
    for x, y in train:
        trainer.optimizer.lr = trainer.schedule.lr(i / len(train), cfg.epochs)
        for cb in callbacks:
            cb.on_batch_begin(trainer, i % len(train))
        loss, _ = trainer.train_step(x, y)
        for cb in callbacks:
            cb.on_batch_end(trainer, i % len(train), loss, len(y))
        losses.append(loss)
        i += 1
        if i > warmup:
            times.append(time.perf_counter() - t0)
        if len(times) == steps:
            break
        t0 = time.perf_counter()
print(json.dumps({"step": statistics.median(times), "steps_per_epoch": len(train),
                  "numprop": numprop.__file__, "precision": precision.name,
                  "losses": [float(v) for v in losses]}))
"""


def export(commit: str, into: Path) -> Path:
    """The ``src`` folder of ``commit``, written under ``into`` (git archive, no worktree)."""
    archive = into / "old.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_side(src: Path, steps: int, warmup: int) -> dict:
    """One subprocess of one side: its median step time and what it ran."""
    env = dict(os.environ, PYTHONPATH=str(src))
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(steps), str(warmup), str(ROOT / "benchmarks")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15, help="timed steps per side and round")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--write", action="store_true", help="write benchmarks/BEST_EPOCH.md")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.old], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"new": ROOT / "src", "old": export(args.old, Path(tmp))}
        results: dict[str, list[dict]] = {"new": [], "old": []}
        for r in range(args.rounds):
            for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                res = run_side(sides[name], args.steps, args.warmup)
                results[name].append(res)
                epoch = res["step"] * res["steps_per_epoch"]
                print(f"round {r + 1} {name}: {1e3 * res['step']:.1f} ms/step, {epoch:.1f} s/epoch")
    epochs = {k: [v["step"] * v["steps_per_epoch"] for v in vs] for k, vs in results.items()}
    old, new = statistics.median(epochs["old"]), statistics.median(epochs["new"])
    ratio = old / new
    same_losses = results["old"][0]["losses"] == results["new"][0]["losses"]
    print(f"old {commit}: {old:.1f} s/epoch; new {head}: {new:.1f} s/epoch; {ratio:.1f}x faster")
    print(
        f"first losses old {results['old'][0]['losses'][:3]}, new {results['new'][0]['losses'][:3]}"
    )
    if args.write:
        write(args, commit, head, epochs, old, new, ratio, results, same_losses)


def write(args, commit, head, epochs, old, new, ratio, results, same_losses) -> None:
    from results_md import cpu_name

    cpu = cpu_name()
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    command = (
        f"python benchmarks/best_epoch.py --old {args.old} --rounds {args.rounds} "
        f"--steps {args.steps} --warmup {args.warmup} --write"
    )
    spe = results["new"][0]["steps_per_epoch"]
    lines = [
        "# The best recipe's epoch: this tree against an older commit",
        "",
        f"Written by `benchmarks/best_epoch.py` on {now}, on {platform.node()}: {cpu}, "
        f"{os.cpu_count()} CPUs (shared with other users' work), Python "
        f"{platform.python_version()}, precision {results['new'][0]['precision']}.",
        "",
        f"Command (from the repository root, under `flock /work/cpu.lock`): `{command}`",
        "",
        f"Each side in its own process, alternated over {args.rounds} rounds; a round times "
        f"{args.steps} steps after {args.warmup} warm-up steps (batch, EMA and Diagnostics "
        f"callbacks, step); the epoch is the median step x {spe} steps (no validation pass).",
        "",
        "| side | commit | s/epoch, each round | median s/epoch |",
        "|---|---|---|---:|",
        f"| old | `{commit}` | {', '.join(f'{e:.1f}' for e in epochs['old'])} | {old:.1f} |",
        f"| new | `{head}` | {', '.join(f'{e:.1f}' for e in epochs['new'])} | {new:.1f} |",
        "",
        f"**{ratio:.1f}x** faster per epoch: 150 epochs take about {150 * new / 3600:.2f} h "
        f"of training steps (old: {150 * old / 3600:.2f} h).",
        "",
        f"The first losses are {'the same' if same_losses else 'not the same to the bit'} "
        "on both sides"
        + (
            ""
            if same_losses
            else " (GELU's cube and Lion's products are rounded differently: see the commits)"
        )
        + f": old {results['old'][0]['losses'][:3]}, new {results['new'][0]['losses'][:3]}.",
        "",
    ]
    path = Path(__file__).with_name("BEST_EPOCH.md")
    text = path.read_text() if path.exists() else ""
    marker = "<!-- end best_epoch.py -->"
    rest = text.split(marker, 1)[1] if marker in text else "\n"
    path.write_text("\n".join(lines) + marker + rest)


if __name__ == "__main__":
    main()
