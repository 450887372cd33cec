"""The optimized training path against a plain NumPy reference written without any tricks.

The library reuses buffers, accumulates gradients inside BLAS calls, folds the
weight gradient into the momentum buffer and skips the first layer's input
gradient. None of that may change the numbers: several steps of numprop's
Trainer must give the losses and weights of the textbook formulas below.
"""

import numpy as np
import pytest

import numprop as npp


def reference_steps(
    params, batches, opt, lr, steps_wd=0.0, momentum=0.9, betas=(0.9, 0.999), eps=1e-8
):
    """Two-layer ReLU network, mean softmax cross-entropy, SGD momentum or Adam, in float64."""
    W1, b1, W2, b2 = (p.astype(np.float64) for p in params)
    state = [dict(v=np.zeros_like(p), m=np.zeros_like(p)) for p in (W1, b1, W2, b2)]
    losses = []
    for t, (x, y) in enumerate(batches, start=1):
        x = x.astype(np.float64)
        n = len(y)
        z1 = x @ W1 + b1
        a1 = np.maximum(z1, 0)
        z2 = a1 @ W2 + b2
        z2 = z2 - z2.max(axis=1, keepdims=True)
        p = np.exp(z2) / np.exp(z2).sum(axis=1, keepdims=True)
        losses.append(-np.mean(np.log(p[np.arange(n), y])))
        dz2 = p.copy()
        dz2[np.arange(n), y] -= 1
        dz2 /= n
        dW2, db2 = a1.T @ dz2, dz2.sum(axis=0)
        dz1 = (dz2 @ W2.T) * (z1 > 0)
        dW1, db1 = x.T @ dz1, dz1.sum(axis=0)
        for param, grad, st, decay in (
            (W1, dW1, state[0], True),
            (b1, db1, state[1], False),
            (W2, dW2, state[2], True),
            (b2, db2, state[3], False),
        ):
            if decay:
                grad = grad + steps_wd * param
            if opt == "sgd":
                st["v"] = momentum * st["v"] + grad
                param -= lr * st["v"]
            else:
                st["m"] = betas[0] * st["m"] + (1 - betas[0]) * grad
                st["v"] = betas[1] * st["v"] + (1 - betas[1]) * grad**2
                mhat = st["m"] / (1 - betas[0] ** t)
                vhat = st["v"] / (1 - betas[1] ** t)
                param -= lr * mhat / (np.sqrt(vhat) + eps)
    return np.array(losses), (W1, b1, W2, b2)


@pytest.mark.parametrize("opt,lr", [("sgd", 0.05), ("adam", 1e-3)])
def test_trainer_matches_plain_numpy_reference(opt, lr):
    rng = np.random.default_rng(0)
    batches = [
        (rng.standard_normal((64, 300)).astype(np.float32), rng.integers(0, 10, 64))
        for _ in range(6)
    ]
    model = npp.models.two_layer(300, 200, 10, rng=1)
    initial = [p.data.copy() for p in model.parameters()]
    params = model.named_parameters()
    optimizer = (
        npp.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-3)
        if opt == "sgd"
        else npp.Adam(params, lr=lr, weight_decay=1e-3)
    )
    trainer = npp.Trainer(model, npp.SoftmaxCrossEntropy(), optimizer)
    losses = [trainer.train_step(x, y)[0] for x, y in batches]

    ref_losses, ref_params = reference_steps(initial, batches, opt, lr, steps_wd=1e-3)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for p, ref in zip(model.parameters(), ref_params):
        # float32 training against a float64 reference: agreement to float32 rounding
        np.testing.assert_allclose(p.data, ref, rtol=1e-4, atol=2e-6)
