"""The softmax cross-entropy against a direct computation, extremes, and its gradient."""

import warnings

import numpy as np
import pytest

import numprop as npp


def direct_loss(z, y, eps=0.0):
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    t = np.eye(z.shape[1])[y] * (1 - eps) + eps / z.shape[1]
    return -np.mean(np.sum(t * np.log(p), axis=1))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_matches_direct_formula(eps):
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((8, 5)), rng.integers(0, 5, 8)
    loss = npp.SoftmaxCrossEntropy(label_smoothing=eps)
    assert loss.forward(z, y) == pytest.approx(direct_loss(z, y, eps), rel=1e-12)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    t = np.eye(5)[y] * (1 - eps) + eps / 5
    np.testing.assert_allclose(loss.backward(), (p - t) / 8, rtol=1e-12)


def test_integer_labels_and_one_hot_agree():
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    a, b = npp.SoftmaxCrossEntropy(), npp.SoftmaxCrossEntropy()
    assert a.forward(z, y) == pytest.approx(b.forward(z, np.eye(4)[y]), rel=1e-12)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-12)


def test_right_answers_count_against_the_most_likely_target_class():
    z = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, 5.0], [0.0, 0.0, -1.0]])
    labels = np.array([0, 2, 2, 1])  # rows 0 and 2 right; row 3 ties to 0
    soft = np.array([[0.6, 0.2, 0.2], [0.1, 0.2, 0.7], [0.0, 0.3, 0.7], [0.2, 0.5, 0.3]])
    for target in (labels, np.eye(3)[labels], soft):
        loss = npp.SoftmaxCrossEntropy(label_smoothing=0.1)
        loss.forward(z, target)
        assert loss.count_correct() == 2


def test_soft_targets_gradient_check():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((5, 3))
    t = rng.random((5, 3))
    t /= t.sum(axis=1, keepdims=True)
    loss = npp.SoftmaxCrossEntropy(label_smoothing=0.05)
    report = npp.gradcheck(lambda z: loss.forward(z, t), z, backward=lambda d: d * loss.backward())
    assert report.ok, str(report)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_are_finite_without_warnings(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [5e3, 5e3, -1e4]], dtype=dtype)
    y = np.array([1, 0, 0])
    loss = npp.SoftmaxCrossEntropy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss.forward(z, y)
        grad = loss.backward()
        p = npp.softmax(z)
        lp = npp.log_softmax(z)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    # Row 0: the true class is 2e4 below the best one: loss 2e4; rows 1 and 2: log 3 and log 2.
    assert value == pytest.approx((2e4 + np.log(3) + np.log(2)) / 3, rel=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    assert np.all(np.isfinite(lp))


def test_softmax_is_per_example_not_whole_matrix():
    z = np.array([[1.0, 2.0], [10.0, 10.0]])
    p = npp.softmax(z)
    np.testing.assert_allclose(p.sum(axis=1), [1, 1])
    np.testing.assert_allclose(p[1], [0.5, 0.5])
    np.testing.assert_allclose(npp.softmax(z, axis=0).sum(axis=0), [1, 1])
    np.testing.assert_allclose(np.exp(npp.log_softmax(z)), p)


def test_bad_targets_are_clear_errors():
    loss = npp.SoftmaxCrossEntropy()
    z = np.zeros((3, 4))
    with pytest.raises(npp.ConfigError, match=r"labels must be in \[0, 4\)"):
        loss.forward(z, np.array([0, 1, 4]))
    with pytest.raises(npp.ConfigError, match="integers of shape"):
        loss.forward(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(npp.ConfigError, match="probabilities"):
        loss.forward(z, np.ones((3, 4)))
    with pytest.raises(npp.ConfigError, match=r"\(N, C\)"):
        loss.forward(np.zeros(4), np.array([1]))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_integer_label_loss_gradient_check(eps):
    rng = np.random.default_rng(3)
    z, y = rng.standard_normal((7, 5)) * 3, rng.integers(0, 5, 7)
    loss = npp.SoftmaxCrossEntropy(label_smoothing=eps)

    def forward(z):
        return loss.forward(z, y)

    def backward(d):
        loss.forward(z, y)  # backward belongs to the unperturbed logits
        return d * loss.backward()

    report = npp.gradcheck(forward, z, backward=backward)
    assert report.ok, str(report)
    assert report.results[0].max_rel_error < 1e-6


# -- mean squared error and sigmoid binary cross-entropy ---------------------------------


def test_mean_squared_error_exact_values():
    o = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 3.0]])
    t = np.array([[0.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
    loss = npp.MeanSquaredError()
    # Squared errors per row: 1 + 0, 4 + 4, 0 + 9 = 18; halved and averaged over 3 rows.
    assert loss.forward(o, t) == 3.0
    np.testing.assert_array_equal(loss.backward(), (o - t) / 3)
    assert loss.count_correct() is None
    # One output: (N,) outputs, or (N, 1) outputs with (N,) targets; the gradient
    # keeps the outputs' shape.
    assert loss.forward(np.array([1.0, 3.0]), np.array([0.0, 0.0])) == 2.5
    np.testing.assert_array_equal(loss.backward(), [0.5, 1.5])
    assert loss.forward(np.array([[1.0], [3.0]]), np.array([0.0, 0.0])) == 2.5
    np.testing.assert_array_equal(loss.backward(), [[0.5], [1.5]])


def test_mean_squared_error_matches_scikit_learn_convention_for_one_output():
    rng = np.random.default_rng(4)
    o, t = rng.standard_normal((9, 1)), rng.standard_normal((9, 1))
    sklearn_squared_loss = ((t - o) ** 2).mean() / 2  # sklearn.neural_network._base
    assert npp.MeanSquaredError().forward(o, t) == pytest.approx(sklearn_squared_loss, rel=1e-14)


def bce_direct(z, t):
    p = 1 / (1 + np.exp(-z))
    return -np.mean(np.sum(t * np.log(p) + (1 - t) * np.log(1 - p), axis=1))


def test_sigmoid_bce_exact_values():
    z = np.array([[0.0, 2.0], [-1.0, -0.5]])
    t = np.array([[1.0, 0.0], [0.0, 0.25]])
    loss = npp.SigmoidBinaryCrossEntropy()
    value = loss.forward(z, t)
    # Row 0: log 2 + log(1 + e^2); row 1: log(1 + e^-1) + 0.25 * 0.5 + log(1 + e^-0.5)
    # (max(z, 0) - z t + log(1 + e^-|z|) for z = -0.5, t = 0.25).
    hand = (
        np.log(2) + np.log1p(np.e**2) + np.log1p(np.exp(-1)) + 0.125 + np.log1p(np.exp(-0.5))
    ) / 2
    assert value == pytest.approx(hand, rel=1e-14)
    assert value == pytest.approx(bce_direct(z, t), rel=1e-12)
    sig = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(loss.backward(), (sig - t) / 2, rtol=1e-14)
    # Right: row 0 output 0 (z = 0 is "no", the target says yes: wrong). Row 1 is all right.
    assert loss.count_correct() == 1


def test_sigmoid_bce_binary_targets_of_shape_n():
    z = np.array([[3.0], [-2.0], [0.5]])
    t = np.array([1, 0, 0])
    loss = npp.SigmoidBinaryCrossEntropy()
    assert loss.forward(z, t) == pytest.approx(bce_direct(z, t[:, None]), rel=1e-12)
    assert loss.backward().shape == (3, 1)
    assert loss.count_correct() == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_bce_is_stable_at_extreme_logits(dtype):
    z = np.array([[1e4, -1e4], [-1e4, 1e4]], dtype=dtype)
    t = np.array([[1, 0], [1, 0]], dtype=dtype)
    loss = npp.SigmoidBinaryCrossEntropy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = loss.forward(z, t)
        grad = loss.backward()
    # Row 0 is certain and right (loss 0); row 1 is certain and wrong twice: 1e4 each.
    assert value == pytest.approx(1e4, rel=1e-6)
    assert grad.dtype == dtype
    np.testing.assert_array_equal(grad, np.array([[0, 0], [-0.5, 0.5]], dtype))
    assert loss.count_correct() == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_new_losses_keep_the_dtype(dtype):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 3)).astype(dtype)
    t = (rng.random((6, 3)) > 0.5).astype(dtype)
    for loss, direct in (
        (npp.SigmoidBinaryCrossEntropy(), bce_direct(z.astype(np.float64), t)),
        (npp.MeanSquaredError(), np.sum((z.astype(np.float64) - t) ** 2) / 12),
    ):
        value = loss.forward(z, t)
        assert isinstance(value, float)
        assert value == pytest.approx(direct, rel=1e-6 if dtype == np.float32 else 1e-13)
        assert loss.backward().dtype == dtype


@pytest.mark.parametrize("name", ["mean_squared_error", "sigmoid_binary_cross_entropy"])
def test_new_losses_gradient_check_through_a_network(name):
    from numprop.nn.losses import LOSSES

    rng = np.random.default_rng(6)
    model = npp.models.mlp([4, 5, 3], activation="tanh", rng=7, dtype=np.float64)
    x = rng.standard_normal((6, 4))
    y = rng.standard_normal((6, 3)) if name == "mean_squared_error" else rng.random((6, 3))
    loss = LOSSES.create(name)
    assert isinstance(loss, npp.Loss)
    report = npp.gradcheck(model, x, y, loss=loss, check_input=True)
    assert report.ok, str(report)
    assert max(r.max_rel_error for r in report.results) < 1e-6


@pytest.mark.parametrize("loss", [npp.MeanSquaredError(), npp.SigmoidBinaryCrossEntropy()])
def test_new_losses_gradient_check_directly(loss):
    rng = np.random.default_rng(8)
    z = rng.standard_normal((5, 3)) * 3
    t = (rng.random((5, 3)) > 0.5).astype(np.float64)

    def forward(z):
        return loss.forward(z, t)

    def backward(d):
        loss.forward(z, t)  # backward belongs to the unperturbed outputs
        return d * loss.backward()

    report = npp.gradcheck(forward, z, backward=backward)
    assert report.ok, str(report)
    assert report.results[0].max_rel_error < 1e-6


def test_new_losses_reject_bad_targets():
    mse, bce = npp.MeanSquaredError(), npp.SigmoidBinaryCrossEntropy()
    z = np.zeros((3, 2))
    for loss in (mse, bce):
        with pytest.raises(npp.ConfigError, match=r"shape \(3, 2\), got \(3,\)"):
            loss.forward(z, np.zeros(3))
        with pytest.raises(npp.ConfigError, match="finite"):
            loss.forward(z, np.array([[0, 1], [np.nan, 0], [1, 1]]))
        with pytest.raises(npp.ConfigError, match=r"\(N, K\) with N > 0"):
            loss.forward(np.zeros((0, 2)), np.zeros((0, 2)))
        with pytest.raises(npp.ConfigError, match="forward"):
            type(loss)().backward()
        with pytest.raises(npp.ConfigError) as info:
            loss.forward(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
        assert "\n" not in str(info.value)
    with pytest.raises(npp.ConfigError, match=r"in \[0, 1\]"):
        bce.forward(z, np.array([[0, 1], [1.5, 0], [1, 1]]))
    with pytest.raises(npp.ConfigError, match=r"in \[0, 1\]"):
        bce.forward(z, -np.ones((3, 2)))


def _batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_mean_squared_error_trains_a_regression():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((256, 5))
    w = rng.standard_normal((5, 2))
    y = x @ w + 0.5  # a linear target, two outputs
    model = npp.models.mlp([5, 16, 2], rng=10, dtype=np.float64)
    trainer = npp.Trainer(
        model, npp.MeanSquaredError(), npp.Adam(model.named_parameters(), lr=0.01)
    )
    history = trainer.fit(_batches(x, y, 32), epochs=40)
    losses = history["train_loss"]
    assert history["train_acc"] == [None] * 40
    assert losses[-1] < 0.02 * losses[0]
    assert np.mean((model.predict(x) - y) ** 2) < 0.02 * np.mean((y - y.mean(axis=0)) ** 2)


def test_sigmoid_bce_trains_a_multi_label_problem():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((512, 6)).astype(np.float32)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    y = (x @ w > 0).astype(np.float32)  # three labels, each a half-space; some rows have none
    model = npp.models.mlp([6, 32, 3], rng=12)
    loss = npp.SigmoidBinaryCrossEntropy()
    trainer = npp.Trainer(model, loss, npp.Adam(model.named_parameters(), lr=0.01))
    history = trainer.fit(_batches(x, y, 64), epochs=30)
    assert history["train_loss"][-1] < 0.25 * history["train_loss"][0]
    assert history["train_acc"][-1] > 0.9
    _, exact_match = trainer.evaluate(_batches(x, y, 128))
    assert exact_match > 0.93
