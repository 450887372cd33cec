"""Validation accuracy of trained runs under each test-time augmentation; writes benchmarks/TTA.md.

    python benchmarks/tta_views.py RUN_FOLDER [RUN_FOLDER ...] [--shifts 1 2 4] [--write]

Each RUN_FOLDER is a `numprop train` run (its model.npz and summary.json). The
run's validation split is drawn again from its own settings (the same seed
gives the same split), so the test set stays untouched: this is how a TTA
setting is chosen. The views: none, flips, and flips with the 3x3 grid of
shifts by s pixels (`predict_proba(tta=True, tta_shift=s)`, 18 views), for
each s of --shifts. Needs CIFAR-10 where `numprop train` finds it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def view_accuracies(folder: Path, shifts: list[int]) -> tuple[dict, dict]:
    """(the run's settings, {view set: validation accuracy in %}) for one run folder."""
    import numprop as npp
    from numprop.training.experiment import TrainConfig, tta_accuracy, validation_split

    summary = json.loads((folder / "summary.json").read_text())
    config = TrainConfig(**summary["config"])
    x, y = validation_split(config)
    saved = npp.load(folder / "model.npz")
    sets = {"none": {}, "flips": {"tta": True}}
    for s in shifts:
        sets[f"flips + shifts of {s}"] = {"tta": True, "tta_shift": s}
    return config, {name: 100 * tta_accuracy(saved, x, y, **kw) for name, kw in sets.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of `numprop train`")
    parser.add_argument("--shifts", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--write", action="store_true", help="write benchmarks/TTA.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from results_md import machine

    rows = []
    for folder in args.runs:
        config, accs = view_accuracies(folder, args.shifts)
        print(folder.name, {k: f"{v:.2f}" for k, v in accs.items()}, flush=True)
        rows.append((folder.name, config, accs))

    names = list(rows[0][2])
    lines = [
        "# Test-time augmentation: which views help which model",
        "",
        f"Measured {datetime.date.today()} on {machine()}.",
        "",
        "Command: `python benchmarks/tta_views.py "
        + " ".join(f"RUN{i + 1}" for i in range(len(rows)))
        + f" --shifts {' '.join(map(str, args.shifts))} --write` on the run folders below.",
        "",
        "Validation accuracy (the run's own 5,000 held-out images, drawn again from its "
        "seed; the test set untouched) of each run's final model, its predictions averaged "
        "over the views: none, the image and its mirror (`--tta`), and those two at each "
        "offset of the 3x3 grid of shifts by s pixels (`--tta --tta-shift s`, 18 views).",
        "",
        "| run | model | trained with crops of | " + " | ".join(names) + " |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for name, config, accs in rows:
        model = (
            f"bottleneck width {config.width}, depth {config.depth}, {config.epochs} epochs"
            if config.model == "bottleneck"
            else f"hidden {config.hidden}, {config.epochs} epochs, MixUp {config.mixup}"
        )
        lines.append(
            f"| {name} | {model} | {config.crop} px | "
            + " | ".join(f"{accs[n]:.2f}%" for n in names)
            + " |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        notes = HERE / "TTA_NOTES.md"
        extra = "\n" + notes.read_text() if notes.is_file() else ""
        (HERE / "TTA.md").write_text(text + extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
