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
twin (in ``numba_kernels``, launched through ``kernels`` on OpenBLAS's
threads like every other compiled loop) that gives the same bits (tested over
edge cases and exhaustively in ``benchmarks/bf16_gemm.py``). ``to_bf16`` and
``to_float32`` pick the compiled one when they can. Nothing is compiled, and
numba is not imported, until the first conversion.
"""

from __future__ import annotations

import numpy as np

from numprop._fast import kernels

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
# The loops live with numprop's other compiled kernels (``numba_kernels``) and run
# through the same launcher (``kernels``), on OpenBLAS's threads.


def compiled_available() -> bool:
    """True when the compiled conversions are in use (numba, and ``kernels="auto"``)."""
    return kernels.available()


def to_bf16_compiled(x: np.ndarray, out: np.ndarray) -> bool:
    """The compiled ``to_bf16_numpy``: True when it ran, False (nothing done) when it cannot."""
    _check(x, np.float32, out, np.uint16)
    return kernels.to_bf16(x, out)


def to_float32_compiled(x: np.ndarray, out: np.ndarray) -> bool:
    """The compiled ``to_float32_numpy``: True when it ran, False (nothing done) when it cannot."""
    _check(x, np.uint16, out, np.float32)
    return kernels.to_float32(x, out)


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
