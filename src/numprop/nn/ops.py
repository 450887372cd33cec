"""The elementwise operations of layers and optimizers, each defined once.

Every operation here is written as its plain NumPy reference: the arithmetic
the docs quote. When numba is installed, a compiled twin in
``numprop._fast.kernels`` does the same arithmetic in the same order in one
fused pass on all cores, and the operation uses it; otherwise the NumPy code
runs, on row pieces spread over BLAS's threads (``parallel_elementwise``).
The two give the same bits (tests compare them), so a reader can take the
NumPy lines below as the definition of what every path computes.

Operations write into arrays the caller owns (``out=``, ``mask=``, ...): the
layers keep those buffers from one batch to the next.
"""

from __future__ import annotations

import math

import numpy as np

from numprop._fast import blas, kernels
from numprop._fast.grain import GRAIN

# -- ReLU ------------------------------------------------------------------------------


def relu(x: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    """``out = max(x, 0)`` elementwise (NaN stays NaN, as with ``np.maximum``).

    Parameters
    ----------
    x : ndarray, shape (N, H), float32 or float64
    out : ndarray, same shape and dtype as ``x``
        Written in full.

    Returns
    -------
    ndarray, shape (N, H)
        ``out``.
    """
    if not kernels.relu(x, out):
        blas.parallel_elementwise(
            lambda x, out: np.maximum(x, 0, out=out), (x, out), GRAIN.relu_numpy
        )
    return out


def relu_to_bf16(x: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    """``out = to_bf16(max(x, 0))``: a ReLU whose output only feeds a bf16 product.

    One pass where the compiled kernels run (the float32 result never goes to
    memory); the same bits as ``relu`` then ``to_bf16``.

    Parameters
    ----------
    x : ndarray, shape (N, H), float32
    out : ndarray, shape (N, H), uint16

    Returns
    -------
    ndarray, shape (N, H)
        ``out``.
    """
    if not kernels.relu_bf16(x, out):
        to_bf16(relu(x, out=np.empty_like(x)), out=out)
    return out


def relu_backward(
    y: np.ndarray,
    dout: np.ndarray,
    *,
    out: np.ndarray,
    mask: np.ndarray,
    bf16: np.ndarray | None = None,
) -> np.ndarray:
    """``out = dout * (y > 0)``; ``mask`` is bool scratch of the same shape.

    With ``bf16`` (uint16, float32 arrays), ``out`` is also rounded into it, in
    the same pass where the compiled kernels run: for a bf16 product next.

    Multiplying by the mask is an order of magnitude faster than ``np.where``.

    Parameters
    ----------
    y : ndarray, shape (N, H)
        The ReLU's output (or its input: the sign test is the same).
    dout : ndarray, shape (N, H)
        Gradient with respect to the ReLU's output.
    out : ndarray, shape (N, H), dtype of ``dout``
    mask : ndarray, shape (N, H), bool
        Scratch; its content afterwards is unspecified.

    Returns
    -------
    ndarray, shape (N, H)
        ``out``, the gradient with respect to the ReLU's input.
    """

    def piece(y, dout, out, mask):
        np.greater(y, 0, out=mask)
        np.multiply(dout, mask, out=out)

    if bf16 is not None and kernels.relu_backward_bf16(y, dout, out, bf16):
        return out
    if not kernels.relu_backward(y, dout, out):
        blas.parallel_elementwise(piece, (y, dout, out, mask), GRAIN.numpy)
    if bf16 is not None:
        to_bf16(out, out=bf16)
    return out


def multiply(x: np.ndarray, y: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    """``out = x * y`` elementwise, on all cores.

    Parameters
    ----------
    x, y : ndarray, shape (N, H)
        Of one shape and dtype.
    out : ndarray, shape (N, H)

    Returns
    -------
    ndarray, shape (N, H)
        ``out``.
    """
    if not kernels.multiply(x, y, out):
        blas.parallel_elementwise(
            lambda x, y, out: np.multiply(x, y, out=out), (x, y, out), GRAIN.numpy
        )
    return out


# -- GELU, tanh form ------------------------------------------------------------------
# y = x/2 (1 + tanh(c (x + a x^3))), c = sqrt(2/pi). Beyond |x| = 10 the tanh is +-1 to
# the last bit in float64, so its argument may use x clipped there: the same values, and
# x^3 cannot overflow to inf (which would make the derivative 0 * inf = NaN).
GELU_C, GELU_A, GELU_CLIP = math.sqrt(2 / math.pi), 0.044715, 10.0


def gelu(x: np.ndarray, *, t: np.ndarray, out: np.ndarray) -> np.ndarray:
    """GELU: ``t = tanh(c (xc + a xc^3))`` with ``xc = clip(x, -10, 10)``, ``out = (0.5 x) (1 + t)``.

    Three passes over each piece, on all cores: the tanh's argument (into
    ``t``), the tanh in place, the output. The tanh is NumPy's on both paths (it
    is vectorised there; a compiled one would be slower and differ in the last
    bit), so the compiled path gives the NumPy path's bits. A uint16 ``out``
    receives the output rounded to bf16 (for a bf16 product next), without a
    float32 copy where the compiled kernels run.

    Parameters
    ----------
    x : ndarray, shape (N, H), float32 or float64
    t : ndarray, shape (N, H), dtype of ``x``
        Receives the tanh, which the backward pass reads.
    out : ndarray, shape (N, H), dtype of ``x`` or uint16 (float32 ``x``)

    Returns
    -------
    ndarray, shape (N, H)
        ``out``.
    """

    def piece(x, t, out):
        # One launch on all cores, each piece doing the three steps on its range: a
        # compiled kernel called here runs on this piece's thread, unsplit.
        if not kernels.gelu_argument(x, t, c=GELU_C, a=GELU_A, clip=GELU_CLIP):
            xc = np.clip(x, -GELU_CLIP, GELU_CLIP)
            np.multiply(GELU_C, xc + GELU_A * (xc * xc * xc), out=t)
        np.tanh(t, out=t)
        if not kernels.gelu_output(x, t, out):
            if out.dtype == np.uint16:  # the float32 output first, then its rounding
                to_bf16(np.multiply(0.5 * x, 1 + t), out=out)
            else:
                np.multiply(0.5 * x, 1 + t, out=out)

    blas.parallel_elementwise(piece, (x, t, out), GRAIN.numpy)
    return out


def gelu_backward(
    x: np.ndarray,
    t: np.ndarray,
    dout: np.ndarray,
    *,
    out: np.ndarray,
    bf16: np.ndarray | None = None,
) -> np.ndarray:
    """GELU's backward: ``out = dout * (0.5 (1 + t) + 0.5 x dt)``, ``dt = d tanh(...) / dx``.

    ``dt = (1 - t^2) c (1 + 3a xc^2)``, with ``t`` and ``xc`` as in ``gelu``.
    With ``bf16`` (uint16, float32 arrays), ``out`` is also rounded into it, in
    the same pass where the compiled kernels run: for a bf16 product next.

    Parameters
    ----------
    x : ndarray, shape (N, H)
        GELU's input.
    t : ndarray, shape (N, H)
        The tanh ``gelu`` wrote.
    dout : ndarray, shape (N, H)
        Gradient with respect to GELU's output.
    out : ndarray, shape (N, H), dtype of ``x``
    bf16 : ndarray of uint16, shape (N, H), optional

    Returns
    -------
    ndarray, shape (N, H)
        ``out``, the gradient with respect to GELU's input.
    """

    def piece(x, t, dout, out):
        xc = np.clip(x, -GELU_CLIP, GELU_CLIP)
        dt = (1 - t * t) * GELU_C * (1 + 3 * GELU_A * (xc * xc))
        np.multiply(dout, 0.5 * (1 + t) + 0.5 * x * dt, out=out)

    scalars = dict(c=GELU_C, a3=3 * GELU_A, clip=GELU_CLIP)
    if bf16 is not None and kernels.gelu_backward(x, t, dout, out, **scalars, bits=bf16):
        return out
    if not kernels.gelu_backward(x, t, dout, out, **scalars):
        blas.parallel_elementwise(piece, (x, t, dout, out), GRAIN.numpy)
    if bf16 is not None:
        to_bf16(out, out=bf16)
    return out


# -- Dropout ---------------------------------------------------------------------------

_GOLDEN, _MIX1, _MIX2 = (
    np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
)


def dropout_bits(key: int, n: int) -> np.ndarray:
    """(n,) uint16 random bits for a Dropout mask, from one 63-bit key.

    Element e gets bits 16*(e % 4) .. 16*(e % 4) + 15 of ``mix64(key + e // 4)``,
    with SplitMix64's output function as mix64. Counter-based: any block of
    elements can be made on its own (on any core) and comes out the same, so
    the compiled kernel and this NumPy code agree bit for bit.

    Parameters
    ----------
    key : int
        In [0, 2**63).
    n : int
        Number of elements.

    Returns
    -------
    ndarray, shape (n,), uint16
        A view into a fresh array.
    """
    z = np.arange(-(-n // 4), dtype=np.uint64)  # (ceil(n / 4),)
    z += np.uint64(key)
    z *= _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z.astype("<u8", copy=False).view("<u2")[:n]  # lane 0 = low bits


def dropout(
    x: np.ndarray, *, key: int, threshold: int, scale: float, mask: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """``mask = (bits >= threshold) * scale`` and ``out = x * mask``, bits = ``dropout_bits(key)``.

    With 16-bit bits, ``threshold = p * 65536`` drops a unit with probability p
    and ``scale = 1 / (1 - p)`` keeps the expected output equal to x.

    Parameters
    ----------
    x : ndarray, shape (N, H)
    key : int
        In [0, 2**63); one per mask.
    threshold : int
        In [0, 65535].
    scale : float
        The value of a kept unit in the mask.
    mask : ndarray, shape (N, H), dtype of ``x``
        Receives the mask, 0 or ``scale``, for the backward pass.
    out : ndarray, shape (N, H), dtype of ``x``

    Returns
    -------
    ndarray, shape (N, H)
        ``out``.
    """

    def piece(bits, x, mask, out):
        np.greater_equal(bits, threshold, out=mask)
        mask *= scale
        np.multiply(x, mask, out=out)

    if not kernels.dropout(x, key, threshold, scale, mask, out):
        bits = dropout_bits(key, x.size).reshape(x.shape)
        blas.parallel_elementwise(piece, (bits, x, mask, out), GRAIN.dropout_numpy)
    return out


# -- BatchNorm -------------------------------------------------------------------------
# The compiled kernels work on column blocks on all cores. The NumPy code reduces
# per-column statistics over the batch on one core, with the same arithmetic in the
# same order, and runs the elementwise passes on row blocks on all cores.


def batchnorm_eval(
    x: np.ndarray, mean: np.ndarray, scale: np.ndarray, beta: np.ndarray, *, out: np.ndarray
) -> np.ndarray:
    """Batch normalisation with fixed statistics: ``out = (x - mean) * scale + beta``.

    One pass over x (N, H); ``mean``, ``scale`` (``gamma / sqrt(var + eps)``) and
    ``beta`` are (H,).

    Returns
    -------
    ndarray, shape (N, H)
        ``out``.
    """
    if kernels.batchnorm_eval(x, mean, scale, beta, out):
        return out

    def piece(lo, hi):
        np.subtract(x[lo:hi], mean, out=out[lo:hi])
        out[lo:hi] *= scale
        out[lo:hi] += beta

    blas.parallel_for(x.shape[0], piece, GRAIN.rows(GRAIN.numpy, x.shape[1]))
    return out


def batchnorm_train(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    *,
    xc: np.ndarray,
    out: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    inv_std: np.ndarray,
) -> np.ndarray:
    """Batch normalisation with the batch's statistics: x, xc, out (N, H); the rest (H,).

    ``mean = sum(x) / N``, ``xc = x - mean``, ``var = sum(xc**2) / N`` (biased),
    ``inv_std = 1 / sqrt(var + eps)``, ``out = xc * (gamma * inv_std) + beta``.

    Parameters
    ----------
    x : ndarray, shape (N, H)
    gamma, beta : ndarray, shape (H,)
        Scale and shift.
    eps : float
        Added to the variance.
    xc, out : ndarray, shape (N, H)
        Receive ``x - mean`` (kept for the backward) and the output.
    mean, var, inv_std : ndarray, shape (H,)
        Receive the batch statistics.

    Returns
    -------
    ndarray, shape (N, H)
        ``out``.
    """
    if kernels.batchnorm(x, eps, gamma, beta, xc=xc, out=out, mean=mean, var=var, inv_std=inv_std):
        return out
    n, h = x.shape
    rows = GRAIN.rows(GRAIN.numpy, h)
    np.divide(np.add.reduce(x, axis=0), n, out=mean)  # (H,)
    blas.parallel_for(n, lambda lo, hi: np.subtract(x[lo:hi], mean, out=xc[lo:hi]), rows)
    np.divide(np.add.reduce(np.multiply(xc, xc, out=out), axis=0), n, out=var)
    np.divide(1.0, np.sqrt(var + eps), out=inv_std)
    scale = gamma * inv_std  # (H,)

    def piece(lo, hi):
        np.multiply(xc[lo:hi], scale, out=out[lo:hi])
        out[lo:hi] += beta

    blas.parallel_for(n, piece, rows)
    return out


def batchnorm_train_backward(
    dout: np.ndarray,
    xc: np.ndarray,
    inv_std: np.ndarray,
    gamma: np.ndarray,
    *,
    dx: np.ndarray,
    dgamma: np.ndarray,
    dbeta: np.ndarray,
) -> np.ndarray:
    """Gradients of ``batchnorm_train``: dout, xc, dx (N, H); the rest (H,).

    With ``xhat = xc * inv_std``: ``dbeta = sum(dout)``, ``dgamma = sum(dout * xhat)``,
    ``dx = gamma * inv_std * (dout - mean(dout) - xhat * mean(dout * xhat))``.

    Parameters
    ----------
    dout : ndarray, shape (N, H)
        Gradient with respect to the output.
    xc : ndarray, shape (N, H)
        ``x - mean`` from the forward pass.
    inv_std, gamma : ndarray, shape (H,)
    dx : ndarray, shape (N, H)
        Receives the input gradient.
    dgamma, dbeta : ndarray, shape (H,)
        Receive the parameter gradients (overwritten, not added to).

    Returns
    -------
    ndarray, shape (N, H)
        ``dx``.
    """
    if kernels.batchnorm_backward(dout, xc, inv_std, gamma, dx=dx, dgamma=dgamma, dbeta=dbeta):
        return dx
    n, h = dout.shape
    np.add.reduce(dout, axis=0, out=dbeta)  # (H,)
    np.add.reduce(np.multiply(dout, xc, out=dx), axis=0, out=dgamma)
    dgamma *= inv_std  # sum dout * xhat
    a, b, scale = inv_std * dgamma / n, dbeta / n, gamma * inv_std  # (H,)

    def piece(lo, hi):
        d = dx[lo:hi]
        np.multiply(xc[lo:hi], a, out=d)
        np.subtract(dout[lo:hi], d, out=d)
        d -= b
        d *= scale

    blas.parallel_for(n, piece, GRAIN.rows(GRAIN.numpy, h))
    return dx


# -- LayerNorm -------------------------------------------------------------------------
# The compiled kernels work on row blocks on all cores and sum each row in float64;
# NumPy sums rows in float32 (pairwise, in an order of its own): the two agree to
# rounding, not to the bit (tested against float64 arithmetic). The parameters'
# gradients are column sums over the batch, added row by row on both paths: the same bits.


def layernorm(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    eps: float,
    *,
    xhat: np.ndarray,
    out: np.ndarray,
    inv_std: np.ndarray,
) -> np.ndarray:
    """Layer normalisation of each row: x, xhat, out (N, D); gamma, beta (D,); inv_std (N, 1).

    ``xhat = (x - mean) * inv_std`` with the row's mean and biased variance,
    ``inv_std = 1 / sqrt(var + eps)``, ``out = xhat * gamma + beta``.

    Parameters
    ----------
    x : ndarray, shape (N, D)
    gamma, beta : ndarray, shape (D,)
    eps : float
        Added to the variance.
    xhat, out : ndarray, shape (N, D)
        Receive the normalised rows (kept for the backward) and the output.
    inv_std : ndarray, shape (N, 1)
        Receives ``1 / sqrt(var + eps)`` per row.

    Returns
    -------
    ndarray, shape (N, D)
        ``out``.
    """
    if kernels.layernorm(x, eps, gamma, beta, xhat=xhat, out=out, inv_std=inv_std):
        return out
    d = x.shape[1]
    np.subtract(x, x.mean(axis=1, keepdims=True), out=xhat)  # x - mean, (N, D)
    np.einsum("nd,nd->n", xhat, xhat, out=inv_std[:, 0])  # sum of squares per row
    inv_std /= d  # the biased variance: divided by D, not D - 1
    inv_std += eps
    np.sqrt(inv_std, out=inv_std)
    np.divide(1, inv_std, out=inv_std)  # 1 / sqrt(var + eps)
    xhat *= inv_std  # (N, D)
    np.multiply(xhat, gamma, out=out)
    out += beta
    return out


def layernorm_backward(
    dout: np.ndarray,
    xhat: np.ndarray,
    inv_std: np.ndarray,
    gamma: np.ndarray,
    *,
    dx: np.ndarray,
    dgamma: np.ndarray,
    dbeta: np.ndarray,
) -> np.ndarray:
    """Gradients of ``layernorm``: dout, xhat, dx (N, D); inv_std (N, 1); the rest (D,).

    ``dgamma = sum(dout * xhat)`` and ``dbeta = sum(dout)`` over the batch; with
    ``g = dout * gamma``: ``dx = ((g - xhat * mean(g * xhat)) - mean(g)) * inv_std``,
    the means over each row: xhat depends on x through the row's mean and
    variance too, and those are the paths the two means take away from g.

    Parameters
    ----------
    dout : ndarray, shape (N, D)
        Gradient with respect to the output.
    xhat : ndarray, shape (N, D)
        The normalised rows from the forward pass.
    inv_std : ndarray, shape (N, 1)
    gamma : ndarray, shape (D,)
    dx : ndarray, shape (N, D)
        Receives the input gradient.
    dgamma, dbeta : ndarray, shape (D,)
        Receive the parameter gradients (overwritten, not added to).

    Returns
    -------
    ndarray, shape (N, D)
        ``dx``.
    """
    if kernels.layernorm_backward(dout, xhat, inv_std, gamma, dx=dx, dgamma=dgamma, dbeta=dbeta):
        return dx
    d = dout.shape[1]
    np.add.reduce(np.multiply(dout, xhat, out=dx), axis=0, out=dgamma)  # rows in order
    np.add.reduce(dout, axis=0, out=dbeta)
    g = np.multiply(dout, gamma)  # dL/dxhat, (N, D)
    g_mean = g.mean(axis=1, keepdims=True)  # (N, 1)
    gx_mean = np.einsum("nd,nd->n", g, xhat)[:, None] / d  # mean(g * xhat) per row, (N, 1)
    np.multiply(xhat, gx_mean, out=dx)
    np.subtract(g, dx, out=dx)
    dx -= g_mean
    dx *= inv_std
    return dx


# -- optimizer updates -----------------------------------------------------------------


def sgd_momentum_step(
    w: np.ndarray,
    v: np.ndarray,
    *,
    weight_decay: float,
    lr: float,
    scratch: np.ndarray,
    bf16: np.ndarray | None = None,
) -> None:
    """After ``v = momentum * v + grad``: ``v += weight_decay * w``, then ``w -= lr * v``.

    One pass over both arrays; ``scratch`` is an array of w's shape. With
    ``bf16``, the new ``w`` is also rounded into it, in the same pass where the
    compiled kernels run.

    Parameters
    ----------
    w : ndarray
        The parameter, updated in place.
    v : ndarray, shape of ``w``
        The velocity, already ``momentum * v + grad``; updated in place.
    weight_decay : float
        0 for no decay.
    lr : float
        Learning rate.
    scratch : ndarray, shape of ``w``
    bf16 : ndarray of uint16, shape of ``w``, optional
        Receives ``to_bf16(w)`` after the update (float32 ``w``).
    """
    step = -lr

    def piece(w, v, t):
        if weight_decay:
            np.multiply(w, weight_decay, out=t)
            v += t
        np.multiply(v, step, out=t)
        w += t

    if bf16 is None or not kernels.sgd_momentum(w, v, weight_decay, step, bf16):
        if not kernels.sgd_momentum(w, v, weight_decay, step):
            blas.parallel_elementwise(piece, (w, v, scratch), GRAIN.optimizer)
        if bf16 is not None:
            to_bf16(w, out=bf16)


def adam_step(
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
    scratch: np.ndarray,
    l2_scratch: np.ndarray | None = None,
    bf16: np.ndarray | None = None,
) -> None:
    """One Adam update of w from gradient g with moments m, v, all of one shape.

    ``g' = g + l2 * w`` (Adam's L2 term; 0 for AdamW), ``m = b1 m + (1 - b1) g'``,
    ``v = b2 v + (1 - b2) g'**2``, ``w = decay * w + step * m / (sqrt(v) + eps)``
    (``decay``: AdamW's ``1 - lr * wd``; bias corrections folded into step and eps).
    ``scratch`` (and ``l2_scratch`` when ``l2``) are arrays of w's shape. With
    ``bf16``, the new ``w`` is also rounded into it, in the same pass where the
    compiled kernels run.

    Parameters
    ----------
    w : ndarray
        The parameter, updated in place.
    g : ndarray, shape of ``w``
        The gradient (not modified).
    m, v : ndarray, shape of ``w``
        First and second moment estimates, updated in place.
    b1, b2 : float
        Decay rates of the moments, in [0, 1).
    eps : float
        Added to ``sqrt(v)``, already scaled by the bias correction.
    step : float
        Signed step (negative): ``-lr`` times the bias corrections.
    decay : float
        Factor on ``w`` before the step; 1.0 for none.
    l2 : float
        L2 coefficient added to the gradient; 0.0 for none.
    scratch : ndarray, shape of ``w``
    l2_scratch : ndarray, shape of ``w``, optional
        Needed when ``l2`` is not 0.
    bf16 : ndarray of uint16, shape of ``w``, optional
        Receives ``to_bf16(w)`` after the update (float32 ``w``).
    """

    def piece(w, g, m, v, t, g_l2=None):
        if l2:
            np.multiply(w, l2, out=g_l2)
            g_l2 += g
            g = g_l2
        m *= b1
        np.multiply(g, 1.0 - b1, out=t)
        m += t
        np.multiply(g, g, out=t)
        t *= 1.0 - b2
        v *= b2
        v += t
        np.sqrt(v, out=t)
        t += eps
        np.divide(m, t, out=t)
        t *= step
        if decay != 1.0:
            w *= decay
        w += t

    scalars = dict(b1=b1, b2=b2, eps=eps, step=step, decay=decay, l2=l2)
    if bf16 is None or not kernels.adam(w, g, m, v, **scalars, bf16=bf16):
        if not kernels.adam(w, g, m, v, **scalars):
            arrays = (w, g, m, v, scratch) + ((l2_scratch,) if l2 else ())
            blas.parallel_elementwise(piece, arrays, GRAIN.optimizer)
        if bf16 is not None:
            to_bf16(w, out=bf16)


def lion_step(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    *,
    b1: float,
    b2: float,
    decay: float,
    lr: float,
    scratch: np.ndarray,
    bf16: np.ndarray | None = None,
) -> None:
    """One Lion update of w from gradient g with momentum m, all of one shape.

    ``c = b1 m + (1 - b1) g``, ``w = decay * w - lr * sign(c)`` (``decay``:
    ``1 - lr * wd``, decoupled weight decay), then ``m = b2 m + (1 - b2) g``.
    One pass over the arrays where the compiled kernels run; ``scratch`` (w's
    shape) holds c on the NumPy path. With ``bf16``, the new ``w`` is also
    rounded into it, in the same pass where the compiled kernels run.

    Parameters
    ----------
    w : ndarray
        The parameter, updated in place.
    g : ndarray, shape of ``w``
        The gradient (not modified).
    m : ndarray, shape of ``w``
        The momentum, updated in place.
    b1, b2 : float
        The step's and the momentum's interpolation weights, in [0, 1).
    decay : float
        Factor on ``w`` before the step; 1.0 for none.
    lr : float
        Learning rate: the size of every entry's step.
    scratch : ndarray, shape of ``w``
    bf16 : ndarray of uint16, shape of ``w``, optional
        Receives ``to_bf16(w)`` after the update (float32 ``w``).
    """
    step = -lr

    def piece(w, g, m, c):
        np.multiply(m, b1, out=c)
        c += (1.0 - b1) * g  # c = b1 m + (1 - b1) g
        np.sign(c, out=c)
        if decay != 1.0:
            w *= decay
        c *= step
        w += c  # w = decay w - lr sign(c)
        m *= b2
        m += (1.0 - b2) * g

    scalars = dict(b1=b1, b2=b2, decay=decay, step=step)
    if bf16 is None or not kernels.lion(w, g, m, **scalars, bf16=bf16):
        if not kernels.lion(w, g, m, **scalars):
            blas.parallel_elementwise(piece, (w, g, m, scratch), GRAIN.optimizer)
        if bf16 is not None:
            to_bf16(w, out=bf16)


# -- matrix products and their precision -----------------------------------------------


def matmul(
    a: np.ndarray, b: np.ndarray, out: np.ndarray, *, alpha: float = 1.0, beta: float = 0.0
) -> np.ndarray:
    """``out = alpha * a @ b + beta * out`` in place, in the precision of the operands.

    Float operands (float32, float64) go to BLAS. bf16 operands, stored as
    ``np.uint16`` bit patterns (``to_bf16``), go to MKL's bf16 product, which
    multiplies exactly and sums in float32 (without MKL: the same sums, widened
    to float32 first).

    Parameters
    ----------
    a : ndarray, shape (M, K)
    b : ndarray, shape (K, N)
        Of one kind: both float of ``out``'s dtype, or both bf16 bits. Either
        may be a transposed view.
    out : ndarray, shape (M, N), float
    alpha, beta : float
        With ``beta == 0`` the old content of ``out`` is ignored.

    Returns
    -------
    ndarray
        ``out``.
    """
    if a.dtype == np.uint16:
        from numprop._fast import mkl

        return mkl.gemm_bf16(a, b, out, alpha=alpha, beta=beta)
    return blas.gemm(a, b, out, alpha=alpha, beta=beta)


def pack_bf16(bits: np.ndarray):
    """bf16 bits (K, N) packed for ``matmul``'s later products ``a @ bits``, or ``bits``.

    MKL packs its B operand into its own layout inside every product; a
    weight that stays the same from product to product (inference) is packed
    once instead (``mkl.PackedBF16``). The products give the same sums. Where
    packing is not possible or not worth it (no MKL, a small matrix), the
    bits come back as they are.
    """
    from numprop._fast import mkl

    packed = mkl.pack_bf16(bits)
    return bits if packed is None else packed


def to_bf16(x: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    """Round float32 ``x`` to bf16, to nearest with ties to even, as uint16 bit patterns.

    bf16 keeps float32's sign and 8 exponent bits and the top 7 of its 23
    mantissa bits: with ``u = x.view(uint32)``,
    ``out = (u + 0x7FFF + ((u >> 16) & 1)) >> 16``; NaN stays NaN.

    Parameters
    ----------
    x : ndarray, float32
    out : ndarray, same shape, uint16
        Written in full.

    Returns
    -------
    ndarray
        ``out``.
    """
    from numprop._fast import bf16

    return bf16.to_bf16(x, out=out)
