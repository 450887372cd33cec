"""Parameters, the Module base class and Sequential.

Conventions used by every layer:

* Rows are examples: an input batch is (N, D), a Linear weight is (in, out).
* ``forward(x)`` caches what ``backward`` needs; ``backward(dout)`` returns the
  gradient with respect to the input and *adds* into each parameter's ``.grad``.
* For speed, a layer writes its outputs into buffers it owns and reuses: the
  array returned by ``forward`` or ``backward`` is overwritten by the layer's
  next call. Copy what you keep (``Module.predict`` returns fresh arrays).
  Layers never modify the arrays passed to them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from numprop._fast.blas import axpby
from numprop.errors import ConfigError
from numprop.nn import ops
from numprop.nn.precision import FP32, Precision


def work_buffer(store: dict, key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """An array kept in ``store`` under ``key``, reused while it is big enough.

    A smaller leading size (the last, partial batch of an epoch) gets a view of
    the first rows, which is still C-contiguous, so the next full batch finds
    the whole buffer again instead of allocating it anew.
    """
    buf = store.get(key)
    if (
        buf is None
        or buf.dtype != dtype
        or buf.ndim != len(shape)
        or buf.shape[1:] != shape[1:]
        or (shape and buf.shape[0] < shape[0])
    ):
        buf = store[key] = np.empty(shape, dtype)
    return buf[: shape[0]] if shape and buf.shape[0] != shape[0] else buf


@dataclass
class GradTarget:
    """Where a parameter's gradient goes instead of ``grad``: ``array = beta * array + gradient``.

    An optimizer hands these out during ``Optimizer.fused_backward()`` (SGD
    with momentum: its velocity, with beta = momentum), so the backward pass
    writes the gradient straight into the optimizer's state, in the same BLAS
    call that computes it. The first gradient to arrive is combined with
    ``beta``, later ones (shared weights) are added; ``received`` says whether
    any arrived.

    Parameters
    ----------
    array : ndarray
        The array the gradient is written into; same shape and dtype as the
        parameter's ``data``.
    beta : float
        Scale applied to ``array``'s old content by the first gradient to arrive.
    received : bool, default False
        Whether a gradient has arrived yet (set by the backward pass).
    """

    array: np.ndarray
    beta: float
    received: bool = False


class Parameter:
    """A trainable array ``data`` and its gradient ``grad``, of the same shape and dtype.

    ``decay`` says whether weight decay applies (True for weights, False for
    biases and normalisation parameters).

    Gradients: ``backward`` *adds* into ``grad`` through ``accumulate`` and
    ``accumulate_matmul``; ``zero_grad()`` starts it again from zero. While
    ``grad_target`` is set (by an optimizer's ``fused_backward()``), the
    gradient goes to that target instead and ``grad`` is left as it was
    (zeros after ``zero_grad()``).

    Under bf16 precision the products read ``bf16``, a copy of ``data``
    rounded to bf16 (``precision.BF16.weight``) that stays valid while
    ``bf16_fresh``: the optimizer's update rewrites it in the same pass as
    ``data``, so it is not rounded again every forward. Whoever changes
    ``data`` in place otherwise calls ``changed()``, which also drops
    ``bf16_packed``, the copy that inference packs for MKL.

    Parameters
    ----------
    data : ndarray
        The values, any shape (a Linear weight is ``(in, out)``, a bias ``(out,)``).
        Kept by reference, not copied.
    decay : bool, default True
        Whether weight decay applies to this parameter.
    """

    def __init__(self, data: np.ndarray, *, decay: bool = True):
        self._data = data
        self._grad = np.zeros_like(data)
        # zero_grad() only raises this flag: the next accumulation overwrites
        # the buffer instead of adding to it, which saves one pass over memory.
        self._grad_stale = False
        self.grad_target: GradTarget | None = None
        self.decay = decay
        self.bf16: np.ndarray | None = None  # uint16 bits of data, once bf16 products read it
        self.bf16_fresh = False
        self.bf16_packed = None  # bf16 packed for MKL, made at inference (precision.BF16.weight)

    @property
    def data(self) -> np.ndarray:
        """The values; assigning a new array marks derived copies (``bf16``) stale."""
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._data = value
        self.changed()

    def changed(self) -> None:
        """Mark ``data`` as changed in place: its bf16 copy is rounded again when next read."""
        self.bf16_fresh = False
        self.bf16_packed = None

    @property
    def grad(self) -> np.ndarray:
        """The accumulated gradient, same shape and dtype as ``data``; assigning copies into it."""
        if self._grad_stale:
            self._grad.fill(0)
            self._grad_stale = False
        return self._grad

    @grad.setter
    def grad(self, value: np.ndarray) -> None:
        np.copyto(self._grad, value)
        self._grad_stale = False

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return self.data.shape

    def zero_grad(self) -> None:
        """Reset ``grad`` to zero (lazily: the next gradient overwrites instead of adding)."""
        self._grad_stale = True

    def accumulate_matmul(self, a: np.ndarray, b: np.ndarray) -> None:
        """``grad += a @ b`` in one BLAS call, with no temporary array.

        Parameters
        ----------
        a : ndarray, shape (M, K)
        b : ndarray, shape (K, P)
            ``M * P`` must equal ``data.size`` (e.g. ``x.T`` and ``dout`` for a
            Linear weight of shape ``(M, P)``). Float, or both bf16 bits
            (``ops.matmul``): the gradient is float32 either way.
        """
        target, beta = self._target()
        ops.matmul(a, b, target.reshape(a.shape[0], b.shape[1]), beta=beta)

    def accumulate(self, g: np.ndarray) -> None:
        """``grad += g`` for gradients that are not a matrix product.

        Parameters
        ----------
        g : ndarray, same shape as ``data``
        """
        target, beta = self._target()
        if beta == 0.0:
            np.copyto(target, g)
        else:
            axpby(1.0, g, beta, target)

    def _target(self) -> tuple[np.ndarray, float]:
        """The array the next gradient goes into, and what to scale its old content by."""
        t = self.grad_target
        if t is not None:
            beta = 1.0 if t.received else t.beta
            t.received = True
            return t.array, beta
        beta = 0.0 if self._grad_stale else 1.0
        self._grad_stale = False
        return self._grad, beta

    def astype(self, dtype) -> None:
        """Convert ``data`` to ``dtype`` and reset ``grad`` to zeros of that dtype."""
        self.data = self.data.astype(dtype)
        self.bf16 = self.bf16_packed = None
        self._grad = np.zeros_like(self.data)
        self._grad_stale = False

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: a layer or a network with a hand-written forward and backward.

    Subclasses implement ``forward`` and ``backward``; parameters are the
    ``Parameter`` attributes, in the order they were assigned. Arrays named in
    ``_buffers`` (e.g. BatchNorm running statistics) are saved with the state.

    Attributes
    ----------
    training : bool
        True in training mode (the default), False after ``eval()``; changes
        what Dropout and BatchNorm1d do.
    precision : Precision
        What the matrix products compute in (``set_precision``); float32 by default.
    """

    training = True
    precision: Precision = FP32()
    _buffers: tuple[str, ...] = ()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute the output and cache what ``backward`` needs.

        Parameters
        ----------
        x : ndarray, shape (N, ...)
            A batch, one example per row.

        Returns
        -------
        ndarray, shape (N, ...)
            The output, in a buffer the module reuses on its next call.
        """
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Backpropagate through the last ``forward``; add parameter gradients into ``.grad``.

        Parameters
        ----------
        dout : ndarray, same shape as the last output
            Gradient of the loss with respect to the output.

        Returns
        -------
        ndarray, same shape as the last input
            Gradient of the loss with respect to the input, in a reused buffer.
        """
        raise NotImplementedError

    def backward_params(self, dout: np.ndarray) -> None:
        """Like ``backward`` when the input gradient is not needed (first layer).

        Layers override it to skip computing the input gradient.

        Parameters
        ----------
        dout : ndarray, same shape as the last output
        """
        self.backward(dout)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # -- structure -------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Yield ``(attribute name, module)`` for the direct submodules."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted name, Parameter)`` for this module and its children, recursively.

        Parameters
        ----------
        prefix : str, default ""
            Prepended to every name (e.g. ``"0."``).
        """
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        """All parameters, in the order of ``named_parameters``."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(dotted name, array)`` for the saved non-trainable arrays, recursively."""
        for name in self._buffers:
            yield prefix + name, getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}{name}.")

    def modules(self) -> Iterator[Module]:
        """Yield this module and all its descendants, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    # -- modes and state -------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=True``) or eval mode on this module and its children.

        Returns
        -------
        Module
            ``self``, for chaining.
        """
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        """Set eval mode (same as ``train(False)``); returns ``self``."""
        return self.train(False)

    def set_precision(self, precision) -> Module:
        """Make every matrix product of this module and its children use ``precision``.

        Parameters
        ----------
        precision : numprop.nn.precision.Precision
            ``FP32()`` (the default) or ``BF16()``: bf16 operands, float32 sums.
            Parameters, gradients and outputs stay in the model's dtype.

        Returns
        -------
        Module
            ``self``, for chaining.

        Raises
        ------
        ConfigError
            For bf16 on a model whose parameters are not float32.
        """
        if precision.float32_only:
            wrong = sorted({str(p.data.dtype) for p in self.parameters()} - {"float32"})
            if wrong:
                raise ConfigError(
                    f"{precision.name} products need a float32 model, this one is {wrong[0]}"
                )
        for m in self.modules():
            m.precision = precision
        for m in self.modules():  # nested Sequentials (a Residual's block) included
            m._precision_set(precision)
        return self

    def _precision_set(self, precision) -> None:
        """Called by ``set_precision`` on every module, after they all have ``precision``."""

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter to zero."""
        for p in self.parameters():
            p.zero_grad()

    def to(self, dtype) -> Module:
        """Convert parameters and buffers to ``dtype`` in place (float32 or float64).

        Gradients are reset to zero and the work buffers are dropped.

        Parameters
        ----------
        dtype : dtype-like
            ``np.float32`` or ``np.float64`` (or their names).

        Returns
        -------
        Module
            ``self``, for chaining.
        """
        dtype = np.dtype(dtype)
        for m in self.modules():
            for p in (v for v in vars(m).values() if isinstance(v, Parameter)):
                p.astype(dtype)
            for name in m._buffers:
                setattr(m, name, getattr(m, name).astype(dtype))
            m._work = {}
        return self

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the first parameter (float32 for a module without parameters)."""
        params = self.parameters()
        return params[0].data.dtype if params else np.dtype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all parameters and buffers, by dotted name.

        Returns
        -------
        dict of str to ndarray
            E.g. ``{"0.weight": (in, out) array, "0.bias": (out,) array, ...}``; the
            arrays are copies, safe to keep while training continues.
        """
        state = {name: p.data.copy() for name, p in self.named_parameters()}
        state.update((name, b.copy()) for name, b in self.named_buffers())
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays into this model; names and shapes must match exactly.

        Parameters
        ----------
        state : dict of str to ndarray
            As returned by ``state_dict()``. Values are cast to the model's dtype.

        Raises
        ------
        ConfigError
            If a name is missing or unexpected, or a shape differs.
        """
        targets = {name: p.data for name, p in self.named_parameters()}
        targets.update(self.named_buffers())
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        if missing or unexpected:
            raise ConfigError(
                f"state does not match the model: missing {missing}, unexpected {unexpected}"
            )
        for name, target in targets.items():
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ConfigError(
                    f"state '{name}' has shape {value.shape}, the model expects {target.shape}"
                )
            target[...] = value
        for _, p in self.named_parameters():
            p.changed()

    # -- inference -------------------------------------------------------
    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Outputs (N, C) for inputs (N, D), in eval mode, as a fresh array.

        The training mode is restored afterwards.

        Parameters
        ----------
        x : ndarray, shape (N, D)
        batch_size : int, default 1000
            Rows per forward pass (bounds the memory of the work buffers).

        Returns
        -------
        ndarray, shape (N, C)
            A new array, not a layer buffer; shape ``(0, 0)`` when N is 0.
        """
        was_training = self.training
        self.eval()
        try:
            chunks = [
                self.forward(x[i : i + batch_size]).copy() for i in range(0, len(x), batch_size)
            ]
        finally:
            self.train(was_training)
        return np.concatenate(chunks) if chunks else np.empty((0, 0), self.dtype)

    def summary(self, input_features: int | tuple[int, ...]) -> str:
        """A table of the layers: index, layer, output shape, parameters; then the totals.

        Output shapes come from a forward pass of a batch of two zero examples
        in eval mode, run on a copy of the model that shares the parameters'
        arrays: the model itself (its training mode, BatchNorm running
        statistics, cached activations and work buffers) is left as it was.
        A Sequential has one row per layer; any other module is one row.

        Parameters
        ----------
        input_features : int or tuple of int
            The shape of one example, without the batch axis (``3072`` for
            flattened CIFAR-10 images).

        Returns
        -------
        str
            The table; shapes are written with ``N`` for the batch size, e.g.
            ``(N, 1000)``, and counts with thousands separators.

        Raises
        ------
        ConfigError
            If a layer rejects an input of that shape (the message names the layer).
        """
        features = (input_features,) if np.ndim(input_features) == 0 else tuple(input_features)
        if not all(isinstance(f, (int, np.integer)) and f >= 1 for f in features):
            raise ConfigError(
                f"summary needs positive integer input features, got {input_features}"
            )
        # The copy shares every parameter's data and gradient, and starts with
        # empty work buffers; only small things (buffers, caches) are copied.
        memo: dict[int, object] = {}
        for m in self.modules():
            if "_work" in vars(m):
                memo[id(m._work)] = {}
            for p in (v for v in vars(m).values() if isinstance(v, Parameter)):
                memo[id(p)] = p
        probe = copy.deepcopy(self, memo).eval()
        layers = list(probe) if isinstance(probe, Sequential) else [probe]
        x = np.zeros((2, *features), self.dtype)  # (2, *features)
        rows = []
        for i, layer in enumerate(layers):
            name = (
                f"Sequential({len(layer)} layers)"
                if isinstance(layer, Sequential)
                else f"{type(layer).__name__}({layer.extra_repr()})"
            )
            try:
                x = layer.forward(x)
            except (ConfigError, ValueError) as exc:
                raise ConfigError(
                    f"summary: layer {i} ({name}) rejects an input of shape "
                    f"{_shape_text(x.shape)}: {exc}"
                ) from None
            count = sum(p.data.size for p in layer.parameters())
            rows.append((str(i), name, _shape_text(x.shape), f"{count:,}"))
        total = sum(p.data.size for p in self.parameters())
        header = ("#", "layer", "output shape", "parameters")
        widths = [max(len(r[j]) for r in [header, *rows]) for j in range(4)]

        def line(r):
            return (
                f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  "
                f"{r[2]:<{widths[2]}}  {r[3]:>{widths[3]}}"
            ).rstrip()

        rule = "-" * (sum(widths) + 6)
        lines = [
            f"input shape: {_shape_text((2, *features))}",
            line(header),
            rule,
            *map(line, rows),
            rule,
            f"total parameters: {total:,} (trainable: {total:,})",
        ]
        return "\n".join(lines)

    # -- helpers for subclasses ------------------------------------------
    def _buf(self, key: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """A work array owned by this module, reused while shape and dtype stay the same."""
        return work_buffer(self.__dict__.setdefault("_work", {}), key, shape, dtype)

    def config(self) -> dict:
        """The constructor arguments that rebuild this module (for saving)."""
        return {}

    def extra_repr(self) -> str:
        """The text inside the parentheses of ``repr`` (from ``config()`` by default)."""
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _shape_text(shape: tuple[int, ...]) -> str:
    """A batch shape with ``N`` for the batch size: (2, 1000) -> "(N, 1000)"."""
    return "(" + ", ".join(["N", *map(str, shape[1:])]) + ")"


class Sequential(Module):
    """Modules applied one after another; backward runs them in reverse.

    Parameters
    ----------
    *layers : Module
        In the order of the forward pass. Their parameters are named
        ``"<index>.<name>"`` (``"0.weight"``).

    Raises
    ------
    ConfigError
        If an argument is not a Module.
    """

    def __init__(self, *layers: Module):
        for layer in layers:
            if not isinstance(layer, Module):
                raise ConfigError(f"Sequential takes Modules, got {type(layer).__name__}")
        self.layers = list(layers)

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply each layer in turn.

        Parameters
        ----------
        x : ndarray, shape (N, D)

        Returns
        -------
        ndarray, shape (N, C)
            The last layer's output buffer.
        """
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout: np.ndarray, *, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the layers in reverse order.

        Parameters
        ----------
        dout : ndarray, shape (N, C)
            Gradient of the loss with respect to the output.
        input_grad : bool, default True
            If False, the first layer skips its input gradient
            (``backward_params``) and None is returned.

        Returns
        -------
        ndarray, shape (N, D), or None
            Gradient with respect to the input.
        """
        for layer in reversed(self.layers[1:]):
            dout = layer.backward(dout)
        if not self.layers:
            return dout
        if input_grad:
            return self.layers[0].backward(dout)
        self.layers[0].backward_params(dout)
        return None

    def _precision_set(self, precision) -> None:
        """Under bf16, a ReLU or GELU next to a Linear of this Sequential hands it bf16.

        A ReLU whose output goes straight to a Linear (through Dropout, the
        identity in eval mode) writes it as bf16 in eval mode (its backward reads
        its output in training); a GELU right before a Linear always does (its
        backward reads its input). In training a ReLU or GELU right after a
        Linear rounds the gradient it passes back in the same pass.
        """
        from numprop.nn.layers import GELU, Dropout, Linear, ReLU  # layers imports this module

        bf16 = precision.float32_only
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, (ReLU, GELU)):
                continue
            after = self.layers[i + 1 : i + 2]
            if isinstance(layer, ReLU):
                after = [m for m in self.layers[i + 1 :] if not isinstance(m, Dropout)]
            layer.bf16_output = bool(bf16 and after and isinstance(after[0], Linear))
            # In training, a Linear right before it takes its gradient as bf16, rounded
            # in the activation's backward pass.
            before = self.layers[i - 1] if i else None
            layer.bf16_grad = bool(bf16 and isinstance(before, Linear))
            if isinstance(before, Linear):
                before.grad_from = layer if bf16 else None

    def backward_params(self, dout: np.ndarray) -> None:
        """Backpropagate for the parameter gradients only (``backward(dout, input_grad=False)``)."""
        self.backward(dout, input_grad=False)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
