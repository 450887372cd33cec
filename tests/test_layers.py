"""Finite-difference checks of every layer, in train and eval mode, in float64."""

import numpy as np
import pytest

import numprop as npp

TOL = 1e-6


def layernorm(features=7, seed=4):
    """A LayerNorm whose gamma and beta are not 1 and 0, so their gradients are tested."""
    ln = npp.LayerNorm(features)
    rng = np.random.default_rng(seed)
    ln.gamma.data[:] = rng.uniform(0.5, 1.5, features)
    ln.beta.data[:] = rng.standard_normal(features)
    return ln


def residual_block():
    """Residual(LayerNorm -> Linear(7, 9) -> GELU -> Linear(9, 7)): the bottleneck MLP's block."""
    return npp.Residual(
        npp.Sequential(
            layernorm(),
            npp.Linear(7, 9, rng=5),
            npp.nn.layers.GELU(),
            npp.Linear(9, 7, init="glorot", rng=6),
        )
    )


def layer_cases():
    return [
        ("linear he", lambda: npp.Linear(7, 5, rng=0)),
        ("linear glorot", lambda: npp.Linear(7, 5, init="glorot", rng=1)),
        ("linear normal", lambda: npp.Linear(7, 5, init="normal", scale=0.5, rng=2)),
        ("relu", npp.ReLU),
        ("leaky relu", lambda: npp.LeakyReLU(0.1)),
        ("tanh", npp.Tanh),
        ("sigmoid", npp.Sigmoid),
        ("gelu", npp.nn.layers.GELU),
        ("softmax", npp.nn.layers.Softmax),
        ("identity", npp.nn.layers.Identity),
        ("dropout", lambda: npp.Dropout(0.4, rng=3)),
        ("batchnorm", lambda: npp.BatchNorm1d(7)),
        ("flatten", npp.Flatten),
        ("layernorm", layernorm),
        ("residual", residual_block),
        ("residual of a dropout", lambda: npp.Residual(npp.Dropout(0.3, rng=7))),
    ]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name,make", layer_cases(), ids=[c[0] for c in layer_cases()])
def test_layer_gradients(name, make, mode):
    x = np.random.default_rng(10).standard_normal((6, 7))
    layer = make()
    if name == "flatten":
        x = x[:, :6].reshape(6, 2, 3)  # images-like input, flattened to (6, 6)
    if mode == "eval":
        layer.train()
        layer.forward(x * 2 + 1)  # gives BatchNorm non-trivial running statistics
        layer.eval()
    report = npp.gradcheck(layer, x)
    assert report.ok, str(report)
    assert {r.name for r in report.results} == {"input", *dict(layer.named_parameters())}
    assert all(r.max_rel_error < TOL for r in report.results)


def test_batchnorm_eval_uses_running_statistics():
    bn = npp.BatchNorm1d(3, momentum=1.0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((50, 3)) * 3 + 2
    bn.forward(x)
    np.testing.assert_allclose(bn.running_mean, x.mean(0))
    np.testing.assert_allclose(bn.running_var, x.var(0, ddof=1))
    bn.eval()
    out = bn.forward(np.full((2, 3), 2.0))
    np.testing.assert_allclose(
        out, (2.0 - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + 1e-5) * np.ones((2, 1))
    )


def test_batchnorm_train_output_is_normalised():
    bn = npp.BatchNorm1d(4, dtype=np.float64)
    out = bn.forward(np.random.default_rng(1).standard_normal((64, 4)) * 5 - 3)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(0), 1, rtol=1e-3)


def test_dropout_is_inverted_and_identity_in_eval():
    d = npp.Dropout(0.25, rng=0)
    x = np.ones((2000, 50), np.float32)
    y = d.forward(x)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    d.eval()
    assert d.forward(x) is x


def test_dropout_same_seed_same_mask():
    x = np.ones((10, 10), np.float32)
    a = npp.Dropout(0.5, rng=4).forward(x).copy()
    b = npp.Dropout(0.5, rng=4).forward(x).copy()
    np.testing.assert_array_equal(a, b)


def test_linear_forward_matches_definition_and_init_scales():
    rng = np.random.default_rng(0)
    lin = npp.Linear(400, 300, rng=0)
    x = rng.standard_normal((5, 400)).astype(np.float32)
    lin.bias.data[:] = rng.standard_normal(300)
    np.testing.assert_allclose(lin.forward(x), x @ lin.weight.data + lin.bias.data, rtol=1e-5)
    assert lin.weight.data.dtype == np.float32
    assert abs(lin.weight.data.std() - np.sqrt(2 / 400)) < 0.003
    glorot = npp.Linear(400, 300, init="glorot", rng=0).weight.data
    assert abs(glorot.std() - np.sqrt(2 / 700)) < 0.003
    assert abs(npp.Linear(400, 300, init="normal", rng=0).weight.data.std() - 0.01) < 0.0005


def test_sigmoid_extreme_inputs_no_overflow():
    y = npp.Sigmoid().forward(np.array([[-1e4, 0.0, 1e4]]))
    np.testing.assert_allclose(y, [[0.0, 0.5, 1.0]])


def test_flatten_round_trip():
    f = npp.Flatten()
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float64).reshape(2, 4, 4, 3)
    assert f.forward(x).shape == (2, 48)
    assert f.backward(np.ones((2, 48))).shape == x.shape


def test_every_layer_works_in_float64_and_float32():
    for dtype in (np.float32, np.float64):
        model = npp.models.mlp([8, 6, 6, 3], batchnorm=True, dropout=0.1, rng=0, dtype=dtype)
        x = np.random.default_rng(0).standard_normal((4, 8)).astype(dtype)
        out = model.forward(x)
        assert out.dtype == dtype
        dx = model.backward(np.ones_like(out))
        assert dx.dtype == dtype
        assert all(p.grad.dtype == dtype for p in model.parameters())


def test_bad_input_shape_is_a_clear_error():
    with pytest.raises(npp.ConfigError, match=r"expects input of shape \(N, 7\)"):
        npp.Linear(7, 3).forward(np.zeros((2, 5), np.float32))
    with pytest.raises(npp.ConfigError, match="unknown init"):
        npp.Linear(7, 3, init="xavier-ish")
    with pytest.raises(npp.ConfigError):
        npp.Dropout(1.0)


def test_layernorm_normalises_each_row_the_same_in_train_and_eval():
    ln = npp.LayerNorm(5, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((4, 5)) * 7 + 3
    out = ln.forward(x).copy()
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=1), 1, rtol=1e-5)  # var / (var + eps)
    expected = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    ln.eval()
    np.testing.assert_array_equal(ln.forward(x), out)  # no running statistics
    np.testing.assert_allclose(ln.forward(x[:1]), out[:1], rtol=1e-12)  # rows on their own


def test_residual_adds_its_input_and_names_the_blocks_parameters():
    block = residual_block().to(np.float64)
    inner = block.inner
    x = np.random.default_rng(3).standard_normal((4, 7))
    expected = x + inner.forward(x).copy()
    np.testing.assert_allclose(block.forward(x), expected, rtol=1e-12)
    names = [name for name, _ in block.named_parameters()]
    assert names == [f"inner.{n}" for n, _ in inner.named_parameters()]
    assert names[0] == "inner.0.gamma"
    assert repr(block) == "Residual(LayerNorm -> Linear -> GELU -> Linear)"
    dout = np.ones_like(x)
    through = inner.backward(dout).copy()
    np.testing.assert_allclose(block.backward(dout), dout + through, rtol=1e-12)
    # an identity block: the output is its own buffer, twice the input
    twice = npp.Residual(npp.nn.layers.Identity())
    y = twice.forward(x)
    assert y is not x
    np.testing.assert_array_equal(y, 2 * x)


def test_layernorm_and_residual_refuse_what_does_not_fit():
    with pytest.raises(npp.ConfigError, match=r"LayerNorm expects input of shape \(N, 4\)"):
        npp.LayerNorm(4).forward(np.zeros((2, 5), np.float32))
    with pytest.raises(npp.ConfigError, match="positive number of features"):
        npp.LayerNorm(0)
    with pytest.raises(npp.ConfigError, match="takes a Module"):
        npp.Residual(lambda x: x)
    with pytest.raises(npp.ConfigError, match="must keep the shape"):
        npp.Residual(npp.Linear(4, 3)).forward(np.zeros((2, 4), np.float32))
