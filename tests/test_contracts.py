"""The library's contracts: the fused gradient, the Loss protocol, registries, layering, import."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import numprop as npp
from numprop.cli import main
from numprop.nn.layers import ACTIVATIONS, LAYERS
from numprop.nn.losses import LOSSES, Loss
from numprop.nn.optim import OPTIMIZERS
from numprop.nn.schedules import SCHEDULES
from numprop.registry import Registry

SRC = Path(__file__).resolve().parents[1] / "src" / "numprop"


# -- the fused gradient ------------------------------------------------------------------


def _model_and_batch():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 6)).astype(np.float64), rng.integers(0, 3, 16)
    return npp.models.mlp([6, 5, 3], rng=0, dtype=np.float64), x, y


def test_fused_backward_puts_the_gradient_in_the_target_and_leaves_grad_alone():
    model, x, y = _model_and_batch()
    loss = npp.SoftmaxCrossEntropy()
    # The plain gradient, for reference.
    loss.forward(model.forward(x), y)
    model.zero_grad()
    model.backward(loss.backward())
    grads = {name: p.grad.copy() for name, p in model.named_parameters()}

    opt = npp.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    velocity = {name: np.full(p.shape, 2.0) for name, p in model.named_parameters()}
    for name, v in velocity.items():
        opt.state[name]["velocity"][...] = v
    opt.zero_grad()
    with opt.fused_backward():
        for _, p in model.named_parameters():
            assert isinstance(p.grad_target, npp.nn.module.GradTarget)
            assert not p.grad_target.received
        model.backward(loss.backward())
        assert all(p.grad_target.received for p in model.parameters())
    for name, p in model.named_parameters():
        assert p.grad_target is None  # handed back after the block
        np.testing.assert_array_equal(p.grad, 0)  # grad: as zero_grad() left it
        np.testing.assert_allclose(
            opt.state[name]["velocity"], 0.9 * velocity[name] + grads[name], rtol=1e-13, atol=1e-15
        )


def test_grad_target_takes_the_first_gradient_with_beta_and_adds_the_rest():
    p = npp.Parameter(np.zeros((2, 3)))
    target = np.ones((2, 3))
    p.grad_target = npp.nn.module.GradTarget(target, beta=0.5)
    p.accumulate(np.full((2, 3), 4.0))  # 0.5 * 1 + 4
    p.accumulate_matmul(np.ones((2, 1)), np.ones((1, 3)))  # + 1
    np.testing.assert_array_equal(target, 5.5)
    np.testing.assert_array_equal(p.grad, 0)


def test_fused_and_plain_training_give_the_same_weights():
    results = []
    for fused in (True, False):
        model, x, y = _model_and_batch()
        opt = npp.SGD(model.named_parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), opt, fused=fused)
        trainer.fit([(x[:8], y[:8]), (x[8:], y[8:])], epochs=3)
        results.append(model.state_dict())
    for name, value in results[0].items():
        np.testing.assert_allclose(value, results[1][name], rtol=1e-12, atol=1e-14, err_msg=name)


# -- the Loss protocol ---------------------------------------------------------------------


class SquaredErrorToOneHot:
    """A user's own loss: mean over the batch of ||outputs - onehot(y)||^2 / 2."""

    def forward(self, outputs, target):
        self.diff = outputs - np.eye(outputs.shape[1], dtype=outputs.dtype)[target]
        self.outputs, self.target = outputs, target
        return float(0.5 * np.mean(np.sum(self.diff**2, axis=1)))

    def backward(self):
        return self.diff / len(self.diff)

    def count_correct(self):
        return int(np.count_nonzero(self.outputs.argmax(axis=1) == self.target))


class RegressionLoss:
    """A loss without accuracy: the protocol lets count_correct be absent."""

    def forward(self, outputs, target):
        self.diff = outputs[:, 0] - target
        return float(np.mean(self.diff**2))

    def backward(self):
        return (2 * self.diff / len(self.diff))[:, None]


def test_a_users_own_loss_trains_through_fit():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    x = (np.eye(3)[y] * 2 + 0.3 * rng.standard_normal((300, 3))).astype(np.float32)
    model = npp.models.mlp([3, 8, 3], rng=0)
    loss = SquaredErrorToOneHot()
    assert isinstance(loss, Loss)
    trainer = npp.Trainer(model, loss, npp.SGD(model.named_parameters(), lr=0.1, momentum=0.9))
    batches = [(x[i : i + 50], y[i : i + 50]) for i in range(0, 250, 50)]
    history = trainer.fit(batches, [(x[250:], y[250:])], epochs=15)
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert history["val_acc"][-1] > 0.9


def test_a_loss_without_accuracy_records_none():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    t = (x @ np.array([1.0, -2.0, 0.5, 0.0], np.float32)).astype(np.float32)
    model = npp.Sequential(npp.Linear(4, 1, rng=0))
    lines = []
    trainer = npp.Trainer(
        model,
        RegressionLoss(),
        npp.SGD(model.named_parameters(), lr=0.05),
        callbacks=[npp.EpochSummary(lines.append)],
    )
    history = trainer.fit([(x, t)], [(x, t)], epochs=30)
    assert history["train_acc"] == [None] * 30 and history["val_acc"] == [None] * 30
    assert history["train_loss"][-1] < 0.1 * history["train_loss"][0]
    assert "acc" not in lines[-1] and "val loss" in lines[-1]


def test_the_trainer_refuses_an_object_that_is_not_a_loss():
    model = npp.Sequential(npp.Linear(4, 2, rng=0))
    with pytest.raises(npp.ConfigError, match="the loss needs a forward"):
        npp.Trainer(model, object(), npp.SGD(model.named_parameters(), lr=0.1))


# -- registries ----------------------------------------------------------------------------


def test_every_kind_has_a_registry_that_names_its_choices():
    for registry, name in (
        (LAYERS, "Linear"),
        (ACTIVATIONS, "relu"),
        (LOSSES, "softmax_cross_entropy"),
        (OPTIMIZERS, "sgd"),
        (SCHEDULES, "cosine"),
    ):
        assert name in registry
        with pytest.raises(npp.ConfigError, match=f"unknown .*'nope'; choose one of .*{name}"):
            registry.get("nope")
    assert ACTIVATIONS.names()[:4] == ["relu", "leaky_relu", "tanh", "sigmoid"]
    assert LAYERS.get("ReLU") is ACTIVATIONS.get("relu")


def test_registry_create_checks_keywords_and_create_from_picks_them():
    params = [npp.Parameter(np.zeros(3))]
    with pytest.raises(npp.ConfigError, match="bad settings for optimizer 'adam'.*momentum"):
        OPTIMIZERS.create("adam", params, lr=0.1, momentum=0.9)
    settings = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}
    sgd = OPTIMIZERS.create_from("sgd", params, settings=settings)
    adam = OPTIMIZERS.create_from("adam", params, settings=settings)
    assert (sgd.momentum, sgd.weight_decay, adam.lr, adam.weight_decay) == (0.9, 0.01, 0.1, 0.01)
    cosine = SCHEDULES.create_from("cosine", 0.5, settings={"warmup": 2, "gamma": 0.1})
    assert (cosine.peak_lr, cosine.warmup) == (0.5, 2)


def test_registry_names_are_unique():
    registry = Registry("thing")
    registry.add("a", int)
    registry.add("a", int)  # the same again: harmless
    with pytest.raises(npp.ConfigError, match="'a' is taken by int"):
        registry.add("a", float)
    with pytest.raises(npp.ConfigError, match="non-empty string"):
        registry.add("", float)


def test_register_layer_takes_module_classes_only():
    with pytest.raises(npp.ConfigError, match="Module subclass"):
        npp.register_layer(int)


# -- layering and import ----------------------------------------------------------------------


def _numprop_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "numprop":
            names.update(f"numprop.{a.name}" for a in node.names)  # from numprop import config
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("numprop"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("numprop"))
    return names


@pytest.mark.parametrize(
    "package,allowed",
    [
        ("_fast", ("numprop._fast", "numprop.config", "numprop.errors")),
        (
            "nn",
            ("numprop.nn", "numprop._fast", "numprop.config", "numprop.errors", "numprop.registry"),
        ),
        (
            "data",
            (
                "numprop.data",
                "numprop._fast",
                "numprop.config",
                "numprop.errors",
                "numprop.registry",
            ),
        ),
    ],
)
def test_lower_layers_never_import_higher_ones(package, allowed):
    files = sorted((SRC / package).glob("*.py"))
    assert len(files) >= 3
    for path in files:
        for module in _numprop_imports(path):
            assert module.startswith(allowed), f"{path.name} imports {module}"


def test_importing_numprop_loads_nothing_and_reads_no_setting():
    script = """
import sys, numprop
from numprop import config
from numprop._fast import blas, kernels
print(json.dumps({
    "blas_loaded": blas._openblas.cache_info().currsize,
    "kernels_loaded": kernels._compiled.cache_info().currsize,
    "settings_read": config._settings is not None,
    "heavy": sorted(m for m in ("numba", "matplotlib", "tqdm", "PIL", "sklearn", "numprop.cli",
                               "numprop.sklearn")
                    if m in sys.modules),
}))
"""
    out = subprocess.run(
        [sys.executable, "-c", "import json" + script], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {
        "blas_loaded": 0,
        "kernels_loaded": 0,
        "settings_read": False,
        "heavy": [],
    }


# -- numprop info / --version -----------------------------------------------------------------


def test_info_says_what_is_in_use(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert f"numprop {npp.__version__}" in text
    assert "OpenBLAS at" in text and "compiled (numba" in text  # the test install has both
    with npp.config.override(kernels="numpy", blas="numpy"):
        assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "NUMPROP_BLAS=numpy" in text and "NUMPROP_KERNELS=numpy" in text
    assert "extensions:" in text


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"numprop {npp.__version__}"
