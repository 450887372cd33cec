"""The building blocks of accurate MLPs: the bottleneck MLP, LION, EMA, MixUp/CutMix, flip TTA."""

import re
from pathlib import Path

import numpy as np
import pytest

import numprop as npp
from numprop.cli import main
from numprop.data.batches import ArrayLoader, hflip, shift
from numprop.data.mixing import CutMix, MixedBatches, MixUp, one_hot
from numprop.data.preprocess import Standardize
from numprop.nn.layers import GELU
from numprop.training.io import SavedModel, flip_tta, shift_tta


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


# -- the moving average of the weights ---------------------------------------------------------


def small_run(callbacks, epochs=2, model=None):
    """A float64 MLP trained by plain SGD on 24 fixed rows in batches of 8 (no shuffling)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 5)), rng.integers(0, 3, 24)
    model = model or npp.models.mlp([5, 4, 3], rng=0, dtype=np.float64)
    opt = npp.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), opt, callbacks=callbacks)
    loader = ArrayLoader(x, y, 8, shuffle=False, dtype=np.float64)
    return trainer, loader, epochs


class Weights(npp.Callback):
    """Records every parameter after each optimizer step."""

    def __init__(self):
        self.seen = []

    def on_train_begin(self, trainer):
        if not self.seen:
            self.seen.append(trainer.model.state_dict())

    def on_batch_end(self, trainer, batch, loss, size):
        self.seen.append(trainer.model.state_dict())


def test_ema_is_the_average_computed_by_hand():
    weights, ema = Weights(), npp.EMA(decay=0.75)
    trainer, loader, epochs = small_run([weights, ema])
    trainer.fit(loader, epochs=epochs)
    assert ema.updates == 6 and len(weights.seen) == 7
    for name in weights.seen[0]:
        average = weights.seen[0][name]  # starts at the initial weights
        for w in weights.seen[1:]:
            average = 0.75 * average + 0.25 * w[name]
        np.testing.assert_allclose(ema.averages[name], average, rtol=1e-13, atol=1e-15)
        assert not np.allclose(average, weights.seen[-1][name])  # not just the last weights


def test_ema_every_k_steps_averages_every_kth_weights_with_the_decay_to_the_k():
    weights, ema = Weights(), npp.EMA(decay=0.75, every=4)
    trainer, loader, _ = small_run([weights, ema], epochs=3)
    trainer.fit(loader, epochs=3)  # 9 steps: updates after the 4th and the 8th
    assert ema.updates == 2 and ema.steps == 9
    for name in weights.seen[0]:
        average = weights.seen[0][name]
        for w in (weights.seen[4], weights.seen[8]):
            average = 0.75**4 * average + (1 - 0.75**4) * w[name]
        np.testing.assert_allclose(ema.averages[name], average, rtol=1e-13, atol=1e-15)
    with pytest.raises(npp.ConfigError, match="every must be"):
        npp.EMA(every=0)


def test_ema_swap_puts_the_averages_in_and_the_weights_back_exactly():
    ema = npp.EMA(decay=0.5)
    trainer, loader, epochs = small_run([ema])
    trainer.fit(loader, epochs=epochs)
    model = trainer.model
    before = model.state_dict()
    with ema.swap():
        for name, p in model.named_parameters():
            np.testing.assert_array_equal(p.data, ema.averages[name])
    after = model.state_dict()
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    with pytest.raises(RuntimeError), ema.swap():  # an error inside still puts them back
        raise RuntimeError
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name])
    ema.apply()
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, ema.averages[name])


def test_ema_refuses_what_it_cannot_do():
    with pytest.raises(npp.ConfigError, match="decay must be in"):
        npp.EMA(decay=1.0)
    with pytest.raises(npp.ConfigError, match="no averages yet"), npp.EMA().swap():
        pass
    ema = npp.EMA()
    trainer, loader, _ = small_run([ema])
    trainer.fit(loader, epochs=1)
    other = npp.models.mlp([5, 6, 3], rng=0, dtype=np.float64)
    with pytest.raises(npp.ConfigError, match="do not match"):
        ema.apply(other)


@pytest.mark.parametrize("every", [1, 2])
def test_ema_resumes_exactly_from_the_trainer_state(every):
    whole = npp.EMA(decay=0.9, every=every)
    trainer, loader, _ = small_run([whole], epochs=3)
    trainer.fit(loader, epochs=3)

    first = npp.EMA(decay=0.9, every=every)
    trainer, loader, _ = small_run([first])
    trainer.fit(loader, epochs=1)
    arrays, meta = trainer.state()
    assert any(k.startswith("callback.EMA.") for k in arrays)
    weights = trainer.model.state_dict()
    model = npp.models.mlp([5, 4, 3], rng=1, dtype=np.float64)
    model.load_state_dict(weights)
    resumed = npp.EMA(decay=0.9, every=every)
    trainer, loader, _ = small_run([resumed], model=model)
    trainer.load_state(arrays, meta)
    trainer.fit(loader, epochs=3)
    # 3 steps an epoch: with every=2 the first epoch ends between two updates
    assert resumed.updates == whole.updates == 9 // every
    for name, average in whole.averages.items():
        np.testing.assert_array_equal(resumed.averages[name], average)


# -- MixUp and CutMix ----------------------------------------------------------------------------


def image_batch(b=8, h=6, w=5, c=3, classes=4, seed=0):
    """Images whose every pixel is the image's number + 1 (so a pixel says where it came from)."""
    x = np.broadcast_to(np.arange(1, b + 1, dtype=np.float32)[:, None, None, None], (b, h, w, c))
    y = np.random.default_rng(seed).integers(0, classes, b)
    return np.ascontiguousarray(x), y


def test_mixup_mixes_examples_and_labels_with_one_beta_weight():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)).astype(np.float32), np.array([0, 1, 2, 0, 1, 2])
    kept = x.copy()
    mixed, targets = MixUp(0.4, classes=3)(x, y, np.random.default_rng(7))
    lam, perm = MixUp(0.4, classes=3).draw(6, np.random.default_rng(7))  # the same draws
    assert 0 < lam < 1 and sorted(perm) == list(range(6))
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[perm], rtol=1e-6)
    eye = np.eye(3)
    np.testing.assert_allclose(targets, lam * eye[y] + (1 - lam) * eye[y[perm]], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-6)
    assert mixed.dtype == targets.dtype == np.float32
    np.testing.assert_array_equal(x, kept)  # the input is left alone
    again = MixUp(0.4, classes=3)(x, y, np.random.default_rng(7))
    np.testing.assert_array_equal(again[0], mixed)
    np.testing.assert_array_equal(again[1], targets)
    other = MixUp(0.4, classes=3)(x, y, np.random.default_rng(8))
    assert not np.array_equal(other[0], mixed)


def test_cutmix_weight_is_the_share_of_pasted_pixels():
    h, w = 6, 5
    x, y = image_batch(h=h, w=w)
    for seed in range(20):
        mixed, targets = CutMix(1.0, classes=4)(x, y, np.random.default_rng(seed))
        (top, bottom, left, right), perm = CutMix(1.0, classes=4).draw(
            len(x), (h, w), np.random.default_rng(seed)
        )
        np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-6)
        share = 1 - (bottom - top) * (right - left) / (h * w)  # lam
        for i, j in enumerate(perm):
            from_partner = np.mean(mixed[i, :, :, 0] == j + 1) if j != i else 0.0
            if y[i] != y[j]:  # the partner's class weighs its share of the pixels
                assert targets[i, y[j]] == pytest.approx(from_partner, abs=1e-6)
                assert targets[i, y[i]] == pytest.approx(share, abs=1e-6)
            else:
                assert targets[i, y[i]] == pytest.approx(1.0)
            if j != i:
                assert from_partner == pytest.approx(1 - share)
        assert mixed.dtype == x.dtype and mixed.shape == x.shape


def test_cutmix_on_rows_with_an_image_shape_and_on_uint8_images():
    x, y = image_batch()
    rows = x.reshape(len(x), -1)
    as_rows = CutMix(1.0, 4, image_shape=(6, 5, 3))(rows, y, np.random.default_rng(3))
    as_images = CutMix(1.0, 4)(x, y, np.random.default_rng(3))
    np.testing.assert_array_equal(as_rows[0], as_images[0].reshape(len(x), -1))
    np.testing.assert_array_equal(as_rows[1], as_images[1])
    pixels, targets = CutMix(1.0, 4)(x.astype(np.uint8), y, np.random.default_rng(3))
    assert pixels.dtype == np.uint8 and targets.dtype == np.float32
    with pytest.raises(npp.DataError, match="image_shape"):
        CutMix(1.0, 4)(rows, y, np.random.default_rng(0))


def test_mixing_refuses_bad_settings_and_labels():
    with pytest.raises(npp.ConfigError, match="alpha must be a positive number"):
        MixUp(0)
    with pytest.raises(npp.ConfigError, match="image_shape"):
        CutMix(1.0, 4, image_shape=(6, 5))
    x, y = image_batch()
    with pytest.raises(npp.ConfigError, match="classes=C"):
        MixUp(0.2)(x, y, np.random.default_rng(0))
    with pytest.raises(npp.DataError, match=r"labels must lie in \[0, 2\)"):
        MixUp(0.2, classes=2)(x, y + 2, np.random.default_rng(0))
    with pytest.raises(npp.ConfigError, match="Generator"):
        MixUp(0.2, classes=4)(x, y, 0)
    # probability rows mix again, without classes
    rows = one_hot(y, 4)
    _, twice = MixUp(0.2)(x, rows, np.random.default_rng(0))
    np.testing.assert_allclose(twice.sum(axis=1), 1, rtol=1e-6)


def test_mixed_batches_train_with_probability_targets():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 90)).astype(np.float32), rng.integers(0, 3, 32)
    mixes = [MixUp(0.2, classes=3), CutMix(1.0, classes=3, image_shape=(6, 5, 3))]

    def run():
        loader = ArrayLoader(x, y, 8, rng=np.random.default_rng(1))
        batches = MixedBatches(loader, mixes, np.random.default_rng(2))
        assert len(batches) == 4
        return [(a.copy(), t.copy()) for a, t in batches]

    first, second = run(), run()
    assert len(first) == 4
    for (a, t), (b, u) in zip(first, second):  # the same seeds, the same batches
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(t, u)
        assert t.shape == (8, 3)
    model = npp.models.mlp([90, 8, 3], rng=0)
    trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), npp.SGD(model.named_parameters()))
    loader = ArrayLoader(x, y, 8, rng=np.random.default_rng(1))
    history = trainer.fit(MixedBatches(loader, mixes[0], np.random.default_rng(2)), epochs=1)
    assert np.isfinite(history["train_loss"][0])


# -- test-time augmentation ----------------------------------------------------------------------


def image_model(seed=0):
    """A SavedModel on random 4x4 RGB images of three classes, and 40 such images."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    model = npp.models.mlp([48, 16, 3], rng=seed)
    inputs = {"kind": "images", "shape": [4, 4, 3]}
    saved = SavedModel(model, Standardize().fit(images), ["a", "b", "c"], inputs=inputs)
    return saved, images


def test_hflip_mirrors_each_row_of_pixels_and_twice_is_identity():
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 5, 2), dtype=np.uint8)
    flipped = hflip(images)
    assert flipped.flags.c_contiguous and flipped.shape == images.shape
    np.testing.assert_array_equal(flipped[:, :, 0], images[:, :, 4])
    np.testing.assert_array_equal(flipped[1, 2, 1], images[1, 2, 3])
    np.testing.assert_array_equal(hflip(flipped), images)
    with pytest.raises(npp.DataError, match="hflip"):
        hflip(images.reshape(3, -1))


def test_tta_is_the_mean_of_the_two_predictions():
    saved, images = image_model()
    plain, mirrored = saved.predict_proba(images), saved.predict_proba(hflip(images))
    assert not np.allclose(plain, mirrored)  # the flip matters to this model
    both = saved.predict_proba(images, batch_size=16, tta=True)
    np.testing.assert_allclose(both, (plain + mirrored) / 2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(both.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(flip_tta(saved.predict_proba, images), both, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(  # images that are their own mirror: TTA changes nothing
        saved.predict_proba(images[:, :, [0, 1, 1, 0]], tta=True),
        saved.predict_proba(images[:, :, [0, 1, 1, 0]]),
        rtol=1e-6,
        atol=1e-7,
    )
    table = SavedModel(saved.model, None, inputs={"kind": "table", "width": 48, "columns": None})
    with pytest.raises(npp.ConfigError, match="images"):
        table.predict_proba(np.zeros((2, 48), np.float32), tta=True)


def shifted_by_hand(images, dy, dx):
    """images moved down dy and right dx pixels, zeros in the gap: one pixel at a time."""
    out = np.zeros_like(images)
    n, h, w, _ = images.shape
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                out[:, y + dy, x + dx] = images[:, y, x]
    return out


def test_shift_moves_the_picture_and_fills_the_gap_with_zeros():
    images = np.random.default_rng(0).integers(1, 256, (3, 4, 5, 2), dtype=np.uint8)
    for dy, dx in [(0, 0), (1, 0), (0, -2), (-1, 3), (2, 2), (4, 0), (-9, 1)]:
        moved = shift(images, dy, dx)
        assert moved.flags.c_contiguous and moved.shape == images.shape
        np.testing.assert_array_equal(moved, shifted_by_hand(images, dy, dx), err_msg=f"{dy, dx}")
    assert shift(images, 1, 0)[:, 0].max() == 0 and shift(images, 1, 0)[:, 1:].min() > 0
    with pytest.raises(npp.DataError, match="shift"):
        shift(images.reshape(3, -1), 1, 1)


def test_shift_tta_is_the_mean_over_the_nine_shifted_copies():
    saved, images = image_model()
    views = [
        saved.predict_proba(shifted_by_hand(images, dy, dx))
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    assert not np.allclose(views[0], views[4])  # the shift matters to this model
    expected = np.mean(views, axis=0)
    before = images.copy()
    np.testing.assert_allclose(
        shift_tta(saved.predict_proba, images, 1), expected, rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(images, before)  # not modified
    np.testing.assert_allclose(
        saved.predict_proba(images, batch_size=16, tta_shift=1), expected, rtol=1e-6, atol=1e-7
    )
    # With flips too: 18 views, each shifted copy with its mirror
    both = [
        saved.predict_proba(shifted_by_hand(im, dy, dx))
        for im in (images, hflip(images))
        for dy in (-2, 0, 2)
        for dx in (-2, 0, 2)
    ]
    np.testing.assert_allclose(
        saved.predict_proba(images, tta=True, tta_shift=2),
        np.mean(both, axis=0),
        rtol=1e-6,
        atol=1e-7,
    )
    table = SavedModel(saved.model, None, inputs={"kind": "table", "width": 48, "columns": None})
    with pytest.raises(npp.ConfigError, match="images"):
        table.predict_proba(np.zeros((2, 48), np.float32), tta_shift=1)
    with pytest.raises(npp.ConfigError, match="tta_shift"):
        saved.predict_proba(images, tta_shift=-1)


def test_evaluate_tta_option(tmp_path, capsys):
    saved, images = image_model()
    labels = np.array(["a", "b", "c"])[np.random.default_rng(1).integers(0, 3, len(images))]
    path = npp.save(
        tmp_path / "m.npz",
        saved.model,
        preprocessing=saved.preprocessing,
        class_names=saved.class_names,
        inputs=saved.inputs,
    )
    np.savez(tmp_path / "data.npz", X=images, y=labels)
    assert main(["evaluate", str(path), "--data", str(tmp_path / "data.npz"), "--tta"]) == 0
    out = capsys.readouterr().out
    truth = np.searchsorted(["a", "b", "c"], labels)
    accuracy = np.mean(npp.load(path).predict_proba(images, tta=True).argmax(1) == truth)
    assert f"accuracy {100 * accuracy:.2f}% on 40 examples" in out and "(--tta)" in out
    rows = tmp_path / "rows.npz"
    table = npp.save(tmp_path / "t.npz", saved.model, inputs={"kind": "table", "width": 48})
    np.savez(rows, X=images.reshape(40, -1).astype(np.float32), y=labels)
    assert main(["evaluate", str(table), "--data", str(rows), "--tta"]) == 2
    assert "test-time augmentation (--tta, --tta-shift) is for images" in capsys.readouterr().err
    capsys.readouterr()
    argv = [
        "evaluate",
        str(path),
        "--data",
        str(tmp_path / "data.npz"),
        "--tta",
        "--tta-shift",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    probs = npp.load(path).predict_proba(images, tta=True, tta_shift=1)
    accuracy = np.mean(probs.argmax(1) == truth)
    assert f"accuracy {100 * accuracy:.2f}% on 40 examples" in out
    assert "shifted by 1 pixels" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(path), "--data", str(tmp_path / "data.npz"), "--tta-shift", "-1"])
    assert exit_info.value.code == 2 and "--tta-shift" in capsys.readouterr().err


def test_the_docs_example_runs(capsys):
    text = (Path(__file__).resolve().parents[1] / "docs" / "blocks.md").read_text()
    namespace = {}
    exec(re.search(r"```python\n(.*?)```", text, re.S).group(1), namespace)
    assert "total parameters: 18,794" in capsys.readouterr().out
    assert namespace["ema"].updates == 8 and namespace["averaged"].shape == (8, 10)
