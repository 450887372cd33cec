"""Two BLAS calls NumPy does not expose, with a plain NumPy fallback.

NumPy's ``matmul`` can write into ``out=`` but cannot *accumulate* into it
(BLAS ``C = alpha*A@B + beta*C``), and has no in-place ``y = a*x + b*y``.
Both matter for training speed: accumulating a weight gradient (or folding it
straight into an optimizer's momentum buffer) in the same BLAS call saves one
or two passes over the largest arrays in the network.

We call the OpenBLAS that NumPy itself loaded, through ctypes, so no second
BLAS library or thread pool is brought in (two pools fight for the cores).
If that library cannot be found, or the setting ``blas="numpy"`` is in force
(``numprop.config``), every function falls back to NumPy expressions that
give the same numbers. The library is looked up on first use, not at import.

``parallel_for`` runs NumPy elementwise work on OpenBLAS's threads too: see
the comment above it.
"""

from __future__ import annotations

import array
import ctypes
import functools
import glob
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np

from numprop import config
from numprop._fast.grain import GRAIN

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

    def __init__(self, lib: ctypes.CDLL, path: str):
        self.lib, self.path = lib, path
        prefix = None
        for candidate in ("scipy_cblas_", "cblas_"):
            if hasattr(lib, candidate + "sgemm64_"):
                prefix = candidate
                break
        if prefix is None:
            raise OSError("no 64-bit-integer cblas symbols")
        i64, i32, f32, f64, ptr = (
            ctypes.c_int64,
            ctypes.c_int,
            ctypes.c_float,
            ctypes.c_double,
            ctypes.c_void_p,
        )
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
        self.get_num_threads = None
        for name in (
            "scipy_openblas_get_num_threads64_",
            "openblas_get_num_threads64_",
            "openblas_get_num_threads",
        ):
            if hasattr(lib, name):
                self.get_num_threads = getattr(lib, name)
                self.get_num_threads.argtypes, self.get_num_threads.restype = [], ctypes.c_int
                break

    def threads(self) -> int:
        """How many threads OpenBLAS runs its products on."""
        return self.get_num_threads() if self.get_num_threads else 1


@functools.cache
def _openblas() -> _Blas | None:
    """Bindings to NumPy's OpenBLAS, found and checked once; None when there is none."""
    for path in _openblas_candidates():
        try:
            blas = _Blas(ctypes.CDLL(path), path)
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


def address(m: np.ndarray) -> int:
    """The address of an array's first byte, for ctypes calls.

    ``m.ctypes.data`` costs about 1.5 us; a ctypes view of the buffer about a
    third of that, which counts when a small network's step makes dozens of
    calls. The view needs a writable, C-contiguous buffer (a transposed view
    is read through its contiguous transpose, same first byte); anything else
    takes the slow road.
    """
    try:
        return ctypes.addressof(_BYTE.from_buffer(m if m.flags.c_contiguous else m.T))
    except (TypeError, ValueError, BufferError):
        return m.ctypes.data


_BYTE = ctypes.c_char


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
    blas.gemm[out.dtype](
        _ROW_MAJOR,
        fa[0],
        fb[0],
        m,
        n,
        k,
        alpha,
        address(a),
        fa[1],
        address(b),
        fb[1],
        beta,
        address(out),
        max(1, n),
    )
    return True


def library() -> _Blas | None:
    """The OpenBLAS bindings in use, or None (the NumPy fallback)."""
    return _openblas() if config.current().blas == "auto" else None


def available() -> bool:
    """True when the BLAS fast path is in use (False: pure NumPy fallback)."""
    return library() is not None


def gemm(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, *, alpha: float = 1.0, beta: float = 0.0
) -> np.ndarray:
    """``out = alpha * a @ b + beta * out`` in place.

    a (M, K), b (K, N), out (M, N), all of out's dtype; a and b may be
    transposed views. With beta == 0, out's old contents are ignored (even NaN).
    """
    if a.shape[0] == 0 or b.shape[1] == 0:
        return out
    if a.shape[1] == 0:  # empty sum: BLAS would leave out untouched
        out *= beta
        return out
    blas = library()
    if (
        blas is not None
        and out.dtype in blas.gemm
        and a.dtype == out.dtype
        and b.dtype == out.dtype
        and _gemm_blas(blas, a, b, out, alpha, beta)
    ):
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


def axpby(alpha: float, x: np.ndarray, beta: float, y: np.ndarray) -> np.ndarray:
    """``y = alpha * x + beta * y`` in place (x and y contiguous, same dtype)."""
    blas = library()
    if (
        blas is not None
        and y.dtype in blas.axpby
        and x.dtype == y.dtype
        and x.flags.c_contiguous
        and y.flags.c_contiguous
        and x.size == y.size
    ):
        n, dt = y.size, y.dtype
        if beta == 1.0:
            blas.axpy[dt](n, alpha, address(x), 1, address(y), 1)
        elif beta != 0.0 and n >= GRAIN.axpby_threaded:
            # (scal with 0 would keep NaNs in y on recent OpenBLAS: hence beta != 0.)
            blas.scal[dt](n, beta, address(y), 1)
            blas.axpy[dt](n, alpha, address(x), 1, address(y), 1)
        else:
            blas.axpby[dt](n, alpha, address(x), 1, beta, address(y), 1)
        return y
    if beta != 1.0:
        y *= beta
    if alpha == 1.0:
        y += x
    else:
        y += alpha * x
    return y


# --- NumPy elementwise work on OpenBLAS's threads --------------------------------
#
# NumPy's elementwise functions use one core. Between two matrix products,
# OpenBLAS's worker threads spin, waiting for the next product, so a thread pool
# of our own finds the other cores busy (measured: no gain at all). Instead we
# hand the work to those spinning workers. OpenBLAS's internal
# ``blas_level1_thread`` splits a range of n items among its threads and calls a
# C function on each piece: either a ctypes callback that runs a Python
# ``piece(lo, hi)``, whose NumPy calls release the GIL (``parallel_for``), or a
# compiled kernel with no Python at all (``parallel_for_kernel``, see _kernels).
#
# Pieces must only do elementwise work, or reductions along axes that are not
# split, so that the numbers do not depend on how the range was cut (tests
# compare against one serial piece bit for bit). Pieces must not call threaded
# BLAS routines (gemm, axpy, scal): they run on the pool those would wait for.

# OpenBLAS's level-1 argument list: sizes m, n, k; alpha; then a, lda, b, ldb, c, ldc.
_SIZES = [ctypes.c_long] * 3
_MATRICES = [ctypes.c_void_p, ctypes.c_long] * 3
# A piece: (m, n, k, alpha, a, lda, b, ldb, c, ldc, sb) -> int.
_PIECE = ctypes.CFUNCTYPE(ctypes.c_int, *_SIZES, ctypes.c_float, *_MATRICES, ctypes.c_void_p)
_BLAS_SINGLE_REAL = 2  # OpenBLAS's mode bits for float32 (pieces' pointers move 4 bytes per item)


class _Pool:
    """Runs ``piece(lo, hi)`` over a split of range(n) on OpenBLAS's worker threads."""

    def __init__(self, blas: _Blas):
        split = blas.lib.blas_level1_thread  # AttributeError: no pool, stay serial
        # (mode, m, n, k, &alpha, a, lda, b, ldb, c, ldc, piece, threads)
        split.argtypes = [
            ctypes.c_int,
            *_SIZES,
            ctypes.c_void_p,
            *_MATRICES,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
        split.restype = ctypes.c_int
        self._split, self._threads = split, blas.get_num_threads
        self._callback = _PIECE(self._run_piece)  # keep it alive as long as the pool
        self._alpha = ctypes.c_float(1.0)
        self._lock = threading.Lock()
        self._piece: Callable[[int, int], None] | None = None
        self._error: BaseException | None = None
        self._pinned: set[int] = set()
        self.checked = False  # the split was seen to be right
        self.broken = False  # ... or seen to be wrong: never use
        os.register_at_fork(after_in_child=self._pinned.clear)

    def _run_piece(self, m, n, k, alpha, a, lda, b, ldb, c, ldc, sb):
        try:
            ident = threading.get_ident()
            if ident not in self._pinned:
                # ctypes makes and drops a Python thread state around every callback
                # from a foreign thread; holding one per worker saves ~50 us a call.
                self._pinned.add(ident)
                ctypes.pythonapi.PyGILState_Ensure()
            lo = (a or 0) // 4  # we pass a = NULL, lda = 1
            self._piece(lo, lo + m)
        except BaseException as exc:  # re-raised in the caller
            self._error = exc
        return 0

    def _call(self, n: int, piece, threads: int) -> None:
        self._piece, self._error = piece, None
        try:
            self._split(
                _BLAS_SINGLE_REAL,
                n,
                0,
                0,
                ctypes.byref(self._alpha),
                None,
                1,
                None,
                1,
                None,
                0,
                self._callback,
                threads,
            )
        finally:
            self._piece = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _check(self, threads: int) -> bool:
        """Do the pieces of a test range cover it exactly once, on more than one thread?"""
        seen, idents = [], set()

        def piece(lo, hi):
            seen.append((lo, hi))
            idents.add(threading.get_ident())

        self._call(1000, piece, threads)
        covered = sorted(i for lo, hi in seen for i in range(lo, hi))
        return covered == list(range(1000)) and len(idents) > 1

    def _ready(self, threads: int) -> bool:
        """Check the split on first use; if it is wrong, drop the pool for good."""
        if not self.checked:
            self.checked = self._check(threads)
            self.broken = not self.checked
        return self.checked

    def _threads_for(self, n: int, grain: int) -> int:
        return min(self._threads() if self._threads else 1, max(1, n // grain))

    def run(self, n: int, grain: int, split, alone) -> None:
        """``split(self, threads)`` on the pool, or ``alone()`` on this thread when the
        work is small, BLAS has one thread, or we are already inside a piece."""
        threads = self._threads_for(n, grain)
        if threads < 2 or not self._lock.acquire(blocking=False):
            alone()
            return
        try:
            if self._ready(threads):
                split(self, threads)
            else:
                alone()
        finally:
            self._lock.release()


def _run_kernel_here(n: int, kernel: int, args: tuple) -> None:
    """One piece over range(n) on this thread (ctypes releases the GIL meanwhile)."""
    _as_function(kernel)(n, 0, 0, 1.0, None, 1, *args, None)


@functools.cache
def _as_function(kernel: int):
    return _PIECE(kernel)


@functools.cache
def _openblas_pool() -> _Pool | None:
    blas = _openblas()
    if blas is None or blas.get_num_threads is None:
        return None
    try:
        return _Pool(blas)
    except AttributeError:
        return None


def _pool() -> _Pool | None:
    """OpenBLAS's worker threads for our pieces, or None (work runs on this thread)."""
    if config.current().blas != "auto":
        return None
    pool = _openblas_pool()
    return None if pool is None or pool.broken else pool


_serial = threading.local()


def parallel_for(n: int, piece: Callable[[int, int], None], grain: int) -> None:
    """Call ``piece(lo, hi)`` on pieces that cover range(n), on all of BLAS's threads.

    Pieces are at least ``grain`` items (smaller ranges run as one call here).
    Without the pool (NumPy fallback, one BLAS thread, inside ``serial()``) this
    is just ``piece(0, n)``. Exceptions in a piece are raised here.
    """
    _run(n, grain, lambda pool, threads: pool._call(n, piece, threads), lambda: piece(0, n))


def parallel_elementwise(
    piece: Callable[..., None], arrays: tuple[np.ndarray, ...], grain: int
) -> None:
    """``piece(*blocks)`` on matching pieces of same-shaped ``arrays``, on all cores.

    Pieces are flat ranges when every array is C-contiguous, row blocks
    otherwise; ``piece`` must be elementwise, so the result is the same as one
    call on the whole arrays.
    """
    if all(a.flags.c_contiguous for a in arrays):
        arrays = tuple(a.reshape(-1) for a in arrays)
    parallel_for(len(arrays[0]), lambda lo, hi: piece(*(a[lo:hi] for a in arrays)), grain)


def parallel_for_kernel(
    n: int, kernel: int, scalars: array.array, ints: array.array, grain: int
) -> None:
    """Run a compiled piece (see ``_kernels``) over range(n) on all of BLAS's threads.

    ``kernel`` is the address of a C function with OpenBLAS's piece signature;
    it gets ``b`` = the float64s of ``scalars`` (``array("d")``) and ``c`` =
    the int64s of ``ints`` (``array("q")``), and ``a = 4 * lo``. No Python runs
    in the pieces. (``array.array`` rather than NumPy: its address costs a
    tenth as much, and small-network steps make a dozen of these calls.)
    """
    args = (scalars.buffer_info()[0], 0, ints.buffer_info()[0], 0)
    if n < 2 * grain:  # one piece whatever the pool: skip building the split
        _run_kernel_here(n, kernel, args)
        return

    def split(pool, threads):
        pool._split(
            _BLAS_SINGLE_REAL, n, 0, 0, ctypes.byref(pool._alpha), None, 1, *args, kernel, threads
        )

    _run(n, grain, split, lambda: _run_kernel_here(n, kernel, args))


def _run(n: int, grain: int, split, alone) -> None:
    """What parallel_for and parallel_for_kernel share: the pool, or one call here."""
    pool = _pool()
    if pool is None or n < 2 * grain or getattr(_serial, "on", False):
        alone()
    else:
        pool.run(n, grain, split, alone)


def parallel_available() -> bool:
    """True when ``parallel_for`` can use more than one thread."""
    pool = _pool()
    return pool is not None and bool(pool._threads and pool._threads() > 1)


@contextmanager
def serial():
    """Run every ``parallel_for`` in this thread as one piece (tests compare both paths)."""
    before = getattr(_serial, "on", False)
    _serial.on = True
    try:
        yield
    finally:
        _serial.on = before
