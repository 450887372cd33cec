"""Ready-made networks, and rebuilding a network from its saved description."""

from __future__ import annotations

import numpy as np

from numprop.errors import ConfigError
from numprop.nn.layers import LAYERS, BatchNorm1d, Dropout, Linear, Seed, as_rng
from numprop.nn.module import Module, Sequential

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")


def _activation(name: str) -> Module:
    from numprop.nn.layers import LeakyReLU, ReLU, Sigmoid, Tanh
    table = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid}
    if name not in table:
        raise ConfigError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return table[name]()


def two_layer(in_features: int, hidden: int, classes: int, *, rng: Seed = None,
              dtype=np.float32) -> Sequential:
    """The classic network: Linear -> ReLU -> Linear, to be followed by softmax cross-entropy."""
    return mlp([in_features, hidden, classes], rng=rng, dtype=dtype)


def mlp(sizes: list[int], activation: str = "relu", dropout: float = 0.0,
        batchnorm: bool = False, *, init: str | None = None, rng: Seed = None,
        dtype=np.float32) -> Sequential:
    """A multi-layer perceptron: sizes = [in, hidden..., classes].

    Each hidden block is Linear -> [BatchNorm1d] -> activation -> [Dropout].
    The output layer gives logits. ``init`` defaults to He for ReLU-like
    activations and Glorot for tanh/sigmoid.
    """
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ConfigError(f"mlp needs at least [in, out] positive sizes, got {sizes}")
    if init is None:
        init = "glorot" if activation in ("tanh", "sigmoid") else "he"
    rng = as_rng(rng)
    layers: list[Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(Linear(fan_in, fan_out, init=init, rng=rng, dtype=dtype))
        if batchnorm:
            layers.append(BatchNorm1d(fan_out, dtype=dtype))
        layers.append(_activation(activation))
        if dropout:
            layers.append(Dropout(dropout, rng=rng))
    layers.append(Linear(sizes[-2], sizes[-1], init="glorot" if init == "he" else init,
                         rng=rng, dtype=dtype))
    return Sequential(*layers)


def architecture(model: Sequential) -> list[dict]:
    """A JSON-able description of a Sequential: one {"type", **config} per layer."""
    if not isinstance(model, Sequential):
        raise ConfigError("only Sequential models can be described and saved")
    return [{"type": type(layer).__name__, **layer.config()} for layer in model]


def from_architecture(spec: list[dict], dtype=np.float32) -> Sequential:
    """Rebuild a Sequential from ``architecture(model)`` (weights not included)."""
    layers = []
    for entry in spec:
        entry = dict(entry)
        name = entry.pop("type", None)
        if name not in LAYERS:
            raise ConfigError(f"unknown layer type {name!r} in the architecture")
        cls = LAYERS[name]
        if cls in (Linear, BatchNorm1d):
            entry["dtype"] = dtype
        if cls is Linear:
            entry["rng"] = 0  # weights are loaded afterwards; keep construction deterministic
        try:
            layers.append(cls(**entry))
        except TypeError as exc:
            raise ConfigError(f"bad settings for layer {name}: {exc}") from None
    return Sequential(*layers)
