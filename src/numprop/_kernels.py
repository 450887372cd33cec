"""Optional compiled elementwise kernels (numba), run on OpenBLAS's threads.

NumPy makes one pass over memory per operation: the Adam update, for one,
is seven NumPy calls and about 18 array-passes, where a fused loop needs 7.
With numba installed (``pip install 'numprop[fast]'``) the loops below are
compiled once (cached on disk) and handed to ``_blas.parallel_for_kernel``,
which runs them on OpenBLAS's worker threads with no Python and no GIL in
the way. Without numba, or with ``NUMPROP_KERNELS=numpy``, ``get`` returns
None and callers use their NumPy code, which the tests hold to the same numbers.

Every kernel has the C signature OpenBLAS calls a piece with:
``(width, n, k, alpha, a, lda, b, ldb, c, ldc, sb)``. We pass ``a = NULL``
so that ``a`` arrives as ``4 * lo`` (the piece's first item, see
``parallel_for_kernel``), ``b`` points to a float64 array of scalars and ``c``
to an int64 array of data addresses.
"""

from __future__ import annotations

import functools
import os

import numpy as np

_DISABLED = os.environ.get("NUMPROP_KERNELS", "").lower() == "numpy"


@functools.cache
def _numba():
    """The numba pieces we use, or None when numba is missing or turned off."""
    if _DISABLED:
        return None
    try:
        import numba
        from numba import types
        from numba.extending import intrinsic
    except ImportError:
        return None

    @intrinsic
    def pointer(typingctx, address, dtype):
        """An int64 address as a typed pointer (numba has no cast for it)."""
        target = dtype.dtype
        sig = types.CPointer(target)(types.int64, dtype)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(types.CPointer(target)))

        return sig, codegen

    signature = types.intc(types.int64, types.int64, types.int64, types.float32, types.int64,
                           types.int64, types.CPointer(types.float64), types.int64,
                           types.CPointer(types.int64), types.int64, types.voidptr)
    return numba, pointer, signature


@functools.cache
def get(name: str, dtype) -> int | None:
    """Address of the compiled kernel `name` for `dtype`, or None (use NumPy)."""
    parts = _numba()
    if parts is None:
        return None
    numba, pointer, signature = parts
    make = _MAKERS[name]
    return make(numba, pointer, signature, np.dtype(dtype).type).address


def _adam(numba, pointer, signature, real):
    """Adam / AdamW for one parameter: scalars (b1, 1 - b1, b2, 1 - b2, eps, step,
    decay, l2), addresses (W, G, M, V). The same arithmetic in the same order as
    the NumPy piece in ``optim.Adam._update``, so both give the same bits."""
    carray = numba.carray

    # Arrays, not raw pointers, so that numba tells LLVM they do not overlap:
    # only then is the loop vectorised (measured: 3.4 times faster).
    @numba.njit(error_model="numpy", cache=True)
    def loop(w, g, m, v, b1, c1, b2, c2, eps, step, decay, l2):
        for i in range(w.size):
            gi = g[i] + l2 * w[i]                          # Adam's L2 term (0 for AdamW)
            mi = m[i] * b1 + gi * c1
            vi = v[i] * b2 + (gi * gi) * c2
            m[i], v[i] = mi, vi
            w[i] = w[i] * decay + (mi / (np.sqrt(vi) + eps)) * step   # decay: AdamW's (1 for Adam)

    @numba.cfunc(signature, nopython=True, cache=True, error_model="numpy")
    def kernel(width, n, k, alpha, a, lda, scalars, ldb, addresses, ldc, sb):
        lo = a // 4
        s = carray(scalars, 8)
        arrays = [carray(pointer(addresses[j], real), lo + width)[lo:] for j in range(4)]
        loop(arrays[0], arrays[1], arrays[2], arrays[3], real(s[0]), real(s[1]), real(s[2]),
             real(s[3]), real(s[4]), real(s[5]), real(s[6]), real(s[7]))
        return 0

    return kernel


_MAKERS = {"adam": _adam}
