"""The command line under hostile input: one line and the right exit code, nothing left behind.

Exit codes: 2 for bad input, 1 for a failure during a run, 130 for an
interrupt; never a traceback (unless asked for with --debug / NUMPROP_DEBUG=1).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import numprop as npp
from numprop import cli
from numprop.cli import main

QUICK = ["--epochs", "1", "--batch-size", "16", "--val-size", "10", "--quiet", "--no-plots"]


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    x = (rng.normal(0, 3, (3, 5))[y] + rng.normal(0, 1, (150, 5))).astype(np.float32)
    path = tmp_path / "table.npz"
    np.savez(path, X=x[:120], y=y[:120], X_test=x[120:], y_test=y[120:])
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--label-smoothing", "1.5"], "label smoothing must be in [0, 1)"),
        (["--momentum", "1.0"], "momentum must be in [0, 1)"),
        (["--seed", "-1"], "seed must be a whole number >= 0"),
        (["--nesterov", "--momentum", "0"], "Nesterov momentum needs"),
        (["--init-scale", "0"], "init scale must be positive"),
    ],
)
def test_bad_settings_are_refused_before_the_run_folder_exists(
    tmp_path, table, capsys, extra, message
):
    out = tmp_path / "run"
    assert main(["train", "--data", str(table), *QUICK, *extra, "--out", str(out)]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    "where",
    ["under-a-file", "under-proc", "name-too-long"],
)
def test_output_folders_that_cannot_be_written_are_one_line(tmp_path, table, capsys, where):
    (tmp_path / "file").write_text("x")
    out = {
        "under-a-file": tmp_path / "file" / "run",
        "under-proc": "/proc/numprop-run",
        "name-too-long": tmp_path / ("r" * 300),
    }[where]
    assert main(["train", "--data", str(table), *QUICK, "--out", str(out)]) == 2
    assert "cannot write the run folder" in one_error_line(capsys)


def test_a_finished_run_is_not_written_over(tmp_path, table, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(table), *QUICK, "--out", str(out)]) == 0
    before = (out / "model.npz").read_bytes()
    capsys.readouterr()
    assert main(["train", "--data", str(table), *QUICK, "--out", str(out)]) == 2
    assert "holds a finished run" in one_error_line(capsys)
    assert (out / "model.npz").read_bytes() == before


def test_resume_refuses_settings_it_would_ignore(tmp_path, table, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(table), *QUICK, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "9", "--lr", "0.5"]) == 2
    err = one_error_line(capsys)
    assert "leave out --epochs, --lr" in err


@pytest.mark.parametrize(
    "extra", [["--hidden", "100000000"], ["--batch-size", "10000000", "--hidden", "4000"]]
)
def test_sizes_beyond_memory_are_refused_before_allocating(tmp_path, table, capsys, extra):
    out = tmp_path / "run"
    started = time.perf_counter()
    code = main(["train", "--data", str(table), *QUICK[2:], *extra, "--out", str(out)])
    assert code == 2 and time.perf_counter() - started < 10
    assert "GiB available" in one_error_line(capsys)
    assert not out.exists()


def test_a_failed_write_during_a_run_is_one_line_with_exit_1(tmp_path, table, capsys, monkeypatch):
    def disk_full(self, trainer, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(npp.Checkpoint, "on_epoch_end", disk_full)
    assert main(["train", "--data", str(table), *QUICK, "--out", str(tmp_path / "r")]) == 1
    err = one_error_line(capsys)
    assert "could not read or write" in err and "last.npz" in err and "No space left" in err


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something deep\nin NumPy")

    monkeypatch.setitem(cli.COMMANDS, "info", broken)
    assert main(["info"]) == 1
    err = one_error_line(capsys)
    assert "internal error: RuntimeError: something deep in NumPy" in err
    assert "NUMPROP_DEBUG=1" in err
    assert main(["--debug", "info"]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("NUMPROP_DEBUG", "1")
    assert main(["info"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_a_closed_pipe_ends_predict_quietly(tmp_path, table):
    run = tmp_path / "run"
    assert main(["train", "--data", str(table), *QUICK, "--out", str(run)]) == 0
    rows = np.random.default_rng(1).normal(size=(20000, 5)).astype(np.float32)
    np.savez(tmp_path / "many.npz", X=rows)
    command = (
        f"{sys.executable} -m numprop.cli predict {run} {tmp_path / 'many.npz'} --top 1 | head -1"
    )
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_two_runs_cannot_train_into_one_folder(tmp_path, table, capsys):
    from numprop.training.experiment import make_run_folder

    out = tmp_path / "run"
    held = make_run_folder(out)  # as a running `numprop train` holds it
    try:
        assert main(["train", "--data", str(table), *QUICK, "--out", str(out)]) == 2
        assert "another numprop process is training into" in one_error_line(capsys)
    finally:
        held.close()
    assert main(["train", "--data", str(table), *QUICK, "--out", str(out)]) == 0
