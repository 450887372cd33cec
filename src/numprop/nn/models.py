"""Ready-made networks, and rebuilding a network from its saved description."""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from numprop.errors import ConfigError
from numprop.nn.layers import (
    ACTIVATIONS,
    GELU,
    LAYERS,
    BatchNorm1d,
    Dropout,
    LayerNorm,
    Linear,
    Residual,
    Seed,
    as_rng,
)
from numprop.nn.module import Module, Sequential


def two_layer(
    in_features: int, hidden: int, classes: int, *, rng: Seed = None, dtype=np.float32
) -> Sequential:
    """The classic network: Linear -> ReLU -> Linear, to be followed by softmax cross-entropy.

    Parameters
    ----------
    in_features : int
        D, the input size (3072 for CIFAR-10 images).
    hidden : int
        H, the hidden size.
    classes : int
        C, the number of outputs.
    rng : int, numpy.random.Generator or None
        Seed or generator for the initial weights.
    dtype : dtype-like, default np.float32

    Returns
    -------
    Sequential
        Maps (N, D) inputs to (N, C) logits.
    """
    return mlp([in_features, hidden, classes], rng=rng, dtype=dtype)


def mlp(
    sizes: list[int],
    activation: str = "relu",
    dropout: float = 0.0,
    batchnorm: bool = False,
    *,
    init: str | None = None,
    init_scale: float | None = None,
    rng: Seed = None,
    dtype=np.float32,
) -> Sequential:
    """A multi-layer perceptron: sizes = [in, hidden..., classes].

    Each hidden block is Linear -> [BatchNorm1d] -> activation -> [Dropout].
    The output layer gives logits. ``init`` defaults to He for ReLU-like
    activations and Glorot for tanh/sigmoid.

    Parameters
    ----------
    sizes : list of int
        ``[D, H1, ..., C]``, at least two sizes, all >= 1.
    activation : str, default "relu"
        A registered activation name ("relu", "leaky_relu", "tanh", "sigmoid",
        "gelu", ...).
    dropout : float, default 0.0
        Dropout probability after each hidden activation; 0 for none.
    batchnorm : bool, default False
        BatchNorm1d after each hidden Linear.
    init : {"he", "glorot", "normal"}, optional
        Initialisation of the hidden Linear layers; the output layer uses
        Glorot where this is He.
    init_scale : float, optional
        ``Linear``'s ``scale`` for every layer: multiplies the He/Glorot std, or
        is the std of "normal" (0.01 when not given, the classic ``randn * 0.01``).
    rng : int, numpy.random.Generator or None
        Seed or generator for the weights and the dropout masks.
    dtype : dtype-like, default np.float32

    Returns
    -------
    Sequential
        Maps (N, D) inputs to (N, C) logits.

    Raises
    ------
    ConfigError
        For fewer than two sizes, a size below 1, an unknown activation or init,
        or a dropout probability outside [0, 1).
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ConfigError(f"mlp needs at least [in, out] positive sizes, got {sizes}")
    if init is None:  # each activation class says which initialisation suits it
        init = getattr(ACTIVATIONS.get(activation), "init", "he")
    rng = as_rng(rng)
    layers: list[Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(Linear(fan_in, fan_out, init=init, scale=init_scale, rng=rng, dtype=dtype))
        if batchnorm:
            layers.append(BatchNorm1d(fan_out, dtype=dtype))
        layers.append(ACTIVATIONS.create(activation))
        if dropout:
            layers.append(Dropout(dropout, rng=rng))
    out_init = "glorot" if init == "he" else init
    layers.append(
        Linear(sizes[-2], sizes[-1], init=out_init, scale=init_scale, rng=rng, dtype=dtype)
    )
    return Sequential(*layers)


def bottleneck_mlp(
    in_features: int,
    width: int,
    depth: int,
    classes: int,
    *,
    expansion: int = 4,
    dropout: float = 0.0,
    rng: Seed = None,
    dtype=np.float32,
) -> Sequential:
    """An MLP of inverted-bottleneck residual blocks (Bachmann et al. 2023, "Scaling MLPs").

    A Linear stem to ``width``, then ``depth`` blocks
    ``Residual(LayerNorm -> Linear(width, expansion * width) -> GELU [-> Dropout]
    -> Linear(expansion * width, width))``, then LayerNorm and a Linear head.
    The normalisation comes first in each block ("pre-norm"), so the sum that
    runs through the skip connections is never normalised away and gradients
    reach the stem unchanged through it.

    Parameters
    ----------
    in_features : int
        D, the input size (3072 for CIFAR-10 images).
    width : int
        W, the width of the residual stream.
    depth : int
        Number of blocks, >= 0.
    classes : int
        C, the number of outputs.
    expansion : int, default 4
        The hidden layer of each block is ``expansion * width`` wide.
    dropout : float, default 0.0
        Dropout probability after each block's GELU; 0 for none.
    rng : int, numpy.random.Generator or None
        Seed or generator for the weights and the dropout masks.
    dtype : dtype-like, default np.float32

    Returns
    -------
    Sequential
        Maps (N, D) inputs to (N, C) logits: ``depth + 3`` layers.

    Raises
    ------
    ConfigError
        For a size or the expansion below 1, a negative depth, or a dropout
        probability outside [0, 1).
    """
    if min(in_features, width, classes, expansion) < 1 or depth < 0:
        raise ConfigError(
            f"bottleneck_mlp needs positive sizes and expansion and a depth >= 0, got "
            f"in_features={in_features}, width={width}, depth={depth}, classes={classes}, "
            f"expansion={expansion}"
        )
    rng = as_rng(rng)
    hidden = expansion * width
    # Glorot where no rectifier follows (the stem, each block's way back, the head),
    # He before the GELU.
    layers: list = [Linear(in_features, width, init="glorot", rng=rng, dtype=dtype)]
    for _ in range(depth):
        block = [
            LayerNorm(width, dtype=dtype),
            Linear(width, hidden, init="he", rng=rng, dtype=dtype),
            GELU(),
            *([Dropout(dropout, rng=rng)] if dropout else []),
            Linear(hidden, width, init="glorot", rng=rng, dtype=dtype),
        ]
        layers.append(Residual(Sequential(*block)))
    layers.append(LayerNorm(width, dtype=dtype))
    layers.append(Linear(width, classes, init="glorot", rng=rng, dtype=dtype))
    return Sequential(*layers)


def architecture(model: Sequential) -> list[dict]:
    """A JSON-able description of a Sequential: one {"type", **config} per layer.

    Every layer's class must be registered (``numprop.register_layer``), so the
    description can be loaded again; an unregistered one is a ConfigError here,
    at save time, not later when loading. A setting that is a Module (the block
    of a Residual) is described the same way, in place; a Sequential inside
    another layer as ``{"type": "Sequential", "layers": [...]}``.

    Parameters
    ----------
    model : Sequential

    Returns
    -------
    list of dict
        E.g. ``[{"type": "Linear", "in_features": 3072, ...}, {"type": "ReLU"}, ...]``.

    Raises
    ------
    ConfigError
        If ``model`` is not a Sequential or a layer's class is not registered.
    """
    if not isinstance(model, Sequential):
        raise ConfigError("only Sequential models can be described and saved")
    return [describe(layer) for layer in model]


def describe(layer: Module) -> dict:
    """``{"type": registered name, **config}`` of one layer, nested modules described in turn.

    Raises
    ------
    ConfigError
        If the layer's class, or that of a module inside it, is not registered.
    """
    if isinstance(layer, Sequential):  # its layers are not keyword arguments: listed
        return {"type": "Sequential", "layers": [describe(inner) for inner in layer]}
    name = LAYERS.name_of(type(layer))
    if name is None:
        raise ConfigError(
            f"layer {type(layer).__name__} is not registered, so a saved model "
            f"could not be loaded again: register it with "
            f"numprop.register_layer({type(layer).__name__})"
        )
    settings = {k: describe(v) if isinstance(v, Module) else v for k, v in layer.config().items()}
    return {"type": name, **settings}


def from_architecture(spec: list[dict], dtype=np.float32, *, warn=None) -> Sequential:
    """Rebuild a Sequential from ``architecture(model)`` (weights not included).

    Settings a layer does not take (written by a newer numprop, say) are left
    out, with a message to ``warn`` (default: ``warnings.warn``).

    Parameters
    ----------
    spec : list of dict
        As returned by ``architecture``.
    dtype : dtype-like, default np.float32
        Passed to the layers that take one.
    warn : callable, optional
        Called with a message (str) for each layer with unknown settings.

    Returns
    -------
    Sequential
        With freshly initialised weights (seed 0); load the saved state into it.

    Raises
    ------
    ConfigError
        For a spec that is not a list of dicts, an unregistered layer type, or
        settings the layer rejects.
    """
    if not isinstance(spec, list):
        raise ConfigError(f"the architecture must be a list of layers, got {type(spec).__name__}")
    return Sequential(*(build(entry, dtype, warn=warn) for entry in spec))


def build(entry: dict, dtype=np.float32, *, warn=None) -> Module:
    """One layer from its description (``describe``), nested modules built in turn.

    Raises
    ------
    ConfigError
        For an entry that is not a dict, an unregistered type, or settings the
        layer rejects.
    """
    if not isinstance(entry, dict):
        raise ConfigError(f"each layer of the architecture must be an object, got {entry!r}")
    entry = dict(entry)
    name = entry.pop("type", None)
    if name == "Sequential":
        layers = entry.get("layers")
        if not isinstance(layers, list):
            raise ConfigError(
                f"a Sequential in the architecture needs a list of layers, got {layers!r}"
            )
        return Sequential(*(build(inner, dtype, warn=warn) for inner in layers))
    if name not in LAYERS:
        raise ConfigError(
            f"unknown layer type {name!r} in the architecture; a layer of your "
            f"own must be registered (numprop.register_layer) before loading"
        )
    cls = LAYERS.get(name)
    accepted = inspect.signature(cls).parameters
    unknown = sorted(k for k in entry if k not in accepted)
    if unknown:
        (warn or _warn)(f"layer {name}: ignored unknown settings {', '.join(unknown)}")
        entry = {k: v for k, v in entry.items() if k in accepted}
    # Layer settings are plain JSON values; an object among them describes a module.
    entry = {k: build(v, dtype, warn=warn) if isinstance(v, dict) else v for k, v in entry.items()}
    # Weights are loaded afterwards: build in the saved dtype, deterministically.
    entry.update({k: v for k, v in (("dtype", dtype), ("rng", 0)) if k in accepted})
    try:
        return cls(**entry)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad settings for layer {name}: {exc}") from None


def _warn(message: str) -> None:
    """``warnings.warn`` pointing at the code that called ``from_architecture``."""
    warnings.warn(message, stacklevel=4)
