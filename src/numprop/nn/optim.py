"""Optimizers over named parameters: SGD (momentum, Nesterov), Adam, AdamW, Lion.

All updates are in place, in the parameters' dtype, with no allocation per
step after the first. Weight decay applies to parameters with ``decay=True``
(weights), not to biases or BatchNorm parameters, unless ``decay_all=True``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import contextmanager

import numpy as np

from numprop._fast.blas import axpby
from numprop.errors import ConfigError
from numprop.nn import ops
from numprop.nn.module import GradTarget, Parameter
from numprop.registry import Registry

Params = Iterable[tuple[str, Parameter]] | Iterable[Parameter]


def _named(params: Params) -> list[tuple[str, Parameter]]:
    """``(name, Parameter)`` pairs from either form of ``params``; ConfigError otherwise."""
    named = []
    for i, item in enumerate(params):
        if isinstance(item, Parameter):
            named.append((str(i), item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Parameter):
            named.append((str(item[0]), item[1]))
        else:
            raise ConfigError("optimizers take model.named_parameters() or a list of Parameters")
    if not named:
        raise ConfigError("the optimizer got no parameters")
    return named


class Optimizer:
    """Base class: holds named parameters, the learning rate and per-parameter state.

    Subclasses list their per-parameter arrays in ``state_names`` (zeros of
    each parameter's shape, in ``state[name]``) and implement ``_update``.

    Parameters
    ----------
    params : iterable of (str, Parameter) or of Parameter
        ``model.named_parameters()`` (names key the saved state) or a list of
        Parameters (named by position).
    lr : float
        Learning rate, > 0; a schedule may change ``self.lr`` between steps.
    weight_decay : float, default 0.0
        Decay coefficient, >= 0; what it means is up to the subclass.
    decay_all : bool, default False
        Decay every parameter, not only those with ``decay=True``.

    Attributes
    ----------
    steps : int
        Number of ``step()`` calls so far (Adam's bias correction counts them).

    Raises
    ------
    ConfigError
        For ``lr <= 0``, ``weight_decay < 0``, no parameters, or items that are
        not Parameters.
    """

    state_names: tuple[str, ...] = ()

    def __init__(
        self, params: Params, lr: float, weight_decay: float = 0.0, decay_all: bool = False
    ):
        if not lr > 0:
            raise ConfigError(f"learning rate must be positive, got {lr}")
        if weight_decay < 0:
            raise ConfigError(f"weight decay must be >= 0, got {weight_decay}")
        self.params = _named(params)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.decay_all = decay_all
        self.steps = 0
        self.state = {
            name: {k: np.zeros_like(p.data) for k in self.state_names} for name, p in self.params
        }
        largest = max(self.params, key=lambda np_: np_[1].data.size)[1].data
        self._scratch = np.empty(largest.size, largest.dtype)

    def _decay(self, p: Parameter) -> float:
        """The weight decay coefficient that applies to ``p`` (0 where it is exempt)."""
        return self.weight_decay if (p.decay or self.decay_all) else 0.0

    def _tmp(self, p: Parameter) -> np.ndarray:
        """Scratch space shaped like p (shared by all parameters)."""
        if self._scratch.dtype != p.data.dtype:
            self._scratch = self._scratch.astype(p.data.dtype)
        return self._scratch[: p.data.size].reshape(p.data.shape)

    def zero_grad(self) -> None:
        """Reset the gradient of every parameter to zero."""
        for _, p in self.params:
            p.zero_grad()

    def step(self) -> None:
        """Update every parameter in place from its gradient (or fused target).

        A parameter with a bf16 copy (``Parameter.bf16``, read by bf16
        products) gets it rewritten too: by the update kernels that can, in the
        same pass; after the update by the others.
        """
        self.steps += 1
        for name, p in self.params:
            p.changed()
            self._update(p, self.state[name])
            if p.bf16 is not None and not p.bf16_fresh:
                ops.to_bf16(p.data, out=p.bf16)
                p.bf16_fresh = True

    @staticmethod
    def _bf16_out(p: Parameter) -> np.ndarray | None:
        """Where a fused update writes ``p``'s new bf16 copy, or None when it has none.

        The caller's update then writes it, so the copy is fresh again.
        """
        if p.bf16 is None:
            return None
        p.bf16_fresh = True
        return p.bf16

    def _update(self, p: Parameter, state: dict) -> None:
        """Update ``p`` in place from its gradient and its ``state`` arrays."""
        raise NotImplementedError

    @contextmanager
    def fused_backward(self):
        """Inside this block, gradients may go straight into optimizer state.

        The optimizer sets a ``GradTarget`` on the parameters it can fuse, and
        the backward pass accumulates into it instead of ``p.grad``, which
        stays as it was (zeros after ``zero_grad()``); the next ``step()``
        consumes what arrived. For training loops: run backward inside the
        block, then ``step()``. Optimizers that cannot fuse leave gradients in
        ``p.grad`` as usual (this base version sets no targets).

        Examples
        --------
        ::

            opt.zero_grad()
            with opt.fused_backward():
                model.backward_params(loss.backward())
            opt.step()
        """
        yield

    def state_dict(self) -> dict:
        """The optimizer's state, for saving and resuming.

        Returns
        -------
        dict
            ``{"type": class name, "lr": float, "steps": int, "arrays": {...}}``,
            the arrays (copies) keyed ``"<state name>.<parameter name>"`` (``"m.0.weight"``),
            each of its parameter's shape.
        """
        arrays = {f"{k}.{name}": v for name, st in self.state.items() for k, v in st.items()}
        return {
            "type": type(self).__name__,
            "lr": self.lr,
            "steps": self.steps,
            "arrays": {k: v.copy() for k, v in arrays.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore ``lr``, ``steps`` and the state arrays (copied in) from ``state_dict()``.

        Raises
        ------
        ConfigError
            If the state is for another optimizer class, or an array is missing
            or has the wrong shape.
        """
        if state.get("type") != type(self).__name__:
            raise ConfigError(
                f"optimizer state is for {state.get('type')}, not {type(self).__name__}"
            )
        self.lr, self.steps = float(state["lr"]), int(state["steps"])
        for name, st in self.state.items():
            for k, v in st.items():
                key = f"{k}.{name}"
                if key not in state["arrays"] or state["arrays"][key].shape != v.shape:
                    raise ConfigError(f"optimizer state '{key}' is missing or has the wrong shape")
                v[...] = state["arrays"][key]


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    With momentum m (PyTorch's convention): ``v = m v + g + wd W``;
    ``W -= lr v`` (Nesterov: ``W -= lr (g + wd W + m v)``). Without momentum:
    ``W -= lr (g + wd W)``.

    Parameters
    ----------
    params : iterable of (str, Parameter) or of Parameter
        ``model.named_parameters()`` or a list of Parameters.
    lr : float, default 0.01
    momentum : float, default 0.0
        In [0, 1); 0 for plain SGD (no velocity state).
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0``.
    weight_decay : float, default 0.0
        L2 coefficient ``wd``, added to the gradient.
    decay_all : bool, default False
        Decay biases and normalisation parameters too.

    Raises
    ------
    ConfigError
        For momentum outside [0, 1), Nesterov without momentum, or the base
        class's checks.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        decay_all: bool = False,
    ):
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        if nesterov and momentum == 0:
            raise ConfigError("Nesterov momentum needs momentum > 0")
        self.state_names = ("velocity",) if momentum else ()
        self.momentum, self.nesterov = momentum, nesterov
        super().__init__(params, lr, weight_decay, decay_all)
        self._fused: dict[int, GradTarget] = {}  # id(p) -> its target in the last fused backward

    @contextmanager
    def fused_backward(self):
        """With plain momentum, the backward pass accumulates into the velocity."""
        # Plain momentum: the backward GEMM computes v = m v + x.T @ dout in one
        # call, so the gradient is never written to memory on its own.
        if not self.momentum or self.nesterov:
            yield
            return
        for name, p in self.params:
            p.grad_target = self._fused[id(p)] = GradTarget(
                self.state[name]["velocity"], self.momentum
            )
        try:
            yield
        finally:
            for _, p in self.params:
                p.grad_target = None

    def _update(self, p, state):
        wd = self._decay(p)
        if not self.momentum:
            if wd:
                axpby(-self.lr * wd, p.data, 1.0, p.data)
            axpby(-self.lr, p.grad, 1.0, p.data)
            return
        v = state["velocity"]
        fused = self._fused.pop(id(p), None)
        if fused is not None:  # fused: v = m v + g already, unless no gradient came
            if not fused.received:
                v *= self.momentum
        else:
            axpby(1.0, p.grad, self.momentum, v)
        if self.nesterov:  # W -= lr (g + wd W + m v)
            if wd:
                axpby(wd, p.data, 1.0, v)
            g = self._tmp(p)
            np.multiply(p.data, wd, out=g)
            g += p.grad
            axpby(self.momentum, v, 1.0, g)
            axpby(-self.lr, g, 1.0, p.data)
            return
        ops.sgd_momentum_step(
            p.data, v, weight_decay=wd, lr=self.lr, scratch=self._tmp(p), bf16=self._bf16_out(p)
        )


class Adam(Optimizer):
    """Adam (Kingma & Ba): bias-corrected moment estimates.

    ``weight_decay`` here is L2 added to the gradient (as in the paper and
    PyTorch's Adam); for decoupled decay use ``AdamW``.

    With ``g`` the gradient at step t: ``m = b1 m + (1 - b1) g``,
    ``v = b2 v + (1 - b2) g**2``, ``W -= lr m_hat / (sqrt(v_hat) + eps)`` with
    ``m_hat = m / (1 - b1**t)`` and ``v_hat = v / (1 - b2**t)``.

    Parameters
    ----------
    params : iterable of (str, Parameter) or of Parameter
        ``model.named_parameters()`` or a list of Parameters.
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        ``(b1, b2)``, each in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0.0
    decay_all : bool, default False
        Decay biases and normalisation parameters too.

    Raises
    ------
    ConfigError
        For betas outside [0, 1), or the base class's checks.
    """

    state_names = ("m", "v")
    decoupled = False

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decay_all: bool = False,
    ):
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ConfigError(f"Adam betas must be in [0, 1), got {betas}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)
        self._l2: dict[int, np.ndarray] = {}
        super().__init__(params, lr, weight_decay, decay_all)

    def _update(self, p, state):
        b1, b2 = self.betas
        wd = self._decay(p)
        decay = 1.0 - self.lr * wd if (wd and self.decoupled) else 1.0  # AdamW: W *= 1 - lr wd
        l2 = wd if (wd and not self.decoupled) else 0.0  # Adam: g + wd W
        # W -= lr m_hat / (sqrt(v_hat) + eps), with the bias corrections folded
        # into two scalars: lr sqrt(bc2)/bc1 * m / (sqrt(v) + eps sqrt(bc2)).
        bc1, bc2 = 1.0 - b1**self.steps, 1.0 - b2**self.steps
        # Python floats: NumPy then computes in the parameters' dtype, as the kernel does.
        step, eps = -self.lr * math.sqrt(bc2) / bc1, self.eps * math.sqrt(bc2)
        if l2 and id(p) not in self._l2:
            self._l2[id(p)] = np.empty_like(p.data)
        ops.adam_step(
            p.data,
            p.grad,
            state["m"],
            state["v"],
            b1=b1,
            b2=b2,
            eps=eps,
            step=step,
            decay=decay,
            l2=l2,
            scratch=self._tmp(p),
            l2_scratch=self._l2.get(id(p)),
            bf16=self._bf16_out(p),
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``W *= 1 - lr wd`` each step.

    Parameters are those of ``Adam``; ``weight_decay`` defaults to 0.01 and is
    not added to the gradient.
    """

    decoupled = True

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        decay_all: bool = False,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, decay_all)


class Lion(Optimizer):
    """LION (Chen et al. 2023): every entry moves by ``lr``, in the sign of an interpolated momentum.

    With ``g`` the gradient: ``c = b1 m + (1 - b1) g``, ``W -= lr (sign(c) + wd W)``,
    then ``m = b2 m + (1 - b2) g``. The step uses ``b1`` and the momentum it keeps
    uses the slower ``b2``, so the latest gradient weighs more in the step than
    in the memory. Weight decay is decoupled, as in AdamW. Since the sign gives
    every entry a step of full size, the paper uses a learning rate 3 to 10
    times smaller than AdamW's and a weight decay as many times larger.

    Parameters
    ----------
    params : iterable of (str, Parameter) or of Parameter
        ``model.named_parameters()`` or a list of Parameters.
    lr : float, default 1e-4
    betas : (float, float), default (0.9, 0.99)
        ``(b1, b2)``, each in [0, 1).
    weight_decay : float, default 0.0
        ``wd``; the decay of each step is ``lr * wd * W``.
    decay_all : bool, default False
        Decay biases and normalisation parameters too.

    Raises
    ------
    ConfigError
        For betas outside [0, 1), or the base class's checks.
    """

    state_names = ("m",)

    def __init__(
        self,
        params: Params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        decay_all: bool = False,
    ):
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ConfigError(f"Lion betas must be in [0, 1), got {betas}")
        self.betas = (float(b1), float(b2))
        super().__init__(params, lr, weight_decay, decay_all)

    def _update(self, p, state):
        b1, b2 = self.betas
        wd = self._decay(p)
        # W - lr wd W: the decay reads the weights before this step's sign (1.0: none).
        decay = 1.0 - self.lr * wd if wd else 1.0
        ops.lion_step(
            p.data,
            p.grad,
            state["m"],
            b1=b1,
            b2=b2,
            decay=decay,
            lr=self.lr,
            scratch=self._tmp(p),  # the step's direction c, on the NumPy path
            bf16=self._bf16_out(p),
        )


# The one table that turns optimizer names (CLI, configs) into classes.
OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.add("sgd", SGD)
OPTIMIZERS.add("adam", Adam)
OPTIMIZERS.add("adamw", AdamW)
OPTIMIZERS.add("lion", Lion)
