"""Layers: each forward next to its backward, in NumPy.

Shapes: N examples, D input features, H output features. Every layer works
in float32 (the default) and float64.
"""

from __future__ import annotations

import numpy as np

from numprop._fast import blas as _blas
from numprop._fast import kernels as _kernels
from numprop.errors import ConfigError
from numprop.nn.module import Module, Parameter

Seed = int | np.random.Generator | None


def as_rng(rng: Seed) -> np.random.Generator:
    """A Generator from a seed, a Generator, or None (fresh OS entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_input(x: np.ndarray, features: int, layer: str) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != features:
        shape = getattr(x, "shape", type(x).__name__)
        raise ConfigError(f"{layer} expects input of shape (N, {features}), got {shape}")


class Linear(Module):
    """Affine map ``y = x @ W + b``: x (N, D), W (D, H), b (H,), y (N, H).

    ``init``: "he" (std sqrt(2/D), for ReLU), "glorot" (std sqrt(2/(D+H)),
    for tanh/sigmoid), or "normal" (std ``scale``, 0.01 unless given: the
    classic ``randn * 0.01``). ``scale`` multiplies the He/Glorot std.
    """

    INITS = ("he", "glorot", "normal")

    def __init__(self, in_features: int, out_features: int, *, init: str = "he",
                 scale: float | None = None, rng: Seed = None, dtype=np.float32):
        if init not in self.INITS:
            raise ConfigError(f"unknown init {init!r}; choose one of {', '.join(self.INITS)}")
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"Linear needs positive sizes, got ({in_features}, {out_features})")
        self.in_features, self.out_features, self.init, self.scale = (
            in_features, out_features, init, scale)
        if init == "normal":
            std = 0.01 if scale is None else scale
        else:
            fan = in_features if init == "he" else in_features + out_features
            std = np.sqrt(2.0 / fan) * (1.0 if scale is None else scale)
        w = as_rng(rng).standard_normal((in_features, out_features)) * std
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(out_features, dtype), decay=False)

    def forward(self, x):
        _check_input(x, self.in_features, "Linear")
        self.x = x                                                     # (N, D)
        out = self._buf("out", (x.shape[0], self.out_features), self.weight.data.dtype)
        np.copyto(out, self.bias.data)                                 # (N, H): b in every row
        return _blas.gemm(x, self.weight.data, out, beta=1.0)          # out += x @ W

    def backward_params(self, dout):
        x = self.x
        self.weight.accumulate_matmul(x.T, dout)                       # (D, H) += (D, N) @ (N, H)
        ones = self._buf("ones", (x.shape[0],), dout.dtype)             # (N,): a partial batch gets a view
        ones.fill(1)
        self.bias.accumulate_matmul(ones[None, :], dout)               # (1, H) += (1, N) @ (N, H)

    def backward(self, dout):
        self.backward_params(dout)
        dx = self._buf("dx", self.x.shape, dout.dtype)
        return np.matmul(dout, self.weight.data.T, out=dx)             # (N, D)

    def config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "init": self.init, "scale": self.scale}


class ReLU(Module):
    """``max(x, 0)`` elementwise; the gradient flows where x > 0."""

    def forward(self, x):
        y = self._buf("out", x.shape, x.dtype)
        _kernels.elementwise("relu", (x, y), lambda x, y: np.maximum(x, 0, out=y),
                             numpy_grain=1 << 18)
        self.y = y
        return y

    def backward(self, dout):
        # The mask is made here, not in forward, so inference never pays for it;
        # multiplying by it is an order of magnitude faster than np.where.
        dx = self._buf("dx", dout.shape, dout.dtype)

        def piece(y, dout, dx, mask):
            np.greater(y, 0, out=mask)
            np.multiply(dout, mask, out=dx)

        _kernels.elementwise("relu_backward", (self.y, dout, dx), piece, numpy_grain=1 << 17,
                             scratch=(self._buf("mask", dout.shape, np.bool_),))
        return dx


class LeakyReLU(Module):
    """``x`` where x > 0, else ``slope * x``."""

    def __init__(self, slope: float = 0.01):
        self.slope = slope

    def forward(self, x):
        self.scale = self._buf("scale", x.shape, x.dtype)              # dy/dx: 1 or slope
        np.greater(x, 0, out=self.scale)
        self.scale *= 1 - self.slope
        self.scale += self.slope
        return np.multiply(x, self.scale, out=self._buf("out", x.shape, x.dtype))

    def backward(self, dout):
        return np.multiply(dout, self.scale, out=self._buf("dx", dout.shape, dout.dtype))

    def config(self):
        return {"slope": self.slope}


class Tanh(Module):
    """``tanh(x)``; its derivative is ``1 - y**2``."""

    def forward(self, x):
        self.y = np.tanh(x, out=self._buf("out", x.shape, x.dtype))
        return self.y

    def backward(self, dout):
        dx = self._buf("dx", dout.shape, dout.dtype)
        np.multiply(self.y, self.y, out=dx)
        np.subtract(1, dx, out=dx)
        return np.multiply(dx, dout, out=dx)


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``, computed without overflow; derivative ``y (1 - y)``."""

    def forward(self, x):
        y = self._buf("out", x.shape, x.dtype)
        # 0.5 * (1 + tanh(x / 2)) equals the sigmoid and never overflows.
        np.multiply(x, 0.5, out=y)
        np.tanh(y, out=y)
        y += 1
        y *= 0.5
        self.y = y
        return y

    def backward(self, dout):
        dx = self._buf("dx", dout.shape, dout.dtype)
        np.subtract(1, self.y, out=dx)
        dx *= self.y
        return np.multiply(dx, dout, out=dx)


def _times_mask(x: np.ndarray, mask: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out = x * mask on all cores (Dropout's forward with a fixed mask, and its backward)."""
    _kernels.elementwise("multiply", (x, mask, out), lambda x, m, o: np.multiply(x, m, out=o),
                         numpy_grain=1 << 17)
    return out


_GOLDEN, _MIX1, _MIX2 = (np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9,
                                                   0x94D049BB133111EB))


def dropout_bits(key: int, n: int) -> np.ndarray:
    """(n,) uint16 random bits for a Dropout mask, from one 63-bit key.

    Element e gets bits 16*(e % 4) .. 16*(e % 4) + 15 of ``mix64(key + e // 4)``,
    with SplitMix64's output function as mix64. Counter-based: any block of
    elements can be made on its own (on any core) and comes out the same, so
    the compiled kernel and this NumPy code agree bit for bit.
    """
    z = np.arange(-(-n // 4), dtype=np.uint64)                         # (ceil(n / 4),)
    z += np.uint64(key)
    z *= _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z.astype("<u8", copy=False).view("<u2")[:n]                 # lane 0 = low bits


class Dropout(Module):
    """Inverted dropout: zero each unit with probability ``p``, scale the rest by 1/(1-p).

    Identity in eval mode, so no rescaling is needed at test time.
    ``fix_mask = True`` reuses the last mask (for gradient checking).
    Masks come from 16-bit random integers (``dropout_bits``, keyed by one draw
    from ``rng`` per mask), so the drop probability is ``p`` rounded to a
    multiple of 1/65536, and the scale is exactly 1/(1 - that probability):
    the layer stays unbiased.
    """

    def __init__(self, p: float = 0.5, *, rng: Seed = None):
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"Dropout p must be in [0, 1), got {p}")
        self.p = p
        self.rng = as_rng(rng)
        self.fix_mask = False
        self.mask = None
        self._threshold = min(round(p * 65536), 65535)     # drop where bits < threshold
        self._scale = 65536 / (65536 - self._threshold)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self.mask = None
            return x
        out = self._buf("out", x.shape, x.dtype)
        if self.fix_mask and self.mask is not None and self.mask.shape == x.shape:
            return _times_mask(x, self.mask, out)
        key = int(self.rng.integers(0, 1 << 63))                       # one draw per mask
        mask = self._buf("mask", x.shape, x.dtype)                     # (N, H): 0 or 1/(1-p)
        self.mask = mask
        if _kernels.run("dropout", -(-x.size // 4), (x, mask, out), sizes=(x.size, key),
                        scalars=(self._threshold, self._scale), grain=1 << 14):
            return out
        bits = dropout_bits(key, x.size)
        X, M, O = x.reshape(-1), mask.reshape(-1), out.reshape(-1)

        def piece(lo, hi):
            np.greater_equal(bits[lo:hi], self._threshold, out=M[lo:hi])
            M[lo:hi] *= self._scale
            np.multiply(X[lo:hi], M[lo:hi], out=O[lo:hi])

        _blas.parallel_for(X.size, piece, grain=1 << 16)
        return out

    def backward(self, dout):
        if self.mask is None:
            return dout
        return _times_mask(dout, self.mask, self._buf("dx", dout.shape, dout.dtype))

    def config(self):
        return {"p": self.p}


class BatchNorm1d(Module):
    """Normalise each feature over the batch, then scale and shift: x (N, H).

    Training uses the batch mean and (biased) variance and updates running
    estimates (``momentum`` weight for the new batch, unbiased variance);
    eval mode uses the running estimates.
    """

    _buffers = ("running_mean", "running_var")

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 dtype=np.float32):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.gamma = Parameter(np.ones(num_features, dtype), decay=False)
        self.beta = Parameter(np.zeros(num_features, dtype), decay=False)
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)

    # The compiled kernels (numba) work on column blocks on all cores. The NumPy
    # code reduces per-column statistics over the batch on one core, with the
    # same arithmetic in the same order, and runs the elementwise passes on row
    # blocks on all cores (parallel_for).

    def forward(self, x):
        _check_input(x, self.num_features, "BatchNorm1d")
        n, h = x.shape
        if self.training and n < 2:
            raise ConfigError("BatchNorm1d needs at least 2 examples per batch in training")
        xc = self._buf("xc", x.shape, x.dtype)                         # x - mean, (N, H)
        out = self._buf("out", x.shape, x.dtype)
        self.xc = xc
        if not self.training:
            np.subtract(x, self.running_mean, out=xc)
            self.inv_std = (1.0 / np.sqrt(self.running_var + self.eps)).astype(x.dtype)
            np.multiply(xc, self.gamma.data * self.inv_std, out=out)
            out += self.beta.data
            return out
        mean, var = self._buf("mean", (h,), x.dtype), self._buf("var", (h,), x.dtype)
        inv_std = self.inv_std = self._buf("inv_std", (h,), x.dtype)
        arrays = (x, xc, out, mean, var, inv_std, self.gamma.data, self.beta.data)
        if not _kernels.run("batchnorm", h, arrays, scalars=(self.eps,), sizes=(n, h),
                            grain=max(8, (1 << 15) // n)):
            grain = max(1, (1 << 17) // h)
            np.divide(np.add.reduce(x, axis=0), n, out=mean)           # (H,)
            _blas.parallel_for(n, lambda lo, hi: np.subtract(x[lo:hi], mean, out=xc[lo:hi]), grain)
            np.divide(np.add.reduce(np.multiply(xc, xc, out=out), axis=0), n, out=var)  # biased
            np.divide(1.0, np.sqrt(var + self.eps), out=inv_std)
            scale, beta = self.gamma.data * inv_std, self.beta.data    # (H,)

            def piece(lo, hi):  # out = gamma * xhat + beta with xhat = xc * inv_std
                np.multiply(xc[lo:hi], scale, out=out[lo:hi])
                out[lo:hi] += beta

            _blas.parallel_for(n, piece, grain)
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += (m * n / (n - 1)) * var
        return out

    def backward(self, dout):
        n, h = dout.shape
        xc, inv_std = self.xc, self.inv_std
        dx = self._buf("dx", dout.shape, dout.dtype)
        if not self.training:  # running statistics are constants
            self.gamma.accumulate(np.einsum("nh,nh->h", dout, xc) * inv_std)
            self.beta.accumulate(dout.sum(axis=0))
            return np.multiply(dout, self.gamma.data * inv_std, out=dx)
        dgamma, dbeta = self._buf("dgamma", (h,), dout.dtype), self._buf("dbeta", (h,), dout.dtype)
        arrays = (dout, xc, dx, inv_std, self.gamma.data, dgamma, dbeta)
        if not _kernels.run("batchnorm_backward", h, arrays, sizes=(n, h),
                            grain=max(8, (1 << 15) // n)):
            np.add.reduce(dout, axis=0, out=dbeta)                     # (H,)
            np.add.reduce(np.multiply(dout, xc, out=dx), axis=0, out=dgamma)
            dgamma *= inv_std                                          # (H,) = sum dout * xhat
            # dx = gamma/std * (dout - mean(dout) - xhat * mean(dout * xhat))
            a, b, scale = inv_std * dgamma / n, dbeta / n, self.gamma.data * inv_std  # (H,)

            def piece(lo, hi):
                d = dx[lo:hi]
                np.multiply(xc[lo:hi], a, out=d)
                np.subtract(dout[lo:hi], d, out=d)
                d -= b
                d *= scale

            _blas.parallel_for(n, piece, max(1, (1 << 17) // h))
        self.gamma.accumulate(dgamma)
        self.beta.accumulate(dbeta)
        return dx

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...), e.g. images (N, 32, 32, 3) -> (N, 3072)."""

    def forward(self, x):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self.shape)


# The one table that turns layer names (in saved models and configs) into classes.
LAYERS: dict[str, type[Module]] = {
    cls.__name__: cls
    for cls in (Linear, ReLU, LeakyReLU, Tanh, Sigmoid, Dropout, BatchNorm1d, Flatten)
}
