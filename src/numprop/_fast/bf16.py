"""bfloat16 conversions: float32 to bf16 (round to nearest even) and back.

bf16 is the upper half of a float32: the same sign and 8-bit exponent, 7
mantissa bits instead of 23. NumPy has no bf16 dtype, so a bf16 array is an
``np.uint16`` array of those upper halves (what MKL's ``MKL_BF16`` is too).

Rounding follows Intel's ``VCVTNEPS2BF16`` pseudocode and PyTorch's software
path, except where noted:

* finite values round to nearest, ties to even, by adding ``0x7FFF`` plus the
  lowest kept bit to the float32's bits and keeping the upper 16 bits; values
  past the largest bf16 (``0x7F7F``, about 3.39e38) by half a unit or more,
  float32's largest finite included, become infinity;
* subnormals round like any other value (the hardware instruction flushes
  them to zero; we keep them, as PyTorch's conversion does);
* a NaN stays a NaN: its sign and upper payload are kept and the quiet bit
  (``0x0040``) is set, so no NaN can round to infinity or to a signalling NaN.
  (PyTorch gives ``0x7FC0`` or ``0xFFFF`` instead, depending on its code path.)

bf16 to float32 is exact: the 16 bits go back on top of 16 zero bits.

Each conversion has a plain NumPy reference (``*_numpy``) and a compiled
twin (numba, run on OpenBLAS's threads through ``blas.parallel_for_kernel``,
like ``kernels.py``) that gives the same bits (tested over edge cases and
exhaustively in ``benchmarks/bf16_gemm.py``). ``to_bf16`` and ``to_float32``
pick the compiled one when they can. Nothing is compiled, and numba is not
imported, until the first conversion: this module keeps the kernels' Python
source at module level and compiles it on first use (see ``_compiled``).
"""

from __future__ import annotations

import array
import functools

import numpy as np

from numprop import config
from numprop._fast import blas
from numprop._fast.grain import GRAIN

_SIGN_OFF = np.uint32(0x7FFFFFFF)
_INF_BITS = np.uint32(0x7F800000)  # |bits| above this: NaN
_HALF_MINUS_ONE = np.uint32(0x7FFF)  # rounding bias before the lowest kept bit is added
_QUIET = np.uint32(0x0040)  # bf16's quiet-NaN bit
_ONE = np.uint32(1)
_SHIFT = np.uint32(16)


# -- the NumPy references ------------------------------------------------------------


def to_bf16_numpy(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out`` = ``x`` (float32, any shape) rounded to bf16 bits (uint16, x's shape)."""
    _check(x, np.float32, out, np.uint16)
    bits = x.view(np.uint32)
    rounded = bits >> _SHIFT
    rounded &= _ONE  # the lowest bit we keep: ties go to where it is 0
    rounded += _HALF_MINUS_ONE
    rounded += bits  # cannot wrap for non-NaNs: |bits| <= 0x7F800000
    rounded >>= _SHIFT
    nan = (bits & _SIGN_OFF) > _INF_BITS
    if nan.any():
        rounded[nan] = (bits[nan] >> _SHIFT) | _QUIET
    np.copyto(out, rounded, casting="unsafe")  # every value is below 2**16 by now
    return out


def to_float32_numpy(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out`` = the float32 values of bf16 bits ``x`` (uint16, any shape); exact."""
    _check(x, np.uint16, out, np.float32)
    bits = out.view(np.uint32)
    np.copyto(bits, x, casting="safe")
    bits <<= _SHIFT
    return out


def _check(x: np.ndarray, x_dtype, out: np.ndarray, out_dtype) -> None:
    if x.dtype != x_dtype or out.dtype != out_dtype or x.shape != out.shape:
        raise ValueError(
            f"expected {np.dtype(x_dtype)} input and {np.dtype(out_dtype)} output of one "
            f"shape, got {x.dtype}{x.shape} and {out.dtype}{out.shape}"
        )


# -- the compiled twins ----------------------------------------------------------------
#
# Plain Python at module level, compiled by ``_compiled()``, which rebinds these
# names to numba's dispatchers. Why not define them inside ``_compiled``: numba's
# disk cache misses on closures (it recompiled them in every process, adding a
# cache file each time), and module-level definitions would import numba with
# this module. The loops take 1-D contiguous arrays and count from 0, and are
# never inlined, so that LLVM vectorises them (see ``numba_kernels``).
#
# A kernel has OpenBLAS's piece signature (see ``blas.parallel_for_kernel``) and
# covers items [lo, lo + width), lo = a // 4. Its ``c`` is read as an array of
# addresses (same bits as the int64s ``parallel_for_kernel`` hands over):
# c[0] the input, c[1] the output.


def _to_bf16_loop(bits, out):
    for i in range(bits.size):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN: keep it, quiet
            out[i] = np.uint16((b >> np.uint32(16)) | np.uint32(0x0040))
        else:
            lsb = (b >> np.uint32(16)) & np.uint32(1)
            out[i] = np.uint16((b + np.uint32(0x7FFF) + lsb) >> np.uint32(16))


def _to_float32_loop(x, bits):
    for i in range(x.size):
        bits[i] = np.uint32(x[i]) << np.uint32(16)


def _to_bf16_piece(lo, hi, c):
    _to_bf16_loop(_carray(c[0], hi, np.uint32)[lo:], _carray(c[1], hi, np.uint16)[lo:])


def _to_float32_piece(lo, hi, c):
    _to_float32_loop(_carray(c[0], hi, np.uint16)[lo:], _carray(c[1], hi, np.uint32)[lo:])


def to_bf16_kernel(width, n, k, alpha, a, lda, s, ldb, c, ldc, sb):
    _to_bf16_piece(a // 4, a // 4 + width, c)
    return 0


def to_float32_kernel(width, n, k, alpha, a, lda, s, ldb, c, ldc, sb):
    _to_float32_piece(a // 4, a // 4 + width, c)
    return 0


_carray = None  # numba.carray, once compiled


@functools.cache
def _compiled() -> bool:
    """Compile the kernels above (numba's disk cache makes this quick); False without numba."""
    try:
        import numba
        from numba import types
    except ImportError:
        return False
    loop = numba.njit(error_model="numpy", cache=True, inline="never")
    jit = numba.njit(error_model="numpy", cache=True)
    signature = types.intc(
        types.int64,
        types.int64,
        types.int64,
        types.float32,
        types.int64,
        types.int64,
        types.CPointer(types.float64),
        types.int64,
        types.CPointer(types.voidptr),
        types.int64,
        types.voidptr,
    )
    kernel = numba.cfunc(signature, nopython=True, error_model="numpy", cache=True)
    names = globals()
    names["_carray"] = numba.carray
    for name in ("_to_bf16_loop", "_to_float32_loop"):
        names[name] = loop(names[name])
    for name in ("_to_bf16_piece", "_to_float32_piece"):
        names[name] = jit(names[name])
    for name in ("to_bf16_kernel", "to_float32_kernel"):
        names[name] = kernel(names[name])
    return True


def compiled_available() -> bool:
    """True when the compiled conversions are in use (numba, and ``kernels="auto"``)."""
    return config.current().kernels == "auto" and _compiled()


def _launch(name: str, x: np.ndarray, out: np.ndarray) -> bool:
    if not (x.flags.c_contiguous and out.flags.c_contiguous) or not compiled_available():
        return False
    if x.size:
        ints = array.array("q", (x.ctypes.data, out.ctypes.data))
        kernel = globals()[name].address
        blas.parallel_for_kernel(x.size, kernel, array.array("d"), ints, GRAIN.kernel)
    return True


def to_bf16_compiled(x: np.ndarray, out: np.ndarray) -> bool:
    """The compiled ``to_bf16_numpy``: True when it ran, False (nothing done) when it cannot."""
    _check(x, np.float32, out, np.uint16)
    return _launch("to_bf16_kernel", x, out)


def to_float32_compiled(x: np.ndarray, out: np.ndarray) -> bool:
    """The compiled ``to_float32_numpy``: True when it ran, False (nothing done) when it cannot."""
    _check(x, np.uint16, out, np.float32)
    return _launch("to_float32_kernel", x, out)


# -- what callers use ---------------------------------------------------------------------


def to_bf16(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``x`` (float32, any shape) rounded to bf16 bits: uint16 of x's shape, in ``out`` if given."""
    if out is None:
        out = np.empty(x.shape, np.uint16)
    if not to_bf16_compiled(x, out):
        to_bf16_numpy(x, out)
    return out


def to_float32(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """bf16 bits ``x`` (uint16, any shape) as float32 values of x's shape, in ``out`` if given."""
    if out is None:
        out = np.empty(x.shape, np.float32)
    if not to_float32_compiled(x, out):
        to_float32_numpy(x, out)
    return out


def round_float32(x: np.ndarray) -> np.ndarray:
    """``x`` (float32) rounded to the nearest bf16 value, as a new float32 array."""
    return to_float32(to_bf16(x))
