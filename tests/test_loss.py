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
