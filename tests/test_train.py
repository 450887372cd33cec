"""Trainer: determinism, callbacks (early stopping, checkpoints, NaN guard), saved models."""

import json

import numpy as np
import pytest

import numprop as npp
from numprop.data.batches import BatchLoader
from numprop.data.preprocess import Standardize
from numprop.training.callbacks import EarlyStopping, HistoryLogger, ModelCheckpoint, NaNGuard
from numprop.training.io import load, save
from numprop.training.trainer import Callback, Trainer


def toy_data(seed=0, n=300):
    """Small images whose class is visible in their mean colour: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])[y]
    x = rng.normal(base[:, None, None, :], 60, (n, 8, 8, 3)).clip(0, 255).astype(np.uint8)
    return x, y


def make_run(seed=0, epochs=3, callbacks=(), lr=0.05, make_opt=None, val=True):
    x, y = toy_data()
    pre = Standardize().fit(x[:240])
    rng = np.random.default_rng(seed)
    train = BatchLoader(x, y, pre, 32, rng=rng, indices=np.arange(240))
    valid = BatchLoader(x, y, pre, 100, shuffle=False, indices=np.arange(240, 300)) if val else None
    model = npp.models.mlp([192, 16, 3], dropout=0.1, rng=seed)
    opt = (make_opt or (lambda ps: npp.SGD(ps, lr=lr, momentum=0.9)))(model.named_parameters())
    trainer = Trainer(
        model, npp.SoftmaxCrossEntropy(), opt, npp.WarmupCosine(opt.lr, warmup=1), list(callbacks)
    )
    history = trainer.fit(train, valid, epochs)
    return trainer, history, pre, valid


def strip_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history.records]


def test_same_seed_same_history_number_for_number():
    _, h1, _, _ = make_run(seed=3)
    _, h2, _, _ = make_run(seed=3)
    _, h3, _, _ = make_run(seed=4)
    assert strip_time(h1) == strip_time(h2)
    assert strip_time(h1) != strip_time(h3)
    assert h1["epoch"] == [1, 2, 3]
    assert h1["val_acc"][-1] > 0.8  # the toy problem is learnt
    assert h1["lr"][0] == pytest.approx(0.05 * (7 / 8))  # last batch of the warm-up epoch


def test_early_stopping_stops_and_restores_best_weights():
    class Scripted(Callback):
        """Overrides the validation loss so the best epoch is known: 2."""

        def on_epoch_end(self, trainer, record):
            record["val_loss"] = {1: 1.0, 2: 0.5}.get(record["epoch"], 0.9)
            if record["epoch"] == 2:
                self.best = trainer.model.state_dict()

    scripted = Scripted()
    stop = EarlyStopping("val_loss", patience=2)
    trainer, history, _, _ = make_run(epochs=10, callbacks=[scripted, stop])
    assert len(history) == 4  # epochs 3 and 4 did not improve on epoch 2
    assert "early stopping" in history.stop_reason
    for name, value in scripted.best.items():
        np.testing.assert_array_equal(trainer.model.state_dict()[name], value)


def test_checkpoint_reloads_to_identical_predictions(tmp_path):
    ckpt = ModelCheckpoint(tmp_path / "best.npz", monitor=None, class_names=["r", "g", "b"])
    trainer, history, pre, _ = make_run(callbacks=[ckpt, HistoryLogger(tmp_path)])
    x, _ = toy_data(seed=9, n=50)
    saved = load(tmp_path / "best.npz")
    assert saved.class_names == ["r", "g", "b"]
    assert len(saved.history) == 3
    model_x = pre.transform(x)
    np.testing.assert_array_equal(saved.model.predict(model_x), trainer.model.predict(model_x))
    rows = json.loads((tmp_path / "history.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert (tmp_path / "history.csv").read_text().splitlines()[0].startswith("epoch,train_loss")


def test_nan_guard_stops_with_advice():
    with pytest.raises(npp.TrainingError, match="lower learning rate"):
        make_run(lr=1e6, callbacks=[NaNGuard()])


def test_save_load_round_trip_with_preprocessing(tmp_path):
    trainer, history, pre, _ = make_run(epochs=1)
    path = save(
        tmp_path / "m.npz",
        trainer.model,
        preprocessing=pre,
        config={"lr": 0.05},
        history=history.to_list(),
        class_names=["r", "g", "b"],
    )
    saved = load(path)
    x, _ = toy_data(seed=5, n=20)
    expected = npp.softmax(trainer.model.predict(pre.transform(x)))
    np.testing.assert_allclose(saved.predict_proba(x), expected, rtol=1e-6)
    assert saved.config == {"lr": 0.05}
    assert [type(m).__name__ for m in saved.model] == ["Linear", "ReLU", "Dropout", "Linear"]
    # the file is plain arrays: readable without pickle
    with np.load(path, allow_pickle=False) as f:
        assert "param/0.weight" in f.files and "meta.json" in f.files
    assert not list(tmp_path.glob(".*tmp*"))


def test_load_rejects_bad_files(tmp_path):
    with pytest.raises(npp.ConfigError, match="no model file"):
        load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(npp.ConfigError, match="not a numprop model file"):
        load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(npp.ConfigError, match="no readable meta.json"):
        load(tmp_path / "other.npz")
    trainer, _, _, _ = make_run(epochs=1)
    path = save(tmp_path / "m.npz", trainer.model)
    with np.load(path) as f:
        arrays = dict(f)
    meta = json.loads(arrays["meta.json"].tobytes())
    meta["format_version"] = 99
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(npp.ConfigError, match="format version 99"):
        load(tmp_path / "future.npz")


def test_adam_trains_too():
    _, history, _, _ = make_run(make_opt=lambda ps: npp.Adam(ps, lr=1e-2))
    assert history["val_acc"][-1] > 0.8


class Interrupt(Callback):
    """Simulates a crash (Ctrl-C) at the end of a given epoch."""

    def __init__(self, after_epoch):
        self.after_epoch = after_epoch

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.after_epoch:
            raise KeyboardInterrupt


def resumable_run(tmp_path, epochs, extra=(), restore=None):
    """A run whose batches, dropout masks and init share one generator, checkpointed each epoch."""
    x, y = toy_data()
    pre = Standardize().fit(x[:240])
    rng = np.random.default_rng(11)
    train = BatchLoader(x, y, pre, 32, rng=rng, indices=np.arange(240))
    model = npp.models.mlp([192, 16, 3], dropout=0.2, rng=rng)
    opt = npp.SGD(model.named_parameters(), lr=0.05, momentum=0.9)
    trainer = Trainer(
        model,
        npp.SoftmaxCrossEntropy(),
        opt,
        npp.WarmupCosine(0.05, warmup=1),
        [npp.Checkpoint(tmp_path / "last.npz", rng), *extra],
    )
    if restore is not None:
        model.load_state_dict(restore.model.state_dict())
        trainer.load_state(*restore.training)
        rng.bit_generator.state = restore.training[1]["rng"]
    return trainer, trainer.fit(train, None, epochs)


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full, full_history = resumable_run(tmp_path / "a", 4)
    with pytest.raises(KeyboardInterrupt):
        resumable_run(tmp_path / "b", 4, extra=[Interrupt(after_epoch=2)])
    saved = load(tmp_path / "b" / "last.npz")
    assert len(saved.history) == 2 and saved.training is not None
    resumed, history = resumable_run(tmp_path / "b", 4, restore=saved)
    assert strip_time(history) == strip_time(full_history)
    for name, value in full.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)


def test_a_v1_checkpoint_resumes_under_the_new_schedule_contract():
    """Checkpoints of the previous release kept the peak rate as trainer "base_lr";
    now the schedule owns it: the old state loads, and training goes on from it."""
    from pathlib import Path

    saved = npp.load(Path(__file__).parent / "data" / "v1_model.npz")
    arrays, meta = saved.training
    assert "base_lr" in meta  # the v1 layout
    model = npp.models.mlp([12, 6, 3], batchnorm=True, dropout=0.1, rng=1)
    model.load_state_dict(saved.model.state_dict())
    opt = npp.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    trainer = Trainer(model, npp.SoftmaxCrossEntropy(), opt, npp.Constant(0.1))
    trainer.load_state(arrays, meta)
    assert len(trainer.history) == 2 and opt.steps == 2
    velocity = opt.state["0.weight"]["velocity"]
    np.testing.assert_array_equal(velocity, arrays["velocity.0.weight"])
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((20, 12)).astype(np.float32), rng.integers(0, 3, 20)
    history = trainer.fit([(x, y)], epochs=3)
    assert len(history) == 3 and history["lr"][-1] == 0.1 and opt.steps == 3
