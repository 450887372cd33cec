"""The names that moved in numprop's redesign, found in either layout.

The sides use numprop's public names (``npp.models.mlp``, ``npp.SGD``, ``npp.Adam``,
``npp.SoftmaxCrossEntropy``, ``npp.Trainer``...), which are the same before and
after the redesign. Only these moved: ``affine_rows`` (``numprop.preprocess`` ->
``numprop.data.preprocess``) and the private BLAS module (``numprop._blas`` ->
``numprop._fast.blas``), which only the products-alone side needs. The status
flags of ``numprop_info`` are for the report and are None where they cannot be read.
"""

from __future__ import annotations

import importlib
import importlib.util


def _first(*modules: str):
    """The first of the named modules that imports."""
    for name in modules:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(f"none of {', '.join(modules)} found")


def affine_rows():
    """numprop's one-pass gather-and-standardise."""
    return _first("numprop.data.preprocess", "numprop.preprocess").affine_rows


def blas():
    """numprop's BLAS module (``gemm(a, b, out, beta=...)``, ``available()``)."""
    return _first("numprop._fast.blas", "numprop._blas")


def _kernels():
    return _first("numprop._fast.kernels", "numprop._kernels")


def _flag(read):
    """bool(read()), or None where this numprop cannot say."""
    try:
        return bool(read())
    except (ImportError, AttributeError, TypeError, OSError, RuntimeError):
        return None


def _numba_kernels_in_use() -> bool:
    kernels = _kernels()
    if hasattr(kernels, "available"):  # after the redesign
        return kernels.available()
    return kernels.get("adam") is not None  # before: compiles the kernel on first use


def numprop_info() -> dict:
    """Where numprop was imported from, its version, and its speed paths (None: unknown)."""
    import numprop

    return {
        "numprop_version": getattr(numprop, "__version__", "?"),
        "numprop_file": numprop.__file__,
        "fast_blas": _flag(lambda: blas().available()),
        "parallel_elementwise": _flag(lambda: blas().parallel_available()),
        "numba": importlib.util.find_spec("numba") is not None,
        "numba_kernels": _flag(_numba_kernels_in_use),
    }
