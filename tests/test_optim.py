"""Each optimizer's first two updates against values derived by hand, and schedules."""

import math

import numpy as np
import pytest

import numprop as npp

W0 = np.array([1.0, -2.0])
G1 = np.array([0.5, 0.25])
G2 = np.array([-1.0, 2.0])


def two_steps(make_opt, decay=True):
    p = npp.Parameter(W0.copy(), decay=decay)
    opt = make_opt([("w", p)])
    seen = []
    for g in (G1, G2):
        opt.zero_grad()
        p.accumulate(g)
        opt.step()
        seen.append(p.data.copy())
    return seen


def test_sgd_plain():
    w1, w2 = two_steps(lambda ps: npp.SGD(ps, lr=0.1))
    np.testing.assert_allclose(w1, [0.95, -2.025])
    np.testing.assert_allclose(w2, [1.05, -2.225])


def test_sgd_momentum():
    # v1 = g1; w1 = w0 - lr v1; v2 = 0.9 v1 + g2; w2 = w1 - lr v2
    w1, w2 = two_steps(lambda ps: npp.SGD(ps, lr=0.1, momentum=0.9))
    np.testing.assert_allclose(w1, [0.95, -2.025])
    v2 = np.array([0.9 * 0.5 - 1.0, 0.9 * 0.25 + 2.0])
    np.testing.assert_allclose(w2, w1 - 0.1 * v2)


def test_sgd_nesterov_and_weight_decay():
    w1, w2 = two_steps(
        lambda ps: npp.SGD(ps, lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.1)
    )
    g1 = G1 + 0.1 * W0
    v1 = g1
    e1 = W0 - 0.1 * (g1 + 0.5 * v1)
    np.testing.assert_allclose(w1, e1)
    g2 = G2 + 0.1 * e1
    v2 = 0.5 * v1 + g2
    np.testing.assert_allclose(w2, e1 - 0.1 * (g2 + 0.5 * v2))


def test_weight_decay_skips_parameters_without_decay():
    w1, _ = two_steps(lambda ps: npp.SGD(ps, lr=0.1, weight_decay=0.5), decay=False)
    np.testing.assert_allclose(w1, [0.95, -2.025])
    w1, _ = two_steps(lambda ps: npp.SGD(ps, lr=0.1, weight_decay=0.5, decay_all=True), decay=False)
    np.testing.assert_allclose(w1, W0 - 0.1 * (G1 + 0.5 * W0))


def adam_reference(w, grads, lr, b1, b2, eps, wd=0.0, decoupled=False):
    m = v = np.zeros_like(w)
    out = []
    for t, g in enumerate(grads, start=1):
        if decoupled:
            w = w * (1 - lr * wd)
        else:
            g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
        w = w - lr * mhat / (np.sqrt(vhat) + eps)
        out.append(w)
    return out


def test_adam_first_step_is_lr_times_sign():
    # With bias correction, the first step is lr * g / (|g| + eps): lr * sign(g).
    w1, w2 = two_steps(lambda ps: npp.Adam(ps, lr=0.01))
    np.testing.assert_allclose(w1, W0 - 0.01 * np.sign(G1), rtol=1e-7)
    # second step by hand: m = 0.1*(0.9 g1 + g2)... compared with the reference formula
    np.testing.assert_allclose(w2, adam_reference(W0, [G1, G2], 0.01, 0.9, 0.999, 1e-8)[1])
    m2 = 0.9 * 0.1 * G1 + 0.1 * G2
    v2 = 0.999 * 0.001 * G1**2 + 0.001 * G2**2
    by_hand = w1 - 0.01 * (m2 / 0.19) / (np.sqrt(v2 / (1 - 0.999**2)) + 1e-8)
    np.testing.assert_allclose(w2, by_hand, rtol=1e-12)


def test_adam_l2_and_adamw_decoupled():
    got = two_steps(lambda ps: npp.Adam(ps, lr=0.01, weight_decay=0.1))
    np.testing.assert_allclose(got, adam_reference(W0, [G1, G2], 0.01, 0.9, 0.999, 1e-8, 0.1))
    got = two_steps(lambda ps: npp.AdamW(ps, lr=0.01, weight_decay=0.1))
    np.testing.assert_allclose(
        got, adam_reference(W0, [G1, G2], 0.01, 0.9, 0.999, 1e-8, 0.1, decoupled=True)
    )


def test_lion_two_steps_by_hand():
    # step 1: m = 0, c = 0.1 g1 > 0: w1 = w0 - 0.1 ([1, 1] + 0.1 w0); m1 = 0.01 g1
    # step 2: c = 0.9 m1 + 0.1 g2 = [-0.0955, 0.20225]: w2 = w1 - 0.1 ([-1, 1] + 0.1 w1)
    p = npp.Parameter(W0.copy())
    opt = npp.Lion([("w", p)], lr=0.1, weight_decay=0.1)
    seen = []
    for g in (G1, G2):
        opt.zero_grad()
        p.accumulate(g)
        opt.step()
        seen.append(p.data.copy())
    np.testing.assert_allclose(seen[0], [0.89, -2.08], rtol=1e-14)
    np.testing.assert_allclose(seen[1], [0.9811, -2.1592], rtol=1e-14)
    np.testing.assert_allclose(opt.state["w"]["m"], 0.99 * 0.01 * G1 + 0.01 * G2, rtol=1e-14)
    assert opt.state_names == ("m",) and npp.Lion([p]).betas == (0.9, 0.99)


def test_lion_steps_in_the_sign_of_the_b1_interpolation_not_of_its_memory():
    # m1 = 0.01 [1, 1]. Step 2: c = 0.9 m1 + 0.1 g2 = [-0.041, 0.004]; the kept
    # momentum 0.99 m1 + 0.01 g2 = [0.0049, 0.0094] would say [+1, +1], the
    # gradient alone [-1, -1]. No decay: the parameter is exempt.
    p = npp.Parameter(np.zeros(2), decay=False)
    opt = npp.Lion([("w", p)], lr=0.5, weight_decay=0.3)
    for g in ([1.0, 1.0], [-0.5, -0.05]):
        opt.zero_grad()
        p.accumulate(np.array(g))
        opt.step()
    np.testing.assert_array_equal(p.data, [-0.5 + 0.5, -0.5 - 0.5])
    np.testing.assert_allclose(opt.state["w"]["m"], [0.0049, 0.0094], rtol=1e-14)


def test_lion_is_in_the_registry_with_the_run_settings():
    p = npp.Parameter(W0.copy())
    settings = {"lr": 0.003, "momentum": 0.9, "nesterov": False, "weight_decay": 0.5}
    lion = npp.nn.optim.OPTIMIZERS.create_from("lion", [("w", p)], settings=settings)
    assert isinstance(lion, npp.Lion) and (lion.lr, lion.weight_decay) == (0.003, 0.5)
    with pytest.raises(npp.ConfigError, match="Lion betas"):
        npp.Lion([p], betas=(0.9, 1.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: npp.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: npp.Adam(ps, lr=0.01),
        lambda ps: npp.Lion(ps, lr=0.01, weight_decay=0.1),
    ],
)
def test_optimizer_state_dict_round_trip(make):
    p = npp.Parameter(W0.copy())
    opt = make([("w", p)])
    p.accumulate(G1)
    opt.step()
    saved = opt.state_dict()
    q = npp.Parameter(p.data.copy())
    opt2 = make([("w", q)])
    opt2.load_state_dict(saved)
    for o, param in ((opt, p), (opt2, q)):
        o.zero_grad()
        param.accumulate(G2)
        o.step()
    np.testing.assert_array_equal(p.data, q.data)


def test_optimizer_errors():
    p = npp.Parameter(W0.copy())
    with pytest.raises(npp.ConfigError):
        npp.SGD([p], lr=-1)
    with pytest.raises(npp.ConfigError):
        npp.SGD([p], lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(npp.ConfigError):
        npp.SGD([], lr=0.1)
    with pytest.raises(npp.ConfigError, match="is for SGD"):
        npp.Adam([p]).load_state_dict(npp.SGD([p], lr=0.1).state_dict())


def test_schedules_own_the_peak_rate():
    assert npp.Constant(0.1).lr(3.5, 10) == 0.1
    assert npp.StepDecay(1.0, 2, 0.5).lr(4.9, 10) == 0.25
    assert npp.Exponential(1.0, 0.5).lr(2.0, 10) == 0.25
    cos = npp.WarmupCosine(1.0, warmup=1, min_lr=0.0)
    assert cos.lr(0.5, 11) == 0.5  # halfway through warm-up
    assert cos.lr(1.0, 11) == pytest.approx(1.0)  # peak
    assert cos.lr(6.0, 11) == pytest.approx(0.5)  # halfway through the decay
    assert cos.lr(11.0, 11) == pytest.approx(0.0, abs=1e-12)
    plateau = npp.ReduceOnPlateau(1.0, factor=0.5, patience=1)
    for metric, expected in [
        (1.0, 1.0),
        (0.9, 1.0),
        (0.95, 1.0),
        (0.95, 0.5),
        (0.95, 0.5),
        (0.95, 0.25),
    ]:
        plateau.epoch_end(metric)
        assert plateau.lr(0, 10) == expected
    assert math.isclose(npp.WarmupCosine(2.0).lr(0.0, 5), 2.0)
    for bad in (0, -1.0, float("nan"), "0.1"):
        with pytest.raises(npp.ConfigError, match="learning rate"):
            npp.WarmupCosine(bad)


def test_optimizer_lr_is_the_current_rate_and_the_peak_stays_in_the_schedule():
    """During and after fit, optimizer.lr is the rate of the last step; the peak never moves."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 5)).astype(np.float32), rng.integers(0, 3, 40)
    model = npp.models.mlp([5, 4, 3], rng=0)
    opt = npp.SGD(model.named_parameters(), lr=123.0, momentum=0.9)  # replaced by the schedule
    schedule = npp.WarmupCosine(0.1, warmup=1)
    seen = []

    class Watch(npp.Callback):
        def on_batch_end(self, trainer, batch, loss, size):
            seen.append(trainer.optimizer.lr)

    trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), opt, schedule, [Watch()])
    trainer.fit([(x[:20], y[:20]), (x[20:], y[20:])], epochs=3)
    expected = [schedule.lr(e + i / 2, 3) for e in range(3) for i in range(2)]
    assert seen == pytest.approx(expected)
    assert opt.lr == pytest.approx(expected[-1]) and schedule.peak_lr == 0.1
    assert trainer.history["lr"] == pytest.approx(expected[1::2])
    # No schedule: the optimizer's own rate throughout.
    plain = npp.Trainer(
        model, npp.SoftmaxCrossEntropy(), npp.SGD(model.named_parameters(), lr=0.02)
    )
    plain.fit([(x, y)], epochs=2)
    assert plain.history["lr"] == [0.02, 0.02]
