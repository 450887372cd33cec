"""ArrayLoader (batches of plain arrays) and stratified splits of labels of any type."""

import numpy as np
import pytest

import numprop as npp
from numprop.data.batches import ArrayLoader, stratified_split
from numprop.errors import ConfigError, DataError


def _table(n=103, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 3, n)


def test_each_pass_covers_every_example_once_in_a_seeded_order():
    x, y = _table()
    x[:, 0] = np.arange(len(x))  # the row number travels with the row
    passes = []
    for _ in range(2):
        loader = ArrayLoader(x, y, 10, rng=np.random.default_rng(7))
        rows = [xb[:, 0].astype(int).copy() for xb, _ in loader]
        assert [len(r) for r in rows] == [10] * 10 + [3]
        seen = np.concatenate(rows)
        assert sorted(seen) == list(range(len(x)))
        passes.append(seen)
    np.testing.assert_array_equal(passes[0], passes[1])  # same seed, same order
    loader = ArrayLoader(x, y, 10, rng=np.random.default_rng(7))
    first, second = (np.concatenate([xb[:, 0].copy() for xb, _ in loader]) for _ in range(2))
    assert not np.array_equal(first, second)  # a new order every pass


def test_batches_match_their_rows_and_buffers_are_reused():
    x, y = _table()
    loader = ArrayLoader(x, y, 16, shuffle=False)
    assert len(loader) == 7
    buffers = set()
    for k, (xb, yb) in enumerate(loader):
        assert xb.dtype == np.float32 and yb.dtype == y.dtype
        np.testing.assert_array_equal(xb, x[16 * k : 16 * (k + 1)].astype(np.float32))
        np.testing.assert_array_equal(yb, y[16 * k : 16 * (k + 1)])
        buffers.add(xb.__array_interface__["data"][0])
    assert len(buffers) == 1  # every batch is a view of one buffer
    assert len(ArrayLoader(x, y, 16, shuffle=False, drop_last=True)) == 6


def test_indices_dtype_and_targets_of_any_shape():
    x, _ = _table()
    y = np.random.default_rng(1).random((len(x), 2))  # regression with two outputs
    loader = ArrayLoader(x, y, 8, shuffle=False, indices=[5, 2, 9], dtype=np.float64)
    ((xb, yb),) = list(loader)
    np.testing.assert_array_equal(xb, x[[5, 2, 9]])
    np.testing.assert_array_equal(yb, y[[5, 2, 9]])


@pytest.mark.parametrize(
    "x,y,match",
    [
        (np.zeros((4, 2, 2)), np.zeros(4), "2-D array of numbers"),
        (np.array([["a", "b"]] * 4), np.zeros(4), "2-D array of numbers"),
        (np.zeros((4, 2)), np.zeros(3), "one row per example"),
        (np.array([[0.0, np.nan]] * 4), np.zeros(4), "NaN or infinite"),
    ],
)
def test_bad_arrays_are_refused_with_one_line(x, y, match):
    with pytest.raises(DataError, match=match):
        ArrayLoader(x, y, 2, shuffle=False)


def test_bad_settings_are_refused():
    x, y = _table()
    with pytest.raises(ConfigError, match="shuffle needs rng"):
        ArrayLoader(x, y, 4)
    with pytest.raises(ConfigError, match="batch_size"):
        ArrayLoader(x, y, 0, shuffle=False)
    with pytest.raises(ConfigError, match="indices must lie"):
        ArrayLoader(x, y, 4, shuffle=False, indices=[0, len(x)])
    with pytest.raises(ConfigError, match="float32, float64 or .bf16."):
        ArrayLoader(x, y, 4, shuffle=False, dtype=np.int32)


def test_a_table_trains_through_fit():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 600)
    x = rng.standard_normal((600, 4)) + 3 * np.eye(3, 4)[y]
    split_train, split_val = stratified_split(y, 100, rng)
    train = ArrayLoader(x, y, 32, rng=rng, indices=split_train)
    val = ArrayLoader(x, y, 100, shuffle=False, indices=split_val)
    model = npp.models.mlp([4, 16, 3], rng=0)
    trainer = npp.Trainer(
        model, npp.SoftmaxCrossEntropy(), npp.SGD(model.named_parameters(), lr=0.05, momentum=0.9)
    )
    history = trainer.fit(train, val, epochs=5)
    assert history["val_acc"][-1] > 0.9


@pytest.mark.parametrize(
    "labels",
    [
        np.array(["cat", "dog", "dog", "bird"] * 25),
        np.array(["cat", "dog", "dog", "bird"] * 25, dtype=object),
        np.array([True, False, False, False] * 25),
    ],
    ids=["str", "object-str", "bool"],
)
def test_stratified_split_takes_labels_of_any_type(labels):
    train, val = stratified_split(labels, 20, np.random.default_rng(0))
    assert len(val) == 20 and len(train) == 80
    for value in np.unique(labels):
        share = np.mean(labels == value)
        assert np.sum(labels[val] == value) == round(20 * share)


def test_stratified_split_refuses_labels_that_are_not_classes():
    with pytest.raises(DataError, match="integers, booleans or strings"):
        stratified_split(np.array([1, "a", 2.0], dtype=object), 1, np.random.default_rng(0))
    with pytest.raises(DataError, match="integers, booleans or strings"):
        stratified_split(np.linspace(0, 1, 10), 2, np.random.default_rng(0))


def test_columns_are_standardised_each_on_its_own_and_round_trip():
    from numprop.data.preprocess import PREPROCESSING, preprocessing_from_state

    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, 6)) * [1, 10, 100, 0.1, 5, 0] + [0, -3, 7, 1, 2, 4]
    pre = PREPROCESSING.create("columns").fit(x)
    out = pre.transform(x)
    assert out.dtype == np.float32 and out.shape == (500, 6)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(out[:, :5].std(axis=0), 1, rtol=1e-5)  # each column, not pooled
    np.testing.assert_array_equal(out[:, 5], 0)  # a constant column: centred
    again = preprocessing_from_state("columns", *pre.state())
    np.testing.assert_array_equal(again.transform(x), out)
    with pytest.raises(DataError, match="NaN or infinite"):
        PREPROCESSING.create("columns").fit(np.array([[1.0, np.inf], [2.0, 3.0]]))
