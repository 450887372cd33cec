"""Compiled twins of numprop's elementwise operations (numba), run on OpenBLAS's threads.

NumPy makes one pass over memory per operation: the Adam update, for one,
is twelve NumPy calls and 28 array-passes, where a fused loop needs 7.
With numba installed (``pip install 'numprop[fast]'``) the loops in
``numba_kernels`` are compiled once (cached on disk) and handed to
``blas.parallel_for_kernel``, which runs them on OpenBLAS's worker threads
with no Python and no GIL in the way.

Each function here is one kernel with named arguments. It returns True when
the kernel ran, and False (doing nothing) when the caller must run the plain
NumPy reference instead: numba missing, the ``kernels="numpy"`` setting
(``numprop.config``), or arrays the kernel does not take (not C-contiguous,
not float32/float64). The references live beside their callers, in
``numprop.nn.ops`` and ``numprop.data``; each kernel does their arithmetic
in their order, so the two give the same bits (tested). The one exception is
``softmax_xent``, whose exp and row sums are not NumPy's: it agrees to rounding.

How arguments reach a kernel: the C signature OpenBLAS calls pieces with is
fixed, so a kernel gets its float scalars as one float64 array and its sizes
and array addresses as one int64 array, in the order its ``_launch`` call
below lists them (and ``numba_kernels`` documents above each kernel).
"""

from __future__ import annotations

import array
import functools

import numpy as np

from numprop import config
from numprop._fast import blas
from numprop._fast.grain import GRAIN

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@functools.cache
def _compiled():
    """The module of compiled kernels, or None when numba is missing."""
    try:
        from numprop._fast import numba_kernels
    except ImportError:
        return None
    return numba_kernels


def available() -> bool:
    """True when the compiled kernels are in use."""
    return config.current().kernels == "auto" and _compiled() is not None


@functools.cache
def _address(name: str) -> int | None:
    module = _compiled()
    return None if module is None else getattr(module, name).address


def address(name: str) -> int | None:
    """Address of the compiled kernel ``name``, or None (use NumPy)."""
    # Two calls, no more: this runs a dozen times per training step.
    return _address(name) if config.current().kernels == "auto" else None


def _launch(
    name: str,
    n: int,
    arrays: tuple,
    *,
    grain: int,
    floats: tuple = (),
    sizes: tuple = (),
    others: tuple = (),
) -> bool:
    """Run kernel ``name`` over range(n) on all cores, if it can take these arrays.

    ``arrays``: C-contiguous, all of the first one's float dtype; ``others``:
    C-contiguous arrays of the dtypes the kernel expects. The kernel gets
    ``floats`` as float64s and (item size, *sizes, *addresses of arrays, *addresses
    of others) as int64s.
    """
    # Plain loops, not all(<generator>): this runs a dozen times per training step,
    # and for small networks its Python cost is a tenth of the step.
    dtype = arrays[0].dtype
    if dtype not in _FLOATS:
        return False
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous:
            return False
    for a in others:
        if not a.flags.c_contiguous:
            return False
    kernel = address(name)
    if kernel is None:
        return False
    ints = array.array("q", [dtype.itemsize, *sizes])
    ints.extend(map(blas.address, arrays))
    ints.extend(map(blas.address, others))
    blas.parallel_for_kernel(n, kernel, array.array("d", floats), ints, grain)
    return True


def _bf16_copy_of(w: np.ndarray, bf16: np.ndarray) -> bool:
    """Whether uint16 ``bf16`` can hold float32 ``w``'s bf16 copy."""
    return w.dtype == np.float32 and bf16.dtype == np.uint16 and bf16.shape == w.shape


# -- layers ----------------------------------------------------------------------------


def relu(x: np.ndarray, out: np.ndarray) -> bool:
    """``out = max(x, 0)`` (NaN stays NaN)."""
    return _launch("relu", x.size, (x, out), grain=GRAIN.kernel)


def relu_bf16(x: np.ndarray, out: np.ndarray) -> bool:
    """``out = to_bf16(max(x, 0))`` for float32 ``x`` and uint16 ``out``, in one pass."""
    if x.dtype != np.float32 or out.dtype != np.uint16 or out.shape != x.shape:
        return False
    return _launch("relu_bf16", x.size, (x,), others=(out,), grain=GRAIN.kernel)


def relu_backward(y: np.ndarray, dout: np.ndarray, dx: np.ndarray) -> bool:
    """``dx = dout * (y > 0)``."""
    return _launch("relu_backward", y.size, (y, dout, dx), grain=GRAIN.kernel)


def relu_backward_bf16(y: np.ndarray, dout: np.ndarray, dx: np.ndarray, bits: np.ndarray) -> bool:
    """``dx = dout * (y > 0)`` and ``bits = to_bf16(dx)`` (uint16), float32, in one pass."""
    if y.dtype != np.float32 or bits.dtype != np.uint16 or bits.shape != dx.shape:
        return False
    return _launch("relu_backward_bf16", y.size, (y, dout, dx), others=(bits,), grain=GRAIN.kernel)


def _same_shape(*arrays: np.ndarray) -> bool:
    """Whether the arrays have one shape (the kernels read them by ``x.size``)."""
    return all(a.shape == arrays[0].shape for a in arrays)


def gelu_argument(x: np.ndarray, u: np.ndarray, *, c: float, a: float, clip: float) -> bool:
    """``u = c (xc + a xc^3)`` with ``xc = clip(x, -clip, clip)``: the argument of GELU's tanh."""
    return _same_shape(x, u) and _launch(
        "gelu_argument", x.size, (x, u), floats=(c, a, clip), grain=GRAIN.kernel
    )


def gelu_output(x: np.ndarray, t: np.ndarray, out: np.ndarray) -> bool:
    """``out = (0.5 x) (1 + t)``; a uint16 ``out`` (float32 x) gets it rounded to bf16."""
    if not _same_shape(x, t, out):
        return False
    if out.dtype == np.uint16:
        return x.dtype == np.float32 and _launch(
            "gelu_output_bf16", x.size, (x, t), others=(out,), grain=GRAIN.kernel
        )
    return _launch("gelu_output", x.size, (x, t, out), grain=GRAIN.kernel)


def gelu_backward(
    x: np.ndarray,
    t: np.ndarray,
    dout: np.ndarray,
    dx: np.ndarray,
    *,
    c: float,
    a3: float,
    clip: float,
    bits: np.ndarray | None = None,
) -> bool:
    """``dx = dout ((0.5 (1 + t)) + (0.5 x) dt)``, ``dt = ((1 - t t) c) (1 + a3 xc xc)``.

    With ``bits`` (uint16, float32 arrays), the same pass also writes ``bits = to_bf16(dx)``.
    """
    if not _same_shape(x, t, dout, dx):
        return False
    if bits is not None:
        if x.dtype != np.float32 or bits.dtype != np.uint16 or bits.shape != dx.shape:
            return False
        return _launch(
            "gelu_backward_bf16",
            x.size,
            (x, t, dout, dx),
            floats=(c, a3, clip),
            others=(bits,),
            grain=GRAIN.kernel,
        )
    return _launch(
        "gelu_backward", x.size, (x, t, dout, dx), floats=(c, a3, clip), grain=GRAIN.kernel
    )


def multiply(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> bool:
    """``out = x * y``."""
    return _launch("multiply", x.size, (x, y, out), grain=GRAIN.kernel)


def dropout(
    x: np.ndarray, key: int, threshold: int, scale: float, mask: np.ndarray, out: np.ndarray
) -> bool:
    """``mask = (bits >= threshold) * scale``, ``out = x * mask``, bits from ``dropout_bits(key)``."""
    return _launch(
        "dropout",
        -(-x.size // 4),
        (x, mask, out),
        floats=(threshold, scale),
        sizes=(x.size, key),
        grain=GRAIN.dropout_words,
    )


def batchnorm(
    x: np.ndarray,
    eps: float,
    gamma: np.ndarray,
    beta: np.ndarray,
    *,
    xc: np.ndarray,
    out: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    inv_std: np.ndarray,
) -> bool:
    """BatchNorm's training forward on column blocks; see ``ops.batchnorm_train``."""
    n, h = x.shape
    return _launch(
        "batchnorm",
        h,
        (x, xc, out, mean, var, inv_std, gamma, beta),
        floats=(eps,),
        sizes=(n, h),
        grain=GRAIN.rows(GRAIN.row_kernel, n, minimum=8),
    )


def batchnorm_eval(
    x: np.ndarray,
    mean: np.ndarray,
    scale: np.ndarray,
    beta: np.ndarray,
    out: np.ndarray,
) -> bool:
    """BatchNorm's eval forward on row blocks; see ``ops.batchnorm_eval``."""
    n, h = x.shape
    return _launch(
        "batchnorm_eval",
        n,
        (x, out, mean, scale, beta),
        sizes=(n, h),
        grain=GRAIN.rows(GRAIN.kernel, h),
    )


def batchnorm_backward(
    dout: np.ndarray,
    xc: np.ndarray,
    inv_std: np.ndarray,
    gamma: np.ndarray,
    *,
    dx: np.ndarray,
    dgamma: np.ndarray,
    dbeta: np.ndarray,
) -> bool:
    """BatchNorm's training backward on column blocks; see ``ops.batchnorm_train_backward``."""
    n, h = dout.shape
    return _launch(
        "batchnorm_backward",
        h,
        (dout, xc, dx, inv_std, gamma, dgamma, dbeta),
        sizes=(n, h),
        grain=GRAIN.rows(GRAIN.row_kernel, n, minimum=8),
    )


def layernorm(
    x: np.ndarray,
    eps: float,
    gamma: np.ndarray,
    beta: np.ndarray,
    *,
    xhat: np.ndarray,
    out: np.ndarray,
    inv_std: np.ndarray,
) -> bool:
    """LayerNorm's forward on row blocks; see ``ops.layernorm`` (row sums in float64)."""
    n, d = x.shape
    if not _same_shape(x, xhat, out) or inv_std.size != n or gamma.size != d or beta.size != d:
        return False
    return _launch(
        "layernorm",
        n,
        (x, xhat, out, inv_std, gamma, beta),
        floats=(eps,),
        sizes=(n, d),
        grain=GRAIN.rows(GRAIN.layernorm, d),
    )


def layernorm_backward(
    dout: np.ndarray,
    xhat: np.ndarray,
    inv_std: np.ndarray,
    gamma: np.ndarray,
    *,
    dx: np.ndarray,
    dgamma: np.ndarray,
    dbeta: np.ndarray,
) -> bool:
    """LayerNorm's backward: dx on row blocks, then dgamma and dbeta on column blocks."""
    n, d = dout.shape
    if not _same_shape(dout, xhat, dx) or inv_std.size != n or gamma.size != d:
        return False
    if dgamma.size != d or dbeta.size != d:
        return False
    return _launch(
        "layernorm_backward",
        n,
        (dout, xhat, inv_std, gamma, dx),
        sizes=(n, d),
        grain=GRAIN.rows(GRAIN.layernorm, d),
    ) and _launch(
        "column_sums",
        d,
        (dout, xhat, dgamma, dbeta),
        sizes=(n, d),
        grain=GRAIN.rows(GRAIN.layernorm, n, minimum=8),
    )


def softmax_xent(
    logits: np.ndarray,
    labels: np.ndarray,
    label_smoothing: float,
    *,
    probs: np.ndarray,
    grad: np.ndarray,
    totals: np.ndarray,
) -> bool:
    """Softmax cross-entropy forward and backward for integer labels, one row at a time.

    ``totals`` (3,) float64 gets (sum of the loss, rows right, rows with a label
    outside [0, C)); one sum, so it runs as one piece.
    """
    n, c = logits.shape
    eps = label_smoothing
    return _launch(
        "softmax_xent",
        n,
        (logits, probs, grad),
        floats=(1 - eps, eps / c, 1.0 / n, eps),
        sizes=(c,),
        others=(np.ascontiguousarray(labels, np.int64), totals),
        grain=GRAIN.one_piece,
    )


# -- optimizers ------------------------------------------------------------------------


def sgd_momentum(
    w: np.ndarray,
    v: np.ndarray,
    weight_decay: float,
    step: float,
    bf16: np.ndarray | None = None,
) -> bool:
    """``v += weight_decay * w``, then ``w += step * v``.

    With ``bf16`` (uint16, ``w``'s shape; float32 ``w`` only), the same pass
    also writes ``bf16 = to_bf16(w)``.
    """
    others = () if bf16 is None else (bf16,)
    if others and not _bf16_copy_of(w, bf16):
        return False
    return _launch(
        "sgd_momentum_bf16" if others else "sgd_momentum",
        w.size,
        (w, v),
        floats=(weight_decay, step),
        others=others,
        grain=GRAIN.optimizer,
    )


def adam(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    *,
    b1: float,
    b2: float,
    eps: float,
    step: float,
    decay: float,
    l2: float,
    bf16: np.ndarray | None = None,
) -> bool:
    """One Adam/AdamW update of ``w`` from gradient ``g``; see ``ops.adam_step``.

    With ``bf16`` (uint16, ``w``'s shape; float32 ``w`` only), the same pass
    also writes ``bf16 = to_bf16(w)``.
    """
    others = () if bf16 is None else (bf16,)
    if others and not _bf16_copy_of(w, bf16):
        return False
    return _launch(
        "adam_bf16" if others else "adam",
        w.size,
        (w, g, m, v),
        floats=(b1, 1.0 - b1, b2, 1.0 - b2, eps, step, decay, l2),
        others=others,
        grain=GRAIN.optimizer,
    )


def lion(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    *,
    b1: float,
    b2: float,
    decay: float,
    step: float,
    bf16: np.ndarray | None = None,
) -> bool:
    """One Lion update of ``w`` from gradient ``g`` with momentum ``m``; see ``ops.lion_step``.

    With ``bf16`` (uint16, ``w``'s shape; float32 ``w`` only), the same pass
    also writes ``bf16 = to_bf16(w)``.
    """
    others = () if bf16 is None else (bf16,)
    if (others and not _bf16_copy_of(w, bf16)) or not _same_shape(w, g, m):
        return False
    return _launch(
        "lion_bf16" if others else "lion",
        w.size,
        (w, g, m),
        floats=(b1, 1.0 - b1, b2, 1.0 - b2, decay, step),
        others=others,
        grain=GRAIN.optimizer,
    )


# -- bf16 conversions ------------------------------------------------------------------


def to_bf16(x: np.ndarray, out: np.ndarray) -> bool:
    """float32 ``x`` rounded to bf16 bits in uint16 ``out``; see ``bf16.to_bf16_numpy``."""
    return _launch("to_bf16", x.size, (x,), others=(out,), grain=GRAIN.kernel)


def to_float32(x: np.ndarray, out: np.ndarray) -> bool:
    """bf16 bits ``x`` (uint16) as float32 values in ``out``; see ``bf16.to_float32_numpy``."""
    return _launch("to_float32", x.size, (out,), others=(x,), grain=GRAIN.kernel)


# -- data ------------------------------------------------------------------------------


def affine_rows(
    source: np.ndarray, rows: np.ndarray, shift: np.ndarray, scale: np.ndarray, out: np.ndarray
) -> bool:
    """``out[i] = (source[rows[i]] - shift) * scale`` for a uint8 source (N, D), rows clipped.

    A uint16 ``out`` receives the float32 values rounded to bf16 (``to_bf16``).
    """
    n, d = source.shape
    if out.dtype == np.uint16:
        return shift.dtype == np.float32 and _launch(
            "affine_rows_bf16",
            len(out),
            (shift, scale),
            sizes=(d, n),
            others=(out, source, np.asarray(rows, np.int64)),
            grain=GRAIN.rows(GRAIN.row_kernel, d),
        )
    return _launch(
        "affine_rows",
        len(out),
        (out, shift, scale),
        sizes=(d, n),
        others=(source, np.asarray(rows, np.int64)),
        grain=GRAIN.rows(GRAIN.row_kernel, d),
    )


def augment_rows(
    images: np.ndarray,
    rows: np.ndarray,
    flips: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
    shift: np.ndarray,
    scale: np.ndarray,
    out: np.ndarray,
) -> bool:
    """Gather uint8 images (N, H, W, C) by ``rows``, flip and shift each, then ``(v - shift) * scale``.

    A uint16 ``out`` receives the float32 values rounded to bf16 (``to_bf16``).
    """
    n, h, w, c = images.shape
    bf16 = out.dtype == np.uint16
    if bf16 and shift.dtype != np.float32:
        return False
    return _launch(
        "augment_rows_bf16" if bf16 else "augment_rows",
        len(rows),
        (shift, scale) if bf16 else (out, shift, scale),
        sizes=(h, w, c, n),
        others=(
            *((out,) if bf16 else ()),
            images,
            np.asarray(rows, np.int64),
            flips.view(np.uint8),
            np.asarray(dy, np.int64),
            np.asarray(dx, np.int64),
        ),
        grain=GRAIN.rows(GRAIN.row_kernel, h * w * c),
    )
