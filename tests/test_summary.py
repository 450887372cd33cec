"""Module.summary(): the layer table, its shapes and counts, and no change to the model."""

import numpy as np
import pytest

import numprop as npp


def test_mlp_table_names_layers_shapes_and_counts():
    model = npp.models.mlp([3072, 1000, 10], rng=0)
    text = model.summary(3072)
    lines = text.splitlines()
    rows = [line.split() for line in lines if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert rows[0][1].startswith("Linear(in_features=3072,") and "out_features=1000," in text
    assert rows[1][1] == "ReLU()"
    assert rows[2][1].startswith("Linear(in_features=1000,")
    # Each row ends with the output shape and the parameter count.
    assert lines[[line[:1] for line in lines].index("0")].endswith("(N, 1000)      3,073,000")
    assert [" ".join(r[-3:-1]) for r in rows] == ["(N, 1000)", "(N, 1000)", "(N, 10)"]
    assert [r[-1] for r in rows] == ["3,073,000", "0", "10,010"]
    assert lines[-1] == "total parameters: 3,083,010 (trainable: 3,083,010)"
    assert model.summary((3072,)) == text


def test_summary_leaves_batchnorm_statistics_mode_and_buffers_alone():
    model = npp.models.mlp([4, 6, 3], batchnorm=True, dropout=0.5, rng=1, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((8, 4))
    model.forward(x)  # running statistics move away from their initial values
    out = model.forward(x)
    kept = out.copy()
    bn = model[1]
    state = model.state_dict()
    assert bn.training and not np.allclose(bn.running_mean, 0)
    text = model.summary(4)
    assert "BatchNorm1d(num_features=6" in text and "Dropout(p=0.5)" in text
    assert text.splitlines()[-1] == "total parameters: 63 (trainable: 63)"  # 30 + 12 + 21
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert after.keys() == state.keys()
    for name in state:
        np.testing.assert_array_equal(after[name], state[name], err_msg=name)
    np.testing.assert_array_equal(out, kept)  # the last output buffer was not overwritten
    model.eval()
    text_eval = model.summary(4)
    assert text_eval == text and not any(m.training for m in model.modules())


def test_wrong_input_shape_names_the_layer():
    model = npp.models.mlp([5, 4, 2], rng=0)
    with pytest.raises(npp.ConfigError, match=r"layer 0 \(Linear"):
        model.summary(7)
    with pytest.raises(npp.ConfigError, match="positive integer"):
        model.summary(0)


def test_a_single_layer_is_one_row():
    text = npp.Linear(3, 4, rng=0).summary(3)
    rows = [line for line in text.splitlines() if line[:1].isdigit()]
    assert len(rows) == 1 and rows[0].split()[-3:] == ["(N,", "4)", "16"]
