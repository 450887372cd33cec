"""Optional compiled elementwise kernels (numba), run on OpenBLAS's threads.

NumPy makes one pass over memory per operation: the Adam update, for one,
is twelve NumPy calls and 28 array-passes, where a fused loop needs 7.
With numba installed (``pip install 'numprop[fast]'``) the loops in
``_numba_kernels`` are compiled once (cached on disk) and handed to
``_blas.parallel_for_kernel``, which runs them on OpenBLAS's worker threads
with no Python and no GIL in the way. Without numba, or with
``NUMPROP_KERNELS=numpy``, ``run`` returns False and callers use their NumPy
code, which does the same arithmetic in the same order: the tests hold the
two paths to the same bits. The one exception is the softmax cross-entropy
kernel, whose exp and row sums are not NumPy's: it agrees to rounding.
"""

from __future__ import annotations

import array
import functools
import os

import numpy as np

from numprop._fast import blas as _blas

_DISABLED = os.environ.get("NUMPROP_KERNELS", "").lower() == "numpy"


@functools.cache
def _compiled():
    """The module of compiled kernels, or None when numba is missing or turned off."""
    if _DISABLED:
        return None
    try:
        from numprop._fast import numba_kernels as _numba_kernels
    except ImportError:
        return None
    return _numba_kernels


def run(name: str, n: int, arrays, scalars=(), sizes=(), grain: int = 1 << 16,
        others=()) -> bool:
    """Run kernel `name` over range(n) on all cores if it exists for these arrays.

    arrays: C-contiguous, all of the first one's dtype, float32 or float64;
    others: C-contiguous arrays of the dtypes the kernel expects. The kernel
    gets (item size, *sizes, *addresses of arrays, *addresses of others) as
    its int64 arguments. Returns False (and does nothing) when the caller
    must use its NumPy code.
    """
    dtype = arrays[0].dtype
    if (dtype not in _FLOATS or not all(a.flags.c_contiguous and a.dtype == dtype for a in arrays)
            or not all(a.flags.c_contiguous for a in others)):
        return False
    kernel = get(name)
    if kernel is None:
        return False
    ints = array.array("q", (dtype.itemsize, *sizes, *(a.ctypes.data for a in arrays),
                             *(a.ctypes.data for a in others)))
    _blas.parallel_for_kernel(n, kernel, array.array("d", scalars), ints, grain)
    return True


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def elementwise(name: str, arrays, piece, *, scalars=(), scratch=(), grain: int = 1 << 16,
                numpy_grain: int | None = None) -> None:
    """Kernel `name` over the same-shaped `arrays`, or else its NumPy twin, on all cores.

    The NumPy twin is ``piece(*blocks)``, one block of every array and then of
    every `scratch` array, on pieces of the flattened arrays (row blocks when
    one of them is not contiguous); it must do the kernel's arithmetic in the
    kernel's order. `numpy_grain` (default `grain`): the NumPy pieces' minimum size.
    """
    if run(name, arrays[0].size, arrays, scalars=scalars, grain=grain):
        return
    views = (*arrays, *scratch)
    if all(v.flags.c_contiguous for v in views):
        views = tuple(v.reshape(-1) for v in views)
    _blas.parallel_for(len(views[0]), lambda lo, hi: piece(*(v[lo:hi] for v in views)),
                       grain if numpy_grain is None else numpy_grain)


@functools.cache
def get(name: str) -> int | None:
    """Address of the compiled kernel `name`, or None (use NumPy)."""
    module = _compiled()
    return None if module is None else getattr(module, name).address
