"""numprop sweep: search spaces, searches, successive halving, faults and resuming, on real Dask.

The clusters are real: a local cluster started by the sweep itself, and a
scheduler with two workers started as separate processes on 127.0.0.1, as a
user's cluster would be, one of which is killed (SIGKILL) during a trial. The
data is a small generated table, so a trial's epoch takes a tenth of a second.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import numprop
import numprop as npp
from numprop.cli import main
from numprop.sklearn import MLPClassifier
from numprop.training.experiment import TrainConfig, train
from numprop.training.sweep import (
    GridSearch,
    RandomSearch,
    Space,
    SweepSettings,
    importance,
    parse_space,
    resume_sweep,
    start_sweep,
)

QUIET = {"progress": False, "print_fn": lambda *a: None}
# Where the numprop under test lives: the processes started here must import the same one.
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        [str(Path(numprop.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
    ),
}


def table(path: Path, n: int = 3000, seed: int = 0) -> Path:
    """Three overlapping classes of 16 features (about 85% can be right), with a test split."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.normal(0, 0.45, (3, 16))[y] + rng.normal(0, 1, (n, 16))).astype(np.float32)
    cut = n * 4 // 5
    np.savez(path, X=x[:cut], y=y[:cut], X_test=x[cut:], y_test=y[cut:])
    return path


def write_space(folder: Path, text: str) -> Path:
    path = folder / "space.toml"
    path.write_text(text)
    return path


# A space of three searched settings, each trial four quick epochs.
SPACE = """
data = "{data}"
epochs = 4
val-size = 200
batch_size = 16
precision = "fp32"
hidden = {{ choice = [[16], [32, 16]] }}
lr = {{ log_uniform = [0.002, 0.2] }}
weight_decay = {{ log_uniform = [1e-5, 1e-2] }}
"""
# Six trials to 1 epoch, the best 3 on to 2, the best one on to all 4.
HALVING = ["--trials", "6", "--min-epochs", "1", "--eta", "2"]


def trials_of(out: Path) -> list[dict]:
    return json.loads((out / "trials.json").read_text())


def attempts(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "attempts").glob("*.json"))]


def weights(path: Path) -> dict:
    return {k: p.data for k, p in npp.load(path).model.named_parameters()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# -- the space, checked before anything starts ----------------------------------------


@pytest.mark.parametrize(
    "text,extra,message",
    [
        ("lr = [0.1", [], "is not valid TOML"),
        ("weight-decai = 0.1", [], "unknown setting 'weight-decai' (did you mean weight_decay?)"),
        ("lr = { log_uniform = [0, 0.1] }", [], "lr: log_uniform needs 0 < low < high"),
        ("lr = { uniform = [0.3, 0.1] }", [], "lr: uniform needs low < high"),
        ("lr = { uniform = [0.1] }", [], "lr: uniform takes [low, high], two numbers"),
        ("lr = { normal = [0, 1] }", [], "lr: give exactly one of uniform, log_uniform"),
        ("hidden = { choice = [] }", [], "hidden: choice takes a non-empty list"),
        ("hidden = { uniform = [1, 9] }", [], "hidden: hidden is not a number"),
        ("batch_size = { uniform = [8, 64] }", [], "batch_size takes whole numbers"),
        ("hidden = 'wide'", [], "setting hidden = 'wide' is not list[int]"),
        ("dropout = { choice = [0.1, 1.5] }", [], "dropout = 1.5: dropout must be in [0, 1)"),
        ("epochs = { choice = [2, 4] }", [], "fix epochs in the space"),
        ("val_size = 0", [], "val_size must be > 0"),
        ("lr = { uniform = [0.01, 0.1] }", ["--search", "grid"], "give choice = [...] or points"),
        ("lr = { choice = [0.01, 0.1] }", ["--search", "grid", "--trials", "3"], "leave out"),
        ("epochs = 4", ["--min-epochs", "4"], "--min-epochs must be between 1 and"),
        ("epochs = 4", ["--scheduler", "tcp://x:1", "--workers", "2"], "--workers sizes the local"),
    ],
)
def test_a_bad_space_or_setting_is_one_line_before_anything_starts(
    tmp_path, capsys, text, extra, message
):
    space = write_space(tmp_path, text)
    out = tmp_path / "sweep"
    assert main(["sweep", str(space), "--out", str(out), *extra]) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_resume_takes_no_new_search_settings_and_needs_a_sweep(tmp_path, capsys):
    assert main(["sweep", "--resume", str(tmp_path), "--trials", "4"]) == 2
    assert "leave out --trials" in one_error_line(capsys)
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "holds no sweep to resume (no sweep.json)" in one_error_line(capsys)
    assert main(["sweep"]) == 2
    assert "give a space file" in one_error_line(capsys)


@pytest.mark.parametrize(
    "missing,extra,message",
    [
        ("distributed", [], "numprop sweep needs distributed: pip install 'numprop[dask]'"),
        (
            "optuna",
            ["--search", "optuna"],
            "numprop sweep --search optuna needs optuna: pip install 'numprop[optuna]'",
        ),
    ],
)
def test_a_missing_extra_is_named(tmp_path, capsys, monkeypatch, missing, extra, message):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == missing else find_spec(name)
    )
    space = write_space(tmp_path, "lr = { log_uniform = [0.001, 0.1] }")
    assert main(["sweep", str(space), "--out", str(tmp_path / "s"), *extra]) == 2
    assert one_error_line(capsys).endswith(message)
    assert not (tmp_path / "s").exists()


def test_an_unreachable_scheduler_is_one_line(tmp_path, capsys):
    space = write_space(tmp_path, SPACE.format(data=table(tmp_path / "t.npz", n=200)))
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    argv = ["sweep", str(space), "--out", str(tmp_path / "s"), "--scheduler", address]
    assert main([*argv, "--connect-timeout", "1"]) == 2
    assert f"cannot reach the Dask scheduler at {address}" in one_error_line(capsys)


def test_the_spaces_in_the_documentation_are_valid():
    root = Path(__file__).resolve().parents[1]
    blocks = [
        block
        for doc in ("README.md", "docs/sweeps.md")
        for block in re.findall(r"```toml\n(.*?)```", (root / doc).read_text(), re.S)
    ]
    assert len(blocks) == 3
    for block in blocks:
        space = parse_space(tomllib.loads(block), "the documentation")
        SweepSettings().check(space)
        assert space.params  # each searches something


# -- searches --------------------------------------------------------------------------


def test_random_search_draws_the_same_settings_from_the_same_seed():
    space = parse_space(
        {
            "lr": {"log_uniform": [1e-4, 1e-1]},
            "dropout": {"uniform": [0.0, 0.5]},
            "depth": {"int": [2, 5]},
            "hidden": {"choice": [[64], [128, 64]]},
        },
        "space",
    )
    first = [RandomSearch(space, 7).settings(i) for i in range(40)]
    again = [RandomSearch(space, 7).settings(i) for i in range(40)]
    other = [RandomSearch(space, 8).settings(i) for i in range(40)]
    assert first == again and first != other
    # A trial's settings depend on its number only, not on the trials drawn before it.
    assert RandomSearch(space, 7).settings(33) == first[33]
    # Each draw is the distribution's, from the generator seeded (seed, trial), in key order.
    for i, s in enumerate(first):
        rng = np.random.default_rng([7, i])
        assert s["lr"] == math.exp(rng.uniform(math.log(1e-4), math.log(1e-1)))
        assert s["dropout"] == rng.uniform(0.0, 0.5)
        assert s["depth"] == rng.integers(2, 6)
        assert s["hidden"] == [(64,), (128, 64)][rng.integers(2)]
    assert {s["depth"] for s in first} == {2, 3, 4, 5}  # both ends of an int range come up


def test_grid_search_runs_every_combination_once():
    space = parse_space(
        {
            "lr": {"log_uniform": [1e-3, 1e-1], "points": 3},
            "hidden": {"choice": [[16], [32]]},
            "depth": {"int": [2, 3]},
            "seed": 4,
        },
        "space",
    )
    search = GridSearch(space, 0)
    settings = [search.settings(i) for i in range(len(search.combinations))]
    lrs = [1e-3, 1e-2, 1e-1]
    expected = [
        {"lr": lr, "hidden": h, "depth": d} for lr, h, d in product(lrs, [(16,), (32,)], [2, 3])
    ]
    assert len(settings) == 12 == SweepSettings(search="grid").count(space)
    for got, want in zip(settings, expected):
        assert got["hidden"] == want["hidden"] and got["depth"] == want["depth"]
        assert got["lr"] == pytest.approx(want["lr"], rel=1e-12)  # geomspace's rounding
    assert space.fixed == {"seed": 4}


def test_successive_halving_rounds():
    assert SweepSettings(min_epochs=1, eta=2).rungs(4, 6) == [(1, 6), (2, 3), (4, 1)]
    assert SweepSettings(min_epochs=2, eta=3).rungs(20, 27) == [(2, 27), (6, 9), (18, 3), (20, 1)]
    assert SweepSettings().rungs(8, 16) == [(8, 16)]


def test_importance_is_the_share_a_setting_explains():
    lrs = list(np.geomspace(1e-4, 1e-1, 12))
    # Accuracy a parabola in log(lr), peaked in the middle: the quadratic explains all of it.
    scores = [0.9 - (np.log10(lr) + 2.5) ** 2 / 10 for lr in lrs]
    assert importance(lrs, scores, log=True) == pytest.approx(1.0, abs=1e-12)
    # A choice whose groups have the same mean explains nothing.
    noise = [(16,), (32,)] * 6
    same = [0.5, 0.7, 0.7, 0.5] * 3
    assert importance(noise, same, numeric=False) == 0.0
    # ... and one that sets the score alone explains all of it.
    assert importance(noise, [0.4, 0.8] * 6, numeric=False) == pytest.approx(1.0, abs=1e-12)


# -- the local cluster, successive halving, the outputs --------------------------------


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """One sweep with the defaults (a local cluster sized to this machine) and halving."""
    folder = tmp_path_factory.mktemp("local")
    space = write_space(folder, SPACE.format(data=table(folder / "table.npz")))
    out = folder / "sweep"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["sweep", str(space), "--out", str(out), *HALVING])
    assert code == 0, printed.getvalue()
    return {"space": space, "out": out, "printed": printed.getvalue()}


def test_the_local_cluster_is_sized_to_the_machine(local_sweep):
    from numprop.training.sweep import cores

    n = cores()
    workers = min(n, 6)
    threads = max(1, n // workers)
    line = f"local Dask cluster: {workers} worker{'s' * (workers > 1)} x {threads} BLAS thread"
    assert line in local_sweep["printed"]
    trials = trials_of(local_sweep["out"])
    assert {t["blas_threads"] for t in trials} == {threads}  # as seen inside each trial
    assert workers * threads <= n
    assert len({t["worker"] for t in trials}) == workers  # every worker took trials


def test_halving_promotes_the_best_from_their_own_checkpoints(local_sweep):
    out = local_sweep["out"]
    trials = trials_of(out)
    assert len(trials) == 6
    by_rung = {r: [t for t in trials if r in t["rungs"]] for r in ("1", "2", "4")}
    assert [len(by_rung[r]) for r in ("1", "2", "4")] == [6, 3, 1]
    # Those that went on were the best of the round before, by validation accuracy.
    best3 = sorted(by_rung["1"], key=lambda t: (-t["rungs"]["1"], t["trial"]))[:3]
    assert {t["trial"] for t in by_rung["2"]} == {t["trial"] for t in best3}
    best1 = max(by_rung["2"], key=lambda t: (t["rungs"]["2"], -t["trial"]))
    assert [t["trial"] for t in by_rung["4"]] == [best1["trial"]]
    statuses = {t["trial"]: t["status"] for t in trials}
    assert sorted(statuses.values()) == ["done"] + ["stopped"] * 5
    assert statuses[best1["trial"]] == "done"

    # No epoch trained twice: each round's attempt resumed where the last one stopped ...
    final = best1["trial"]
    notes = [n for n in attempts(out) if n["trial"] == final]
    resumed = sorted((n["epochs"], n["resumed_from"]) for n in notes if not n["test"])
    assert resumed == [(1, 0), (2, 1), (4, 2)], resumed
    # The best model's test resumed the finished run: it trained nothing.
    assert [n["resumed_from"] for n in notes if n["test"]] == [4]
    # ... and its history carries the earlier rounds' validation accuracies unchanged.
    history = json.loads((out / "trials" / f"{final:03d}" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert [history[0]["val_acc"], history[1]["val_acc"], history[3]["val_acc"]] == [
        best1["rungs"]["1"],
        best1["rungs"]["2"],
        trials[final]["rungs"]["4"],
    ]
    # Stopped and resumed twice, it ends with the weights of one uninterrupted run.
    space = parse_space(tomllib.loads(local_sweep["space"].read_text()), "space")
    config = Space(space.fixed, []).config(trials[final]["settings"])
    with threadpool_limits(limits=trials[final]["blas_threads"], user_api="blas"):
        train(config, out.parent / "uninterrupted", **QUIET)
    a = weights(out.parent / "uninterrupted" / "model.npz")
    b = weights(out / "trials" / f"{final:03d}" / "model.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_only_the_best_model_sees_the_test_set(local_sweep):
    out = local_sweep["out"]
    trials = trials_of(out)
    best = json.loads((out / "best.json").read_text())
    done = [t for t in trials if "4" in t["rungs"]]
    assert best["trial"] == max(done, key=lambda t: t["rungs"]["4"])["trial"]
    for t in trials:
        run = out / t["run"]
        summary = json.loads((run / "summary.json").read_text())
        if t["trial"] == best["trial"]:
            assert (run / "predictions.npz").is_file()
            assert summary["test_acc"] == best["test_acc"] and 0 < best["test_acc"] <= 1
        else:
            assert not (run / "predictions.npz").exists() and summary["test_acc"] is None
    model = (out / best["run"] / "model.npz").read_bytes()
    assert (out / "best_model.npz").read_bytes() == model
    # The test accuracy is that of the saved best model on the data's test split.
    data = np.load(Path(json.loads((out / "sweep.json").read_text())["space"]["data"]))
    saved = npp.load(out / "best_model.npz")
    predicted = saved.predict_proba(data["X_test"]).argmax(axis=1)
    assert float(np.mean(predicted == data["y_test"])) == best["test_acc"]


def test_trial_folders_and_tables(local_sweep):
    out = local_sweep["out"]
    trials = trials_of(out)
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["trial"]) for r in rows] == [t["trial"] for t in trials]
    for row, t in zip(rows, trials):
        assert row["status"] == t["status"] and int(row["epochs"]) == t["epochs"]
        assert float(row["val_acc"]) == t["val_acc"] and row["worker"] == t["worker"]
        assert json.loads(row["lr"]) == t["settings"]["lr"]
        assert json.loads(row["hidden"]) == t["settings"]["hidden"]
        # Each trial's folder is a `numprop train` run folder, resumable as one.
        run = out / t["run"]
        for name in ("last.npz", "best.npz", "model.npz", "history.json", "summary.json"):
            assert (run / name).is_file(), (run, name)
        assert len(json.loads((run / "history.json").read_text())) == t["epochs"]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best: trial" in local_sweep["printed"]


# -- Ctrl-C and --resume ----------------------------------------------------------------


def test_ctrl_c_stops_cleanly_and_resume_finishes_without_redoing_trials(tmp_path, local_sweep):
    """The same sweep as local_sweep, interrupted by a terminal's Ctrl-C, then resumed."""
    out = tmp_path / "sweep"
    argv = ["sweep", str(local_sweep["space"]), "--out", str(out), *HALVING]
    cmd = [sys.executable, "-m", "numprop.cli", *argv]
    proc = subprocess.Popen(
        cmd, env=ENV, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not any(t["rungs"] for t in _read_trials(out)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert f"numprop sweep --resume {out}" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    stopped = trials_of(out)  # whole, valid JSON
    kept = {(t["trial"], r) for t in stopped for r in t["rungs"]}
    assert kept and not (out / "best.json").exists()

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["sweep", "--resume", str(out)]) == 0
    assert f"{len(kept)} results of rounds kept" in printed.getvalue()
    # Rounds finished before Ctrl-C were not trained again: one attempt each, ever.
    for trial, rung in kept:
        tries = [
            n
            for n in attempts(out)
            if (n["trial"], str(n["epochs"])) == (trial, rung) and not n["test"]
        ]
        assert len(tries) == 1, (trial, rung, tries)
    # And the sweep ends as the uninterrupted one did, trial for trial.
    fields = ("trial", "settings", "status", "epochs", "val_acc", "rungs")
    got = [{k: t[k] for k in fields} for t in trials_of(out)]
    want = [{k: t[k] for k in fields} for t in trials_of(local_sweep["out"])]
    assert got == want
    assert (
        json.loads((out / "best.json").read_text())["test_acc"]
        == json.loads((local_sweep["out"] / "best.json").read_text())["test_acc"]
    )


def _read_trials(out: Path) -> list[dict]:
    try:
        return json.loads((out / "trials.json").read_text())
    except (OSError, ValueError):
        return []


# -- a cluster of separate processes; a worker dies mid-trial ---------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, killed afterwards.

    Shared by the tests below; the last one kills a worker.
    """
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        for i in range(2):
            worker = [*dask, "worker", address, "--nthreads", "1", "--no-nanny"]
            folder = tmp_path_factory.mktemp(f"worker{i}")
            worker += ["--no-dashboard", "--local-directory", str(folder)]
            worker += ["--name", f"worker{i}"]
            procs.append(
                subprocess.Popen(
                    worker, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, procs[1:]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def kill_during_a_trial(out: Path, killed: dict, pids: set | None = None) -> None:
    """SIGKILL a worker process (one of ``pids``, or any) once a trial it runs has a
    checkpoint and half its 12 epochs to go; what its attempt's note says goes in ``killed``."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for note in attempts(out) if (out / "attempts").is_dir() else []:
            run = out / "trials" / f"{note['trial']:03d}"
            if (pids and note["pid"] not in pids) or not (run / "last.npz").is_file():
                continue
            with contextlib.suppress(OSError, ValueError):
                done = len(json.loads((run / "history.json").read_text()))
                if 1 <= done <= 6:
                    os.kill(note["pid"], signal.SIGKILL)
                    killed.update(note, done=done)
                    return
        time.sleep(0.01)


# Trials of 12 epochs of 300 small batches: about a tenth of a second an epoch.
SLOW = """
data = "{data}"
epochs = 12
val_size = 200
hidden = [32]
precision = "fp32"
"""


def test_ctrl_c_on_a_cluster_stops_its_running_trials_after_their_epoch(tmp_path, dask_cluster):
    """On a cluster the sweep does not own, Ctrl-C asks running trials to stop at a checkpoint."""
    import fcntl

    address, _ = dask_cluster
    text = SLOW.format(data=table(tmp_path / "table.npz")) + "batch_size = { choice = [8, 256] }\n"
    space = write_space(tmp_path, text)
    out = tmp_path / "sweep"
    settings = SweepSettings(search="grid")  # trial 0: batches of 8, slow; trial 1: of 256, fast

    def ctrl_c_at_the_first_result(line: str):
        if line.startswith("trial"):
            raise KeyboardInterrupt  # where Ctrl-C would land: in the driver's loop

    with pytest.raises(KeyboardInterrupt):
        start_sweep(space, out, settings, scheduler=address, print_fn=ctrl_c_at_the_first_result)
    slow = out / "trials" / "000"
    with open(slow / ".lock", "a+b") as lock:  # trial 0 lets go of its folder ...
        deadline = time.monotonic() + 60
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                assert time.monotonic() < deadline, "trial 0 never stopped"
                time.sleep(0.05)
    stopped_at = len(json.loads((slow / "history.json").read_text()))
    assert 1 <= stopped_at < 12  # ... after an epoch, well before its end
    assert len(npp.load(slow / "last.npz").history) == stopped_at
    assert [t["status"] for t in trials_of(out)] == ["pending", "done"]

    lines: list[str] = []
    resume_sweep(out, scheduler=address, print_fn=lines.append)
    trials = trials_of(out)
    assert [(t["status"], t["epochs"]) for t in trials] == [("done", 12), ("done", 12)]
    notes = [n for n in attempts(out) if n["trial"] == 0 and not n["test"]]
    assert sorted(n["resumed_from"] for n in notes) == [0, stopped_at]
    assert len([n for n in attempts(out) if n["trial"] == 1 and not n["test"]]) == 1


def test_a_sweep_on_a_cluster_survives_a_worker_killed_mid_trial(tmp_path, dask_cluster):
    address, workers = dask_cluster
    data = table(tmp_path / "table.npz")
    text = SLOW.format(data=data) + "batch_size = 8\nlr = { log_uniform = [0.003, 0.03] }\n"
    space = write_space(tmp_path, text)
    out = tmp_path / "sweep"
    victim = workers[0]
    killed: dict = {}
    killer = threading.Thread(
        target=kill_during_a_trial, args=(out, killed, {victim.pid}), daemon=True
    )
    killer.start()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            ["sweep", str(space), "--out", str(out), "--trials", "4"]
            + ["--scheduler", address, "--connect-timeout", "60"]
        )
    killer.join(timeout=5)
    assert code == 0, printed.getvalue()
    assert killed, "the worker was never caught during a trial"
    assert victim.wait(timeout=10) == -signal.SIGKILL

    trials = trials_of(out)
    assert [t["trial"] for t in trials] == [0, 1, 2, 3]  # every trial accounted for
    assert all(t["status"] == "done" and t["epochs"] == 12 for t in trials)
    hit = trials[killed["trial"]]
    assert len(hit["retries"]) == 1
    retry = hit["retries"][0]
    assert retry["lost_workers"] == [killed["worker"]]
    assert retry["finished_on"] == hit["worker"] != killed["worker"]
    assert retry["resumed_from"] >= 1  # from its checkpoint, not from the start
    assert f"trial {killed['trial']:3d}  was retried: {killed['worker']} died" in printed.getvalue()
    assert f"retried: trial {killed['trial']} (1 time)" in printed.getvalue()
    assert sum(len(t["retries"]) for t in trials) == 1
    # The lost epoch was trained again on the other worker: the run ends as an uninterrupted one.
    config = TrainConfig(
        data=str(data),
        epochs=12,
        val_size=200,
        batch_size=8,
        hidden=[32],
        precision="fp32",
        lr=hit["settings"]["lr"],
    )
    with threadpool_limits(limits=hit["blas_threads"], user_api="blas"):
        train(config, tmp_path / "uninterrupted", **QUIET)
    a = weights(tmp_path / "uninterrupted" / "model.npz")
    b = weights(out / hit["run"] / "model.npz")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_trial_whose_worker_dies_past_the_retry_limit_fails_and_the_sweep_goes_on(tmp_path):
    """Retries are bounded: with --retries 0 the local cluster gives a killed trial up."""
    text = SLOW.format(data=table(tmp_path / "table.npz"))
    space = write_space(tmp_path, text + "batch_size = 8\nlr = { log_uniform = [0.003, 0.03] }\n")
    out = tmp_path / "sweep"
    killed: dict = {}
    killer = threading.Thread(target=kill_during_a_trial, args=(out, killed), daemon=True)
    killer.start()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["sweep", str(space), "--out", str(out), "--trials", "3", "--retries", "0"])
    killer.join(timeout=5)
    assert code == 0, printed.getvalue()
    assert killed, "no worker was caught during a trial"
    trials = trials_of(out)
    statuses = {t["trial"]: t["status"] for t in trials}
    assert statuses == {i: "failed" if i == killed["trial"] else "done" for i in range(3)}
    assert "its worker died" in trials[killed["trial"]]["error"]
    assert trials[killed["trial"]]["retries"][0]["lost_workers"] == [killed["worker"]]
    assert f"trial {killed['trial']:3d}  was given up: {killed['worker']} died" in (
        printed.getvalue()
    )
    assert f"failed: trials {killed['trial']}" in printed.getvalue()
    assert json.loads((out / "best.json").read_text())["trial"] != killed["trial"]


# -- Optuna ----------------------------------------------------------------------------


def test_optuna_asks_and_is_told_each_trial_in_turn(tmp_path):
    import optuna

    data = table(tmp_path / "table.npz", n=1000)
    space_text = SPACE.format(data=data).replace("epochs = 4", "epochs = 2")
    path = write_space(tmp_path, space_text)
    settings = SweepSettings(search="optuna", sampler="tpe", trials=6, seed=3)
    lines: list[str] = []
    start_sweep(path, tmp_path / "sweep", settings, workers=1, print_fn=lines.append)
    trials = trials_of(tmp_path / "sweep")
    assert [t["status"] for t in trials] == ["done"] * 6
    assert "optuna (tpe sampler) search" in lines[0]

    def replay(values):
        """A fresh study with the sweep's sampler, told ``values``: the settings it asks for."""
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=2)
        )
        d = optuna.distributions
        space = {
            "hidden": d.CategoricalDistribution([0, 1]),
            "lr": d.FloatDistribution(0.002, 0.2, log=True),
            "weight_decay": d.FloatDistribution(1e-5, 1e-2, log=True),
        }
        asked = []
        for value in values:
            trial = study.ask(space)
            asked.append(
                {
                    "hidden": [[16], [32, 16]][trial.params["hidden"]],
                    "lr": trial.params["lr"],
                    "weight_decay": trial.params["weight_decay"],
                }
            )
            study.tell(trial, value)
        return asked

    told = [t["val_acc"] for t in trials]
    # One worker: each trial was asked after the one before was told, so a replay matches ...
    assert replay(told) == [t["settings"] for t in trials]
    # ... and the values told mattered: told others, TPE asks for other settings.
    assert replay([1 - v for v in told])[2:] != [t["settings"] for t in trials][2:]


# -- scikit-learn's GridSearchCV through joblib's dask backend --------------------------


FITS: list[str] = []  # the thread of every fit of a RecordedMLPClassifier


class RecordedMLPClassifier(MLPClassifier):
    """numprop's estimator, noting in FITS the thread of each fit. A class of this module:
    Dask pickles it by reference, so workers in this process append to this very list."""

    def fit(self, X, y):
        FITS.append(threading.current_thread().name)
        return super().fit(X, y)


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer:sklearn.exceptions.ConvergenceWarning")
def test_gridsearchcv_runs_on_dask_with_the_numprop_estimator():
    import joblib
    from distributed import Client, LocalCluster, get_task_stream
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV

    fits = FITS
    fits.clear()
    x, y = load_digits(return_X_y=True)
    x, y = x[:400] / 16, y[:400]
    grid = {"alpha": [1e-4, 1e-2], "learning_rate_init": [1e-3, 1e-2]}

    def search():
        estimator = RecordedMLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
        return GridSearchCV(estimator, grid, cv=2)

    with threadpool_limits(limits=1, user_api="blas"):
        alone = search().fit(x, y)
    assert set(fits) == {threading.main_thread().name}
    fits.clear()
    # Worker threads in this process: the tasks go through a real scheduler, and the test
    # does not wait for two processes to import scikit-learn.
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    )
    try:
        with Client(cluster) as client, get_task_stream(client) as stream:
            with threadpool_limits(limits=1, user_api="blas"), joblib.parallel_backend("dask"):
                on_dask = search().fit(x, y)
            addresses = set(client.scheduler_info()["workers"])
    finally:
        cluster.close()
    # The 8 fits (4 settings x 2 folds) ran as Dask tasks on the workers; the refit here.
    assert len(fits) == 9 and fits[-1] == threading.main_thread().name
    assert threading.main_thread().name not in fits[:8]
    assert stream.data and {task["worker"] for task in stream.data} <= addresses
    np.testing.assert_array_equal(
        on_dask.cv_results_["mean_test_score"], alone.cv_results_["mean_test_score"]
    )
    assert on_dask.best_params_ == alone.best_params_
    np.testing.assert_array_equal(on_dask.predict(x), alone.predict(x))


def test_numprop_and_its_command_line_do_not_import_dask_or_optuna():
    script = (
        "import sys, numprop, numprop.cli, numprop.training.sweep\n"
        "numprop.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dask', 'distributed', 'optuna', 'threadpoolctl')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"
