"""Tests of examples/two_layer_from_scratch.py, the learner's column-notation network.

The example imports nothing from numprop; these tests check its gradients against
finite differences of its own cost, and against numprop's layers (row convention:
W_lib = W_col.T, dW_lib = dW_col.T).
"""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "two_layer_from_scratch.py"


@pytest.fixture(scope="module")
def ex():
    spec = importlib.util.spec_from_file_location("two_layer_from_scratch", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_problem(ex, seed=0, n_x=7, n_h=5, n_y=4, m=6):
    rng = np.random.default_rng(seed)
    params = ex.init_params(n_x, n_h, n_y, rng, dtype=np.float64)
    # non-zero biases, so that db1/db2 and the bias copy into numprop are exercised
    params["b1"] += rng.standard_normal(params["b1"].shape) * 0.1
    params["b2"] += rng.standard_normal(params["b2"].shape) * 0.1
    X = rng.standard_normal((n_x, m))
    y = rng.integers(0, n_y, m)
    Y = np.eye(n_y)[:, y]  # one-hot columns (n_y, m)
    return params, X, y, Y


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


def test_shapes_and_dtypes(ex):
    params, X, y, Y = tiny_problem(ex)
    assert params["W1"].shape == (5, 7) and params["b1"].shape == (5, 1)
    assert params["W2"].shape == (4, 5) and params["b2"].shape == (4, 1)
    A2, cache = ex.forward(X, params)
    grads = ex.backward(X, Y, params, cache)
    assert A2.shape == (4, 6) and A2.dtype == np.float64
    for k in params:
        assert grads["d" + k].shape == params[k].shape
        assert grads["d" + k].dtype == np.float64
    # float32 stays float32 (the training path)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    A2, cache = ex.forward(X.astype(np.float32), p32)
    g32 = ex.backward(X.astype(np.float32), Y.astype(np.float32), p32, cache)
    assert A2.dtype == np.float32
    assert all(g.dtype == np.float32 for g in g32.values())


def test_he_init_scale(ex):
    params = ex.init_params(400, 300, 10, np.random.default_rng(1))
    assert params["W1"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    assert params["W2"].std() == pytest.approx(np.sqrt(2 / 300), rel=0.05)
    assert not params["b1"].any() and not params["b2"].any()


def test_gradients_match_finite_differences(ex):
    params, X, y, Y = tiny_problem(ex)
    A2, cache = ex.forward(X, params)
    grads = ex.backward(X, Y, params, cache)
    eps = 1e-6
    errors = {}
    for k, W in params.items():
        num = np.zeros_like(W)
        for i in np.ndindex(W.shape):
            old = W[i]
            W[i] = old + eps
            plus = ex.cost(ex.forward(X, params)[0], Y)
            W[i] = old - eps
            minus = ex.cost(ex.forward(X, params)[0], Y)
            W[i] = old
            num[i] = (plus - minus) / (2 * eps)
        errors[k] = rel_error(grads["d" + k], num)
        np.testing.assert_allclose(grads["d" + k], num, rtol=1e-5, atol=1e-8)
    assert max(errors.values()) < 1e-6, errors


def test_cost_is_categorical_cross_entropy(ex):
    A2 = np.array([[0.7, 0.2], [0.2, 0.5], [0.1, 0.3]])
    Y = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    assert ex.cost(A2, Y) == pytest.approx(-(np.log(0.7) + np.log(0.3)) / 2, rel=1e-12)


def test_matches_numprop(ex):
    import numprop as npp

    params, X, y, Y = tiny_problem(ex, seed=3)
    n_h, n_x = params["W1"].shape
    n_y = params["W2"].shape[0]
    A2, cache = ex.forward(X, params)
    J = ex.cost(A2, Y)
    grads = ex.backward(X, Y, params, cache)

    model = npp.Sequential(
        npp.Linear(n_x, n_h, dtype=np.float64), npp.ReLU(), npp.Linear(n_h, n_y, dtype=np.float64)
    )
    model[0].weight.data[...] = params["W1"].T  # numprop weights are (in, out)
    model[0].bias.data[...] = params["b1"].ravel()
    model[2].weight.data[...] = params["W2"].T
    model[2].bias.data[...] = params["b2"].ravel()
    loss = npp.SoftmaxCrossEntropy()
    logits = model.forward(X.T)  # rows = examples: (m, n_y)
    np.testing.assert_allclose(logits, cache["Z2"].T, rtol=1e-12, atol=1e-14)
    L = loss.forward(logits, y)
    model.zero_grad()
    model.backward(loss.backward())

    assert pytest.approx(L, rel=1e-12) == J
    tol = dict(rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(model[0].weight.grad, grads["dW1"].T, **tol)
    np.testing.assert_allclose(model[0].bias.grad, grads["db1"].ravel(), **tol)
    np.testing.assert_allclose(model[2].weight.grad, grads["dW2"].T, **tol)
    np.testing.assert_allclose(model[2].bias.grad, grads["db2"].ravel(), **tol)


def test_softmax_is_per_example(ex):
    Z = np.random.default_rng(4).standard_normal((4, 6)) * 3
    A = ex.softmax(Z)
    np.testing.assert_allclose(A.sum(axis=0), np.ones(6), rtol=1e-12)
    expected = np.exp(Z) / np.exp(Z).sum(axis=0, keepdims=True)
    np.testing.assert_allclose(A, expected, rtol=1e-12)


def test_softmax_and_cost_stable_for_huge_logits(ex):
    Z = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4], [-1e4, 0.0, 1e4]])
    Y = np.eye(3)[:, [1, 0, 2]]  # two confidently wrong examples
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any RuntimeWarning fails the test
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            A = ex.softmax(Z)
            J = ex.cost(A, Y)
    assert np.all(np.isfinite(A))
    np.testing.assert_allclose(A.sum(axis=0), np.ones(3))
    np.testing.assert_allclose(A, np.eye(3), atol=1e-300)
    assert np.isfinite(J) and J > 100  # large but finite, not nan / inf
    for dtype in (np.float32, np.float64):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            A = ex.softmax(Z.astype(dtype))
        assert A.dtype == dtype and np.all(np.isfinite(A))


def test_update_momentum_step(ex):
    params = {
        "W1": np.array([[1.0, -2.0]]),
        "b1": np.array([[0.5]]),
        "W2": np.array([[3.0]]),
        "b2": np.array([[0.0]]),
    }
    grads = {
        "dW1": np.array([[0.2, -0.4]]),
        "db1": np.array([[1.0]]),
        "dW2": np.array([[-1.0]]),
        "db2": np.array([[0.3]]),
    }
    velocity = {
        "W1": np.array([[1.0, 0.0]]),
        "b1": np.array([[0.0]]),
        "W2": np.array([[0.5]]),
        "b2": np.array([[0.0]]),
    }
    params, velocity = ex.update(params, grads, velocity, lr=0.1, momentum=0.9)
    # v = 0.9 v + g;  W = W - 0.1 v
    np.testing.assert_allclose(velocity["W1"], [[1.1, -0.4]])
    np.testing.assert_allclose(params["W1"], [[0.89, -1.96]])
    np.testing.assert_allclose(velocity["b1"], [[1.0]])
    np.testing.assert_allclose(params["b1"], [[0.4]])
    np.testing.assert_allclose(velocity["W2"], [[-0.55]])
    np.testing.assert_allclose(params["W2"], [[3.055]])
    np.testing.assert_allclose(velocity["b2"], [[0.3]])
    np.testing.assert_allclose(params["b2"], [[-0.03]])
    # a second step with the same gradients: v = 0.9 * [[1.1, -0.4]] + [[0.2, -0.4]]
    ex.update(params, grads, velocity, lr=0.1, momentum=0.9)
    np.testing.assert_allclose(velocity["W1"], [[1.19, -0.76]])
    np.testing.assert_allclose(params["W1"], [[0.771, -1.884]])


def test_one_step_lowers_the_cost(ex):
    params, X, y, Y = tiny_problem(ex, seed=5, m=20)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    before = ex.cost(ex.forward(X, params)[0], Y)
    A2, cache = ex.forward(X, params)
    ex.update(params, ex.backward(X, Y, params, cache), velocity, lr=0.1, momentum=0.9)
    assert ex.cost(ex.forward(X, params)[0], Y) < before
