"""Module plumbing, state round trips, learning, and the fast path against a plain one."""

import os
import subprocess
import sys

import numpy as np
import pytest

import numprop as npp
from numprop._fast import blas as _blas
from numprop._fast.grain import GRAIN


def test_named_parameters_and_modes():
    model = npp.models.mlp([4, 3, 2], batchnorm=True, dropout=0.5, rng=0)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.gamma", "1.beta", "4.weight", "4.bias"]
    assert [n for n, _ in model.named_buffers()] == ["1.running_mean", "1.running_var"]
    assert [p.decay for _, p in model.named_parameters()] == [
        True,
        False,
        False,
        False,
        True,
        False,
    ]
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_state_dict_round_trip_gives_identical_outputs():
    model = npp.models.mlp([6, 5, 5, 3], batchnorm=True, dropout=0.2, rng=1)
    x = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
    model.forward(x)  # moves the running statistics
    model.eval()
    expected = model.forward(x).copy()
    other = npp.models.mlp([6, 5, 5, 3], batchnorm=True, dropout=0.2, rng=99)
    other.load_state_dict(model.state_dict())
    other.eval()
    np.testing.assert_array_equal(other.forward(x), expected)
    with pytest.raises(npp.ConfigError, match="missing"):
        other.load_state_dict({"0.weight": np.zeros((6, 5))})
    state = model.state_dict()
    state["0.weight"] = np.zeros((5, 6))
    with pytest.raises(npp.ConfigError, match=r"shape \(5, 6\)"):
        other.load_state_dict(state)


def test_grad_accumulates_across_backward_calls():
    lin = npp.Linear(3, 2, rng=0, dtype=np.float64)
    x = np.ones((4, 3))
    lin.zero_grad()
    lin.forward(x)
    lin.backward(np.ones((4, 2)))
    once = lin.weight.grad.copy()
    lin.forward(x)
    lin.backward(np.ones((4, 2)))
    np.testing.assert_allclose(lin.weight.grad, 2 * once)
    lin.zero_grad()
    np.testing.assert_array_equal(lin.weight.grad, 0)


def test_small_network_overfits_50_examples():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 20)).astype(np.float32)
    y = rng.integers(0, 10, 50)
    model = npp.models.two_layer(20, 64, 10, rng=0)
    loss = npp.SoftmaxCrossEntropy()
    opt = npp.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    for _ in range(300):
        loss.forward(model.forward(x), y)
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()
    assert (model.predict(x).argmax(axis=1) == y).mean() == 1.0
    assert loss.forward(model.forward(x), y) < 0.05


def test_a_partial_last_batch_reuses_the_work_buffers():
    """The epoch's last, smaller batch must not reallocate buffers (nor the next full one)."""
    rng = np.random.default_rng(0)
    model = npp.models.mlp([12, 16, 16, 4], batchnorm=True, dropout=0.2, rng=0)
    loss = npp.SoftmaxCrossEntropy()
    opt = npp.SGD(model.named_parameters(), lr=0.1, momentum=0.9)

    def step(n):
        x = rng.standard_normal((n, 12)).astype(np.float32)
        loss.forward(model.forward(x), rng.integers(0, 4, n))
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()

    def buffers():
        works = [m.__dict__.get("_work", {}) for m in model.modules()] + [loss._work]
        return {(i, k): v for i, w in enumerate(works) for k, v in w.items()}

    step(8)
    full = buffers()
    assert sum(v.shape[:1] == (8,) for v in full.values()) >= 10
    step(5)  # the partial batch
    step(8)  # the next epoch's first batch
    assert all(buffers()[k] is v for k, v in full.items())

    # Computing into the first rows of a bigger buffer gives the right numbers.
    model.eval()
    x = rng.standard_normal((8, 12)).astype(np.float32)
    first_rows = model.forward(x)[:5].copy()
    np.testing.assert_allclose(model.forward(x[:5]), first_rows, rtol=1e-6, atol=1e-7)


def run_steps(make_opt, fused, steps=5, seed=0):
    """Train a small BatchNorm/Dropout MLP for a few steps; return losses and weights."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, 32, 30)).astype(np.float32)
    y = rng.integers(0, 5, (steps, 32))
    model = npp.models.mlp([30, 40, 20, 5], batchnorm=True, dropout=0.1, rng=seed)
    loss = npp.SoftmaxCrossEntropy()
    opt = make_opt(model.named_parameters())
    losses = []
    for i in range(steps):
        losses.append(loss.forward(model.forward(x[i]), y[i]))
        opt.zero_grad()
        if fused:
            with opt.fused_backward():
                model.backward_params(loss.backward())
        else:
            model.backward(loss.backward())
        opt.step()
    return np.array(losses), model.state_dict()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: npp.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
        lambda ps: npp.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
        lambda ps: npp.SGD(ps, lr=0.05),
        lambda ps: npp.Adam(ps, lr=1e-3, weight_decay=1e-4),
        lambda ps: npp.AdamW(ps, lr=1e-3),
    ],
    ids=["sgd-momentum-wd", "nesterov", "sgd", "adam", "adamw"],
)
def test_fused_path_matches_plain_path(make_opt):
    fast_losses, fast_state = run_steps(make_opt, fused=True)
    plain_losses, plain_state = run_steps(make_opt, fused=False)
    np.testing.assert_allclose(fast_losses, plain_losses, rtol=1e-5)
    for name in plain_state:
        np.testing.assert_allclose(
            fast_state[name], plain_state[name], rtol=1e-5, atol=1e-6, err_msg=name
        )


def test_blas_functions_match_numpy():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        a, b = rng.standard_normal((9, 6)).astype(dtype), rng.standard_normal((9, 4)).astype(dtype)
        c = rng.standard_normal((6, 4)).astype(dtype)
        expected = 0.5 * a.T @ b + 0.25 * c
        _blas.gemm(a.T, b, c, alpha=0.5, beta=0.25)
        np.testing.assert_allclose(c, expected, rtol=1e-5)
        c[...] = np.nan
        _blas.gemm(a.T, b, c, beta=0.0)  # beta 0 ignores what was there, even NaN
        np.testing.assert_allclose(c, a.T @ b, rtol=1e-5)
        for n in (50, 3 * GRAIN.axpby_threaded):  # single-threaded axpby, and scal + axpy
            for beta in (0.0, 1.0, -3.0):
                y, x = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
                expected = 2 * x + beta * y
                _blas.axpby(2.0, x, beta, y)
                np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_blas_prefers_numpys_own_openblas():
    """SciPy maps a second (32-bit-integer) OpenBLAS; NumPy's bundled one must come first."""
    candidates = _blas._openblas_candidates()
    bundled = [c for c in candidates if os.sep + "numpy.libs" + os.sep in c]
    if bundled:  # wheels of NumPy bundle their OpenBLAS in numpy.libs
        assert candidates[0] == bundled[0]
        assert _blas.available()


def test_pure_numpy_fallback_gives_the_same_training():
    """The ctypes BLAS path and the NumPy fallback train identically (float32 tolerance)."""

    def train():
        return run_steps(lambda ps: npp.SGD(ps, lr=0.05, momentum=0.9), fused=True)

    with npp.config.override(blas="numpy"):
        assert not _blas.available()
        plain_losses, plain_state = train()
    assert _blas.available() == (_blas.library() is not None)
    losses, state = train()
    np.testing.assert_allclose(losses, plain_losses, rtol=1e-5, atol=1e-6)
    for key, value in plain_state.items():
        np.testing.assert_allclose(state[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_blas_setting_comes_from_the_environment_in_a_fresh_process():
    script = "from numprop._fast import blas; print(blas.available())"
    env = dict(os.environ, NUMPROP_BLAS="numpy")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
