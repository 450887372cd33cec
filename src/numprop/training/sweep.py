"""Hyperparameter sweeps on a Dask cluster: what `numprop sweep` runs.

A sweep is a search space (a small TOML file: fixed values, ranges and
choices of `numprop train`'s settings), a search (random, grid, or one of
Optuna's samplers in ask/tell form) and a number of trials. This process, the
driver, decides what to train; each trial trains as a Dask future on a worker,
through ``experiment.train``, into a run folder of its own, exactly as
`numprop train` writes one. Without a scheduler's address the driver starts a
local Dask cluster sized to the machine.

Successive halving: every trial first trains ``min_epochs`` of its epochs, the
best 1/eta of them go on, from their own checkpoints, to eta times as many,
and so on up to all of them. A stopped trial's schedule is that of the whole
run, so a trial that goes all the way ends exactly as an uninterrupted run.

Faults: a worker that dies takes with it only the trial's epoch in progress;
the scheduler gives the trial to another worker (up to its ``allowed-failures``),
which resumes it from its checkpoint, and the sweep reports it. The output
folder holds everything needed to go on after Ctrl-C (``resume_sweep``):

    DIR/sweep.json          the space and the search settings
    DIR/trials/NNN/         one run folder per trial
    DIR/trials.json, .csv   per trial: settings, status, epochs, validation accuracy, time, worker
    DIR/attempts/           one small file per attempt at a trial (how retries are seen)
    DIR/best.json, best_model.npz   the best trial and its model: the only test-set evaluation
    DIR/sweep.png           validation accuracy against the settings that mattered most

Dask and Optuna are imported here only, when a sweep runs.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import math
import os
import secrets
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from itertools import product
from pathlib import Path

import numpy as np

from numprop.errors import ConfigError, NumpropError, TrainingError
from numprop.training.callbacks import atomic_write_text
from numprop.training.experiment import TrainConfig, recipe_config
from numprop.training.io import check_settings, lock_folder, one_line
from numprop.training.trainer import Callback

KINDS = ("uniform", "log_uniform", "int", "choice")
SEARCHES = ("random", "grid", "optuna")
# Optuna's samplers by name; looked up (and imported) only when asked for.
SAMPLERS = {
    "tpe": "TPESampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "random": "RandomSampler",
}

# -- the search space ----------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One searched setting: a range (uniform, log-uniform, whole numbers) or a list of choices."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple = ()
    points: int | None = None  # grid search: how many points of a range

    def sample(self, rng: np.random.Generator):
        """A value drawn from ``rng``."""
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "log_uniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.kind == "int":
            return int(rng.integers(self.low, self.high + 1))
        return self.choices[int(rng.integers(len(self.choices)))]

    def grid(self) -> list:
        """The values grid search tries."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int" and self.points is None:
            return list(range(self.low, self.high + 1))
        if self.kind == "log_uniform":
            values = np.geomspace(self.low, self.high, self.points)
        else:
            values = np.linspace(self.low, self.high, self.points)
        if self.kind == "int":
            return sorted({int(round(v)) for v in values})
        return [float(v) for v in values]

    def extremes(self) -> list:
        """The values that validation tries: the ends of a range, every choice."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


@dataclass
class Space:
    """A sweep's search space: settings every trial shares, and the searched ones."""

    fixed: dict
    params: list[Param]

    def config(self, settings: dict) -> TrainConfig:
        """The TrainConfig of a trial with the searched ``settings``."""
        return trial_config({**self.fixed, **settings})


def trial_config(settings: dict) -> TrainConfig:
    """The TrainConfig of a trial's settings, on top of their ``recipe`` when they name one."""
    settings = dict(settings)
    recipe = settings.pop("recipe", None)
    return TrainConfig(**settings) if recipe is None else recipe_config(recipe, **settings)


_FIELDS = {f.name: f.type for f in fields(TrainConfig)}


def read_table(path: str | os.PathLike) -> dict:
    """The table of a space's TOML file (``parse_space`` checks what is in it)."""
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no space file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {one_line(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {one_line(exc)}") from None
    return table


def parse_space(table: dict, where: str) -> Space:
    """Check a space's table and build it; a one-line ConfigError naming ``where`` and the key.

    Every key is a `numprop train` setting (dashes or underscores). A plain
    value is fixed; a table with one of ``uniform``, ``log_uniform``, ``int``
    (each ``[low, high]``) or ``choice`` (a list) is searched; ``points = N``
    gives grid search N points of a range. Each fixed value, each choice and
    both ends of each range must make a valid TrainConfig with the rest.
    """
    fixed, params = {}, []
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"{where}: unknown setting {raw_key!r}{hint}; every key is a `numprop train` "
                "setting (numprop train --help)"
            )
        if key in fixed or any(p.name == key for p in params):
            raise ConfigError(f"{where}: {key} is given twice")
        if isinstance(value, dict):
            params.append(_param(key, value, f"{where}: {raw_key}"))
        else:
            check_settings({key: value}, _FIELDS, f"{where}: {raw_key}")
            fixed[key] = value
    space = Space(fixed, params)
    _check_values(space, where)
    return space


def _param(key: str, spec: dict, where: str) -> Param:
    """One searched setting's table, checked."""
    kinds = [k for k in spec if k in KINDS]
    unknown = sorted(set(spec) - set(KINDS) - {"points"})
    if unknown or len(kinds) != 1:
        raise ConfigError(
            f"{where}: give exactly one of {', '.join(KINDS)} (and optionally points), "
            f"got {', '.join(sorted(spec)) or 'an empty table'}"
        )
    kind, value = kinds[0], spec[kinds[0]]
    points = spec.get("points")
    if points is not None and (not _is_int(points) or points < 2 or kind == "choice"):
        raise ConfigError(f"{where}: points must be a whole number >= 2, for a range only")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: choice takes a non-empty list, got {value!r}")
        for option in value:
            check_settings({key: option}, _FIELDS, where)
        return Param(key, kind, choices=tuple(_frozen(v) for v in value))
    annotation = _FIELDS[key]
    if "int" not in annotation and "float" not in annotation or "list" in annotation:
        raise ConfigError(f"{where}: {key} is not a number: use choice = [...]")
    if not (isinstance(value, list) and len(value) == 2 and all(_is_real(v) for v in value)):
        raise ConfigError(f"{where}: {kind} takes [low, high], two numbers, got {value!r}")
    low, high = value
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: log_uniform needs 0 < low < high, got [{low}, {high}]")
    if kind == "int" and not (_is_int(low) and _is_int(high)):
        raise ConfigError(f"{where}: int takes whole numbers, got [{low}, {high}]")
    if kind != "int" and "float" not in annotation:
        raise ConfigError(f"{where}: {key} takes whole numbers: use int = [low, high]")
    return Param(key, kind, low, high, points=points)


def _check_values(space: Space, where: str) -> None:
    """Every fixed value, choice and end of a range makes a valid TrainConfig."""
    first = first_settings(space)
    for param in space.params or [None]:
        for value in param.extremes() if param else [None]:
            settings = {**first, param.name: value} if param else first
            try:
                space.config(_thawed(settings)).validate()
            except (ConfigError, TypeError) as exc:
                what = f"{param.name} = {_thawed(value)!r}: " if param else ""
                raise ConfigError(f"{where}: {what}{one_line(exc)}") from None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _frozen(value):
    """Choices are kept hashable (a list of hidden sizes becomes a tuple)."""
    return tuple(value) if isinstance(value, list) else value


def _thawed(value):
    """Settings as TrainConfig and JSON take them: tuples back to lists."""
    if isinstance(value, dict):
        return {k: _thawed(v) for k, v in value.items()}
    return list(value) if isinstance(value, tuple) else value


# -- the sweep's settings and its searches -------------------------------------------


@dataclass
class SweepSettings:
    """How to search: the search, the number of trials, the seed, successive halving, retries."""

    search: str = "random"
    sampler: str = "tpe"
    trials: int | None = None  # random and optuna: 16 by default; grid: every combination
    seed: int = 0
    min_epochs: int | None = None  # successive halving when given: the first rung's epochs
    eta: int = 3

    def check(self, space: Space) -> None:
        """A one-line ConfigError for settings that do not fit together or the space."""
        if self.search not in SEARCHES:
            raise ConfigError(f"unknown search {self.search!r}; choose {', '.join(SEARCHES)}")
        if self.search == "optuna" and self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose {', '.join(SAMPLERS)}")
        if self.search == "grid":
            for p in space.params:
                if p.kind in ("uniform", "log_uniform") and p.points is None:
                    raise ConfigError(
                        f"grid search needs the values of {p.name}: give choice = [...] "
                        "or points = N for its range"
                    )
            if self.trials is not None and self.trials != len(grid(space)):
                raise ConfigError(
                    f"grid search runs every combination ({len(grid(space))} here): "
                    "leave out --trials"
                )
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials must be at least 1, got {self.trials}")
        if self.eta < 2:
            raise ConfigError(f"--eta must be at least 2, got {self.eta}")
        budgets = {
            space.config(_thawed({**first_settings(space), p.name: v})).epochs
            for p in space.params
            for v in p.extremes()
        } or {space.config({}).epochs}
        if len(budgets) > 1 or any(p.name == "epochs" for p in space.params):
            raise ConfigError(
                "every trial trains the same number of epochs (successive halving's budget): "
                "fix epochs in the space"
            )
        config = space.config(_thawed(first_settings(space)))
        if config.val_size == 0:
            raise ConfigError("a sweep chooses on validation accuracy: val_size must be > 0")
        if self.min_epochs is not None and not 1 <= self.min_epochs < config.epochs:
            raise ConfigError(
                f"--min-epochs must be between 1 and the trials' epochs - 1 ({config.epochs - 1})"
            )

    def count(self, space: Space) -> int:
        """How many trials the sweep runs."""
        return len(grid(space)) if self.search == "grid" else self.trials or 16

    def rungs(self, epochs: int, trials: int) -> list[tuple[int, int]]:
        """(epochs, trials) of each round: all trials to min_epochs, the best 1/eta on, ..."""
        if self.min_epochs is None:
            return [(epochs, trials)]
        rungs = [(self.min_epochs, trials)]
        while rungs[-1][0] < epochs:
            last_epochs, last_trials = rungs[-1]
            rungs.append((min(epochs, last_epochs * self.eta), max(1, last_trials // self.eta)))
        return rungs


def first_settings(space: Space) -> dict:
    """The first value of every searched setting: enough to read what all trials share."""
    return {p.name: p.extremes()[0] for p in space.params}


def grid(space: Space) -> list[dict]:
    """Every combination of the searched values, the last setting varying fastest."""
    names = [p.name for p in space.params]
    return [dict(zip(names, values)) for values in product(*(p.grid() for p in space.params))]


class RandomSearch:
    """Trial ``i`` draws its settings from a generator seeded with (seed, i): reproducible."""

    def __init__(self, space: Space, seed: int):
        self.space, self.seed = space, seed

    def settings(self, trial: int, known: dict | None = None) -> dict:
        rng = np.random.default_rng([self.seed, trial])
        return {p.name: p.sample(rng) for p in self.space.params}

    def tell(self, trial: int, value: float | None) -> None:
        """Random search learns nothing."""

    def restore(self, settings: dict, value: float | None) -> None:
        """Nothing to restore."""


class GridSearch(RandomSearch):
    """Trial ``i`` is the i-th combination of the grid."""

    def __init__(self, space: Space, seed: int):
        super().__init__(space, seed)
        self.combinations = grid(space)

    def settings(self, trial: int, known: dict | None = None) -> dict:
        return dict(self.combinations[trial])


class OptunaSearch:
    """One of Optuna's samplers in ask/tell form: each trial is asked for when a worker is
    free, and told its validation accuracy after the first round (all trials get that far).

    Choices are asked as indices (Optuna's categories must be plain values, hidden sizes are
    lists). A resumed sweep gives back its finished trials (``restore``) before asking again.
    """

    def __init__(self, space: Space, seed: int, sampler: str, trials: int):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.params = optuna, space.params
        cls = getattr(optuna.samplers, SAMPLERS[sampler])
        kwargs = {"seed": seed}
        if sampler == "tpe":
            # TPE's default is 10 random trials before it models; a sweep of 16 would get 6.
            kwargs["n_startup_trials"] = max(2, trials // 4)
        try:
            made = cls(**kwargs)
        except ImportError as exc:  # GPSampler needs torch, CmaEsSampler the cmaes package
            raise ConfigError(f"the {sampler} sampler needs {one_line(exc)}") from None
        self.study = optuna.create_study(direction="maximize", sampler=made)
        self.distributions = {p.name: self._distribution(p) for p in self.params}
        self.asked: dict[int, object] = {}

    def _distribution(self, p: Param):
        d = self.optuna.distributions
        if p.kind == "choice":
            return d.CategoricalDistribution(list(range(len(p.choices))))
        if p.kind == "int":
            return d.IntDistribution(p.low, p.high)
        return d.FloatDistribution(p.low, p.high, log=p.kind == "log_uniform")

    def _to_optuna(self, settings: dict) -> dict:
        return {
            p.name: p.choices.index(_frozen(settings[p.name]))
            if p.kind == "choice"
            else settings[p.name]
            for p in self.params
        }

    def settings(self, trial: int, known: dict | None = None) -> dict:
        """Ask the sampler (or, for a trial asked before a resume, give it its settings again)."""
        if known is not None:
            self.study.enqueue_trial(self._to_optuna(known))
        asked = self.asked[trial] = self.study.ask(self.distributions)
        return {
            p.name: p.choices[asked.params[p.name]] if p.kind == "choice" else asked.params[p.name]
            for p in self.params
        }

    def tell(self, trial: int, value: float | None) -> None:
        """The trial's validation accuracy; None for a trial that failed."""
        asked = self.asked.pop(trial)
        if value is None:
            self.study.tell(asked, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(asked, value)

    def restore(self, settings: dict, value: float | None) -> None:
        """A trial told before the sweep was stopped."""
        state = self.optuna.trial.TrialState
        self.study.add_trial(
            self.optuna.trial.create_trial(
                params=self._to_optuna(settings),
                distributions=self.distributions,
                value=value,
                state=state.COMPLETE if value is not None else state.FAIL,
            )
        )


def make_search(space: Space, settings: SweepSettings):
    """The search the settings name."""
    if settings.search == "grid":
        return GridSearch(space, settings.seed)
    if settings.search == "optuna":
        return OptunaSearch(space, settings.seed, settings.sampler, settings.count(space))
    return RandomSearch(space, settings.seed)


# -- on the workers ------------------------------------------------------------------


class _Asked(Exception):
    """The driver asked running trials to stop (Ctrl-C): their checkpoint is written."""


class _StopWhenAsked(Callback):
    """After each epoch's checkpoint, stop if the driver set the sweep's stop event."""

    def __init__(self, name: str):
        self.name, self.event = name, None

    def on_epoch_end(self, trainer, record):
        from distributed import Event

        if self.event is None:
            self.event = Event(self.name)
        if self.event.is_set():
            raise _Asked


_DATA: dict = {}  # per worker process: the data set of the last settings, loaded once


def _dataset(config: TrainConfig):
    """The data set ``config`` names, loaded once per worker process and read-only after."""
    from numprop.training.experiment import load_config_data

    key = (config.data, config.data_dir, config.target, config.image_size, config.download)
    if key not in _DATA:
        _DATA.clear()
        data = load_config_data(config)
        for value in vars(data).values():  # trials must not change what the next one gets
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        _DATA[key] = data
    return _DATA[key]


def check_data(settings: dict) -> str:
    """Load a sweep's data set on a worker before the trials (and download it once): what it is."""
    data = _dataset(trial_config(settings))
    return f"{len(data.train_y):,} {data.name} examples, {data.n_classes} classes"


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # called outside a worker (a test, a sequential run)
        return "local"


def _blas_threads(task: dict, worker: str) -> int:
    """BLAS threads for this trial: so that the trials running at once share the cores."""
    if task.get("threads"):
        return task["threads"]
    if worker == "local":
        return cores()
    from distributed import get_worker
    from distributed.comm import get_address_host

    host = get_address_host(worker)
    if host in task.get("threads_by_host", {}):
        return task["threads_by_host"][host]

    return max(1, cores() // get_worker().state.nthreads)  # a worker that joined later


def run_trial(task: dict) -> dict:
    """Train one trial to ``task["epochs"]`` epochs in its run folder (resuming it if begun).

    Runs on a Dask worker. Writes a note of the attempt first, so the driver can
    see a trial that was retried after its worker died. Errors of the trial
    (divergence, bad settings) come back as ``{"error": line}``, not raised.
    """
    from threadpoolctl import threadpool_limits

    from numprop._fast import blas
    from numprop.training.experiment import train
    from numprop.training.io import load

    run = Path(task["run"])
    worker = _worker_address()
    threads = _blas_threads(task, worker)
    resume = (run / "last.npz").is_file()
    done = 0
    if resume:
        with contextlib.suppress(ConfigError):  # train() says what is wrong with it
            done = len(load(run / "last.npz").history)
    _note_attempt(task, worker, done)
    config = trial_config(task["settings"])
    callbacks = [_StopWhenAsked(task["stop_event"])] if task.get("stop_event") else []
    started = time.perf_counter()
    record = {"trial": task["trial"], "worker": worker, "resumed_from": done}
    try:
        data = _dataset(config)
        with threadpool_limits(limits=threads, user_api="blas"):
            library = blas.library()
            record["blas_threads"] = library.threads() if library is not None else threads
            result = train(
                None if resume else config,
                run,
                resume=resume,
                progress=False,
                print_fn=lambda *a: None,
                callbacks=callbacks,
                data=data,
                stop_after=task["epochs"],
                test=task["test"],
            )
    except _Asked:
        return {**record, "asked_to_stop": True}
    except NumpropError as exc:  # the trial's own failure: a result, not a fault of the worker
        return {**record, "error": one_line(exc)}
    history = result.history
    return {
        **record,
        "epochs": len(history),
        "val_acc": history[-1]["val_acc"] if history else None,
        "seconds": time.perf_counter() - started,
        "test_acc": result.test_acc,
        "test_loss": result.test_loss,
    }


def _note_attempt(task: dict, worker: str, done: int) -> None:
    """A small file per attempt: which worker took the trial, from which checkpoint."""
    note = {
        "trial": task["trial"],
        "epochs": task["epochs"],
        "test": task["test"],
        "session": task["session"],
        "worker": worker,
        "pid": os.getpid(),
        "resumed_from": done,
        "time": time.time(),
    }
    stage = "test" if task["test"] else task["epochs"]
    name = f"{task['trial']:03d}-{stage}.{task['session']}.{secrets.token_hex(4)}.json"
    atomic_write_text(Path(task["attempts"]) / name, json.dumps(note))


# -- the driver ----------------------------------------------------------------------


@dataclass
class Trial:
    """What the sweep knows of one trial (a row of trials.csv)."""

    trial: int
    settings: dict
    run: str
    # pending, submitted (to the cluster: queued or running), waiting (for its round to
    # end), stopped (by halving), done (all its epochs), failed
    status: str = "pending"
    epochs: int = 0
    val_acc: float | None = None
    rungs: dict = field(default_factory=dict)  # str(epochs) -> validation accuracy there
    seconds: float = 0.0
    worker: str | None = None
    blas_threads: int | None = None
    retries: list = field(default_factory=list)
    error: str | None = None


class Cluster:
    """The Dask client the sweep submits to: a local cluster it starts, or a running one."""

    def __init__(
        self,
        scheduler: str | None = None,
        *,
        workers: int | None = None,
        threads: int | None = None,
        retries: int = 3,
        timeout: float = 20.0,
        trials: int = 1,
    ):
        import logging

        import dask
        from distributed import Client, LocalCluster

        # Dask's own warnings (a worker lost, a cluster closing) would bury ours.
        logging.getLogger("distributed").setLevel(logging.ERROR)
        self.local = None
        self.threads, self.threads_by_host = threads, {}
        if scheduler is None:
            n_cores = cores()
            workers = workers or max(1, min(n_cores, trials))
            self.threads = threads or max(1, n_cores // workers)
            # allowed-failures: how often a trial may lose its worker before it counts as failed.
            # The workers are started ignoring Ctrl-C (a terminal sends it to them too): the
            # driver alone stops the sweep, saves its state and closes them.
            with (
                dask.config.set({"distributed.scheduler.allowed-failures": retries}),
                _ignoring_ctrl_c(),
            ):
                self.local = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # any free port: 8787 may be taken
                    silence_logs=logging.ERROR,
                )
            self.client = Client(self.local)
            # Every worker registered before the first trial is handed out, so that
            # none of them starts the sweep late with the first round already given away.
            self._wait_for_workers(
                workers,
                timeout,
                f"the local Dask cluster's {workers} workers did not start in {timeout:g} s",
            )
            self.description = (
                f"local Dask cluster: {workers} worker{'s' * (workers > 1)} x "
                f"{self.threads} BLAS thread{'s' * (self.threads > 1)} ({n_cores} cores)"
            )
            return
        try:
            self.client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler}: {one_line(exc)}"
            ) from None
        self._wait_for_workers(1, timeout, f"the Dask cluster at {scheduler} has no workers")
        self.description = f"Dask cluster at {scheduler}: " + self._size()

    def _wait_for_workers(self, n: int, timeout: float, failure: str) -> None:
        """Until ``n`` workers are registered; else close the cluster, ConfigError(failure)."""
        try:
            self.client.wait_for_workers(n, timeout=timeout)
        except (TimeoutError, OSError):
            self.close()
            raise ConfigError(failure) from None

    def _size(self) -> str:
        """Say what the cluster has, and choose BLAS threads per trial per machine."""
        from distributed.comm import get_address_host

        nthreads = self.client.nthreads()
        host_cores = self.client.run(cores)
        hosts: dict[str, list] = {}
        for address, n in nthreads.items():
            hosts.setdefault(get_address_host(address), []).append((n, host_cores[address]))
        for host, found in hosts.items():
            running = sum(n for n, _ in found)  # trials at once on that machine
            self.threads_by_host[host] = max(1, min(c for _, c in found) // running)
        chosen = sorted(set(self.threads_by_host.values()))
        each = (
            f"{self.threads} BLAS threads per trial (--threads)"
            if self.threads
            else f"{'/'.join(map(str, chosen))} BLAS thread{'s' * (chosen != [1])} per trial"
        )
        return (
            f"{len(nthreads)} workers running {sum(nthreads.values())} trials at once "
            f"on {len(hosts)} machine{'s' * (len(hosts) > 1)}; {each}"
        )

    def slots(self) -> int:
        """How many trials can run at once now."""
        return max(1, sum(self.client.nthreads().values()))

    def check_folder(self, out: Path) -> None:
        """Every worker must see the output folder (a shared file system, the same path)."""
        seen = self.client.run(os.path.isdir, str(out))
        blind = sorted(a for a, ok in seen.items() if not ok)
        if blind:
            raise ConfigError(
                f"worker {blind[0]} cannot see {out}: the sweep's folder must be on a file "
                "system every worker shares, at the same path"
            )

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()


@contextlib.contextmanager
def _ignoring_ctrl_c():
    """SIGINT ignored meanwhile (processes started now inherit that), where this thread may."""
    import signal

    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Sweep:
    """The driver of one sweep: rounds of trials as Dask futures, their results, the output."""

    def __init__(self, out: Path, space: Space, settings: SweepSettings, print_fn):
        self.out, self.space, self.settings = out, space, settings
        self.print = print_fn
        self.count = settings.count(space)
        self.epochs = space.config(_thawed(first_settings(space))).epochs
        self.rungs = settings.rungs(self.epochs, self.count)
        self.trials: dict[int, Trial] = {}
        self.search = make_search(space, settings)
        self.session = secrets.token_hex(4)
        self.cluster: Cluster | None = None
        self.record: dict | None = None  # a new sweep's sweep.json, written when it starts

    # ---- state on disk

    def save(self) -> None:
        """trials.json and trials.csv, each written whole (atomically): Ctrl-C cannot tear them."""
        records = [asdict(t) for t in sorted(self.trials.values(), key=lambda t: t.trial)]
        atomic_write_text(self.out / "trials.json", json.dumps(records, indent=1))
        atomic_write_text(self.out / "trials.csv", self._csv(records))

    def _csv(self, records: list[dict]) -> str:
        names = [p.name for p in self.space.params]
        columns = ["trial", "status", "epochs", "val_acc", "seconds", "worker", "retries"]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*columns, *names, "error", "run"])
        for r in records:
            row = [r[c] if c != "retries" else len(r["retries"]) for c in columns]
            row += [json.dumps(r["settings"].get(n)) for n in names]
            writer.writerow([*row, r["error"] or "", r["run"]])
        return buffer.getvalue()

    def restore(self, records: list[dict]) -> None:
        """Take up the trials of a stopped sweep: finished rounds are not run again."""
        for r in records:
            trial = Trial(**{k: v for k, v in r.items() if k in Trial.__dataclass_fields__})
            if trial.status == "submitted":
                trial.status = "pending"
            self.trials[trial.trial] = trial
        first = str(self.rungs[0][0])
        for trial in sorted(self.trials.values(), key=lambda t: t.trial):
            if first in trial.rungs or trial.status == "failed":
                self.search.restore(trial.settings, trial.rungs.get(first))

    # ---- running

    def run(self, cluster: Cluster) -> dict:
        """Every round of trials, then the best trial's test accuracy; returns best.json's record."""
        self.cluster = cluster
        self.print(cluster.description)
        cluster.check_folder(self.out)
        self._check_data()
        if self.record is not None:
            atomic_write_text(self.out / "sweep.json", json.dumps(self.record, indent=1))
        if self.settings.search != "optuna":  # all settings are known now: list every trial
            for i in range(self.count):
                self._trial(i)
        ranked = list(range(self.count))
        for k, (epochs, keep) in enumerate(self.rungs):
            if k > 0:
                ranked = self._promote(k, keep)
                if not ranked:
                    break  # every trial of the last round failed
                self.print(
                    f"round {k + 1}: the best {len(ranked)} go on to {_epochs(epochs)}, "
                    "each from its own checkpoint"
                )
            self._run_round(ranked, epochs, first=k == 0)
        self.save()
        return self._finish()

    def _check_data(self) -> None:
        """Load the data once on a worker before any trial: a missing file is one line, not
        a failure per trial, and a named data set is downloaded once."""
        task = self._full(_thawed(first_settings(self.space)))
        try:
            found = self.cluster.client.submit(check_data, task, pure=False).result()
        except NumpropError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. numprop missing on the workers
            raise ConfigError(
                f"the workers could not load the data: {type(exc).__name__}: {one_line(exc)}"
            ) from None
        self.print(f"data: {found}")

    def _full(self, settings: dict) -> dict:
        """A trial's settings with the fixed ones: everything its TrainConfig needs."""
        return _thawed({**self.space.fixed, **settings})

    def _promote(self, k: int, keep: int) -> list[int]:
        """The trials that go on to round k: the best ``keep`` of the last round, by validation."""
        last = str(self.rungs[k - 1][0])
        finished = [t for t in self.trials.values() if t.rungs.get(last) is not None]
        finished.sort(key=lambda t: (-t.rungs[last], t.trial))
        for t in finished[keep:]:
            t.status = "stopped"
        return [t.trial for t in finished[:keep]]

    def _run_round(self, ids: list[int], epochs: int, *, first: bool) -> None:
        """Train ``ids`` to ``epochs`` epochs as futures; a trial with that result already is done.

        Random and grid search submit the whole round at once; Optuna's trials are
        asked one at a time, when a worker is free, so each ask knows every result so far.
        """
        from distributed import wait

        todo = [i for i in ids if i not in self.trials or self._needs(self.trials[i], epochs)]
        limit = self.cluster.slots if self.settings.search == "optuna" and first else None
        running: dict = {}
        requeued: dict[int, int] = {}
        try:
            while todo or running:
                while todo and (limit is None or len(running) < limit()):
                    i = todo.pop(0)
                    running[self._submit(self._trial(i), epochs)] = i
                self.save()
                finished = wait(list(running), return_when="FIRST_COMPLETED").done
                for future in finished:
                    i = running.pop(future)
                    if self._lost_before_it_ran(i, epochs, future) and requeued.get(i, 0) < 3:
                        # Queued on a worker that died: not the trial's fault, nothing lost.
                        requeued[i] = requeued.get(i, 0) + 1
                        running[self._submit(self.trials[i], epochs, requeued[i])] = i
                        continue
                    self._record(i, epochs, future, first=first)
        except KeyboardInterrupt:
            self._stop(list(running))
            raise

    def _submit(self, trial: Trial, epochs: int, again: int = 0):
        """Trial ``trial`` to ``epochs`` epochs as a future (``again``: how often resubmitted)."""
        trial.status = "submitted"
        key = f"numprop-trial-{trial.trial}-{epochs}-{self.session}-{again}"
        return self.cluster.client.submit(run_trial, self._task(trial, epochs), key=key, pure=False)

    def _lost_before_it_ran(self, i: int, epochs: int, future) -> bool:
        """Whether the scheduler gave trial ``i`` up for a worker death before it ever started.

        Dask counts a task waiting in a worker's queue as lost with the worker; a trial
        that left no note of an attempt never ran, and loses nothing by going again.
        """
        from distributed import KilledWorker

        if future.status != "error" or not isinstance(future.exception(), KilledWorker):
            return False
        return not any(self._notes(i, epochs))

    def _notes(self, i: int, epochs: int) -> list[dict]:
        """The notes of this session's attempts at trial ``i`` to ``epochs``, oldest first."""
        notes = []
        for path in (self.out / "attempts").glob(f"{i:03d}-{epochs}.{self.session}.*.json"):
            try:
                notes.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(notes, key=lambda n: n["time"])

    @staticmethod
    def _needs(trial: Trial, epochs: int) -> bool:
        """Whether a trial still has to train to ``epochs`` (failed ones are not tried again)."""
        return trial.status != "failed" and str(epochs) not in trial.rungs

    def _trial(self, i: int) -> Trial:
        """Trial ``i``, its settings asked of the search the first time."""
        if i not in self.trials:
            settings = _thawed(self.search.settings(i))
            self.trials[i] = Trial(i, settings, f"trials/{i:03d}")
        elif (
            isinstance(self.search, OptunaSearch)
            and not self.trials[i].rungs
            and i not in self.search.asked
        ):
            # Asked before a resume and never told: ask again, with its settings, to tell later.
            self.search.settings(i, known=self.trials[i].settings)
        return self.trials[i]

    def _task(self, trial: Trial, epochs: int, *, test: bool = False) -> dict:
        return {
            "trial": trial.trial,
            "run": str(self.out / trial.run),
            "settings": self._full(trial.settings),
            "epochs": epochs,
            "test": test,
            "threads": self.cluster.threads,
            "threads_by_host": self.cluster.threads_by_host,
            "attempts": str(self.out / "attempts"),
            "session": self.session,
            "stop_event": None if self.cluster.local else f"numprop-sweep-stop-{self.session}",
        }

    def _record(self, i: int, epochs: int, future, *, first: bool) -> None:
        """One finished future: the trial's result, or why it failed; and any retries it took."""
        from distributed import KilledWorker

        trial = self.trials[i]
        try:
            result = future.result()
        except KilledWorker:
            result = {"error": "its worker died, more often than the scheduler retries a task"}
        except Exception as exc:  # noqa: BLE001 - one trial's bug must not end the sweep
            result = {"error": f"{type(exc).__name__}: {one_line(exc)}"}
        trial.retries += self._retries(i, epochs, result.get("worker"))
        if not result.get("error") and result["val_acc"] is None:
            result["error"] = "no validation accuracy (its loss counts no right answers)"
        if result.get("error"):
            trial.status, trial.error = "failed", result["error"]
            self.print(f"trial {i:3d}  failed: {result['error']}")
        else:
            trial.status = "done" if epochs == self.epochs else "waiting"
            trial.epochs, trial.val_acc = result["epochs"], result["val_acc"]
            trial.rungs[str(epochs)] = result["val_acc"]
            trial.seconds += result["seconds"]
            trial.worker, trial.blas_threads = result["worker"], result["blas_threads"]
            self.print(
                f"trial {i:3d}  {result['epochs']:>3}/{self.epochs} epochs  "
                f"val {100 * result['val_acc']:6.2f}%  {_describe(trial.settings)}  "
                f"({result['seconds']:.0f} s on {result['worker']})"
            )
        if first:
            self.search.tell(i, None if trial.status == "failed" else trial.val_acc)
        self.save()

    def _retries(self, i: int, epochs: int, worker: str | None) -> list[dict]:
        """The attempts at trial ``i`` (to ``epochs``) in this session that did not finish it:
        all but the last, or all of them when no worker finished it (``worker`` None)."""
        notes = self._notes(i, epochs)
        lost = notes[:-1] if worker is not None else notes
        if not lost:
            return []
        retry = {
            "epochs": epochs,
            "lost_workers": [n["worker"] for n in lost],
            "finished_on": worker,
            "resumed_from": notes[-1]["resumed_from"],
        }
        died = f"{', '.join(retry['lost_workers'])} died during it"
        if worker is None:
            self.print(f"trial {i:3d}  was given up: {died}")
        else:
            self.print(
                f"trial {i:3d}  was retried: {died}; {worker} went on from its checkpoint "
                f"at epoch {retry['resumed_from']}"
            )
        return [retry]

    def _stop(self, futures: list) -> None:
        """Ctrl-C: running trials go back to pending, their checkpoints kept; the state is saved."""
        if self.cluster.local is None:
            from distributed import Event

            # Trials on a cluster we do not own stop after their epoch's checkpoint.
            Event(f"numprop-sweep-stop-{self.session}", client=self.cluster.client).set()
        for future in futures:
            future.cancel()
        for trial in self.trials.values():
            if trial.status == "submitted":
                trial.status = "pending"
        self.save()

    # ---- the end

    def _finish(self) -> dict:
        """Evaluate the best trial on the test set (its only use) and write best.json, the figure."""
        final = str(self.rungs[-1][0])
        done = [t for t in self.trials.values() if t.rungs.get(final) is not None]
        if not done:
            raise TrainingError("every trial failed: no best model (see trials.csv)")
        best = max(done, key=lambda t: (t.rungs[final], -t.trial))
        result = self.cluster.client.submit(
            run_trial,
            self._task(best, self.epochs, test=True),
            key=f"numprop-test-{best.trial}-{self.session}",
            pure=False,
        ).result()
        if result.get("error"):
            raise TrainingError(
                f"the best trial ({best.trial}) could not be tested: {result['error']}"
            )
        from numprop.training.io import atomic_write

        model = (self.out / best.run / "model.npz").read_bytes()
        atomic_write(self.out / "best_model.npz", lambda f: f.write(model))
        record = {
            "trial": best.trial,
            "run": best.run,
            "settings": best.settings,
            "epochs": best.epochs,
            "val_acc": best.val_acc,
            "test_acc": result["test_acc"],
            "test_loss": result["test_loss"],
        }
        atomic_write_text(self.out / "best.json", json.dumps(_thawed(record), indent=1))
        self.print(
            f"best: trial {best.trial} ({_describe(best.settings)}), validation "
            f"{100 * best.val_acc:.2f}% after {_epochs(best.epochs)}; test accuracy "
            f"{100 * result['test_acc']:.2f}% (the test set's one use)"
        )
        figure = plot_sweep(self, self.out / "sweep.png")
        # Retries that another worker finished (a trial given up is among the failed).
        retried = {
            t.trial: sum(1 for r in t.retries if r["finished_on"]) for t in self.trials.values()
        }
        failed = [t.trial for t in self.trials.values() if t.status == "failed"]
        if any(retried.values()):
            self.print(
                "retried: "
                + "; ".join(f"trial {i} ({n} time{'s' * (n > 1)})" for i, n in retried.items() if n)
            )
        if failed:
            self.print(f"failed: trials {', '.join(map(str, failed))} (see trials.csv)")
        written = ["trials.csv", "trials.json", "best.json", "best_model.npz"]
        if figure is not None:
            written.append(figure.name)
        self.print(f"wrote {', '.join(str(self.out / w) for w in written)}")
        return record


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def _describe(settings: dict) -> str:
    """'lr=0.0123 hidden=[512]': a trial's searched settings, short."""
    parts = []
    for name, value in settings.items():
        text = f"{value:.3g}" if isinstance(value, float) else json.dumps(_thawed(value))
        parts.append(f"{name}={text}")
    return " ".join(parts) or "(fixed settings)"


# -- what mattered: importance and the figure ----------------------------------------


def importance(values: list, scores: list[float], *, log: bool = False, numeric: bool = True):
    """The share of the spread of ``scores`` that a setting's ``values`` alone explain, in [0, 1].

    Numbers: R^2 of a quadratic in the value (in its log for a log-uniform
    setting), a straight line when there are fewer than six points, so a
    learning rate with a best value in the middle counts. Choices (and numbers
    with few distinct values): the share of the group means (eta squared).
    """
    y = np.asarray(scores, dtype=float)
    total = float(((y - y.mean()) ** 2).sum())
    if len(y) < 3 or total == 0:
        return 0.0
    keys = [json.dumps(_thawed(v)) for v in values]
    if not numeric or len(set(keys)) <= 5:
        groups: dict[str, list[float]] = {}
        for key, score in zip(keys, y):
            groups.setdefault(key, []).append(score)
        between = sum(len(g) * (np.mean(g) - y.mean()) ** 2 for g in groups.values())
        return float(between / total)
    x = np.log(np.asarray(values, dtype=float)) if log else np.asarray(values, dtype=float)
    fit = np.polyfit(x, y, 2 if len(y) >= 6 else 1)
    residual = float(((np.polyval(fit, x) - y) ** 2).sum())
    return float(max(0.0, 1.0 - residual / total))


def mattered(sweep: Sweep) -> list[tuple[Param, float]]:
    """The searched settings, most important first, judged on the first round (all trials)."""
    first = str(sweep.rungs[0][0])
    scored = [t for t in sweep.trials.values() if t.rungs.get(first) is not None]
    scores = [t.rungs[first] for t in scored]
    ranked = [
        (
            p,
            importance(
                [_frozen(t.settings[p.name]) for t in scored],
                scores,
                log=p.kind == "log_uniform",
                numeric=p.kind != "choice",
            ),
        )
        for p in sweep.space.params
    ]
    return sorted(ranked, key=lambda pair: -pair[1])


def plot_sweep(sweep: Sweep, path: Path) -> Path | None:
    """Validation accuracy after the first round against the (up to four) settings that
    mattered most; the best trial in red. None when nothing was searched."""
    ranked = mattered(sweep)[:4]
    if not ranked:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = str(sweep.rungs[0][0])
    scored = [t for t in sweep.trials.values() if t.rungs.get(first) is not None]
    best = json.loads((sweep.out / "best.json").read_text())["trial"]
    fig, axes = plt.subplots(1, len(ranked), figsize=(4 * len(ranked), 3.4), squeeze=False)
    for ax, (param, score) in zip(axes[0], ranked):
        values = [t.settings[param.name] for t in scored]
        if param.kind == "choice":
            labels = [json.dumps(_thawed(c)) for c in param.choices]
            x = [labels.index(json.dumps(_thawed(v))) for v in values]
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        else:
            x = values
            if param.kind == "log_uniform":
                ax.set_xscale("log")
        colours = ["tab:red" if t.trial == best else "tab:blue" for t in scored]
        ax.scatter(x, [100 * t.rungs[first] for t in scored], c=colours, s=24)
        ax.set_xlabel(param.name)
        ax.set_title(f"{param.name}: explains {100 * score:.0f}%", fontsize=10)
    axes[0][0].set_ylabel(f"validation accuracy after {_epochs(int(first))} (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the entry points ----------------------------------------------------------------


def start_sweep(
    space_path: str | os.PathLike,
    out: str | os.PathLike,
    settings: SweepSettings,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    retries: int = 3,
    timeout: float = 20.0,
    print_fn=print,
) -> dict:
    """Run a new sweep of the space in ``space_path`` into ``out``; returns best.json's record.

    Everything is checked before a cluster starts or a folder is made. Ctrl-C
    leaves ``out`` ready for ``resume_sweep`` and raises KeyboardInterrupt.
    """
    table = _absolute_paths(read_table(space_path))
    space = parse_space(table, str(space_path))
    settings.check(space)
    _check_installed(settings)
    _check_run_settings(scheduler, workers, retries)
    out = Path(out).absolute()
    if (out / "sweep.json").exists():
        raise ConfigError(f"{out} holds a sweep already: continue it with --resume {out}")
    sweep = Sweep(out, space, settings, print_fn)
    # sweep.json (what --resume reads) is written once the cluster has checked the data.
    sweep.record = {"space": table, "settings": asdict(settings)}
    lock = _make_folder(out)  # noqa: F841 - held while the sweep runs
    return _drive(sweep, scheduler, workers, threads, retries, timeout)


def resume_sweep(
    out: str | os.PathLike,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    retries: int = 3,
    timeout: float = 20.0,
    print_fn=print,
) -> dict:
    """Go on with a stopped sweep: trials and rounds already finished are not run again."""
    out = Path(out).absolute()
    listed = out / "trials.json"
    try:
        record = json.loads((out / "sweep.json").read_text())
        # No trials.json: the sweep stopped before its first trial was submitted.
        trials = json.loads(listed.read_text()) if listed.exists() else []
    except FileNotFoundError:
        raise ConfigError(f"{out} holds no sweep to resume (no sweep.json)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the sweep in {out}: {one_line(exc)}") from None
    _check_run_settings(scheduler, workers, retries)
    space = parse_space(record["space"], str(out / "sweep.json"))
    known = {f.name for f in fields(SweepSettings)}
    settings = SweepSettings(**{k: v for k, v in record["settings"].items() if k in known})
    settings.check(space)
    _check_installed(settings)
    lock = _make_folder(out)  # noqa: F841 - held while the sweep runs
    sweep = Sweep(out, space, settings, print_fn)
    sweep.restore(trials)
    kept = sum(len(t.rungs) for t in sweep.trials.values())
    print_fn(
        f"resuming the sweep in {out}: {len(sweep.trials)} trials begun, "
        f"{kept} results of rounds kept"
    )
    return _drive(sweep, scheduler, workers, threads, retries, timeout)


def _drive(sweep: Sweep, scheduler, workers, threads, retries, timeout) -> dict:
    names = ", ".join(p.name for p in sweep.space.params) or "nothing (fixed settings)"
    s = sweep.settings
    how = s.search if s.search != "optuna" else f"optuna ({s.sampler} sampler)"
    rounds = [f"{n} trials of {_epochs(e)}" for e, n in sweep.rungs[:1]]
    rounds += [f"the best {n} on to {_epochs(e)}" for e, n in sweep.rungs[1:]]
    sweep.print(
        f"sweep of {sweep.count} trials, {how} search (seed {s.seed}) over {names}: "
        + ", then ".join(rounds)
    )
    cluster = Cluster(
        scheduler,
        workers=workers,
        threads=threads,
        retries=retries,
        timeout=timeout,
        trials=sweep.count,
    )
    try:
        return sweep.run(cluster)
    finally:
        cluster.close()


def _absolute_paths(table: dict) -> dict:
    """The space with a data file or folder given relative to here made absolute: the
    workers do not start here."""
    from numprop.data.catalog import DATASETS

    table = dict(table)
    for raw_key, value in table.items():
        key = raw_key.replace("-", "_")
        if not isinstance(value, str):
            continue
        if key == "data_dir" or (
            key == "data" and value not in DATASETS.names() and Path(value).exists()
        ):
            table[raw_key] = str(Path(value).absolute())
    return table


def _check_installed(settings: SweepSettings) -> None:
    """A one-line ConfigError naming the extra to install, before anything starts."""
    import importlib.util

    needed = [("distributed", "dask"), ("threadpoolctl", "dask")]
    if settings.search == "optuna":
        needed.append(("optuna", "optuna"))
    for module, extra in needed:
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"numprop sweep{' --search optuna' * (extra == 'optuna')} needs {module}: "
                f"pip install 'numprop[{extra}]'"
            )


def _check_run_settings(scheduler, workers, retries) -> None:
    if scheduler is not None and workers is not None:
        raise ConfigError("--workers sizes the local cluster; a --scheduler's cluster has its own")
    if retries < 0:
        raise ConfigError(f"--retries must be >= 0, got {retries}")


def _make_folder(out: Path):
    """The sweep's folder, locked against a second driver; its trials/ and attempts/ folders."""
    try:
        (out / "attempts").mkdir(parents=True, exist_ok=True)
        (out / "trials").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the sweep folder {out}: {exc.strerror or exc}") from None
    return lock_folder(out, "the sweep folder", f"another numprop sweep is running in {out}")
