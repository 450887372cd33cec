"""`numprop doctor`: each classic pathology is planted in a small run, and the doctor must name it.

The data: ten Gaussian blobs in 50 dimensions, standardised, that a healthy
network fits to well above chance in a few epochs. Each test trains a broken
network on it with the Diagnostics callback writing diagnostics.json, then
runs `numprop doctor` on the folder as a user would.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re

import numpy as np
import pytest

import numprop as npp
from numprop.cli import main
from numprop.data.batches import ArrayLoader
from numprop.training import doctor
from numprop.training.diagnostics import Diagnostics

needs_cifar = pytest.mark.skipif(
    not os.environ.get("NUMPROP_DATA_DIR"), reason="NUMPROP_DATA_DIR not set (CI sets it)"
)

C, D = 10, 50


def blobs(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (C, D))
    y = rng.integers(0, C, n)
    x = centres[y] + rng.normal(0, 1, (n, D))
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y


def run(tmp_path, model, *, lr=0.01, epochs=4, optimizer="sgd"):
    """Train ``model`` on the blobs with diagnostics; returns (doctor's exit code, output, record)."""
    x, y = blobs()
    ps = model.named_parameters()
    opt = npp.SGD(ps, lr=lr, momentum=0.9) if optimizer == "sgd" else npp.Adam(ps, lr=lr)
    train = ArrayLoader(x[:1600], y[:1600], 64, rng=np.random.default_rng(1))
    val = ArrayLoader(x[1600:], y[1600:], 200, shuffle=False)
    diag = Diagnostics(path=tmp_path / "diagnostics.json")
    trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), opt, callbacks=[diag, npp.NaNGuard()])
    with contextlib.suppress(npp.TrainingError):  # the doctor reads what was written before
        trainer.fit(train, val, epochs)
    return doctor_says(tmp_path)


def doctor_says(folder):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["doctor", str(folder)])
    return code, out.getvalue(), doctor.read(folder)


def mlp(hidden, **kwargs):
    return npp.models.mlp([D, *hidden, C], rng=0, **kwargs)


# -- a healthy run: no finding -----------------------------------------------------------


def test_a_healthy_run_has_no_finding_and_its_figure_is_drawn(tmp_path):
    code, out, record = run(tmp_path, mlp([100]))
    assert code == 0, out
    assert "nothing wrong found in 4 epochs" in out
    assert (tmp_path / "doctor.png").stat().st_size > 10_000
    # What was recorded is what the rules look at, per layer.
    first = record["epochs"][0]["layers"]
    assert set(first) == {"0", "1", "2"}
    assert {"weight_rms", "update_ratio", "grad_rms"} <= set(first["0"])
    assert {"mean", "std", "dead", "active"} <= set(first["1"])
    assert 1e-4 < first["0"]["update_ratio"] < 1e-1
    assert first["1"]["dead"] < 0.1
    assert abs(record["first_loss"] - math.log(C)) < 2
    assert record["epochs"][0]["examples"] >= 10 * 64  # about 10 sampled steps per epoch
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3, 4]


# -- each pathology, named ------------------------------------------------------------------


def test_weights_too_large_saturate_tanh(tmp_path):
    code, out, _ = run(tmp_path, mlp([100], activation="tanh", init="normal", init_scale=1.0))
    assert code == 1
    assert re.search(r"\d+% of layer 1 \(Tanh\)'s outputs are saturated in epoch 1", out), out
    assert "Glorot" in out


def test_weights_too_small_in_a_deep_network_make_gradients_vanish(tmp_path):
    code, out, _ = run(tmp_path, mlp([100] * 6, init="normal", init_scale=0.01))
    assert code == 1
    assert "the gradients vanish: the gradient reaching layer 0 (Linear 50→100)" in out, out
    assert "He initialisation" in out
    assert "training accuracy is" in out and "about chance" in out


def test_a_learning_rate_far_too_high_diverges_with_a_huge_update_ratio(tmp_path):
    code, out, record = run(tmp_path, mlp([100]), lr=3.0)
    assert code == 1
    findings = out.split("\n\n")
    assert "[serious] training diverged" in findings[1], out  # the most serious first
    assert re.search(r"update/weight ratio of layer \d .* about \d+ times the usual 1e-03", out)
    assert "learning rate is too high (now 3)" in out
    assert record["epochs"][-1].get("partial")  # what the diverging epoch saw was kept


def test_a_learning_rate_far_too_low_moves_nothing(tmp_path):
    code, out, _ = run(tmp_path, mlp([100]), lr=1e-7)
    assert code == 1
    assert re.search(r"update/weight ratio is at most \d\.\de-0[67]", out), out
    assert "the learning rate is too low (now 1e-07): raise it about" in out
    assert "the training loss hardly fell" in out


def test_dead_relus_from_a_large_negative_bias_stop_the_run(tmp_path):
    model = mlp([100])
    model[0].bias.data[:] = -20
    x, y = blobs()
    trainer = npp.Trainer(
        model,
        npp.SoftmaxCrossEntropy(),
        npp.SGD(model.named_parameters(), lr=0.01, momentum=0.9),
        callbacks=[Diagnostics(path=tmp_path / "diagnostics.json")],
    )
    with pytest.raises(npp.TrainingError, match="every unit of layer 1 .* is dead"):
        trainer.fit(ArrayLoader(x, y, 64, rng=np.random.default_rng(1)), epochs=5)
    assert len(trainer.history) == 1  # stopped after the first epoch, not five
    code, out, _ = doctor_says(tmp_path)
    assert code == 1
    assert "100% of layer 1 (ReLU)'s units never fired in epoch 1 (dead)" in out
    assert "[serious] training was stopped" in out


def test_softmax_on_the_hidden_layer_is_named_and_cannot_fit_20_examples(tmp_path):
    code, out, _ = run(tmp_path, mlp([100], activation="softmax"))
    assert code == 1
    assert "[serious] layer 1 is a softmax on a hidden layer" in out
    # The sanity check: the network of the question with the bug cannot memorise 20
    # examples, while the same network with ReLU does at once.
    x, y = blobs(n=20, seed=3)
    results = {}
    for activation in ("softmax", "relu"):
        model = mlp([100], activation=activation)
        results[activation] = doctor.sanity(
            model,
            npp.SoftmaxCrossEntropy(),
            lambda m: npp.SGD(m.named_parameters(), lr=0.01, momentum=0.9),
            x,
            y,
            steps=300,
        )
    assert [r.ok for r in results["relu"]] == [True, True, True], results["relu"]
    layers, _, fit = results["softmax"]
    assert not layers.ok and "softmax on a hidden layer" in layers.detail
    assert not fit.ok and "softmax on a hidden layer" in fit.meaning


def test_no_activation_between_linear_layers_is_named(tmp_path):
    code, out, _ = run(tmp_path, mlp([100, 100], activation="identity"))
    assert code == 1
    assert "layers 0 and 2 are Linear with no activation between them" in out
    assert "layers 2 and 4 are Linear with no activation between them" in out


def test_a_wrong_output_initialisation_shows_in_the_first_loss(tmp_path):
    code, out, record = run(tmp_path, mlp([100], init="normal", init_scale=1.0), epochs=1)
    assert code == 1
    assert record["first_loss"] > 10
    assert re.search(r"the first loss was \d+\.?\d*, expected ln\(10\) = 2\.30", out), out
    assert "initial weights are too large" in out


# -- the record, the figure, the sanity command and errors ------------------------------


def test_findings_come_most_serious_first_and_exit_codes_follow():
    record = {
        "format": 1,
        "classes": 10,
        "first_loss": 30.0,
        "layers": [
            {"name": "0", "kind": "Linear", "in": 5, "out": 4},
            {"name": "1", "kind": "Softmax"},
            {"name": "2", "kind": "Linear", "in": 4, "out": 10},
        ],
        "epochs": [{"epoch": 1, "loss": [30.0], "layers": {}, "lr": 0.1}],
        "history": [],
        "stopped": "",
    }
    found = doctor.examine(record)
    assert [f.severity for f in found] == sorted(f.severity for f in found)
    assert "softmax on a hidden layer" in found[0].what
    assert any("first loss was 30" in f.what for f in found)


def test_doctor_reports_unreadable_diagnostics_in_one_line(tmp_path, capsys):
    assert main(["doctor", str(tmp_path)]) == 2
    assert "no diagnostics at" in capsys.readouterr().err
    (tmp_path / "diagnostics.json").write_text("[1, 2]")
    assert main(["doctor", str(tmp_path)]) == 2
    assert "is not numprop diagnostics" in capsys.readouterr().err
    assert main(["doctor"]) == 2


def test_train_records_diagnostics_and_doctor_sanity_runs_on_the_same_options(tmp_path, capsys):
    x, y = blobs(n=600)
    np.savez(tmp_path / "blobs.npz", X=x, y=y)
    opts = ["--data", str(tmp_path / "blobs.npz"), "--hidden", "64", "--batch-size", "32"]
    opts += ["--val-size", "100"]
    run_dir = tmp_path / "run"
    argv = ["train", *opts, "--epochs", "3", "--quiet", "--no-plots", "--out", str(run_dir)]
    assert main(argv) == 0
    capsys.readouterr()
    record = json.loads((run_dir / "diagnostics.json").read_text())
    assert len(record["epochs"]) == 3 and record["classes"] == C
    assert main(["doctor", str(run_dir)]) == 0
    assert "nothing wrong found in 3 epochs" in capsys.readouterr().out

    assert main(["doctor", "--sanity", *opts]) == 0
    out = capsys.readouterr().out
    assert "pass  layers" in out and "pass  loss at initialisation" in out
    assert "pass  overfit 20 examples" in out
    assert main(["doctor", "--sanity", *opts, "--activation", "softmax"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  overfit 20 examples" in out and "softmax on a hidden layer" in out

    # --no-diagnostics leaves none; resuming keeps the record of the first epochs.
    argv2 = ["train", *opts, "--epochs", "1", "--quiet", "--no-plots", "--no-diagnostics"]
    assert main([*argv2, "--out", str(tmp_path / "bare")]) == 0
    assert not (tmp_path / "bare" / "diagnostics.json").exists()


@needs_cifar
def test_a_healthy_default_run_on_real_cifar10_gives_no_false_alarm(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--limit", "3000", "--epochs", "3", "--val-size", "500"]
    assert main([*argv, "--quiet", "--no-plots", "--out", str(run_dir)]) == 0
    capsys.readouterr()
    code = main(["doctor", str(run_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "nothing wrong found in 3 epochs" in out


def test_a_resumed_run_keeps_the_diagnostics_of_an_uninterrupted_one(tmp_path):
    from numprop.training.experiment import TrainConfig, train
    from numprop.training.trainer import Callback

    class Crash(Callback):
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 2:
                raise KeyboardInterrupt

    x, y = blobs(n=600)
    np.savez(tmp_path / "blobs.npz", X=x, y=y)
    config = TrainConfig(
        data=str(tmp_path / "blobs.npz"), hidden=[32], epochs=3, batch_size=32, val_size=100
    )
    quiet = {"progress": False, "print_fn": lambda *a: None}
    train(config, tmp_path / "full", **quiet)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "cut", callbacks=[Crash()], **quiet)
    assert len(doctor.read(tmp_path / "cut")["epochs"]) == 2
    train(None, tmp_path / "cut", resume=True, **quiet)
    full, resumed = doctor.read(tmp_path / "full"), doctor.read(tmp_path / "cut")
    for record in (full, resumed):
        for h in record["history"]:
            h.pop("seconds")
    assert resumed == full
