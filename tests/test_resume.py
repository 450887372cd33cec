"""Exact resume: a run cut short and resumed ends with the weights of an uninterrupted run, bit for bit.

Every option of `numprop train` that carries state across epochs is covered:
schedules (cosine with warm-up, step, plateau), early stopping, augmentation,
dropout, BatchNorm, Adam/AdamW, label smoothing, no validation set, bf16.
The runs are tiny (8x8 colour images) so that each takes a fraction of a second.
In-process, the cut is a KeyboardInterrupt after an epoch's checkpoint; the last
test kills a real `numprop train` process with SIGKILL at several moments.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import numprop as npp
from numprop.training.experiment import TrainConfig, train
from numprop.training.trainer import Callback

QUIET = {"progress": False, "print_fn": lambda *a: None}


def images(tmp_path, n=240, seed=0):
    """Four classes of 8x8 colour images, each a noisy class colour, as an .npz."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    colours = rng.integers(40, 216, (4, 1, 1, 3))
    x = np.clip(colours[y] + rng.normal(0, 200, (n, 8, 8, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "images.npz"
    np.savez(path, X=x, y=y)
    return path


class Cut(Callback):
    """Interrupts the run after epoch ``at`` (its checkpoint is written by then)."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.at:
            raise KeyboardInterrupt


def weights(folder):
    return {k: p.data for k, p in npp.load(folder / "model.npz").model.named_parameters()}


SETTINGS = {
    "default": {},
    "step-schedule": {"schedule": "step"},
    "plateau": {"schedule": "plateau"},
    "early-stopping": {"patience": 2, "epochs": 10, "lr": 0.1},  # stops after 5 epochs
    "augment-dropout": {"crop": 2, "flip": True, "dropout": 0.3},
    "batchnorm": {"batchnorm": True, "hidden": [16, 16]},
    "adam": {"optimizer": "adam", "lr": 0.003},
    "adamw": {"optimizer": "adamw", "lr": 0.003, "weight_decay": 0.05},
    "label-smoothing": {"label_smoothing": 0.1},
    "no-validation": {"val_size": 0},
    "bf16": {"precision": "bf16"},
    "bottleneck-lion-mixup-ema": {
        "model": "bottleneck",
        "width": 16,
        "depth": 2,
        "optimizer": "lion",
        "lr": 1e-3,
        "mixup": 0.4,
        "cutmix": 1.0,
        "ema": 0.9,
        "ema_every": 3,  # a cut can fall between two updates of the average
    },
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("cut", [1, 3])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, name, cut):
    base = {"hidden": [16], "epochs": 5, "batch_size": 32, "val_size": 40, "lr": 0.05}
    config = TrainConfig(data=str(images(tmp_path)), **{**base, **SETTINGS[name]})
    full = train(config, tmp_path / "full", **QUIET)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", callbacks=[Cut(cut)], **QUIET)
    resumed = train(None, tmp_path / "cut", resume=True, **QUIET)
    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in full.history]
    drop = {"seconds"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed.history] == [
        {k: v for k, v in h.items() if k not in drop} for h in full.history
    ]
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    if name == "early-stopping":  # the setting must really stop early for the test to mean much
        assert len(full.history) < config.epochs


def test_a_run_cut_right_after_early_stopping_decided_stops_on_resume(tmp_path):
    base = {"hidden": [16], "batch_size": 32, "val_size": 40}
    config = TrainConfig(data=str(images(tmp_path)), **base, **SETTINGS["early-stopping"])
    full = train(config, tmp_path / "full", **QUIET)
    stopped_at = len(full.history)
    assert stopped_at < config.epochs
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", callbacks=[Cut(stopped_at)], **QUIET)
    lines = []
    resumed = train(None, tmp_path / "cut", resume=True, progress=False, print_fn=lines.append)
    assert len(resumed.history) == stopped_at  # no epoch more
    assert any(line.startswith("early stopping:") for line in lines)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")  # the best epoch's weights
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", ["default", "early-stopping", "bottleneck-lion-mixup-ema"])
def test_a_run_stopped_after_some_epochs_resumes_into_the_uninterrupted_run(tmp_path, name):
    """What numprop sweep's successive halving relies on: stop_after, then resume, costs nothing."""
    base = {"hidden": [16], "epochs": 5, "batch_size": 32, "val_size": 40, "lr": 0.05}
    config = TrainConfig(data=str(images(tmp_path)), **{**base, **SETTINGS[name]})
    full = train(config, tmp_path / "full", **QUIET)
    first = train(config, tmp_path / "cut", stop_after=2, test=False, **QUIET)
    assert len(first.history) == 2 and first.test_acc is None
    assert _same_records(first.history, full.history[:2])
    again = train(None, tmp_path / "cut", resume=True, stop_after=2, test=False, **QUIET)
    assert _same_records(again.history, first.history)  # nothing trained twice
    resumed = train(None, tmp_path / "cut", resume=True, **QUIET)
    assert _same_records(resumed.history, full.history)
    assert resumed.test_acc == full.test_acc
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _same_records(a, b) -> bool:
    """Histories equal in everything but the wall-clock seconds."""
    drop = {"seconds"}
    return [{k: v for k, v in r.items() if k not in drop} for r in a] == [
        {k: v for k, v in r.items() if k not in drop} for r in b
    ]


def test_a_run_without_the_test_set_writes_no_test_results(tmp_path):
    import json

    config = TrainConfig(data=str(images(tmp_path)), hidden=[16], epochs=2, val_size=40)
    result = train(config, tmp_path / "run", test=False, **QUIET)
    assert result.test_acc is None and result.test_loss is None
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_acc"] is None and summary["test_loss"] is None
    assert not (tmp_path / "run" / "predictions.npz").exists()
    assert (tmp_path / "run" / "model.npz").is_file()
    # Resuming the finished run trains nothing and evaluates the test set, as a plain run would.
    tested = train(None, tmp_path / "run", resume=True, **QUIET)
    plain = train(config, tmp_path / "plain", **QUIET)
    assert _same_records(tested.history, plain.history)
    assert tested.test_acc == plain.test_acc and tested.test_loss == plain.test_loss
    assert (tmp_path / "run" / "predictions.npz").is_file()


def test_sigkill_at_any_moment_then_resume_gives_the_same_model(tmp_path):
    data = images(tmp_path, n=2000)
    args = ["--data", str(data), "--hidden", "64", "--epochs", "6", "--batch-size", "16"]
    args += ["--val-size", "200", "--dropout", "0.2", "--crop", "2", "--patience", "3"]
    args += ["--quiet", "--no-plots"]
    cmd = [sys.executable, "-m", "numprop.cli", "train", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [*cmd, "--out", str(tmp_path / "full")], check=True, env=env, capture_output=True
    )
    started = time.perf_counter()
    subprocess.run(
        [*cmd, "--out", str(tmp_path / "timing")], check=True, env=env, capture_output=True
    )
    whole = time.perf_counter() - started

    kills = 0
    run = tmp_path / "killed"

    def go_on():  # what a user does after a crash: resume from the checkpoint, if one was made
        if not (run / "last.npz").exists():
            return [*cmd, "--out", str(run)]
        return [
            sys.executable,
            "-m",
            "numprop.cli",
            "train",
            "--resume",
            str(run),
            "--quiet",
            "--no-plots",
        ]

    # Kill into the run: mid-epoch, near checkpoints. A kill that came before the first
    # checkpoint (a slow start on a busy machine) only restarted the run: that moment is
    # tried again, a bounded number of times.
    moments = [0.35, 0.55, 0.75, 0.9]
    for _ in range(12):
        if not moments:
            break
        proc = subprocess.Popen(go_on(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=moments[0] * whole)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        if (run / "last.npz").exists():
            moments.pop(0)
        if (run / "model.npz").exists():
            break
    if not (run / "model.npz").exists():
        subprocess.run(go_on(), check=True, env=env, capture_output=True)
    assert kills >= 1  # the run really was killed
    a, b = weights(tmp_path / "full"), weights(run)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
