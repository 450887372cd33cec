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
to an int64 array of data addresses (and sizes). Each kernel does the same
arithmetic in the same order as the NumPy code it replaces, so both paths
give the same bits (the tests hold them to that).
"""

from __future__ import annotations

import functools
import os

import numpy as np

from . import _blas

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


def run(name: str, n: int, arrays, scalars=(), sizes=(), grain: int = 1 << 16) -> bool:
    """Run kernel `name` over range(n) on all cores if it exists for these arrays.

    arrays: C-contiguous, the first one's dtype picks the kernel; their
    addresses follow `sizes` in the kernel's int64 arguments. Returns False
    (and does nothing) when the caller must use its NumPy code instead.
    """
    if not all(a.flags.c_contiguous for a in arrays):
        return False
    kernel = get(name, arrays[0].dtype)
    if kernel is None:
        return False
    ints = np.array([*sizes, *(a.ctypes.data for a in arrays)], np.int64)
    _blas.parallel_for_kernel(n, kernel, np.array(scalars, np.float64), ints, grain)
    return True


@functools.cache
def get(name: str, dtype) -> int | None:
    """Address of the compiled kernel `name` for `dtype`, or None (use NumPy)."""
    parts = _numba()
    if parts is None or np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
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


def _relu(numba, pointer, signature, real):
    """ReLU forward: addresses (x, y), y = max(x, 0) (NaN stays NaN, as np.maximum)."""
    carray = numba.carray

    @numba.njit(error_model="numpy", cache=True)
    def loop(x, y):
        for i in range(x.size):
            y[i] = real(0) if x[i] < 0 else x[i]

    @numba.cfunc(signature, nopython=True, cache=True, error_model="numpy")
    def kernel(width, n, k, alpha, a, lda, scalars, ldb, addresses, ldc, sb):
        lo = a // 4
        loop(carray(pointer(addresses[0], real), lo + width)[lo:],
             carray(pointer(addresses[1], real), lo + width)[lo:])
        return 0

    return kernel


def _relu_backward(numba, pointer, signature, real):
    """ReLU backward: addresses (y, dout, dx), dx = dout * (y > 0)."""
    carray = numba.carray

    @numba.njit(error_model="numpy", cache=True)
    def loop(y, dout, dx):
        for i in range(y.size):
            dx[i] = dout[i] * (real(1) if y[i] > 0 else real(0))

    @numba.cfunc(signature, nopython=True, cache=True, error_model="numpy")
    def kernel(width, n, k, alpha, a, lda, scalars, ldb, addresses, ldc, sb):
        lo = a // 4
        loop(carray(pointer(addresses[0], real), lo + width)[lo:],
             carray(pointer(addresses[1], real), lo + width)[lo:],
             carray(pointer(addresses[2], real), lo + width)[lo:])
        return 0

    return kernel


def _multiply(numba, pointer, signature, real):
    """Elementwise product: addresses (x, y, out), out = x * y (Dropout's backward)."""
    carray = numba.carray

    @numba.njit(error_model="numpy", cache=True)
    def loop(x, y, out):
        for i in range(x.size):
            out[i] = x[i] * y[i]

    @numba.cfunc(signature, nopython=True, cache=True, error_model="numpy")
    def kernel(width, n, k, alpha, a, lda, scalars, ldb, addresses, ldc, sb):
        lo = a // 4
        loop(carray(pointer(addresses[0], real), lo + width)[lo:],
             carray(pointer(addresses[1], real), lo + width)[lo:],
             carray(pointer(addresses[2], real), lo + width)[lo:])
        return 0

    return kernel


def _dropout(numba, pointer, signature, real):
    """Dropout forward: scalars (threshold, scale), addresses (N, key, x, mask, out).

    Element e gets the 16-bit lane e % 4 of ``mix64(key + e // 4)`` as its
    random bits (``layers.dropout_bits``); mask = scale where bits >= threshold
    else 0; out = x * mask. Pieces are ranges of 64-bit words (4 elements each).
    """
    carray = numba.carray
    mix = _mix64(numba)

    # Each element hashes its own word (4 times the hashing, but a loop LLVM
    # vectorises: 3 times faster than hashing once per word).
    @numba.njit(error_model="numpy", cache=True, inline="never")
    def segment(start, key, x, mask, out, threshold, scale):
        for j in range(x.size):
            e = np.uint64(start + j)
            z = mix(key + (e >> np.uint64(2)))
            bits = (z >> ((e & np.uint64(3)) << np.uint64(4))) & np.uint64(0xFFFF)
            keep = real(1) if bits >= threshold else real(0)
            mask[j] = keep * scale
            out[j] = x[j] * mask[j]

    @numba.njit(error_model="numpy", cache=True)
    def loop(first, words, key, x, mask, out, threshold, scale):
        lo, hi = 4 * first, min(4 * (first + words), x.size)
        segment(lo, key, x[lo:hi], mask[lo:hi], out[lo:hi], threshold, scale)

    @numba.cfunc(signature, nopython=True, cache=True, error_model="numpy")
    def kernel(width, n, k, alpha, a, lda, scalars, ldb, addresses, ldc, sb):
        s = carray(scalars, 2)
        size = addresses[0]
        arrays = [carray(pointer(addresses[j], real), size) for j in range(2, 5)]
        loop(a // 4, width, np.uint64(addresses[1]), arrays[0], arrays[1], arrays[2],
             np.uint64(s[0]), real(s[1]))
        return 0

    return kernel


@functools.cache
def _mix64(numba):
    """SplitMix64's output function (Steele, Lea & Flood 2014) on uint64."""

    @numba.njit(cache=True, inline="always")
    def mix(z):
        z = z * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))

    return mix


def _batchnorm(numba, pointer, signature, real):
    """BatchNorm1d forward in training, on columns [lo, hi) of (N, H) arrays.

    scalars (eps,), addresses (N, H, x, xc, out, mean, var, inv_std, gamma, beta):
    per column mean, biased var, inv_std = 1/sqrt(var + eps); xc = x - mean;
    out = xc * (gamma * inv_std) + beta. Sums run over rows in order, as NumPy's
    reductions along axis 0 do.
    """
    carray = numba.carray
    (copy, add, product, add_product, divide, multiply, subtract, inverse_sqrt, affine,
     _, center_add_square) = _row_loops(numba, real)

    @numba.njit(error_model="numpy", cache=True)
    def loop(lo, hi, h, x, xc, out, mean, var, inv_std, gamma, beta, eps):
        n = x.size // h
        m, v, s = mean[lo:hi], var[lo:hi], inv_std[lo:hi]
        copy(m, x[lo:hi])
        for i in range(1, n):
            add(m, x[i * h + lo:i * h + hi])
        divide(m, real(n))
        subtract(xc[lo:hi], x[lo:hi], m)
        product(v, xc[lo:hi], xc[lo:hi])
        for i in range(1, n):                      # xc = x - mean and var += xc^2, one pass
            center_add_square(v, xc[i * h + lo:i * h + hi], x[i * h + lo:i * h + hi], m)
        divide(v, real(n))
        inverse_sqrt(s, v, eps)
        for i in range(n):
            affine(out[i * h + lo:i * h + hi], xc[i * h + lo:i * h + hi], gamma[lo:hi], s,
                   beta[lo:hi])

    @numba.cfunc(signature, nopython=True, cache=True, error_model="numpy")
    def kernel(width, n, k, alpha, a, lda, scalars, ldb, addresses, ldc, sb):
        lo = a // 4
        size, h = addresses[0] * addresses[1], addresses[1]
        flat = [carray(pointer(addresses[j], real), size) for j in range(2, 5)]
        vec = [carray(pointer(addresses[j], real), h) for j in range(5, 10)]
        loop(lo, lo + width, h, flat[0], flat[1], flat[2], vec[0], vec[1], vec[2], vec[3],
             vec[4], real(carray(scalars, 1)[0]))
        return 0

    return kernel


def _batchnorm_backward(numba, pointer, signature, real):
    """BatchNorm1d backward in training, on columns [lo, hi) of (N, H) arrays.

    addresses (N, H, dout, xc, dx, inv_std, gamma, dgamma, dbeta):
    dbeta = sum dout; dgamma = (sum dout * xc) * inv_std;
    dx = ((dout - xc * (inv_std * dgamma / N)) - dbeta / N) * (gamma * inv_std).
    """
    carray = numba.carray
    (copy, add, product, add_product, divide, multiply, _, _, _,
     batchnorm_dx, _) = _row_loops(numba, real)

    @numba.njit(error_model="numpy", cache=True)
    def loop(lo, hi, h, dout, xc, dx, inv_std, gamma, dgamma, dbeta):
        n = dout.size // h
        db, dg, s, g = dbeta[lo:hi], dgamma[lo:hi], inv_std[lo:hi], gamma[lo:hi]
        copy(db, dout[lo:hi])
        product(dg, dout[lo:hi], xc[lo:hi])
        for i in range(1, n):
            add(db, dout[i * h + lo:i * h + hi])
            add_product(dg, dout[i * h + lo:i * h + hi], xc[i * h + lo:i * h + hi])
        multiply(dg, s)                                             # dgamma *= inv_std
        a, b, c = np.empty_like(s), np.empty_like(s), np.empty_like(s)
        for j in range(hi - lo):
            a[j] = s[j] * dg[j] / real(n)
            b[j] = db[j] / real(n)
            c[j] = g[j] * s[j]
        for i in range(n):
            batchnorm_dx(dx[i * h + lo:i * h + hi], dout[i * h + lo:i * h + hi],
                         xc[i * h + lo:i * h + hi], a, b, c)

    @numba.cfunc(signature, nopython=True, cache=True, error_model="numpy")
    def kernel(width, n, k, alpha, a, lda, scalars, ldb, addresses, ldc, sb):
        lo = a // 4
        size, h = addresses[0] * addresses[1], addresses[1]
        flat = [carray(pointer(addresses[j], real), size) for j in range(2, 5)]
        vec = [carray(pointer(addresses[j], real), h) for j in range(5, 9)]
        loop(lo, lo + width, h, flat[0], flat[1], flat[2], vec[0], vec[1], vec[2], vec[3])
        return 0

    return kernel


@functools.cache
def _row_loops(numba, real):
    """Loops over one row segment: 1-D, contiguous, counted from 0 and never
    inlined, which is what LLVM needs to vectorise them (inlined into the
    column-block loops they ran 7 times slower)."""
    jit = functools.partial(numba.njit, error_model="numpy", cache=True, inline="never")

    def copy(dst, src):
        for j in range(dst.size):
            dst[j] = src[j]

    def add(acc, row):
        for j in range(acc.size):
            acc[j] += row[j]

    def product(acc, x, y):
        for j in range(acc.size):
            acc[j] = x[j] * y[j]

    def add_product(acc, x, y):
        for j in range(acc.size):
            acc[j] += x[j] * y[j]

    def divide(acc, divisor):
        for j in range(acc.size):
            acc[j] /= divisor

    def multiply(acc, vec):
        for j in range(acc.size):
            acc[j] *= vec[j]

    def subtract(out, row, vec):
        for j in range(out.size):
            out[j] = row[j] - vec[j]

    def inverse_sqrt(out, var, eps):
        for j in range(out.size):
            out[j] = real(1) / np.sqrt(var[j] + eps)

    def affine(out, row, gamma, inv_std, beta):
        for j in range(out.size):
            out[j] = row[j] * (gamma[j] * inv_std[j]) + beta[j]

    def batchnorm_dx(dx, dout, xc, a, b, c):
        for j in range(dx.size):
            dx[j] = ((dout[j] - xc[j] * a[j]) - b[j]) * c[j]

    def center_add_square(acc, out, row, vec):
        for j in range(acc.size):
            out[j] = row[j] - vec[j]
            acc[j] += out[j] * out[j]

    return tuple(jit(f) for f in (copy, add, product, add_product, divide, multiply, subtract,
                                  inverse_sqrt, affine, batchnorm_dx, center_add_square))


_MAKERS = {"adam": _adam, "relu": _relu, "relu_backward": _relu_backward, "dropout": _dropout,
           "multiply": _multiply,
           "batchnorm": _batchnorm, "batchnorm_backward": _batchnorm_backward}
