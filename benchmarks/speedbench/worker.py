"""The subprocess protocol: every side trains in a process of its own.

So peak memory is each side's own, and one library's thread pool cannot slow
another. The parent starts ``python benchmarks/speed.py --worker KIND CFG DATA_DIR
N_TRAIN`` with PYTHONPATH set to the ``src/`` whose numprop the worker must import
(this tree's, or another commit's). They talk in JSON lines:

- the worker loads the data, runs the side's loss check, builds its model and
  says ``{"ready": true, "info": ..., "check": ..., ...}``;
- then for each command, ``{"op": "epoch", "k": k}`` (k < 0: the warm-up),
  ``{"op": "fit", "k": k}`` (numprop: an epoch through ``Trainer.fit``),
  ``{"op": "floor", "reps": n}`` (numprop: matmul GFLOP/s), ``{"op": "infer"}``,
  it answers ``{"seconds", "cpu", "result", "prep"}``: wall and CPU seconds, what
  the side returned, and the seconds spent converting batches;
- ``{"op": "quit"}`` is answered with the peak memory, and the worker exits.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from speedbench.configs import SCRIPT, UNSET_VARS

NUMPROP_KINDS = ("numprop", "products", "numprop-bf16")


# --- the worker process --------------------------------------------------------


def rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def status_kb(field: str) -> int | None:
    """VmRSS (now) or VmHWM (peak since start or since reset_peak) in KiB, Linux only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def pools() -> list[dict]:
    """The process's BLAS and OpenMP thread pools (empty without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "num_threads", "version", "architecture", "filepath")
    return [{k: p.get(k) for k in keep} for p in threadpool_info()]


def serve(kind: str, cfg_json: str, data_dir: str, n_train: int) -> None:
    """The worker: set up one side, then answer the parent's commands until "quit"."""
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol

    def reply(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    if kind in NUMPROP_KINDS:
        import numprop  # noqa: F401  (before anything that loads SciPy's OpenBLAS)
    import numpy as np

    from speedbench.data import Data
    from speedbench.sides import SIDES

    cfg = json.loads(cfg_json)
    data = Data(Path(data_dir), n_train, cfg["batch"])
    side = SIDES[kind](cfg, data)
    x_test = data.test_float()
    xb, yb = data.batch(data.permutation(-1)[: cfg["batch"]])
    xb = xb.copy()
    gc.collect()
    base_rss = status_kb("VmRSS")  # imports + data: what every side pays before its model
    peak_reset = reset_peak()
    # The equality check: one step from the initial weights (dropout off) on a model of
    # its own, gone before the timed model is built.
    check = side.check(xb, yb)
    gc.collect()
    side.setup()
    reply(
        {
            "ready": True,
            "info": side.info,
            "pools": pools(),
            "random_data": data.random,
            "base_rss_kb": base_rss,
            "check": check,
            "numpy": np.__version__,
            "env": {k: os.environ.get(k) for k in UNSET_VARS},
        }
    )
    ops = {
        "epoch": lambda cmd: side.epoch(cmd["k"]),
        "fit": lambda cmd: side.fit_epoch(cmd["k"]),
        "floor": lambda cmd: side.floor(cmd["reps"]),
        "infer": lambda cmd: side.infer(x_test),
    }
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            reply({"rss_kb": rss_kb(), "hwm_kb": status_kb("VmHWM") if peak_reset else None})
            return
        c0, t0 = os.times(), time.perf_counter()
        data.prep_seconds = 0.0
        result = ops[cmd["op"]](cmd)
        seconds = time.perf_counter() - t0
        c1 = os.times()
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        reply({"seconds": seconds, "cpu": cpu, "result": result, "prep": data.prep_seconds})


# --- the parent's handle ---------------------------------------------------------


class Worker:
    """One side's process, seen from the parent. ``label`` names it in the log ("old" for
    the numprop side on another commit); ``src`` is the folder numprop is imported from."""

    def __init__(self, label: str, kind: str, cfg: dict, data_dir: Path, n_train: int, src: Path):
        env = dict(os.environ)
        for var in UNSET_VARS:
            env.pop(var, None)
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
        self.label, self.src = label, src
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--worker",
                kind,
                json.dumps(cfg),
                str(Path(data_dir).resolve()),
                str(n_train),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def call(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> dict:
        reply = self.call(op="quit")
        self.proc.wait()
        return reply

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
