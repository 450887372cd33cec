"""Two BLAS calls NumPy does not expose, with a plain NumPy fallback.

NumPy's ``matmul`` can write into ``out=`` but cannot *accumulate* into it
(BLAS ``C = alpha*A@B + beta*C``), and has no in-place ``y = a*x + b*y``.
Both matter for training speed: accumulating a weight gradient (or folding it
straight into an optimizer's momentum buffer) in the same BLAS call saves one
or two passes over the largest arrays in the network.

We call the OpenBLAS that NumPy itself loaded, through ctypes, so no second
BLAS library or thread pool is brought in (two pools fight for the cores).
If that library cannot be found, or ``NUMPROP_BLAS=numpy`` is set, every
function falls back to NumPy expressions that give the same numbers.
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


def _openblas_candidates() -> list[str]:
    """Paths of OpenBLAS libraries, NumPy's own first.

    NumPy's bundled copy comes first: SciPy (imported by scikit-learn, say)
    maps a second, 32-bit-integer OpenBLAS into the process, which we must not use.
    """
    libs_dir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    candidates = sorted(glob.glob(os.path.join(libs_dir, "*openblas*")))
    try:  # libraries already mapped into this process (Linux), e.g. a system NumPy's
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "openblas" in os.path.basename(path).lower() and path not in candidates:
                    candidates.append(path)
    except OSError:
        pass
    return candidates


class _Blas:
    """ctypes bindings to ILP64 OpenBLAS (``scipy_openblas64_`` as shipped with NumPy)."""

    def __init__(self, lib: ctypes.CDLL):
        prefix = None
        for candidate in ("scipy_cblas_", "cblas_"):
            if hasattr(lib, candidate + "sgemm64_"):
                prefix = candidate
                break
        if prefix is None:
            raise OSError("no 64-bit-integer cblas symbols")
        i64, i32, f32, f64, ptr = (ctypes.c_int64, ctypes.c_int, ctypes.c_float,
                                   ctypes.c_double, ctypes.c_void_p)
        self.gemm, self.axpby, self.axpy, self.scal = {}, {}, {}, {}
        for letter, dtype, real in (("s", np.float32, f32), ("d", np.float64, f64)):
            signatures = {
                "gemm": [i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64],
                "axpby": [i64, real, ptr, i64, real, ptr, i64],
                "axpy": [i64, real, ptr, i64, ptr, i64],
                "scal": [i64, real, ptr, i64],
            }
            for name, argtypes in signatures.items():
                fn = getattr(lib, f"{prefix}{letter}{name}64_")
                fn.argtypes, fn.restype = argtypes, None
                getattr(self, name)[np.dtype(dtype)] = fn


def _load() -> _Blas | None:
    if os.environ.get("NUMPROP_BLAS", "").lower() == "numpy":
        return None
    for path in _openblas_candidates():
        try:
            blas = _Blas(ctypes.CDLL(path))
        except (OSError, AttributeError):
            continue
        # Never trust a binding we have not seen compute the right answer.
        rng = np.random.default_rng(0)
        a, b = rng.random((3, 4)), rng.random((5, 4))
        c = rng.random((3, 5))
        expected = 2.0 * a @ b.T + 0.5 * c
        _gemm_blas(blas, a, b.T, c, 2.0, 0.5)
        if np.allclose(c, expected):
            return blas
    return None


def _operand(m: np.ndarray) -> tuple[int, int] | None:
    """(transpose flag, leading dimension) of a 2-D operand BLAS can read in place."""
    if m.flags.c_contiguous:
        return _NO_TRANS, max(1, m.shape[1])
    if m.flags.f_contiguous:
        return _TRANS, max(1, m.shape[0])
    return None


def _gemm_blas(blas: _Blas, a, b, out, alpha, beta) -> bool:
    fa, fb = _operand(a), _operand(b)
    if fa is None or fb is None or not out.flags.c_contiguous:
        return False
    (m, k), n = a.shape, b.shape[1]
    blas.gemm[out.dtype](_ROW_MAJOR, fa[0], fb[0], m, n, k, alpha, a.ctypes.data, fa[1],
                         b.ctypes.data, fb[1], beta, out.ctypes.data, max(1, n))
    return True


_BLAS = _load()


def available() -> bool:
    """True when the BLAS fast path is in use (False: pure NumPy fallback)."""
    return _BLAS is not None


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, *, alpha: float = 1.0,
         beta: float = 0.0) -> np.ndarray:
    """``out = alpha * a @ b + beta * out`` in place.

    a (M, K), b (K, N), out (M, N), all of out's dtype; a and b may be
    transposed views. With beta == 0, out's old contents are ignored (even NaN).
    """
    if a.shape[0] == 0 or b.shape[1] == 0:
        return out
    if a.shape[1] == 0:  # empty sum: BLAS would leave out untouched
        out *= beta
        return out
    if (_BLAS is not None and out.dtype in _BLAS.gemm and a.dtype == out.dtype
            and b.dtype == out.dtype and _gemm_blas(_BLAS, a, b, out, alpha, beta)):
        return out
    if beta == 0.0:
        np.matmul(a, b, out=out)
    else:
        out *= beta
        out += a @ b if alpha == 1.0 else alpha * (a @ b)
        return out
    if alpha != 1.0:
        out *= alpha
    return out


# From this size on, scal + axpy (which OpenBLAS runs on all cores) beat one
# single-threaded axpby pass.
_THREADED_FROM = 1 << 16


def axpby(alpha: float, x: np.ndarray, beta: float, y: np.ndarray) -> np.ndarray:
    """``y = alpha * x + beta * y`` in place (x and y contiguous, same dtype)."""
    if (_BLAS is not None and y.dtype in _BLAS.axpby and x.dtype == y.dtype
            and x.flags.c_contiguous and y.flags.c_contiguous and x.size == y.size):
        n, dt = y.size, y.dtype
        if beta == 1.0:
            _BLAS.axpy[dt](n, alpha, x.ctypes.data, 1, y.ctypes.data, 1)
        elif beta != 0.0 and n >= _THREADED_FROM:
            # (scal with 0 would keep NaNs in y on recent OpenBLAS: hence beta != 0.)
            _BLAS.scal[dt](n, beta, y.ctypes.data, 1)
            _BLAS.axpy[dt](n, alpha, x.ctypes.data, 1, y.ctypes.data, 1)
        else:
            _BLAS.axpby[dt](n, alpha, x.ctypes.data, 1, beta, y.ctypes.data, 1)
        return y
    if beta != 1.0:
        y *= beta
    if alpha == 1.0:
        y += x
    else:
        y += alpha * x
    return y
