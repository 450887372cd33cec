"""The named recipes of `numprop train --recipe`: each configuration builds and trains a step.

Their accuracy is measured by benchmarks/cifar10.py (runs recipe-NAME), not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import numprop as npp
from numprop.cli import main
from numprop.data.mixing import MixUp
from numprop.training.experiment import (
    RECIPES,
    TrainConfig,
    load_config_data,
    make_loss,
    make_model,
    make_optimizer,
    recipe_config,
    split_data,
    validation_split,
)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_and_trains_one_step(name):
    config = recipe_config(name)
    config.validate()
    assert config.recipe == name
    rng = np.random.default_rng(0)
    model = make_model(config, 3072, 10, rng)
    trainer = npp.Trainer(model, make_loss(config), make_optimizer(config, model))
    x = rng.standard_normal((16, 3072)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    if config.mixup:
        x, y = MixUp(config.mixup, 10)(x, y, rng)
    before = [p.data.copy() for p in model.parameters()]
    loss, _ = trainer.train_step(x, y)
    assert np.isfinite(loss) and abs(loss - np.log(10)) < 3
    assert all(not np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


def test_recipe_two_layer_is_the_question_s_architecture():
    config = recipe_config("two-layer")
    model = make_model(config, 3072, 10, np.random.default_rng(0))
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "ReLU", "Linear"]  # nothing else in the network


def _images(tmp_path, n=160):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, n)
    x = np.clip(rng.integers(40, 216, (4, 1, 1, 3))[y] + rng.normal(0, 60, (n, 8, 8, 3)), 0, 255)
    np.savez(tmp_path / "imgs.npz", X=x.astype(np.uint8), y=y)
    return tmp_path / "imgs.npz"


def test_a_recipe_on_the_command_line_yields_to_explicit_options(tmp_path, capsys):
    data = _images(tmp_path)
    run = tmp_path / "run"
    argv = ["train", "--recipe", "fast", "--data", str(data), "--epochs", "1", "--val-size", "20"]
    assert main([*argv, "--quiet", "--no-plots", "--out", str(run)]) == 0
    config = json.loads((run / "summary.json").read_text())["config"]
    assert config["recipe"] == "fast"
    assert config["hidden"] == RECIPES["fast"][0]["hidden"]  # from the recipe
    assert config["epochs"] == 1  # given explicitly
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--recipe", "fast"]) == 2
    assert "leave out --recipe" in capsys.readouterr().err


def test_bottleneck_mixup_cutmix_ema_and_tta_train_together(tmp_path, capsys):
    data = _images(tmp_path)
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--model", "bottleneck", "--width", "16", "--depth", "2"]
    argv += ["--mixup", "0.4", "--cutmix", "1.0", "--ema", "0.9", "--tta", "--epochs", "2"]
    argv += ["--crop", "1", "--tta-shift", "1"]
    argv += ["--val-size", "20", "--batch-size", "32", "--optimizer", "lion", "--lr", "1e-3"]
    assert main([*argv, "--quiet", "--no-plots", "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy with flips and shifts of 1 pixels averaged (TTA)" in out
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["test_acc_tta"] <= 1
    saved = npp.load(run / "model.npz")
    assert any(type(m).__name__ == "Residual" for m in saved.model.modules())
    # The final (averaged) model's validation accuracy, for choosing between runs
    config = TrainConfig(**summary["config"])
    splits = split_data(load_config_data(config), config, np.random.default_rng(config.seed))
    x_val, y_val = splits.x[splits.val_idx], splits.y[splits.val_idx]
    assert len(y_val) == 20
    x_again, y_again = validation_split(config)  # what benchmarks measure saved runs on
    np.testing.assert_array_equal(x_again, x_val)
    np.testing.assert_array_equal(y_again, y_val)
    for key, tta, tta_shift in (("val_acc_final", False, 0), ("val_acc_final_tta", True, 1)):
        probs = saved.predict_proba(x_val, tta=tta, tta_shift=tta_shift)
        expected = np.mean(probs.argmax(axis=1) == y_val)
        assert summary[key] == pytest.approx(expected, abs=1e-12), key
    x_test, y_test = splits.test_x, splits.test_y
    expected = np.mean(saved.predict_proba(x_test, tta=True, tta_shift=1).argmax(1) == y_test)
    assert summary["test_acc_tta"] == pytest.approx(expected, abs=1e-12)
    assert "validation accuracy of the final (averaged) model" in out
