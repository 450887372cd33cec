"""What the reports say about the machine and the libraries, as markdown list items.

The CPU comes from /proc (Linux); the libraries' versions and thread pools from
the workers' "ready" replies, since each side's process is what was measured.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from speedbench.configs import REPO, UNSET_VARS


def _cpu_model_and_flags() -> tuple[str, str]:
    model, flags = "?", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    fl = line.split(":", 1)[1].split()
                    flags = " ".join(x for x in fl if x.startswith(("avx512f", "avx2", "fma")))
    except OSError:
        pass
    return model, flags


def _memory() -> str:
    try:
        with open("/proc/meminfo") as f:
            kb = next(line for line in f if line.startswith("MemTotal")).split()[1]
        return f"{int(kb) / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        return "?"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what `nproc` says
    except AttributeError:
        return os.cpu_count() or 0


def cpu_line() -> str:
    model, flags = _cpu_model_and_flags()
    return f"- CPU: {model} ({flags}), nproc {_cores()}, {_memory()} RAM, {platform.platform()}"


def versions_line(ready: dict) -> str:
    """Python, NumPy, PyTorch and scikit-learn versions (– where that side did not run)."""
    first = next(iter(ready.values()))
    torch = ready.get("torch", {}).get("info")
    torch_text = (
        f"{torch['torch']} ({torch['threads']} threads, MKL + oneDNN)" if torch else "– (not run)"
    )
    sklearn = ready.get("sklearn", {}).get("info", {}).get("sklearn", "–")
    return (
        f"- Python {platform.python_version()}, NumPy {first['numpy']}, "
        f"PyTorch {torch_text}, scikit-learn {sklearn}"
    )


def _blas_pools(ready: dict) -> str:
    pools = [p for p in ready["pools"] if p["user_api"] == "blas"]
    if not ready["pools"]:
        return "(threadpoolctl not installed)"
    return "; ".join(
        f"{p['internal_api']} {p['version']} kernel {p['architecture']}, {p['num_threads']} threads"
        for p in pools
    )


def numprop_line(ready: dict, label: str = "numprop") -> str:
    """The numprop worker's BLAS pools and speed paths."""
    info = ready["info"]
    return (
        f"- {label} worker BLAS (threadpoolctl): {_blas_pools(ready)}"
        f"; numprop ctypes GEMM fast path: {info.get('fast_blas')}"
        f"; elementwise work on OpenBLAS's threads: {info.get('parallel_elementwise')}"
        f"; numba kernels: {info.get('numba_kernels')}"
    )


def torch_line(ready: dict) -> str:
    if not ready["pools"]:
        return "- PyTorch worker pools: (threadpoolctl not installed)"
    return "- PyTorch worker pools (threadpoolctl): " + "; ".join(
        f"{p['internal_api']} {p['num_threads']} threads ({Path(p['filepath']).name})"
        for p in ready["pools"]
    )


def env_line() -> str:
    env = {k: os.environ.get(k) for k in UNSET_VARS}
    return (
        "- "
        + ", ".join(f"{k}={v!r}" for k, v in env.items())
        + " in the parent; removed from every benchmark subprocess"
    )


def speed_machine(result: dict) -> str:
    """The Machine section of the speed benchmark, from its first configuration's workers."""
    ready = {s: result[s] for s in ("numprop", "torch", "sklearn", "products") if s in result}
    lines = [cpu_line(), versions_line(ready), numprop_line(result["numprop"])]
    if "torch" in result:
        lines.append(torch_line(result["torch"]))
    lines.append(env_line())
    return "\n".join(lines)


def git(*args: str) -> str:
    """A read-only git command in the repository; its output, stripped ('' if it fails)."""
    proc = subprocess.run(
        ["git", "--no-optional-locks", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


def tree_state() -> str:
    """'commit abc1234 (src/ modified)' for this checkout's numprop."""
    head = git("rev-parse", "--short=12", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", "src")
    return f"commit {head}" + (" with uncommitted changes in src/" if dirty else "")
