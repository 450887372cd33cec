"""Intel MKL's matrix products through ctypes: bf16 operands with float32 sums, and sgemm.

``gemm_bf16`` computes ``C = alpha * A @ B + beta * C`` with A and B in bf16
(``np.uint16`` arrays of bf16 bits, see ``numprop._fast.bf16``) and C in
float32, through MKL's ``cblas_gemm_bf16bf16f32``: on CPUs with AMX (Xeon
4th generation on) it runs on the matrix units, several times faster than
any float32 product. Every product of two bf16 values is exact in float32;
the sums are float32. ``gemm_f32`` is MKL's sgemm, to compare with OpenBLAS's.

MKL is optional (``pip install mkl``) and found and loaded on first use, never
at import: ``library()`` returns the bindings or None, and ``why_not()`` says
why none. Without MKL, ``gemm_bf16`` widens its operands to float32 and calls
``blas.gemm``: the same sums, at float32 speed.

Threads. MKL brings its own threading (an OpenMP runtime, or TBB), a second
pool beside OpenBLAS's, and two pools on the same cores spin against each
other: on 2 cores, a bf16 product followed by numprop's elementwise work on
OpenBLAS's threads took 2-3 times as long as the two alone with MKL's OpenMP
threads, and about as long with the default here (``BF16_GEMM.md``).
``configure(threading=...)`` picks, before MKL is loaded:

* ``"pool"`` (default): MKL's sequential layer, and numprop splits each large
  product into column (or row) blocks that run on OpenBLAS's worker threads
  (``blas.parallel_for``), the threads that already run numprop's
  elementwise work. No second pool exists;
* ``"gnu"`` / ``"intel"`` / ``"tbb"``: MKL's own threads on libgomp, libiomp5
  or TBB (``MKL_Set_Threading_Layer``), ``threads`` of them
  (``MKL_Set_Num_Threads``; default: as many as OpenBLAS uses);
* ``"sequential"``: one thread, the caller's.

``benchmarks/bf16_gemm.py`` measures all of them (``BF16_GEMM.md``).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import importlib.metadata
import os
import sys
import threading

import numpy as np

from numprop._fast import blas

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_PACKED, _B_MATRIX = 151, 162  # CBLAS_STORAGE and CBLAS_IDENTIFIER codes
# MKL_Set_Threading_Layer's codes (mkl_service.h).
_LAYERS = {"intel": 0, "sequential": 1, "gnu": 3, "tbb": 4}
THREADINGS = ("pool", "gnu", "intel", "tbb", "sequential")
# The runtime each layer needs. MKL ends the whole process ("FATAL ERROR")
# when it cannot load it, so we load it ourselves first, and report failure.
_RUNTIMES = {"gnu": ("libgomp.so.1",), "intel": ("libiomp5.so",), "tbb": ("libtbb.so.12",)}

_requested = {"threading": "pool", "threads": None}
_lock = threading.Lock()
_why_not: str | None = None


def configure(*, threading: str | None = None, threads: int | None = None) -> None:
    """Choose MKL's threading before it is loaded (see the module's docstring).

    ``threads``: MKL's thread count for its own layers, pieces for ``"pool"``
    (at most OpenBLAS's thread count); None: OpenBLAS's thread count. It may
    change after loading; the threading may not (MKL fixes it on its first call).
    """
    if threading is not None:
        if threading not in THREADINGS:
            raise ValueError(f"threading must be one of {THREADINGS}, got {threading!r}")
        if _mkl.cache_info().currsize and threading != _requested["threading"]:
            raise RuntimeError("MKL is loaded already: its threading can no longer change")
        _requested["threading"] = threading
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        _requested["threads"] = threads
        if _mkl.cache_info().currsize and _mkl() is not None:
            _mkl().set_threads(threads)


def _mkl_rt_candidates() -> list[str]:
    """Paths of ``libmkl_rt.so`` (the single dynamic library), the pip wheel's first."""
    candidates = []
    try:  # wherever pip put the ``mkl`` wheel (a venv, --user, --target)
        for file in importlib.metadata.files("mkl") or ():
            if os.path.basename(str(file)).startswith("libmkl_rt.so"):
                candidates.append(os.path.realpath(file.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    for prefix in (sys.prefix, sys.base_prefix):
        candidates += sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")), reverse=True)
    seen: list[str] = []
    for path in candidates:
        if path not in seen and os.path.exists(path):
            seen.append(path)
    return seen


class _Mkl:
    """ctypes bindings to ``libmkl_rt``: the two GEMMs and the service functions we use."""

    def __init__(self, lib: ctypes.CDLL, path: str, threading: str):
        self.lib, self.path, self.threading = lib, path, threading
        i32, ptr, f32 = ctypes.c_int, ctypes.c_void_p, ctypes.c_float
        # The 64-bit-integer (ILP64) entry points where MKL has them (2023 on),
        # else the default 32-bit ones: sizes are checked against the int type.
        suffix = "_64" if hasattr(lib, "cblas_sgemm_64") else ""
        self.index = ctypes.c_int64 if suffix else ctypes.c_int32
        self.max_index = np.iinfo(np.int64 if suffix else np.int32).max
        idx = self.index
        gemm_args = [i32, i32, i32, idx, idx, idx, f32, ptr, idx, ptr, idx, f32, ptr, idx]
        self.gemm = {}
        for key, name in (("bf16", "cblas_gemm_bf16bf16f32"), ("f32", "cblas_sgemm")):
            fn = getattr(lib, name + suffix)
            fn.argtypes, fn.restype = gemm_args, None
            self.gemm[key] = fn
        # Packed B (for inference, where B is the same weight call after call):
        # in MKL since 2020; None where this MKL lacks them.
        self.pack_size = self.pack = self.compute = None
        if hasattr(lib, "cblas_gemm_bf16bf16f32_compute" + suffix):
            self.pack_size = lib["cblas_gemm_bf16bf16f32_pack_get_size" + suffix]
            self.pack_size.argtypes, self.pack_size.restype = [i32, idx, idx, idx], ctypes.c_size_t
            self.pack = lib["cblas_gemm_bf16bf16f32_pack" + suffix]
            self.pack.argtypes = [i32, i32, i32, idx, idx, idx, ptr, idx, ptr]
            self.pack.restype = None
            self.compute = lib["cblas_gemm_bf16bf16f32_compute" + suffix]
            self.compute.argtypes, self.compute.restype = gemm_args, None
        for name, args, result in (
            ("MKL_Set_Threading_Layer", [i32], i32),
            ("MKL_Set_Num_Threads", [i32], None),
            ("MKL_Get_Max_Threads", [], i32),
            ("MKL_Get_Version_String", [ctypes.c_char_p, i32], None),
        ):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, result
        self.layer = "sequential" if threading == "pool" else threading
        # The threading layer must be set before any other MKL call; MKL answers
        # with the layer in force (another library may have loaded MKL first).
        in_force = lib.MKL_Set_Threading_Layer(_LAYERS[self.layer])
        if in_force != _LAYERS[self.layer]:
            names = {code: name for name, code in _LAYERS.items()}
            raise OSError(f"MKL runs threading layer {names.get(in_force, in_force)!r} already")
        self.pieces = 1

    def version(self) -> str:
        text = ctypes.create_string_buffer(256)
        self.lib.MKL_Get_Version_String(text, len(text))
        return text.value.decode(errors="replace").strip()

    def set_threads(self, threads: int) -> None:
        """MKL's own threads (its layers) or the pieces a product is cut into (``"pool"``)."""
        if self.threading == "pool":
            self.pieces = max(1, threads)
        elif self.threading != "sequential":
            self.lib.MKL_Set_Num_Threads(threads)

    def threads(self) -> int:
        """How many threads one product runs on."""
        if self.threading == "pool":
            return min(self.pieces, _openblas_threads())
        return self.lib.MKL_Get_Max_Threads()


def _openblas_threads() -> int:
    library = blas.library()
    return library.threads() if library is not None and blas.parallel_available() else 1


def _load_runtime(layer: str, directory: str) -> None:
    """Load the threading runtime ``layer`` needs, from MKL's folder first (the wheels')."""
    errors = []
    for name in _RUNTIMES.get(layer, ()):
        for path in (os.path.join(directory, name), name):
            try:
                # RTLD_GLOBAL: MKL's threading library finds the runtime's symbols
                # (and the loader its soname) among those already loaded.
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return
            except OSError as exc:
                errors.append(str(exc))
    if errors:
        raise OSError(f"MKL's {layer!r} threading needs a runtime that fails to load: {errors[-1]}")


@functools.cache
def _mkl() -> _Mkl | None:
    """Bindings to MKL, found, loaded and checked once; None (see ``why_not``) when none."""
    global _why_not
    threading, threads = _requested["threading"], _requested["threads"]
    candidates = _mkl_rt_candidates()
    if not candidates:
        _why_not = "MKL is not installed (pip install mkl)"
        return None
    reasons = []
    for path in candidates:
        try:
            _load_runtime(threading, os.path.dirname(path))
            mkl = _Mkl(ctypes.CDLL(path), path, threading)
        except (OSError, AttributeError) as exc:
            reasons.append(f"{path}: {exc}")
            continue
        mkl.set_threads(threads or _openblas_threads())
        problem = _self_check(mkl)
        if problem is None:
            _why_not = None
            return mkl
        reasons.append(f"{path}: {problem}")
    _why_not = "; ".join(reasons)
    return None


def _self_check(mkl: _Mkl) -> str | None:
    """Never trust a binding we have not seen compute the right answer: small integers
    are exact in bf16 and their sums exact in float32, so the check is for equality."""
    rng = np.random.default_rng(0)
    a = rng.integers(-8, 9, (5, 7)).astype(np.float32)
    b = rng.integers(-8, 9, (6, 7)).astype(np.float32)  # used transposed
    c = rng.integers(-8, 9, (5, 6)).astype(np.float32)
    expected = 2.0 * a @ b.T + 0.5 * c
    upper = [np.ascontiguousarray((m.view(np.uint32) >> 16).astype(np.uint16)) for m in (a, b)]
    for key, (x, y) in (("bf16", upper), ("f32", (a, b))):
        out = c.copy()
        if not _call(mkl, key, x, y.T, out, 2.0, 0.5):
            return f"{key} GEMM refused its operands"
        if not np.array_equal(out, expected):
            return f"{key} GEMM computed a wrong product"
    return None


def library() -> _Mkl | None:
    """The MKL bindings, loaded on first use, or None (see ``why_not``)."""
    with _lock:  # two threads must not both set MKL's threading layer
        return _mkl()


def why_not() -> str | None:
    """Why ``library()`` is None (None when MKL is in use, or not looked for yet)."""
    return _why_not


def available() -> bool:
    """True when MKL's products are in use."""
    return library() is not None


def describe() -> str:
    """One line: MKL's version, path, threading and threads, or why there is none."""
    mkl = library()
    if mkl is None:
        return f"MKL: none ({why_not()})"
    return f"MKL: {mkl.version()} at {mkl.path}, threading {mkl.threading}, {mkl.threads()} threads"


# -- the products --------------------------------------------------------------------------


def _layout(m: np.ndarray) -> tuple[int, int] | None:
    """(transpose flag, leading dimension) of a 2-D operand BLAS can read in place.

    Rows may be padded (a slice of columns): BLAS reads a row-major matrix with
    any leading dimension at least its width, and a transposed one likewise.
    """
    item = m.itemsize
    rows, cols = m.shape
    s0, s1 = m.strides
    if (s1 == item or cols == 1) and s0 % item == 0 and s0 // item >= max(1, cols):
        return _NO_TRANS, s0 // item
    if (s0 == item or rows == 1) and s1 % item == 0 and s1 // item >= max(1, rows):
        return _TRANS, s1 // item
    if m.flags.c_contiguous:  # e.g. (1, 1), whose strides say little
        return _NO_TRANS, max(1, cols)
    return None


# MKL 2026.2's bf16 product with beta = 0 runs 2-5x slower than with beta = 1
# when K is small (a weight gradient's batch: measured at K = 64 ... 1024, M, N
# ~ 1000-3072), whatever the layout or threading; zeroing the output first
# and accumulating is faster there. (Above, K = 2048 or 3072, it makes no
# difference, and the zeroing pass would cost a few percent.)
_ZERO_FIRST_K = 1024


def _call(mkl: _Mkl, key: str, a, b, out, alpha, beta) -> bool:
    """One MKL call for ``out = alpha a @ b + beta out``; False when a layout does not fit."""
    fa, fb, fc = _layout(a), _layout(b), _layout(out)
    if fa is None or fb is None or fc is None or fc[0] != _NO_TRANS:
        return False
    (m, k), n = a.shape, b.shape[1]
    if max(m, n, k, fa[1], fb[1], fc[1]) > mkl.max_index:
        return False
    if key == "bf16" and beta == 0.0 and k <= _ZERO_FIRST_K:
        # The same sums (old contents, NaN included, are gone either way), but
        # a sum of -0.0 comes out as +0.0.
        out[...] = 0.0
        beta = 1.0
    mkl.gemm[key](
        _ROW_MAJOR,
        fa[0],
        fb[0],
        m,
        n,
        k,
        alpha,
        blas.address(a),
        fa[1],
        blas.address(b),
        fb[1],
        beta,
        blas.address(out),
        fc[1],
    )
    return True


# A piece of a split product should be worth this many multiply-adds at least:
# below ~4 MFLOP, waking the other threads costs more than it saves.
_PIECE_FLOPS = 1 << 22
# Blocks of this many columns (or rows) keep AMX's 16 x 32 tiles whole.
_BLOCK = 64


def _split_call(mkl: _Mkl, key: str, a, b, out, alpha, beta) -> bool:
    """``_call``, cut into column (or row) blocks of ``out`` on OpenBLAS's threads.

    Each block is its own sequential MKL call (ctypes drops the GIL meanwhile);
    blocks share no output, so the numbers are those of single calls on the
    blocks, the same from run to run. They can differ from one whole call's in
    the last bits where MKL picks its kernel by the matrix's width (seen with
    sgemm, never with the bf16 product in ``tests/test_mkl_bf16.py``'s shapes).
    """
    (m, k), n = a.shape, b.shape[1]
    by_columns = n >= m
    length = n if by_columns else m
    blocks = -(-length // _BLOCK)
    flops_per_block = 2 * k * _BLOCK * (m if by_columns else n)
    grain = max(1, -(-_PIECE_FLOPS // max(1, flops_per_block)))
    pieces = mkl.threads()
    if pieces < 2 or blocks < 2 * grain:
        return _call(mkl, key, a, b, out, alpha, beta)
    # No more pieces than mkl.threads(): parallel_for runs min(its threads, blocks // grain).
    grain = max(grain, blocks // pieces)
    if _layout(a) is None or _layout(b) is None or _layout(out) is None:
        return False
    refused = []

    def piece(lo: int, hi: int) -> None:
        cut = slice(lo * _BLOCK, min(hi * _BLOCK, length))
        if by_columns:
            done = _call(mkl, key, a, b[:, cut], out[:, cut], alpha, beta)
        else:
            done = _call(mkl, key, a[cut], b, out[cut], alpha, beta)
        if not done:
            refused.append((lo, hi))

    blas.parallel_for(blocks, piece, grain)
    if refused:  # cannot happen for operands _layout accepts whole; never hide it
        raise RuntimeError(f"MKL refused blocks {refused} of a product it accepted whole")
    return True


def _gemm(key: str, a, b, out, alpha: float, beta: float) -> bool:
    """MKL's product, split or whole; False when MKL is missing or refuses the layout."""
    if a.shape[1] != b.shape[0] or out.shape != (a.shape[0], b.shape[1]):
        raise ValueError(f"shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
    if out.dtype != np.float32:
        raise ValueError(f"out must be float32, got {out.dtype}")
    if a.shape[0] == 0 or b.shape[1] == 0:
        return True
    if a.shape[1] == 0:  # an empty sum: BLAS would leave out untouched
        if beta == 0.0:
            out[...] = 0.0
        else:
            out *= beta
        return True
    mkl = library()
    if mkl is None:
        return False
    if mkl.threading == "pool":
        return _split_call(mkl, key, a, b, out, alpha, beta)
    return _call(mkl, key, a, b, out, alpha, beta)


# -- packed weights (inference) ----------------------------------------------------------

# Packing pays for matrices of this many entries at least (MKL packs B inside
# every plain call; a packed copy skips that work on every later call).
_PACK_MIN = 1 << 18


class PackedBF16:
    """A bf16 matrix B (K, N) in MKL's packed layout, cut into column pieces, one per thread.

    For products ``a @ B`` repeated with the same B (a weight at inference),
    where each plain call would pack B again: about 20% faster for a
    1000 x 3072 x 4000 product here (``benchmarks/BF16_INFERENCE.md``), same
    sums. ``bits`` is B itself, for anything else (``.T`` reads it). Valid
    while B does not change: ``Parameter.changed()`` drops it.
    """

    dtype = np.dtype(np.uint16)

    def __init__(self, bits: np.ndarray, pieces: list[tuple[int, int, np.ndarray]]):
        self.bits, self.shape, self.pieces = bits, bits.shape, pieces  # (lo, hi, packed bytes)

    @property
    def T(self) -> np.ndarray:
        return self.bits.T


def pack_bf16(b: np.ndarray) -> PackedBF16 | None:
    """B (K, N) bf16 bits packed for ``gemm_bf16``; None where packing is not worth it
    (small or narrow B) or not possible (no MKL, an MKL without packing, a layout
    it cannot read)."""
    if b.dtype != np.uint16 or b.ndim != 2:
        raise ValueError(f"b must be 2-D uint16 bf16 bits, got {b.dtype} {b.shape}")
    k, n = b.shape
    mkl = library()
    layout = _layout(b)
    if mkl is None or mkl.pack is None or layout is None or k * n < _PACK_MIN:
        return None
    if n < 2 * _BLOCK or max(k, n, layout[1]) > mkl.max_index:
        return None
    # Column pieces of whole _BLOCKs, as _split_call cuts a product by columns.
    count = max(1, min(mkl.threads(), -(-n // _BLOCK)))
    blocks = -(-n // _BLOCK)
    cuts = [min(n, blocks * c // count * _BLOCK) for c in range(count + 1)]
    pieces = []
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        # The packed size depends on K and the width, not on the rows of A (m = 1 here).
        size = mkl.pack_size(_B_MATRIX, 1, hi - lo, k)
        raw = np.empty(size + 64, np.uint8)
        buffer = raw[-raw.ctypes.data % 64 :][:size]  # 64-byte aligned, as MKL prefers
        mkl.pack(
            _ROW_MAJOR, _B_MATRIX, layout[0], 1, hi - lo, k,
            blas.address(b[:, lo:hi]), layout[1], blas.address(buffer),
        )  # fmt: skip
        pieces.append((lo, hi, buffer))
    return PackedBF16(b, pieces)


def _gemm_packed(a: np.ndarray, b: PackedBF16, out: np.ndarray, alpha: float, beta: float) -> bool:
    """``out = alpha a @ B + beta out`` with B packed: one call per piece, on OpenBLAS's threads."""
    mkl = library()
    fa, fc = _layout(a), _layout(out)
    if mkl is None or fa is None or fc is None or fc[0] != _NO_TRANS:
        return False
    m, k = a.shape
    if max(m, fa[1], fc[1]) > mkl.max_index:
        return False
    if beta == 0.0 and k <= _ZERO_FIRST_K:  # as in _call
        out[...] = 0.0
        beta = 1.0

    def run(first: int, last: int) -> None:
        for lo, hi, buffer in b.pieces[first:last]:
            mkl.compute(
                _ROW_MAJOR, fa[0], _PACKED, m, hi - lo, k, alpha, blas.address(a), fa[1],
                blas.address(buffer), hi - lo, beta, blas.address(out[:, lo:hi]), fc[1],
            )  # fmt: skip

    blas.parallel_for(len(b.pieces), run, 1)
    return True


def gemm_bf16(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, *, alpha: float = 1.0, beta: float = 0.0
) -> np.ndarray:
    """``out = alpha * a @ b + beta * out`` in place, bf16 operands, float32 sums.

    a (M, K) and b (K, N): uint16 bf16 bits (``bf16.to_bf16``), either may be a
    transposed view (``w.T``) or a slice of columns, and b may be packed
    (``pack_bf16``); out (M, N) float32, rows
    contiguous. With beta == 0, out's old contents are ignored (even NaN).
    Without MKL the operands are widened to float32 for ``blas.gemm``.
    """
    if a.dtype != np.uint16 or b.dtype != np.uint16:
        raise ValueError(f"a and b must be uint16 bf16 bits, got {a.dtype} and {b.dtype}")
    if isinstance(b, PackedBF16):
        if a.shape[1] != b.shape[0] or out.shape != (a.shape[0], b.shape[1]):
            raise ValueError(f"shapes {a.shape} @ {b.shape} -> {out.shape} do not match")
        if out.dtype == np.float32 and a.shape[0] and _gemm_packed(a, b, out, alpha, beta):
            return out
        b = b.bits
    if not _gemm("bf16", a, b, out, alpha, beta):
        if library() is not None:  # a layout MKL cannot read: copy it to one it can
            a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
            if out.flags.c_contiguous and _gemm("bf16", a, b, out, alpha, beta):
                return out
        from numprop._fast import bf16

        blas.gemm(bf16.to_float32(a), bf16.to_float32(b), out, alpha=alpha, beta=beta)
    return out


def gemm_f32(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, *, alpha: float = 1.0, beta: float = 0.0
) -> np.ndarray:
    """``out = alpha * a @ b + beta * out`` in place through MKL's sgemm (else ``blas.gemm``).

    a (M, K), b (K, N), out (M, N), all float32; a and b may be transposed views.
    """
    if a.dtype != np.float32 or b.dtype != np.float32:
        raise ValueError(f"a and b must be float32, got {a.dtype} and {b.dtype}")
    if not _gemm("f32", a, b, out, alpha, beta):
        blas.gemm(a, b, out, alpha=alpha, beta=beta)
    return out
