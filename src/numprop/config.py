"""Settings: which fast paths numprop uses, and a report of what it found.

This module and the command line are the only places that read the
environment. Nothing is read or loaded when numprop is imported: the first
operation that needs a setting asks ``current()``, which starts from the
environment variables below, and ``configure()`` changes the settings in-process
(for tests, notebooks, benchmarks):

``NUMPROP_KERNELS``
    ``numpy`` turns the compiled elementwise kernels (numba) off; default ``auto``.
``NUMPROP_BLAS``
    ``numpy`` turns the direct OpenBLAS calls off (NumPy expressions instead);
    default ``auto``.
``NUMPROP_DATA_DIR``
    Where data sets are looked for (and downloaded to) when no folder is
    given; default ``~/.cache/numprop``.

Both paths give the same numbers; the switches exist to compare and debug.

    import numprop as npp
    npp.config.configure(kernels="numpy")
    with npp.config.override(blas="numpy"):
        ...
    print(npp.config.describe())
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from numprop.errors import ConfigError

CHOICES = ("auto", "numpy")


@dataclass(frozen=True)
class Settings:
    """What numprop may use and where it finds data.

    Immutable: ``configure`` replaces it.

    Parameters
    ----------
    kernels : {"auto", "numpy"}, default "auto"
        ``"auto"``: the compiled elementwise kernels where numba is installed;
        ``"numpy"``: plain NumPy.
    blas : {"auto", "numpy"}, default "auto"
        ``"auto"``: direct OpenBLAS calls where a 64-bit OpenBLAS is found;
        ``"numpy"``: NumPy expressions.
    data_dir : str or None, default None
        The default data folder, or None (the cache, ``~/.cache/numprop``).
    """

    kernels: str = "auto"
    blas: str = "auto"
    data_dir: str | None = None


_settings: Settings | None = None


def from_environment(environ: dict[str, str] | None = None) -> Settings:
    """Settings from the ``NUMPROP_*`` environment variables.

    ``NUMPROP_KERNELS`` and ``NUMPROP_BLAS``: ``numpy`` (any case), else (unset
    or unknown) ``auto``; ``NUMPROP_DATA_DIR``: a path, unset or empty giving None.

    Parameters
    ----------
    environ : dict of str to str, optional
        Read instead of ``os.environ``.

    Returns
    -------
    Settings
        Not put in force: that is ``current()``'s or ``configure()``'s business.
    """
    env = os.environ if environ is None else environ
    paths = {
        name: "numpy" if env.get(f"NUMPROP_{name.upper()}", "").lower() == "numpy" else "auto"
        for name in ("kernels", "blas")
    }
    return Settings(**paths, data_dir=env.get("NUMPROP_DATA_DIR") or None)


def current() -> Settings:
    """The settings in force (read from the environment on first use)."""
    global _settings
    if _settings is None:
        _settings = from_environment()
    return _settings


def configure(**changes) -> Settings:
    """Change settings, e.g. ``configure(kernels="numpy")``; returns the new settings.

    Parameters
    ----------
    **changes
        ``kernels`` and ``blas``: "auto" or "numpy"; ``data_dir``: a path or None.
        Settings not named keep their values.

    Returns
    -------
    Settings
        The settings now in force.

    Raises
    ------
    ConfigError
        For an unknown setting or value; nothing is changed then.
    """
    global _settings
    for name, value in changes.items():
        if name == "data_dir":
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ConfigError(f"data_dir must be a path or None, got {value!r}")
            changes[name] = None if value is None else os.fspath(value)
            continue
        if name not in ("kernels", "blas"):
            raise ConfigError(
                f"unknown setting {name!r}; the settings are kernels, blas and data_dir"
            )
        if value not in CHOICES:
            raise ConfigError(f"{name} must be one of {', '.join(CHOICES)}, got {value!r}")
    _settings = replace(current(), **changes)
    return _settings


@contextmanager
def override(**changes) -> Iterator[Settings]:
    """Settings changed inside a ``with`` block, restored after it.

    Parameters
    ----------
    **changes
        As for ``configure``.

    Yields
    ------
    Settings
        The settings in force inside the block.

    Raises
    ------
    ConfigError
        As ``configure``, on entering the block.
    """
    before = current()
    try:
        yield configure(**changes)
    finally:
        global _settings
        _settings = before


# -- what is there -------------------------------------------------------------------

_CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_extensions() -> list[str]:
    """The vector and matrix extensions of this CPU that matter for numprop (from /proc/cpuinfo).

    Returns
    -------
    list of str
        Flag names such as "avx2", "avx512f", "amx_tile"; empty where
        /proc/cpuinfo cannot be read (not Linux).
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [flag for flag in _CPU_FLAGS if flag in flags]
    except OSError:
        pass
    return []


def info() -> dict:
    """What numprop runs on: versions, BLAS, compiled kernels, threads, CPU extensions.

    Loads BLAS and the kernels if they are not loaded yet (that is what it reports).

    Returns
    -------
    dict
        JSON-able: versions ("numprop", "python", "numpy", "numba" or None),
        "blas" (the OpenBLAS path or None), "blas_setting", "blas_threads",
        "parallel_elementwise", "kernels_setting", "kernels_active",
        "cpu_count" and "cpu_extensions".
    """
    import numpy as np

    import numprop
    from numprop._fast import blas, kernels

    settings = current()
    library = blas.library()
    try:
        import numba

        numba_version = numba.__version__
    except ImportError:
        numba_version = None
    return {
        "numprop": numprop.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": library.path if library is not None else None,
        "blas_setting": settings.blas,
        "blas_threads": library.threads() if library is not None else None,
        "parallel_elementwise": blas.parallel_available(),
        "numba": numba_version,
        "kernels_setting": settings.kernels,
        "kernels_active": kernels.available(),
        "cpu_count": os.cpu_count(),
        "cpu_extensions": cpu_extensions(),
        "bf16": _bf16_line(),
    }


def _bf16_line() -> str:
    """Whether bf16 products are available here, and through what (or why not)."""
    from numprop.nn.precision import bf16_supported

    ok, why = bf16_supported()
    return f"available, {why}" if ok else f"not available: {why}"


def describe() -> str:
    """``info()`` as the lines ``numprop info`` prints."""
    i = info()
    blas_line = (
        f"OpenBLAS at {i['blas']}, {i['blas_threads']} threads (direct calls)"
        if i["blas"]
        else "NumPy's own matmul (direct OpenBLAS calls off: NUMPROP_BLAS=numpy)"
        if i["blas_setting"] == "numpy"
        else "NumPy's own matmul (no 64-bit OpenBLAS found to call directly)"
    )
    if i["kernels_active"]:
        kernels_line = f"compiled (numba {i['numba']})"
    elif i["kernels_setting"] == "numpy":
        kernels_line = "NumPy (compiled kernels off: NUMPROP_KERNELS=numpy)"
    elif i["numba"] is None:
        kernels_line = "NumPy (numba not installed: pip install 'numprop[fast]')"
    else:
        kernels_line = "NumPy (numba is installed but its kernels did not load)"
    lines = [
        f"numprop {i['numprop']}  (Python {i['python']}, NumPy {i['numpy']})",
        f"matrix products: {blas_line}",
        f"elementwise work: {kernels_line}, "
        + ("on all BLAS threads" if i["parallel_elementwise"] else "on one thread"),
        f"CPU: {i['cpu_count']} logical cores; extensions: "
        + (", ".join(i["cpu_extensions"]) or "none of note found"),
        f"bf16 products (--precision bf16/auto): {i['bf16']}",
    ]
    return "\n".join(lines)
