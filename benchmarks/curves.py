"""Validation curves of finished `numprop train` runs: a table and one figure, for the record.

Usage (from the repository root):

    python benchmarks/curves.py --title "two-layer attempts" --output benchmarks/TWO_LAYER \
        RUN_FOLDER ...

Each RUN_FOLDER is what `numprop train --out` wrote (summary.json, history.json).
Writes OUTPUT.md (per run: the settings that differ between the runs, the
`numprop train` options that reproduce it, test accuracy with and without
flip TTA, wall time, best and last validation accuracy of the training
weights, the final (weight-averaged) model's validation accuracy, as the run
recorded it or, with ``--measure-validation``, measured here from its model.npz)
and OUTPUT.png
(validation accuracy against the epoch for every run); ``--notes FILE`` adds
a Markdown file's text after the table. Apart from that validation accuracy
it reads the runs only: the numbers are those the runs measured, on the
machine that ran them.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

# Settings worth showing when they differ between runs, and their CLI spelling.
SHOWN = {
    "recipe": "--recipe",
    "hidden": "--hidden",
    "batchnorm": "--batchnorm",
    "dropout": "--dropout",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "weight_decay": "--weight-decay",
    "label_smoothing": "--label-smoothing",
    "flip": "--flip",
    "crop": "--crop",
    "preprocessing": "--preprocessing",
    "mixup": "--mixup",
    "cutmix": "--cutmix",
    "ema": "--ema",
    "ema_every": "--ema-every",
    "tta": "--tta",
    "tta_shift": "--tta-shift",
}


def load(folder: Path) -> dict:
    from dataclasses import asdict

    from numprop.training.experiment import TrainConfig

    summary = json.loads((folder / "summary.json").read_text())
    history = json.loads((folder / "history.json").read_text())
    # Settings added since a run was made: it ran with their defaults.
    config = {**asdict(TrainConfig()), **summary["config"]}
    return {"folder": folder, "summary": summary, "config": config, "history": history}


def measure_validation(run: dict) -> None:
    """Measure the final model's validation accuracy, with the run's TTA where it used one.

    For runs made before `numprop train` recorded it: the run's model.npz on the
    validation split its seed drew (the split as `train` draws it).
    """
    import numprop as npp
    from numprop.training.experiment import TrainConfig, tta_accuracy, validation_split

    config = TrainConfig(**run["config"])
    x, y = validation_split(config)
    saved = npp.load(run["folder"] / "model.npz")
    run["summary"]["val_acc_final"] = tta_accuracy(saved, x, y)
    if config.tta or config.tta_shift:
        views = {"tta": config.tta, "tta_shift": config.tta_shift}
        run["summary"]["val_acc_final_tta"] = tta_accuracy(saved, x, y, **views)


def final_validation(summary: dict) -> str:
    """The final model's validation accuracy (with the run's TTA where measured), or ""."""
    for key, note in (("val_acc_final_tta", " (TTA)"), ("val_acc_final", "")):
        if summary.get(key) is not None:
            return f"{summary[key] * 100:.2f}%{note}"
    return ""


def options(config: dict, keys: list[str]) -> str:
    """The `numprop train` options that set ``keys`` as in ``config``."""
    parts = []
    for key in keys:
        value, flag = config[key], SHOWN[key]
        if isinstance(value, bool):
            parts.append(flag if value else "")
        elif isinstance(value, list):
            parts.append(f"{flag} {' '.join(str(v) for v in value)}")
        elif value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(p for p in parts if p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--title", required=True)
    parser.add_argument("--output", required=True, type=Path, help="OUTPUT.md and OUTPUT.png")
    parser.add_argument(
        "--notes", type=Path, help="a Markdown file of notes to put after the table"
    )
    parser.add_argument(
        "--measure-validation",
        action="store_true",
        help="measure the final model's validation accuracy for runs that did not record it "
        "(needs the data set: NUMPROP_DATA_DIR)",
    )
    args = parser.parse_args()
    runs = [load(folder) for folder in args.runs]
    if args.measure_validation:
        for run in runs:
            if "val_acc_final" not in run["summary"]:
                measure_validation(run)
    keys = [k for k in SHOWN if len({json.dumps(r["config"][k]) for r in runs}) > 1]

    lines = [
        "| run | options | test accuracy | with TTA (the run's views) | wall time | validation: best / last | final model, validation | training accuracy, last epoch |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        s, h = r["summary"], r["history"]
        val = [e["val_acc"] * 100 for e in h]
        tta = s.get("test_acc_tta")
        lines.append(
            f"| {r['folder'].name} | `{options(r['config'], keys)}` | {s['test_acc'] * 100:.2f}% | "
            f"{'' if tta is None else f'{tta * 100:.2f}%'} | {s['seconds']:.0f} s | "
            f"{max(val):.1f}% / {val[-1]:.1f}% | {final_validation(s)} | "
            f"{h[-1]['train_acc'] * 100:.1f}% |"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in runs:
        epochs = [e["epoch"] for e in r["history"]]
        ax.plot(epochs, [e["val_acc"] * 100 for e in r["history"]], label=r["folder"].name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = args.output.with_suffix(".png")
    fig.savefig(png, dpi=100)

    text = (
        f"# {args.title}\n\nWritten by `benchmarks/curves.py` on "
        f"{datetime.date.today().isoformat()} from the run folders of `numprop train` runs "
        "(each run's own summary.json and history.json; wall times as each run measured "
        "them, on a machine shared with other work, so they are upper bounds).\n\n"
        + "\n".join(lines)
        + f"\n\n![validation accuracy per epoch]({png.name})\n"
        + (f"\n{args.notes.read_text().strip()}\n" if args.notes else "")
    )
    args.output.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
