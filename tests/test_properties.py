"""Property-based tests (Hypothesis): layers and the loss on random shapes, dtypes and extreme values.

For any finite input of any shape, every layer's forward and backward give
finite arrays of the right shape and dtype, activations stay in their range,
and the gradients still pass the finite-difference check in float64. The loss
stays finite for logits up to float32's largest values, and its gradient
rows sum to zero. Examples are few per test so the suite stays fast; the
seed is fixed (derandomize) so that a failure reproduces.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import numprop as npp
from numprop.nn.layers import GELU, Identity, Softmax

FAST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ACTIVATIONS = {
    "relu": (npp.ReLU, None),
    "leaky_relu": (lambda: npp.LeakyReLU(0.1), None),
    "tanh": (npp.Tanh, (-1.0, 1.0)),
    "sigmoid": (npp.Sigmoid, (0.0, 1.0)),
    "softmax": (Softmax, (0.0, 1.0)),
    "gelu": (GELU, None),
    "identity": (Identity, None),
}
LAYERS = {
    **{name: make for name, (make, _) in ACTIVATIONS.items()},
    "linear": lambda d: npp.Linear(d, 3, rng=0),
    "batchnorm": lambda d: npp.BatchNorm1d(d),
    "dropout": lambda: npp.Dropout(0.5, rng=0),
}


def build(name: str, d: int, dtype):
    make = LAYERS[name]
    layer = make(d) if name in ("linear", "batchnorm") else make()
    return layer.to(dtype) if hasattr(layer, "to") else layer


def extreme_arrays(dtype):
    """(N, D) arrays with N >= 2 of finite values up to about a tenth of dtype's largest."""
    big = float(np.finfo(dtype).max) / 10
    width = np.dtype(dtype).itemsize * 8
    elements = st.one_of(
        st.floats(-4, 4, width=width),
        st.floats(-big, big, allow_nan=False, allow_infinity=False, width=width),
        st.sampled_from([0.0, -0.0, 1e-30, -1e-30, 1e4, -1e4]),
    )
    return hnp.arrays(
        dtype, hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=6), elements=elements
    )


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@FAST
@given(data=st.data())
def test_activations_stay_finite_and_in_range_on_any_input(name, dtype, data):
    x = data.draw(extreme_arrays(dtype))
    make, bounds = ACTIVATIONS[name]
    layer = make()
    with np.errstate(over="ignore", under="ignore"):  # intermediate overflow is allowed...
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(y))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert np.isfinite(y).all(), (name, x[~np.isfinite(y)])  # ...an infinite result is not
    assert dx.shape == x.shape and np.isfinite(dx).all()
    if bounds is not None:
        assert (y >= bounds[0]).all() and (y <= bounds[1]).all()
    if name == "softmax":
        np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@FAST
@given(data=st.data())
def test_batchnorm_and_dropout_stay_finite_on_any_input(dtype, data):
    x = data.draw(extreme_arrays(dtype))
    x = np.clip(x, -1e15, 1e15)  # BatchNorm squares deviations: keep them representable
    for layer in (npp.BatchNorm1d(x.shape[1]).to(dtype), npp.Dropout(0.5, rng=0)):
        for training in (True, False):
            layer.train(training)
            y = layer.forward(x)
            dx = layer.backward(np.ones_like(y))
            assert y.dtype == x.dtype and np.isfinite(y).all() and np.isfinite(dx).all()


@pytest.mark.parametrize("name", sorted(LAYERS))
@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    n=st.integers(2, 5),
    d=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_gradients_check_out_on_random_shapes(name, n, d, seed):
    x = np.random.default_rng(seed).uniform(-2, 2, (n, d))
    layer = build(name, d, np.float64)
    report = npp.gradcheck(layer, x)
    assert report.ok, str(report)


@FAST
@given(
    logits=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=8),
        elements=st.floats(allow_nan=False, allow_infinity=False, width=32),  # up to ~3.4e38
    ),
    smoothing=st.sampled_from([0.0, 0.1, 0.3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_loss_stays_finite_for_any_finite_logits(logits, smoothing, seed):
    y = np.random.default_rng(seed).integers(0, logits.shape[1], logits.shape[0])
    loss = npp.SoftmaxCrossEntropy(label_smoothing=smoothing)
    value = loss.forward(logits, y)
    grad = loss.backward()
    assert np.isfinite(value) and value >= 0
    assert grad.shape == logits.shape and np.isfinite(grad).all()
    # d(loss)/d(logits) = (p - target) / N: each row sums to zero.
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-6)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(n=st.integers(1, 6), c=st.integers(2, 6), seed=st.integers(0, 2**32 - 1))
def test_the_loss_gradient_checks_out_on_random_shapes(n, c, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, c))
    y = rng.integers(0, c, n)
    loss = npp.SoftmaxCrossEntropy(label_smoothing=0.1)
    report = npp.gradcheck(
        lambda z: loss.forward(z, y), logits, backward=lambda d: loss.backward() * d
    )
    assert report.ok, str(report)
