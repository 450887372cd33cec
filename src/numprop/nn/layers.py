"""Layers: each forward next to its backward, in NumPy.

Shapes: N examples, D input features, H output features. Every layer works
in float32 (the default) and float64.
"""

from __future__ import annotations

import numpy as np

from numprop.errors import ConfigError
from numprop.nn import ops
from numprop.nn.module import Module, Parameter, Sequential
from numprop.registry import Registry

Seed = int | np.random.Generator | None

# Names to classes, for saved files and configurations: a layer class must be
# registered to be saved (``register_layer``); activations also go by their
# lower-case names ("relu"), as ``--activation`` and ``models.mlp`` take them.
LAYERS = Registry("layer")
ACTIVATIONS = Registry("activation")


def register_layer(cls: type[Module] | None = None, *, name: str | None = None):
    """Register a Module subclass so ``numprop.save`` can write it and ``load`` rebuild it.

    Use as ``@register_layer`` on the class, or call ``register_layer(MyLayer)``.
    The class's ``config()`` must return the keyword arguments that rebuild it.

    Parameters
    ----------
    cls : type, optional
        The Module subclass; omitted when used as ``@register_layer(name=...)``.
    name : str, optional
        The name written to saved files; the class's ``__name__`` by default.

    Returns
    -------
    type or callable
        The class itself (so the decorator leaves it unchanged), or, without
        ``cls``, a decorator.

    Raises
    ------
    ConfigError
        If ``cls`` is not a Module subclass, or the name is already taken by
        another class.
    """

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise ConfigError(f"register_layer takes a Module subclass, got {cls!r}")
        return LAYERS.add(name or cls.__name__, cls)

    return decorate if cls is None else decorate(cls)


# A Sequential inside another layer (a Residual's block) is saved by its layers
# (``models.architecture``); registering it reserves the name for that.
register_layer(Sequential)


def register_activation(name: str):
    """Register an activation layer under ``name`` (and as a layer, under its class name).

    Used as ``@register_activation("relu")``; the name is what ``--activation``
    and ``models.mlp(activation=...)`` accept.

    Parameters
    ----------
    name : str
        Lower-case activation name.

    Returns
    -------
    callable
        A class decorator that returns the class unchanged.
    """

    def decorate(cls):
        return ACTIVATIONS.add(name, register_layer(cls))

    return decorate


def as_rng(rng: Seed) -> np.random.Generator:
    """A Generator from a seed, a Generator, or None (fresh OS entropy).

    Parameters
    ----------
    rng : int, numpy.random.Generator or None
        A Generator is returned as is (not copied).

    Returns
    -------
    numpy.random.Generator
    """
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_input(x: np.ndarray, features: int, layer: str) -> None:
    """Raise a ConfigError unless ``x`` is a 2-D array with ``features`` columns."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != features:
        shape = getattr(x, "shape", type(x).__name__)
        raise ConfigError(f"{layer} expects input of shape (N, {features}), got {shape}")


@register_layer
class Linear(Module):
    """Affine map ``y = x @ W + b``: x (N, D), W (D, H), b (H,), y (N, H).

    Backward: ``dW = x.T @ dout`` (D, H), ``db = dout.sum(axis=0)`` (H,),
    ``dx = dout @ W.T`` (N, D).

    Parameters
    ----------
    in_features : int
        D, the input size.
    out_features : int
        H, the output size.
    init : {"he", "glorot", "normal"}, default "he"
        Initial weights: "he" (std sqrt(2/D), for ReLU), "glorot" (std
        sqrt(2/(D+H)), for tanh/sigmoid), or "normal" (std ``scale``, 0.01
        unless given: the classic ``randn * 0.01``). The bias starts at zero.
    scale : float, optional
        Multiplies the He/Glorot std; for "normal", the std itself.
    rng : int, numpy.random.Generator or None
        Seed or generator for the initial weights.
    dtype : dtype-like, default np.float32

    Attributes
    ----------
    weight : Parameter, shape (D, H)
    bias : Parameter, shape (H,)
        Not decayed.

    Raises
    ------
    ConfigError
        For an unknown ``init`` or a size below 1; in ``forward``, for an input
        that is not a 2-D array with D columns.
    """

    INITS = ("he", "glorot", "normal")
    # A ReLU or GELU right after this layer that rounds dout to bf16 (set_precision).
    grad_from = None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        init: str = "he",
        scale: float | None = None,
        rng: Seed = None,
        dtype=np.float32,
    ):
        if init not in self.INITS:
            raise ConfigError(f"unknown init {init!r}; choose one of {', '.join(self.INITS)}")
        if in_features < 1 or out_features < 1:
            raise ConfigError(f"Linear needs positive sizes, got ({in_features}, {out_features})")
        self.in_features, self.out_features, self.init, self.scale = (
            in_features,
            out_features,
            init,
            scale,
        )
        if init == "normal":
            std = 0.01 if scale is None else scale
        else:
            fan = in_features if init == "he" else in_features + out_features
            std = np.sqrt(2.0 / fan) * (1.0 if scale is None else scale)
        w = as_rng(rng).standard_normal((in_features, out_features)) * std
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(out_features, dtype), decay=False)

    def forward(self, x):
        """x (N, D) -> y (N, H); x float, or bf16 bits (uint16) under bf16 precision."""
        _check_input(x, self.in_features, "Linear")
        if x.dtype == np.uint16 and not self.precision.float32_only:
            raise ConfigError("Linear got bf16 inputs (uint16): set_precision(BF16()) first")
        # The operands as the products read them: x and W themselves in float32,
        # rounded to bf16 under BF16 precision (set_precision); sums stay float32.
        self.x = self.precision.operand(self, "x_op", x)  # (N, D)
        self.w = self.precision.weight(self, self.weight)  # (D, H)
        out = self._buf("out", (x.shape[0], self.out_features), self.weight.data.dtype)
        np.copyto(out, self.bias.data)  # (N, H): b in every row
        return ops.matmul(self.x, self.w, out, beta=1.0)  # out += x @ W (one call)

    def backward_params(self, dout):
        """Add dW and db from dout (N, H), without computing dx."""
        x = self.x
        self.dout = dout  # (N, H): kept for diagnostics (training.diagnostics)
        after = self.grad_from  # the activation after this layer, when it rounds dout already
        if after is not None and after.dx_bf16 is not None and dout is after.dx:
            self._dout = after.dx_bf16  # (N, H) bf16, made with dout in one pass
        else:
            self._dout = self.precision.operand(self, "dout_op", dout)  # (N, H)
        self.weight.accumulate_matmul(x.T, self._dout)  # dW = x.T @ dout, (D, H)
        # db = dout summed over the batch, as the product ones @ dout: (1, N) @ (N, H),
        # from the float dout in every precision (a sum, not a product to speed up).
        ones = self._buf("ones", (x.shape[0],), dout.dtype)  # (N,): a partial batch gets a view
        ones.fill(1)
        self.bias.accumulate_matmul(ones[None, :], dout)

    def backward(self, dout):
        """dout (N, H) -> dx (N, D); adds dW and db."""
        self.backward_params(dout)
        dx = self._buf("dx", (dout.shape[0], self.in_features), dout.dtype)
        return ops.matmul(self._dout, self.w.T, dx)  # dx = dout @ W.T, (N, D)

    def config(self):
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "init": self.init,
            "scale": self.scale,
        }


@register_activation("relu")
class ReLU(Module):
    """``y = max(x, 0)``; the gradient flows where x > 0: ``dx = dout * (y > 0)``.

    Elementwise: any shape, e.g. (N, H). ``bf16_output`` (set by
    ``Sequential.set_precision`` when the next product reads bf16): in eval
    mode, y comes out as bf16 bits, rounded in the same pass.
    """

    bf16_output = False
    bf16_grad = False  # set by Sequential.set_precision: the Linear before reads bf16
    dx = dx_bf16 = None  # the last gradient passed back, and its bf16 rounding

    def forward(self, x):
        """x (N, H) -> y (N, H)."""
        if self.bf16_output and not self.training:  # nothing else reads y: no float copy
            return ops.relu_to_bf16(x, out=self._buf("out_bf16", x.shape, np.uint16))
        self.y = ops.relu(x, out=self._buf("out", x.shape, x.dtype))  # (N, H)
        return self.y

    def backward(self, dout):
        """dout (N, H) -> dx (N, H)."""
        # The mask is made here, not in forward, so inference never pays for it.
        dx = self._buf("dx", dout.shape, dout.dtype)
        # For a Linear before this layer that reads bf16, dx is also rounded in the
        # same pass (dx_bf16); the Linear takes it instead of rounding dx itself.
        bits = self._buf("dx_bf16", dout.shape, np.uint16) if self.bf16_grad else None
        self.dx, self.dx_bf16 = dx, bits
        return ops.relu_backward(
            self.y, dout, out=dx, mask=self._buf("mask", dout.shape, np.bool_), bf16=bits
        )


@register_activation("leaky_relu")
class LeakyReLU(Module):
    """``y = x`` where x > 0, else ``slope * x``; ``dx = dout * (1 or slope)``.

    Elementwise: any shape, e.g. (N, H).

    Parameters
    ----------
    slope : float, default 0.01
        Gradient for negative inputs.
    """

    def __init__(self, slope: float = 0.01):
        self.slope = slope

    def forward(self, x):
        """x (N, H) -> y (N, H)."""
        self.scale = self._buf("scale", x.shape, x.dtype)  # dy/dx: 1 or slope
        np.greater(x, 0, out=self.scale)
        self.scale *= 1 - self.slope
        self.scale += self.slope
        return np.multiply(x, self.scale, out=self._buf("out", x.shape, x.dtype))

    def backward(self, dout):
        """dout (N, H) -> dx (N, H)."""
        return np.multiply(dout, self.scale, out=self._buf("dx", dout.shape, dout.dtype))

    def config(self):
        return {"slope": self.slope}


@register_activation("tanh")
class Tanh(Module):
    """``y = tanh(x)``; its derivative is ``1 - y**2``.

    Elementwise: any shape, e.g. (N, H).
    """

    init = "glorot"  # the Linear layers before a saturating activation: Glorot, not He

    def forward(self, x):
        """x (N, H) -> y (N, H)."""
        self.y = np.tanh(x, out=self._buf("out", x.shape, x.dtype))
        return self.y

    def backward(self, dout):
        """dout (N, H) -> dx (N, H)."""
        dx = self._buf("dx", dout.shape, dout.dtype)
        np.multiply(self.y, self.y, out=dx)
        np.subtract(1, dx, out=dx)
        return np.multiply(dx, dout, out=dx)  # dout * (1 - y**2)


@register_activation("sigmoid")
class Sigmoid(Module):
    """``y = 1 / (1 + exp(-x))``, computed without overflow; derivative ``y (1 - y)``.

    Elementwise: any shape, e.g. (N, H).
    """

    init = "glorot"

    def forward(self, x):
        """x (N, H) -> y (N, H)."""
        y = self._buf("out", x.shape, x.dtype)
        # 0.5 * (1 + tanh(x / 2)) equals the sigmoid and never overflows.
        np.multiply(x, 0.5, out=y)
        np.tanh(y, out=y)
        y += 1
        y *= 0.5
        self.y = y
        return y

    def backward(self, dout):
        """dout (N, H) -> dx (N, H)."""
        dx = self._buf("dx", dout.shape, dout.dtype)
        np.subtract(1, self.y, out=dx)
        dx *= self.y
        return np.multiply(dx, dout, out=dx)  # dout * y (1 - y)


@register_activation("softmax")
class Softmax(Module):
    """Softmax over each row: ``y_ij = exp(x_ij) / sum_k exp(x_ik)``, x and y (N, H).

    The output layer's softmax belongs in the loss (``SoftmaxCrossEntropy``);
    this layer exists so the classic mistake, a softmax on a hidden layer, can
    be built, and seen by ``numprop doctor``. Backward, per row:
    ``dx = y * (dout - sum_k dout_k y_k)``.
    """

    def forward(self, x):
        """x (N, H) -> y (N, H), each row positive and summing to 1."""
        z = x - x.max(axis=1, keepdims=True)  # (N, H): exp cannot overflow
        e = np.exp(z, out=z)
        self.y = e / e.sum(axis=1, keepdims=True)
        return self.y

    def backward(self, dout):
        """dout (N, H) -> dx (N, H)."""
        inner = np.sum(dout * self.y, axis=1, keepdims=True)  # (N, 1)
        return self.y * (dout - inner)


@register_activation("identity")
class Identity(Module):
    """``y = x``: no activation (a stack of Linear layers is then one linear map)."""

    def forward(self, x):
        """x -> x."""
        return x

    def backward(self, dout):
        """dout -> dout."""
        return dout


@register_activation("gelu")
class GELU(Module):
    """Gaussian error linear unit, tanh form: ``y = x/2 (1 + tanh(c (x + 0.044715 x**3)))``.

    c = sqrt(2/pi). With t that tanh:
    ``dy/dx = (1 + t)/2 + x/2 (1 - t**2) c (1 + 3 * 0.044715 x**2)``
    (``ops.gelu``: the cubic terms take x clipped to +-10, where t is +-1 already).

    Elementwise: any shape, e.g. (N, H). ``bf16_output`` (set by
    ``Sequential.set_precision`` when the next layer is a Linear that reads
    bf16): y comes out as bf16 bits, rounded in the same pass, in training too,
    since the backward reads x and t, not y.
    """

    C, A, CLIP = ops.GELU_C, ops.GELU_A, ops.GELU_CLIP
    bf16_output = False
    bf16_grad = False  # set by Sequential.set_precision: the Linear before reads bf16
    dx = dx_bf16 = None  # the last gradient passed back, and its bf16 rounding

    def forward(self, x):
        """x (N, H) -> y (N, H)."""
        self.x = x  # (N, H)
        self.t = self._buf("t", x.shape, x.dtype)  # tanh(c (x + a x**3)), (N, H)
        if self.bf16_output:
            return ops.gelu(x, t=self.t, out=self._buf("out_bf16", x.shape, np.uint16))
        return ops.gelu(x, t=self.t, out=self._buf("out", x.shape, x.dtype))

    def backward(self, dout):
        """dout (N, H) -> dx (N, H)."""
        dx = self._buf("dx", dout.shape, dout.dtype)
        # For a Linear before this layer that reads bf16, dx is also rounded in the
        # same pass (dx_bf16); the Linear takes it instead of rounding dx itself.
        bits = self._buf("dx_bf16", dout.shape, np.uint16) if self.bf16_grad else None
        self.dx, self.dx_bf16 = dx, bits
        return ops.gelu_backward(self.x, self.t, dout, out=dx, bf16=bits)


@register_layer
class Dropout(Module):
    """Inverted dropout: zero each unit with probability ``p``, scale the rest by 1/(1-p).

    ``y = x * mask`` with ``mask = (u >= p) / (1 - p)``, u uniform in [0, 1);
    ``dx = dout * mask``. Identity in eval mode, so no rescaling is needed at
    test time. ``fix_mask = True`` reuses the last mask (for gradient checking).
    u comes in steps of 1/65536 (16 random bits per unit, ``ops.dropout_bits``,
    keyed by one draw from ``rng`` per mask), so the drop probability is ``p``
    rounded to a multiple of 1/65536 and the scale is exactly 1/(1 - that
    probability): the layer stays unbiased.

    Parameters
    ----------
    p : float, default 0.5
        Drop probability, in [0, 1); 0 makes the layer the identity.
    rng : int, numpy.random.Generator or None
        Seed or generator for the masks.

    Raises
    ------
    ConfigError
        If ``p`` is outside [0, 1).
    """

    def __init__(self, p: float = 0.5, *, rng: Seed = None):
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"Dropout p must be in [0, 1), got {p}")
        self.p = p
        self.rng = as_rng(rng)
        self.fix_mask = False
        self.mask = None
        self._threshold = min(round(p * 65536), 65535)  # drop where the bits are below it
        self._scale = 65536 / (65536 - self._threshold)

    def forward(self, x):
        """x (N, H) -> y (N, H); in eval mode (or p = 0), ``x`` itself."""
        if not self.training or self.p == 0.0:
            self.mask = None
            return x
        out = self._buf("out", x.shape, x.dtype)  # (N, H)
        if self.fix_mask and self.mask is not None and self.mask.shape == x.shape:
            return ops.multiply(x, self.mask, out=out)
        self.mask = self._buf("mask", x.shape, x.dtype)  # (N, H): 0 or 1/(1-p)
        key = int(self.rng.integers(0, 1 << 63))  # one draw per mask
        return ops.dropout(
            x, key=key, threshold=self._threshold, scale=self._scale, mask=self.mask, out=out
        )

    def backward(self, dout):
        """dout (N, H) -> dx (N, H); ``dout`` itself when no mask was applied."""
        if self.mask is None:
            return dout
        return ops.multiply(dout, self.mask, out=self._buf("dx", dout.shape, dout.dtype))

    def config(self):
        return {"p": self.p}


@register_layer
class BatchNorm1d(Module):
    """Normalise each feature over the batch, then scale and shift: x (N, H).

    Training: ``xhat = (x - mean) / sqrt(var + eps)`` with the batch's mean and
    (biased) variance, ``y = gamma * xhat + beta``, and running estimates
    updated (``momentum`` weight for the new batch, unbiased variance). Eval
    mode uses the running estimates, which are constants for the backward.

    Parameters
    ----------
    num_features : int
        H, the number of features (columns) of the input.
    eps : float, default 1e-5
        Added to the variance before the square root.
    momentum : float, default 0.1
        Weight of the new batch in the running estimates.
    dtype : dtype-like, default np.float32

    Attributes
    ----------
    gamma, beta : Parameter, shape (H,)
        Scale (starts at 1) and shift (starts at 0); not decayed.
    running_mean, running_var : ndarray, shape (H,)
        Buffers, saved with the state.

    Raises
    ------
    ConfigError
        For ``num_features`` below 1; in ``forward``, for an input that is not
        (N, H), or N < 2 in training.
    """

    _buffers = ("running_mean", "running_var")

    def __init__(
        self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float32
    ):
        if num_features < 1:
            raise ConfigError(
                f"BatchNorm1d needs a positive number of features, got {num_features}"
            )
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.gamma = Parameter(np.ones(num_features, dtype), decay=False)
        self.beta = Parameter(np.zeros(num_features, dtype), decay=False)
        self.running_mean = np.zeros(num_features, dtype)
        self.running_var = np.ones(num_features, dtype)

    def forward(self, x):
        """x (N, H) -> y (N, H)."""
        _check_input(x, self.num_features, "BatchNorm1d")
        n, h = x.shape
        if self.training and n < 2:
            raise ConfigError("BatchNorm1d needs at least 2 examples per batch in training")
        out = self._buf("out", x.shape, x.dtype)  # (N, H)
        if not self.training:  # y = (x - running mean) * gamma / sqrt(running var + eps) + beta
            self.x = x  # xc is only needed by a backward in eval mode: made there
            self.inv_std = (1.0 / np.sqrt(self.running_var + self.eps)).astype(x.dtype)
            scale = self.gamma.data * self.inv_std  # (H,)
            return ops.batchnorm_eval(x, self.running_mean, scale, self.beta.data, out=out)
        xc = self.xc = self._buf("xc", x.shape, x.dtype)  # x - mean, (N, H)
        mean, var = self._buf("mean", (h,), x.dtype), self._buf("var", (h,), x.dtype)
        self.inv_std = self._buf("inv_std", (h,), x.dtype)  # 1 / sqrt(var + eps), (H,)
        ops.batchnorm_train(
            x,
            self.gamma.data,
            self.beta.data,
            self.eps,
            xc=xc,
            out=out,
            mean=mean,
            var=var,
            inv_std=self.inv_std,
        )
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += m * mean
        self.running_var *= 1 - m
        self.running_var += (m * n / (n - 1)) * var
        return out

    def backward(self, dout):
        """dout (N, H) -> dx (N, H); adds dgamma and dbeta."""
        n, h = dout.shape
        inv_std = self.inv_std
        dx = self._buf("dx", dout.shape, dout.dtype)  # (N, H)
        if not self.training:  # running statistics are constants: y is affine in x
            xc = np.subtract(self.x, self.running_mean, out=self._buf("xc", dout.shape, dout.dtype))
            self.gamma.accumulate(np.einsum("nh,nh->h", dout, xc) * inv_std)
            self.beta.accumulate(dout.sum(axis=0))
            return np.multiply(dout, self.gamma.data * inv_std, out=dx)
        dgamma, dbeta = self._buf("dgamma", (h,), dout.dtype), self._buf("dbeta", (h,), dout.dtype)
        ops.batchnorm_train_backward(
            dout, self.xc, inv_std, self.gamma.data, dx=dx, dgamma=dgamma, dbeta=dbeta
        )
        self.gamma.accumulate(dgamma)
        self.beta.accumulate(dbeta)
        return dx

    def config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}


@register_layer
class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...), e.g. images (N, 32, 32, 3) -> (N, 3072)."""

    def forward(self, x):
        """x (N, d1, d2, ...) -> a (N, d1*d2*...) view."""
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        """dout (N, d1*d2*...) -> dx (N, d1, d2, ...), a view."""
        return dout.reshape(self.shape)


@register_layer
class LayerNorm(Module):
    """Normalise each example over its features, then scale and shift: x (N, D).

    Per row: ``xhat = (x - mean) / sqrt(var + eps)`` with the row's mean and
    (biased) variance over its D features, ``y = gamma * xhat + beta``. Unlike
    BatchNorm1d it keeps no running statistics: training and eval compute the
    same thing, and each example is normalised on its own, whatever the batch.
    Backward, per row, with ``g = dout * gamma``:
    ``dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)``.

    Parameters
    ----------
    features : int
        D, the number of features (columns) of the input.
    eps : float, default 1e-5
        Added to the variance before the square root.
    dtype : dtype-like, default np.float32

    Attributes
    ----------
    gamma, beta : Parameter, shape (D,)
        Scale (starts at 1) and shift (starts at 0); not decayed.

    Raises
    ------
    ConfigError
        For ``features`` below 1 or ``eps`` not positive; in ``forward``, for an
        input that is not (N, D).
    """

    def __init__(self, features: int, eps: float = 1e-5, *, dtype=np.float32):
        if features < 1:
            raise ConfigError(f"LayerNorm needs a positive number of features, got {features}")
        if not eps > 0:
            raise ConfigError(f"LayerNorm eps must be positive, got {eps}")
        self.features, self.eps = features, eps
        self.gamma = Parameter(np.ones(features, dtype), decay=False)
        self.beta = Parameter(np.zeros(features, dtype), decay=False)

    def forward(self, x):
        """x (N, D) -> y (N, D)."""
        _check_input(x, self.features, "LayerNorm")
        n, d = x.shape
        self.xhat = self._buf("xhat", x.shape, x.dtype)  # (N, D): kept for backward
        self.inv_std = self._buf("inv_std", (n, 1), x.dtype)  # 1 / sqrt(var + eps), (N, 1)
        out = self._buf("out", x.shape, x.dtype)  # (N, D)
        return ops.layernorm(
            x,
            self.gamma.data,
            self.beta.data,
            self.eps,
            xhat=self.xhat,
            out=out,
            inv_std=self.inv_std,
        )

    def backward(self, dout):
        """dout (N, D) -> dx (N, D); adds dgamma and dbeta."""
        d = dout.shape[1]
        dgamma = self._buf("dgamma", (d,), dout.dtype)  # sum over the batch of dout * xhat
        dbeta = self._buf("dbeta", (d,), dout.dtype)  # sum over the batch of dout
        dx = self._buf("dx", dout.shape, dout.dtype)  # (N, D)
        ops.layernorm_backward(
            dout, self.xhat, self.inv_std, self.gamma.data, dx=dx, dgamma=dgamma, dbeta=dbeta
        )
        self.gamma.accumulate(dgamma)
        self.beta.accumulate(dbeta)
        return dx

    def config(self):
        return {"features": self.features, "eps": self.eps}


@register_layer
class Residual(Module):
    """A skip connection around a block: ``y = x + inner(x)``, x and y (N, D).

    Backward: the gradient reaches x both directly and through the block,
    ``dx = dout + inner.backward(dout)``. The block must keep the shape of its
    input (e.g. LayerNorm -> Linear(D, 4D) -> GELU -> Linear(4D, D)). Its
    parameters are this layer's, named ``"inner.<name>"`` (``"inner.1.weight"``).

    Parameters
    ----------
    inner : Module
        The block, often a Sequential; saved with the model when every layer
        in it is registered.

    Raises
    ------
    ConfigError
        If ``inner`` is not a Module; in ``forward``, if its output's shape
        differs from its input's.
    """

    def __init__(self, inner: Module):
        if not isinstance(inner, Module):
            raise ConfigError(f"Residual takes a Module, got {type(inner).__name__}")
        self.inner = inner

    def forward(self, x):
        """x (N, D) -> y (N, D) = x + inner(x), in this layer's own buffer."""
        fx = self.inner.forward(x)  # (N, D)
        if fx.shape != x.shape:
            raise ConfigError(
                f"Residual: the block maps shape {x.shape[1:]} to {fx.shape[1:]}; "
                f"it must keep the shape to be added to its input"
            )
        # Added into a buffer of ours: the block's output buffer (or x itself, for
        # a block that returns its input) belongs to someone else.
        return np.add(x, fx, out=self._buf("out", fx.shape, fx.dtype))

    def backward(self, dout):
        """dout (N, D) -> dx (N, D) = dout + inner.backward(dout); adds the block's gradients."""
        dinner = self.inner.backward(dout)  # (N, D)
        return np.add(dout, dinner, out=self._buf("dx", dout.shape, dout.dtype))

    def config(self):
        return {"inner": self.inner}  # a Module: models.architecture describes it in turn

    def extra_repr(self):
        layers = self.inner.layers if isinstance(self.inner, Sequential) else [self.inner]
        return " -> ".join(type(layer).__name__ for layer in layers)
