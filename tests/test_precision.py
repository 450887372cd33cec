"""bf16 matrix products (issue 12, first part): one step in bf16 against float32, and the fallback.

Tolerances follow from bf16's rounding: each operand of a product is rounded
to 8 significant bits, a relative error of at most u = 2**-8 (half a unit in
the last place of a 7-bit mantissa), so each product x*d is off by at most
(2u + u**2)|x||d| and a sum of them by at most (2u + u**2) * sum |x||d|, plus
float32's own summation error, which is far smaller. The tests bound the
difference from the float32 result by that sum, elementwise: a product that
dropped or doubled a term, or used unrounded operands wrongly, breaks it.
"""

from __future__ import annotations

import importlib.metadata
import re

import numpy as np
import pytest

import numprop as npp
from numprop.nn import precision
from numprop.nn.precision import BF16, FP32, PRECISIONS, Precision

U = 2.0**-8
BOUND = 2 * U + U * U


def _mkl_installed() -> bool:
    try:
        importlib.metadata.distribution("mkl")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_bf16 = pytest.mark.skipif(
    not precision.bf16_supported()[0], reason=f"bf16 products: {precision.bf16_supported()[1]}"
)


def bf16_round(x):
    """float32 x rounded to bf16 and back (the operands the products see)."""
    out = np.empty(x.shape, np.uint16)
    npp.nn.ops.to_bf16(np.ascontiguousarray(x, np.float32), out=out)
    return (out.astype(np.uint32) << 16).view(np.float32)


def two_layer(seed=0):
    return npp.models.mlp([40, 30, 5], rng=seed)


def batch(seed=1, n=16):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 40)).astype(np.float32), rng.integers(0, 5, n)


def test_fp32_is_the_default_and_changes_nothing():
    model = two_layer()
    x, _ = batch()
    expected = model.forward(x).copy()
    assert all(isinstance(m.precision, FP32) for m in model.modules())
    model.set_precision(FP32())
    np.testing.assert_array_equal(model.forward(x), expected)


def test_bf16_operands_give_the_exact_products_of_the_rounded_values():
    # The forward of one Linear in bf16 equals, to float32 summation error, the
    # float64 product of the bf16-rounded x and W: the rounding is where it must be.
    layer = npp.Linear(40, 30, rng=0)
    x, _ = batch()
    layer.bias.data[:] = np.linspace(-1, 1, 30)
    y = layer.set_precision(BF16()).forward(x).astype(np.float64)
    exact = bf16_round(x).astype(np.float64) @ bf16_round(layer.weight.data) + layer.bias.data
    scale = np.abs(bf16_round(x)) @ np.abs(bf16_round(layer.weight.data)) + 1
    assert np.all(np.abs(y - exact) <= 40 * 2.0**-24 * scale)
    # ... and it differs from the float32 product, by no more than bf16's rounding allows.
    y32 = layer.set_precision(FP32()).forward(x).astype(np.float64)
    assert not np.array_equal(y, y32)
    assert np.all(np.abs(y - y32) <= BOUND * np.abs(x) @ np.abs(layer.weight.data) + 1e-6)


class EmulatedBF16(Precision):
    """bf16 rounding of every operand, in float64: what BF16 computes, without its float32 sums."""

    name = "bf16-emulated"

    def operand(self, module, key, x):
        return bf16_round(x.astype(np.float32)).astype(np.float64)


def step_gradients(precision_, dtype=np.float32):
    x, y = batch()
    model = two_layer().to(dtype).set_precision(precision_)
    loss = npp.SoftmaxCrossEntropy()
    value = loss.forward(model.forward(x.astype(dtype)), y)
    model.zero_grad()
    model.backward(loss.backward())
    return value, {k: p.grad.astype(np.float64) for k, p in model.named_parameters()}


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_one_bf16_step_rounds_exactly_the_operands_of_the_products():
    # Against a float64 run that rounds each product's operands to bf16 and nothing
    # else: only float32's sums and elementwise steps differ (about 1e-8 here; an
    # activation that float32 and float64 round to neighbouring bf16 values would
    # add more, and does not happen on this batch). 1e-5 is 400 times below one
    # bf16 rounding (u = 2**-8): an operand left unrounded, or a value rounded that
    # should not be, moves these gradients by about u.
    _, g16 = step_gradients(BF16())
    _, emulated = step_gradients(EmulatedBF16(), np.float64)
    for key in g16:
        assert rel(g16[key], emulated[key]) < 1e-5, key


def test_one_bf16_step_agrees_with_fp32_within_bf16_rounding():
    # Against float32 the bf16 roundings compound through the network: logits off by
    # a few u change the softmax, and dZ2 = p - onehot cancels where p is near its
    # target, which magnifies relative errors. 16 u (6%) bounds what that does here;
    # a wrong product (a transposed operand, a dropped term) is off by 100% or more.
    v32, g32 = step_gradients(FP32())
    v16, g16 = step_gradients(BF16())
    assert abs(v16 - v32) <= 4 * U * v32
    for key in g32:
        assert np.all(np.isfinite(g16[key]))
        assert 0 < rel(g16[key], g32[key]) < 16 * U, key  # > 0: bf16 really ran


def test_one_short_epoch_in_bf16_tracks_fp32():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (5, 40))
    labels = rng.integers(0, 5, 512)
    x = (centres[labels] + rng.normal(0, 1, (512, 40))).astype(np.float32)
    losses = {}
    for name in ("fp32", "bf16"):
        model = two_layer().set_precision(PRECISIONS.create(name))
        opt = npp.SGD(model.named_parameters(), lr=0.05, momentum=0.9)
        trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), opt)
        losses[name] = [
            trainer.train_step(x[i : i + 32], labels[i : i + 32])[0] for i in range(0, 512, 32)
        ]
    l32, l16 = np.array(losses["fp32"]), np.array(losses["bf16"])
    assert l16[-1] < 0.5 * l16[0]  # it learns
    assert np.all(np.abs(l16 - l32) <= 0.02 * l32 + 1e-3)  # and follows the fp32 run


def test_auto_falls_back_to_fp32_without_the_hardware_or_library(monkeypatch):
    from numprop import config

    monkeypatch.setattr(config, "cpu_extensions", lambda: ["avx2"])
    ok, why = precision.bf16_supported()
    assert not ok and "no bf16 matrix instructions" in why
    assert isinstance(precision.resolve("auto"), FP32)
    monkeypatch.setattr(config, "cpu_extensions", lambda: ["avx512f", "amx_bf16"])
    from numprop._fast import mkl

    monkeypatch.setattr(mkl, "available", lambda: False)
    monkeypatch.setattr(mkl, "why_not", lambda: "no mkl here")
    ok, why = precision.bf16_supported()
    assert not ok and "no mkl here" in why and "numprop[mkl]" in why
    assert type(precision.resolve("auto")) is FP32


@needs_bf16
def test_auto_picks_bf16_where_supported():
    assert isinstance(precision.resolve("auto"), BF16)


def test_this_machine_runs_the_bf16_tests():
    # CI runs on a CPU with AMX and installs MKL (the test extra): the bf16 path
    # must really be exercised there, not fall back.
    flags = set(npp.config.cpu_extensions())
    expected = _mkl_installed() and bool({"amx_bf16", "avx512_bf16"} & flags)
    assert precision.bf16_supported()[0] == expected, precision.bf16_supported()[1]


# -- the weights' bf16 copy, kept by the optimizer --------------------------------------


class RoundEveryForward(BF16):
    """BF16 that rounds the weights again at every forward, instead of keeping a copy."""

    def weight(self, module, param):
        return self.operand(module, "weight_op", param.data)


OPTIMIZERS = {
    "sgd-momentum": lambda ps: npp.SGD(ps, lr=0.05, momentum=0.9),
    "sgd-momentum-decay": lambda ps: npp.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "nesterov": lambda ps: npp.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "sgd": lambda ps: npp.SGD(ps, lr=0.05),
    "adam": lambda ps: npp.Adam(ps, lr=1e-3, weight_decay=1e-3),
    "adamw": lambda ps: npp.AdamW(ps, lr=1e-3),
}


def bf16_bits(x):
    return npp.nn.ops.to_bf16(x, out=np.empty(x.shape, np.uint16))


@pytest.mark.parametrize("kernels", ["auto", "numpy"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_the_optimizer_keeps_each_weights_bf16_copy_exact(optimizer, kernels):
    # The update writes the weights' bf16 copy in its own pass (or rounds it after,
    # where it cannot): after every step the copy is bit for bit the rounded new
    # weights, so training gives exactly the losses and weights of rounding the
    # weights again at every forward.
    x, y = batch(n=64)
    runs = {}
    with npp.config.override(kernels=kernels):
        for name, prec in (("kept", BF16()), ("every forward", RoundEveryForward())):
            model = two_layer().set_precision(prec)
            opt = OPTIMIZERS[optimizer](model.named_parameters())
            trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), opt)
            losses = [trainer.train_step(x[i : i + 16], y[i : i + 16])[0] for i in range(0, 64, 16)]
            runs[name] = losses, model
            if name == "kept":
                for key, p in model.named_parameters():
                    if p.bf16 is not None:  # the weights (biases are not product operands)
                        assert p.bf16_fresh, key
                        np.testing.assert_array_equal(p.bf16, bf16_bits(p.data), err_msg=key)
                assert sum(p.bf16 is not None for p in model.parameters()) == 2
    (l_kept, kept), (l_every, every) = runs["kept"], runs["every forward"]
    assert l_kept == l_every
    for (key, p), q in zip(kept.named_parameters(), every.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=key)


def test_inference_rounds_the_weights_once_and_again_after_they_change(monkeypatch):
    model = two_layer().set_precision(BF16()).eval()
    x, _ = batch()
    weights = [m.weight.data for m in model.modules() if isinstance(m, npp.Linear)]
    calls = []
    real = npp.nn.ops.to_bf16

    def counting(a, *, out):
        calls.append(a.shape)
        return real(a, out=out)

    monkeypatch.setattr(npp.nn.ops, "to_bf16", counting)
    first = model.forward(x).copy()
    for _ in range(3):
        np.testing.assert_array_equal(model.forward(x), first)
    rounded_weights = [shape for shape in calls if shape in [w.shape for w in weights]]
    assert len(rounded_weights) == 2  # each weight once, not once per forward

    # Changed in place and announced: rounded again. load_state_dict announces itself.
    weights[0] *= 2
    model[0].weight.changed()
    doubled = model.forward(x).copy()
    assert not np.array_equal(doubled, first)
    state = model.state_dict()
    state["0.weight"] = state["0.weight"] / 2
    model.load_state_dict(state)
    np.testing.assert_array_equal(model.forward(x), first)
    # Assigning a new array marks the copy stale too.
    model[0].weight.data = weights[0] * 2
    np.testing.assert_array_equal(model.forward(x), doubled)


@needs_bf16
def test_inference_packs_large_weights_once_and_again_after_a_step():
    from numprop._fast import mkl

    model = npp.models.mlp([700, 600, 10], rng=0).set_precision(BF16())
    x = np.random.default_rng(1).standard_normal((64, 700)).astype(np.float32)
    training = model.forward(x).copy()
    first, last = model[0].weight, model[-1].weight
    assert first.bf16_packed is None  # training reads the bits: nothing packed
    model.eval()
    np.testing.assert_array_equal(model.forward(x), training)
    packed = first.bf16_packed
    assert isinstance(packed, mkl.PackedBF16)
    assert last.bf16_packed is last.bf16  # 600 x 10: not worth packing
    model.forward(x)
    assert first.bf16_packed is packed  # packed once, not per forward
    # A step changes the weights: the pack is dropped and made again from the new ones.
    model.train()
    loss, opt = npp.SoftmaxCrossEntropy(), npp.SGD(model.named_parameters(), lr=0.5)
    y = np.arange(64) % 10
    npp.Trainer(model, loss, opt).train_step(x, y)
    assert first.bf16_packed is None
    after = model.forward(x).copy()
    model.eval()
    np.testing.assert_array_equal(model.forward(x), after)
    assert first.bf16_packed is not packed
    assert not np.array_equal(after, training)


@pytest.mark.skipif(not npp.nn.ops.kernels.available(), reason="needs the compiled kernels")
@pytest.mark.parametrize("optimizer", ["sgd-momentum", "sgd-momentum-decay", "adam", "adamw"])
def test_fused_updates_write_the_bf16_copy_without_a_pass_of_their_own(optimizer, monkeypatch):
    x, y = batch(n=64)
    model = two_layer().set_precision(BF16())
    trainer = npp.Trainer(
        model, npp.SoftmaxCrossEntropy(), OPTIMIZERS[optimizer](model.named_parameters())
    )
    trainer.train_step(x[:16], y[:16])  # the first forward rounds each weight
    shapes = {m.weight.shape for m in model.modules() if isinstance(m, npp.Linear)}
    calls = []
    real = npp.nn.ops.to_bf16
    monkeypatch.setattr(
        npp.nn.ops, "to_bf16", lambda a, *, out: calls.append(a.shape) or real(a, out=out)
    )
    for i in range(16, 64, 16):
        trainer.train_step(x[i : i + 16], y[i : i + 16])
    assert calls and not shapes & set(calls)  # activations rounded, weights never on their own


# -- the precision at the edges: train's default, evaluate, predict, banners ------------


def test_bf16_needs_a_float32_model_and_auto_keeps_float64_exact():
    model = two_layer().to(np.float64)
    with pytest.raises(npp.ConfigError, match="bf16 products need a float32 model, .*float64"):
        model.set_precision(BF16())
    assert all(isinstance(m.precision, FP32) for m in model.modules())
    assert type(precision.resolve("auto", np.float64)) is FP32


def test_train_defaults_to_auto_and_says_which_precision_and_library(tmp_path, capsys):
    from numprop.cli import main
    from numprop.training.experiment import TrainConfig

    assert TrainConfig().precision == "auto"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    x = (rng.normal(0, 3, (3, 5))[y] + rng.normal(0, 1, (120, 5))).astype(np.float32)
    np.savez(tmp_path / "blobs.npz", X=x[:90], y=y[:90], X_test=x[90:], y_test=y[90:])
    run = tmp_path / "run"
    quick = ["--epochs", "2", "--batch-size", "16", "--quiet", "--no-plots", "--val-size", "10"]
    assert main(["train", "--data", str(tmp_path / "blobs.npz"), "--out", str(run), *quick]) == 0
    out = capsys.readouterr().out
    ok, why = precision.bf16_supported()
    if ok:
        assert f"bf16 products ({why})" in out
    else:
        assert f"; bf16 not used: {why})" in out and "fp32 products (" in out

    # evaluate and predict take --precision too (auto by default) and compute in it.
    for name in ("fp32", "bf16"):
        assert main(["evaluate", str(run), "--precision", name]) == 0
        assert f"{name} products" in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    assert f"{'bf16' if ok else 'fp32'} products" in capsys.readouterr().out
    np.savez(tmp_path / "rows.npz", X=x[:4])
    outs = {}
    for name in ("fp32", "bf16"):
        assert main(["predict", str(run), str(tmp_path / "rows.npz"), "--precision", name]) == 0
        outs[name] = capsys.readouterr().out
    assert outs["fp32"].count("\n") == outs["bf16"].count("\n") == 4


def test_the_banner_says_why_auto_fell_back(tmp_path, capsys, monkeypatch):
    from numprop.cli import main

    monkeypatch.setattr(precision, "bf16_supported", lambda: (False, "no bf16 units here"))
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    np.savez(tmp_path / "d.npz", X=rng.normal(size=(60, 3)).astype(np.float32) + y[:, None], y=y)
    argv = ["train", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run")]
    assert main(argv + ["--epochs", "1", "--quiet", "--no-plots", "--val-size", "10"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"fp32 products \((OpenBLAS|NumPy's matmul); bf16 not used: no bf16 units", out
    )


# -- batches made as bf16 ------------------------------------------------------------------


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), rng.integers(0, 5, n)


@pytest.mark.parametrize("kernels", ["auto", "numpy"])
@pytest.mark.parametrize("augment", [False, True])
def test_bf16_batches_are_the_float_batches_rounded(kernels, augment):
    from numprop.data.batches import Augment, BatchLoader
    from numprop.data.preprocess import Standardize

    images, labels = _images()
    pre = Standardize().fit(images)
    with npp.config.override(kernels=kernels):
        loaders = [
            BatchLoader(
                images,
                labels,
                pre,
                16,
                rng=np.random.default_rng(3),
                augment=Augment(flip=True, crop_padding=2) if augment else None,
                bf16=bf16,
            )
            for bf16 in (False, True)
        ]
        for (x, y), (bits, y16) in zip(*loaders, strict=True):
            assert bits.dtype == np.uint16 and x.dtype == np.float32
            np.testing.assert_array_equal(bits, bf16_bits(x))
            np.testing.assert_array_equal(y, y16)


def test_a_bf16_run_on_bf16_batches_is_the_run_on_float_batches(tmp_path):
    # train() hands a BF16 model its batches as bf16 already: the same bits the first
    # Linear would have rounded, so the run (losses, weights) is the same to the bit.
    from numprop.training.experiment import TrainConfig, train

    images, labels = _images(n=200)
    np.savez(tmp_path / "imgs.npz", X=images, y=labels)
    config = TrainConfig(
        data=str(tmp_path / "imgs.npz"),
        hidden=[16],
        epochs=2,
        batch_size=16,
        val_size=20,
        precision="bf16",
        flip=True,
        diagnostics=False,
    )
    quiet = {"progress": False, "print_fn": lambda *a: None}
    made = train(config, tmp_path / "bf16-batches", **quiet)

    from numprop.training import experiment

    real = experiment.make_batches

    def float_batches(*args, bf16=False, **kwargs):
        return real(*args, **kwargs)  # float32 batches, rounded by the first Linear

    try:
        experiment.make_batches = float_batches
        rounded = train(config, tmp_path / "float-batches", **quiet)
    finally:
        experiment.make_batches = real
    assert made.history == [
        {**h, "seconds": m["seconds"]} for h, m in zip(rounded.history, made.history)
    ]
    a, b = npp.load(made.model_path).model, npp.load(rounded.model_path).model
    for (key, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        np.testing.assert_array_equal(p.data, q.data, err_msg=key)


def test_linear_refuses_bf16_inputs_in_float32():
    layer = npp.Linear(4, 3, rng=0)
    with pytest.raises(npp.ConfigError, match="bf16 inputs"):
        layer.forward(np.zeros((2, 4), np.uint16))
    y = layer.set_precision(BF16()).forward(bf16_bits(np.ones((2, 4), np.float32)))
    np.testing.assert_allclose(y, np.ones((2, 4)) @ bf16_round(layer.weight.data), rtol=1e-6)


@pytest.mark.parametrize("kernels", ["auto", "numpy"])
def test_eval_relus_hand_bf16_to_the_next_product_with_the_same_results(kernels):
    # In eval mode under bf16, a ReLU followed by a Linear (Dropout between is the
    # identity there) writes its output as bf16 bits in the same pass: the model's
    # outputs are those of rounding in the Linear, bit for bit.
    model = npp.models.mlp([40, 30, 20, 5], dropout=0.2, rng=0).set_precision(BF16()).eval()
    relus = [m for m in model if isinstance(m, npp.ReLU)]
    assert len(relus) == 2 and all(r.bf16_output for r in relus)
    x, _ = batch(n=64)
    x[0, :5] = [np.nan, -0.0, 1e-41, -1e30, 3e38]  # NaN, signed zero, subnormal, extremes
    with npp.config.override(kernels=kernels):
        fused = model.forward(x).copy()
        for r in relus:
            r.bf16_output = False
        np.testing.assert_array_equal(fused, model.forward(x))
    model.set_precision(FP32())
    assert not any(r.bf16_output for r in relus)
    model.set_precision(BF16()).train()
    assert model.forward(x).dtype == np.float32  # training keeps y in float32 for backward
    assert relus[0].y.dtype == np.float32


@pytest.mark.parametrize("kernels", ["auto", "numpy"])
def test_relu_backward_rounds_the_gradient_for_the_linear_before_it(kernels, monkeypatch):
    # Under bf16 a ReLU right after a Linear writes the gradient it passes back as
    # bf16 too, in the same pass; the Linear takes those bits instead of rounding the
    # gradient itself. Training is the same to the bit with and without it.
    x, y = batch(n=64)
    runs = []
    with npp.config.override(kernels=kernels):
        for fused in (True, False):
            model = npp.models.mlp([40, 30, 20, 5], rng=0).set_precision(BF16())
            relus = [m for m in model if isinstance(m, npp.ReLU)]
            assert all(r.bf16_grad for r in relus) and model[0].grad_from is relus[0]
            if not fused:
                for m in model:
                    if isinstance(m, npp.ReLU):
                        m.bf16_grad = False
            opt = npp.SGD(model.named_parameters(), lr=0.05, momentum=0.9)
            trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), opt)
            calls = []
            real = npp.nn.ops.to_bf16
            monkeypatch.setattr(
                npp.nn.ops, "to_bf16", lambda a, *, out: calls.append(a.shape) or real(a, out=out)
            )
            losses = [trainer.train_step(x[i : i + 16], y[i : i + 16])[0] for i in range(0, 64, 16)]
            monkeypatch.setattr(npp.nn.ops, "to_bf16", real)
            runs.append((losses, [p.data.copy() for p in model.parameters()], calls))
    (l1, w1, calls_fused), (l2, w2, calls_plain) = runs
    assert l1 == l2
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)
    if kernels == "auto":  # hidden (16, 30) arrays: rounded as inputs, and as gradients
        # only without the fusion: half as many separate roundings with it
        for shape in ((16, 30), (16, 20)):
            assert calls_plain.count(shape) == 2 * calls_fused.count(shape) > 0


@pytest.mark.parametrize("kernels", ["auto", "numpy"])
def test_gelus_hand_bf16_to_the_linears_around_them_with_the_same_training(kernels):
    # Under bf16 each block's GELU writes its output as bf16 bits for the Linear after
    # it, in training too (its backward reads its input), and rounds the gradient it
    # passes back for the Linear before it. Training is the same to the bit without.
    x, y = batch(n=64)
    runs = []
    with npp.config.override(kernels=kernels):
        for fused in (True, False):
            model = npp.models.bottleneck_mlp(40, 8, 2, 5, expansion=3, rng=0)
            model.set_precision(BF16())
            blocks = [m.inner for m in model if isinstance(m, npp.Residual)]
            for block in blocks:
                gelu = block[2]
                assert gelu.bf16_output and gelu.bf16_grad and block[1].grad_from is gelu
                if not fused:
                    gelu.bf16_output = gelu.bf16_grad = False
            opt = npp.Lion(model.named_parameters(), lr=1e-3, weight_decay=0.1)
            trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), opt)
            losses = [trainer.train_step(x[i : i + 16], y[i : i + 16])[0] for i in range(0, 64, 16)]
            out = blocks[0][2].forward(np.ones((3, 24), np.float32))
            assert out.dtype == (np.uint16 if fused else np.float32)
            runs.append((losses, [p.data.copy() for p in model.parameters()]))
    (l1, w1), (l2, w2) = runs
    assert l1 == l2
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)
    model.set_precision(FP32())
    assert not any(b[2].bf16_output or b[2].bf16_grad for b in blocks)
    assert all(b[1].grad_from is None for b in blocks)
    dropped = npp.models.bottleneck_mlp(40, 8, 1, 5, dropout=0.1, rng=0).set_precision(BF16())
    assert not dropped[1].inner[2].bf16_output  # Dropout reads floats in training
