"""The building blocks of accurate MLPs: the bottleneck MLP, LION, EMA, MixUp/CutMix, flip TTA."""

import numpy as np
import pytest

import numprop as npp
from numprop.nn.layers import GELU


def test_bottleneck_mlp_structure_and_parameter_count():
    d, w, depth, c, e = 12, 8, 3, 5, 2
    model = npp.models.bottleneck_mlp(d, w, depth, c, expansion=e, rng=0)
    assert len(model) == depth + 3
    assert isinstance(model[0], npp.Linear)
    assert (model[0].in_features, model[0].out_features) == (d, w)
    for block in model.layers[1 : 1 + depth]:
        assert isinstance(block, npp.Residual)
        kinds = [type(layer) for layer in block.inner]
        assert kinds == [npp.LayerNorm, npp.Linear, GELU, npp.Linear]
        assert block.inner[1].out_features == e * w and block.inner[3].out_features == w
    assert isinstance(model[-2], npp.LayerNorm) and model[-1].out_features == c
    per_block = 2 * w + (w * e * w + e * w) + (e * w * w + w)
    expected = (d * w + w) + depth * per_block + 2 * w + (w * c + c)
    assert sum(p.data.size for p in model.parameters()) == expected
    # LayerNorm's scale and shift and the biases are not decayed, the weights are
    decayed = {name for name, p in model.named_parameters() if p.decay}
    assert "1.inner.1.weight" in decayed and "1.inner.0.gamma" not in decayed
    assert npp.models.bottleneck_mlp(d, w, 2, c, dropout=0.2, rng=0)[1].inner[3].p == 0.2
    same = npp.models.bottleneck_mlp(d, w, depth, c, expansion=e, rng=0)
    for (_, a), (_, b) in zip(model.named_parameters(), same.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_bottleneck_mlp_gradients_with_the_loss():
    model = npp.models.bottleneck_mlp(6, 4, 2, 3, expansion=2, dropout=0.2, rng=0)
    rng = np.random.default_rng(1)
    for p in model.parameters():  # away from the initial gamma = 1, beta = 0, bias = 0
        p.data[:] += 0.3 * rng.standard_normal(p.shape)
    x, y = rng.standard_normal((5, 6)), rng.integers(0, 3, 5)
    report = npp.gradcheck(model, x, y, loss=npp.SoftmaxCrossEntropy())
    assert report.ok, str(report)
    assert {r.name for r in report.results} == {"input", *dict(model.named_parameters())}


def test_bottleneck_mlp_refuses_bad_sizes():
    with pytest.raises(npp.ConfigError, match="bottleneck_mlp needs positive sizes"):
        npp.models.bottleneck_mlp(12, 0, 2, 3)
    with pytest.raises(npp.ConfigError, match="depth >= 0"):
        npp.models.bottleneck_mlp(12, 4, -1, 3)
    assert len(npp.models.bottleneck_mlp(12, 4, 0, 3)) == 3  # stem, LayerNorm, head


def test_bottleneck_mlp_learns_a_small_problem():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 10)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = npp.models.bottleneck_mlp(10, 16, 2, 2, rng=0)
    loss = npp.SoftmaxCrossEntropy()
    opt = npp.AdamW(model.named_parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        value = loss.forward(model.forward(x), y)
        first = value if first is None else first
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()
    assert value < 0.3 * first
