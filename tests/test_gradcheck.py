"""gradcheck passes correct code and names the planted bug in wrong code."""

import numpy as np
import pytest

import numprop as npp

rng = np.random.default_rng(0)
N, D, H, C = 6, 7, 5, 4
X = rng.standard_normal((N, D))
Y = rng.integers(0, C, N)
W1, B1 = rng.standard_normal((D, H)) * 0.5, rng.standard_normal(H) * 0.1
W2, B2 = rng.standard_normal((H, C)) * 0.5, rng.standard_normal(C) * 0.1


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_net(bug=None):
    """A learner's two-layer network (rows = examples) with an optional planted bug."""

    def forward(x, w1, b1, w2, b2):
        z1 = x @ w1 + b1
        a1 = softmax(z1) if bug == "softmax on z1" else np.maximum(z1, 0)
        z2 = a1 @ w2 + b2
        p = softmax(z2)
        loss = -np.mean(np.log(p[np.arange(len(x)), Y]))
        return loss, (x, z1, a1, p, w1, w2)

    def backward(dloss, cache):
        x, z1, a1, p, w1, w2 = cache
        dz2 = p.copy()
        dz2[np.arange(len(x)), Y] -= 1
        if bug != "missing 1/N":
            dz2 /= len(x)
        dz2 *= dloss
        dw2 = a1.T @ dz2
        if bug == "transposed":
            dw2 = dz2.T @ a1
        db2 = dz2.sum(axis=0)
        da1 = dz2 @ w2.T
        dz1 = da1 * (z1 > 0)  # the ReLU derivative, also (wrongly) when softmax was used
        dw1 = x.T @ dz1
        if bug == "sign":
            dw1 = -dw1
        return dz1 @ w1.T, dw1, dz1.sum(axis=0), dw2, db2

    return forward, backward


NAMES = ["x", "W1", "b1", "W2", "b2"]


def check(bug=None):
    forward, backward = make_net(bug)
    return npp.gradcheck(forward, X, W1, B1, W2, B2, backward=backward, names=NAMES)


def test_correct_code_passes():
    report = check()
    assert report.ok, str(report)
    assert report.wrong == []
    assert max(r.max_rel_error for r in report.results) < 1e-7


def test_wrong_sign_is_named():
    report = check("sign")
    assert report.wrong == ["W1"]
    assert "sign is flipped" in report["W1"].diagnosis
    assert "W1" in str(report) and "wrong" in str(report)


def test_missing_one_over_n_is_named():
    report = check("missing 1/N")
    assert set(report.wrong) == {"x", "W1", "b1", "W2", "b2"}
    assert f"{N} times too large" in report["W2"].diagnosis
    assert "missing 1/N" in report["W2"].diagnosis


def test_transposed_weight_gradient_is_named():
    report = check("transposed")
    assert report.wrong == ["W2"]
    assert "transposed" in report["W2"].diagnosis


def test_softmax_on_z1_is_caught():
    report = check("softmax on z1")
    assert not report.ok
    assert {"W1", "b1", "x"} <= set(report.wrong)


def test_square_transposed_gradient_is_named():
    w = rng.standard_normal((3, 3))
    x = rng.standard_normal((4, 3))
    report = npp.gradcheck(
        lambda x, w: x @ w, x, w, backward=lambda d: (d @ w.T, (x.T @ d).T), names=["x", "w"]
    )
    assert report.wrong == ["w"]
    assert "transpose" in report["w"].diagnosis


def test_cs231n_style_functions_and_a_single_input():
    def affine_forward(x, w, b):
        return x @ w + b, (x, w)

    def affine_backward(dout, cache):
        x, w = cache
        return dout @ w.T, x.T @ dout, dout.sum(axis=0)

    assert npp.gradcheck(affine_forward, X, W1, B1, backward=affine_backward).ok
    assert npp.gradcheck(np.tanh, X, backward=lambda d: d * (1 - np.tanh(X) ** 2)).ok


def test_labels_pass_through_and_dict_gradients():
    def forward(z, y):
        return npp.SoftmaxCrossEntropy().forward(z, y)

    def backward(d):
        loss = npp.SoftmaxCrossEntropy()
        loss.forward(Z, Y)
        return {"z": d * loss.backward()}

    Z = rng.standard_normal((N, C))
    assert npp.gradcheck(forward, Z, Y, backward=backward, names=["z", "y"]).ok


def test_model_with_loss_and_user_inputs_untouched():
    model = npp.models.mlp([D, H, C], rng=0)  # float32: gradcheck works on a float64 copy
    before = model[0].weight.data.copy()
    x32 = X.astype(np.float32)
    report = npp.gradcheck(model, x32, Y, loss=npp.SoftmaxCrossEntropy())
    assert report.ok, str(report)
    assert [r.name for r in report.results] == ["0.weight", "0.bias", "2.weight", "2.bias", "input"]
    np.testing.assert_array_equal(model[0].weight.data, before)
    assert model[0].weight.data.dtype == np.float32


def test_planted_bug_in_a_module_is_found():
    class BadLinear(npp.Linear):
        def backward(self, dout):
            super().backward(dout)
            self.bias.grad *= 2  # planted: bias gradient doubled
            return dout @ self.weight.data.T

    layer = BadLinear(D, H, rng=0)
    report = npp.gradcheck(layer, X)
    assert report.wrong == ["bias"]
    assert "2 times the numerical one" in report["bias"].diagnosis


def test_sampled_entries():
    model = npp.models.mlp([D, 30, C], rng=0, dtype=np.float64)
    report = npp.gradcheck(model, X, Y, loss=npp.SoftmaxCrossEntropy(), max_entries=10)
    assert report.ok
    assert report["0.weight"].checked == 10


def test_usage_errors():
    with pytest.raises(npp.ConfigError, match="backward="):
        npp.gradcheck(np.tanh, X)
    with pytest.raises(npp.ConfigError, match="needs the inputs x and targets y"):
        npp.gradcheck(npp.Linear(D, H), X, loss=npp.SoftmaxCrossEntropy())
    report = npp.gradcheck(
        lambda w: (X @ w).sum(), W1, backward=lambda d: (X.T @ np.ones((N, H))).T
    )
    assert not report.ok
    assert "it is transposed" in report["input 0"].diagnosis
