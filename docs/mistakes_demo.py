"""Numbers for docs/backprop.md: the classic mistakes, measured.

Run:  python docs/mistakes_demo.py        (needs NumPy only; deterministic)

Everything is in the column notation of docs/backprop.md:
X is (features, m), W is (units, previous units), b is (units, 1),
Y is one-hot (classes, m). Every section builds its own seeded generator,
so the sections do not depend on each other's random draws.
"""

import warnings

import numpy as np

np.set_printoptions(precision=4, suppress=True, linewidth=100)


# --------------------------------------------------------------------------
# The correct network (the reference every mistake is compared with)
# --------------------------------------------------------------------------
def softmax(Z):
    """Per example (per column), stable: subtract the column max first."""
    E = np.exp(Z - Z.max(axis=0, keepdims=True))
    return E / E.sum(axis=0, keepdims=True)


def relu(Z):
    return np.maximum(Z, 0)


def cce(A2, Y):
    """Categorical cross-entropy, mean over the m examples."""
    return -np.sum(Y * np.log(A2)) / Y.shape[1]


def init(n_x, n_h, n_y, rng, scale="he"):
    if scale == "he":
        s1, s2 = np.sqrt(2 / n_x), np.sqrt(2 / n_h)
    else:
        s1 = s2 = float(scale)
    return {
        "W1": rng.standard_normal((n_h, n_x)) * s1,
        "b1": np.zeros((n_h, 1)),
        "W2": rng.standard_normal((n_y, n_h)) * s2,
        "b2": np.zeros((n_y, 1)),
    }


def forward(X, p, hidden="relu", out=softmax):
    Z1 = p["W1"] @ X + p["b1"]
    A1 = relu(Z1) if hidden == "relu" else softmax(Z1)
    Z2 = p["W2"] @ A1 + p["b2"]
    return out(Z2), (Z1, A1, Z2)


def backward(X, Y, p, cache, A2, dZ1_rule="relu"):
    Z1, A1, _ = cache
    m = X.shape[1]
    dZ2 = (A2 - Y) / m
    dA1 = p["W2"].T @ dZ2
    if dZ1_rule == "relu":  # correct for A1 = relu(Z1)
        dZ1 = dA1 * (Z1 > 0)
    elif dZ1_rule == "softmax":  # correct for A1 = softmax(Z1)
        dZ1 = A1 * (dA1 - np.sum(A1 * dA1, axis=0, keepdims=True))
    return {
        "W1": dZ1 @ X.T,
        "b1": dZ1.sum(axis=1, keepdims=True),
        "W2": dZ2 @ A1.T,
        "b2": dZ2.sum(axis=1, keepdims=True),
    }


def numerical_grad(f, p, name, eps=1e-6):
    """Central differences of the scalar f() with respect to p[name]."""
    W = p[name]
    g = np.zeros_like(W)
    for i in np.ndindex(W.shape):
        old = W[i]
        W[i] = old + eps
        fp = f()
        W[i] = old - eps
        fm = f()
        W[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


def blobs(n_x, n_y, m, rng, spread=1.0):
    """A learnable toy problem: ten Gaussian clusters in n_x dimensions."""
    means = rng.standard_normal((n_x, n_y)) * spread
    y = rng.integers(0, n_y, m)
    X = means[:, y] + rng.standard_normal((n_x, m))
    return X / X.std(), y, np.eye(n_y)[:, y]  # Y: (n_y, m) one-hot columns


def train(X, Y, p, steps, lr, hidden="relu", dZ1_rule="relu"):
    for _ in range(steps):
        A2, cache = forward(X, p, hidden)
        g = backward(X, Y, p, cache, A2, dZ1_rule)
        for k in p:
            p[k] -= lr * g[k]
    A2, _ = forward(X, p, hidden)
    return cce(A2, Y), np.mean(A2.argmax(axis=0) == Y.argmax(axis=0))


def header(title):
    print("\n" + "=" * 78 + "\n" + title + "\n" + "=" * 78)


# --------------------------------------------------------------------------
def section_jacobian():
    header("1. Softmax Jacobian times dA2 collapses to a - y (one example, 4 classes)")
    z = np.array([2.0, 1.0, 0.1, -1.0])
    y = np.array([1.0, 0.0, 0.0, 0.0])
    a = np.exp(z - z.max())
    a /= a.sum()
    dA = -y / a  # dL/da for L = -sum(y log a)
    J = np.diag(a) - np.outer(a, a)  # J[i, k] = da_i / dz_k
    print("z               =", z)
    print("a = softmax(z)  =", a)
    print("dL/da = -y/a    =", dA)
    print("J_soft = diag(a) - a a^T =\n", J)
    print("J_soft^T dL/da  =", J.T @ dA)
    print("a - y           =", a - y)


def section_softmax_hidden():
    header("2. Mistake: softmax applied to Z1 (hidden layer) instead of ReLU")
    rng = np.random.default_rng(0)
    n_x, n_h, n_y, m = 32, 64, 10, 1000
    X, y, Y = blobs(n_x, n_y, m, rng, spread=0.5)
    p0 = init(n_x, n_h, n_y, rng)
    stats = {}
    for hidden in ("relu", "softmax"):
        p = {k: v.copy() for k, v in p0.items()}
        A2, cache = forward(X, p, hidden)
        g = backward(X, Y, p, cache, A2, hidden)  # each with its own correct backward
        curve, done = [], 0
        for step in (0, 10, 30, 100, 300):
            curve.append(train(X, Y, p, step - done, lr=0.5, hidden=hidden, dZ1_rule=hidden))
            done = step
        stats[hidden] = (cache[1], cache[2], g, curve)
    print(f"{'':34s}{'A1 = relu(Z1)':>16s}{'A1 = softmax(Z1)':>18s}")
    r, s = stats["relu"], stats["softmax"]
    rows = [
        ("mean of A1 at init", r[0].mean(), s[0].mean()),
        ("std of A1 at init", r[0].std(), s[0].std()),
        ("std of the logits Z2 at init", r[1].std(), s[1].std()),
        ("||dW1|| at init", np.linalg.norm(r[2]["W1"]), np.linalg.norm(s[2]["W1"])),
        ("||dW2|| at init", np.linalg.norm(r[2]["W2"]), np.linalg.norm(s[2]["W2"])),
    ]
    for name, a, b in rows:
        print(f"{name:34s}{a:16.4g}{b:18.4g}")
    for i, step in enumerate((0, 10, 30, 100, 300)):
        (la, aa), (lb, ab) = r[3][i], s[3][i]
        print(
            f"{'loss / train acc after %d GD steps' % step:34s}"
            f"{'%.3f / %.2f' % (la, aa):>16s}{'%.3f / %.2f' % (lb, ab):>18s}"
        )
    # and if the backward still uses the ReLU mask for a softmax hidden layer:
    p = {k: v.copy() for k, v in p0.items()}
    A2, cache = forward(X[:, :20], p, "softmax")
    g = backward(X[:, :20], Y[:, :20], p, cache, A2, "relu")
    f = lambda: cce(forward(X[:, :20], p, "softmax")[0], Y[:, :20])
    print(
        "softmax hidden layer but ReLU mask in backward: rel. error of dW1 vs "
        f"finite differences = {rel_error(g['W1'], numerical_grad(f, p, 'W1')):.3f}"
    )


def section_bce():
    header("3. Mistake: binary cross-entropy for ten classes")
    rng = np.random.default_rng(1)
    n_x, n_h, n_y, m = 32, 64, 10, 20
    X, y, Y = blobs(n_x, n_y, m, rng)
    p = init(n_x, n_h, n_y, rng, scale=0.01)  # the learner's randn*0.01

    def bce(A2, Y):
        return -np.sum(Y * np.log(A2) + (1 - Y) * np.log(1 - A2)) / Y.shape[1]

    A2, cache = forward(X, p)
    print(f"at init: categorical CE = {cce(A2, Y):.4f}   (ln 10 = {np.log(10):.4f})")
    print(
        f"         binary CE on the softmax outputs = {bce(A2, Y):.4f}   "
        f"(-ln 0.1 - 9 ln 0.9 = {-np.log(0.1) - 9 * np.log(0.9):.4f})"
    )
    sig = 1 / (1 + np.exp(-(p["W2"] @ cache[1] + p["b2"])))
    print(
        f"         ten sigmoids + binary CE: summed over classes = {bce(sig, Y):.4f}, "
        f"np.mean over the matrix = {bce(sig, Y) / n_y:.4f}"
    )
    # the learner's backward: dA2 = -(Y/A2 - (1-Y)/(1-A2)), dZ2 = dA2 * A2*(1-A2)
    dA2 = -(Y / A2 - (1 - Y) / (1 - A2)) / m
    dZ2_learner = dA2 * A2 * (1 - A2)  # the sigmoid derivative, elementwise
    print(
        "learner's dZ2 = dA2 * A2*(1-A2) equals (A2-Y)/m exactly? "
        f"max |diff| = {np.abs(dZ2_learner - (A2 - Y) / m).max():.2e}"
    )
    g = backward(X, Y, p, cache, A2)  # i.e. the gradient of the CATEGORICAL CE
    f = lambda: bce(forward(X, p)[0], Y)
    for k in ("W2", "W1"):
        print(
            f"gradient check of that backward against the printed BCE loss, d{k}: "
            f"rel. error = {rel_error(g[k], numerical_grad(f, p, k)):.3f}"
        )
    # the true gradient of BCE-through-softmax, one example
    a, yy = A2[:, 0], Y[:, 0]
    J = np.diag(a) - np.outer(a, a)
    true = J.T @ (-(yy / a) + (1 - yy) / (1 - a))
    print("one example:  a - y                     =", a - yy)
    print("              true d(BCE o softmax)/dz  =", true)


def section_whole_matrix():
    header("4. Mistake: softmax normalised over the whole matrix, not per example")
    rng = np.random.default_rng(2)
    n_x, n_h, n_y = 32, 64, 10
    X, y, Y = blobs(n_x, n_y, 256, rng)
    p = init(n_x, n_h, n_y, rng, scale=0.01)  # the learner's randn*0.01

    def softmax_all(Z):
        E = np.exp(Z - Z.max())
        return E / E.sum()  # BUG: sums over all m columns too

    for m in (16, 64, 256):
        A_ok, _ = forward(X[:, :m], p)
        A_bad, _ = forward(X[:, :m], p, out=softmax_all)
        cs = A_bad.sum(axis=0)
        same = np.array_equal(A_ok.argmax(0), A_bad.argmax(0))
        print(
            f"m = {m:3d}: column sums {cs.min():.4f}..{cs.max():.4f} (should be 1); "
            f"loss {cce(A_bad, Y[:, :m]):.4f} vs correct {cce(A_ok, Y[:, :m]):.4f} "
            f"(ln(10m) = {np.log(10 * m):.4f}); argmax unchanged: {same}"
        )
    m = 16
    Xs, Ys = X[:, :m], Y[:, :m]
    A_ok, cache_ok = forward(Xs, p)
    A_bad, cache_bad = forward(Xs, p, out=softmax_all)
    d_ok, d_bad = (A_ok - Ys) / m, (A_bad - Ys) / m
    print(
        f"m = 16: sum of dZ2 over the classes of example 0: correct {d_ok[:, 0].sum():+.2e}, "
        f"buggy {d_bad[:, 0].sum():+.4f}"
    )
    print("        dZ2[:, 0] correct =", d_ok[:, 0])
    print("        dZ2[:, 0] buggy   =", d_bad[:, 0])
    g = backward(Xs, Ys, p, cache_bad, A_bad)
    f = lambda: cce(forward(Xs, p, out=softmax_all)[0], Ys)
    print(
        "gradient check of dZ2 = (A2-Y)/m against the buggy loss, dW2: rel. error = "
        f"{rel_error(g['W2'], numerical_grad(f, p, 'W2')):.3f}"
    )


def section_overflow():
    header("5. Mistake: exp overflow (no max subtraction) and log(0)")
    z = np.array([[1000.0], [10.0], [-5.0]])
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        naive = np.exp(z) / np.exp(z).sum(axis=0, keepdims=True)
    print(
        "float64 logits [1000, 10, -5]: naive softmax =",
        naive.ravel(),
        "| warnings:",
        sorted({str(x.message) for x in w}),
    )
    print("                                stable softmax =", softmax(z).ravel())
    print(
        f"largest x with finite exp(x): float64 {np.log(np.finfo(np.float64).max):.2f}, "
        f"float32 {np.log(np.finfo(np.float32).max):.2f}"
    )

    # Realistic trigger: raw pixel values 0..255 (not standardised), He init, float32
    rng = np.random.default_rng(3)
    n_x, n_h, n_y, m = 3072, 500, 10, 64
    X = rng.integers(0, 256, (n_x, m)).astype(np.float32)  # stand-in for raw pixels
    p = {k: v.astype(np.float32) for k, v in init(n_x, n_h, n_y, rng).items()}
    Z2 = p["W2"] @ relu(p["W1"] @ X + p["b1"]) + p["b2"]
    Y = np.eye(n_y, dtype=np.float32)[:, rng.integers(0, n_y, m)]
    with warnings.catch_warnings(record=True) as w1:
        warnings.simplefilter("always")
        A_naive = np.exp(Z2) / np.exp(Z2).sum(axis=0, keepdims=True)
        loss_naive = cce(A_naive, Y)
    with warnings.catch_warnings(record=True) as w2:
        warnings.simplefilter("always")
        A_stable = softmax(Z2)
        loss_logA = cce(A_stable, Y)
    print(f"raw 0..255 inputs, He init, float32: |Z2| up to {np.abs(Z2).max():.1f}")
    print(
        f"  naive softmax: {np.isnan(A_naive).any(axis=0).sum()}/{m} columns contain NaN, "
        f"loss = {loss_naive}; warnings: {sorted({str(x.message) for x in w1})}"
    )
    print(
        f"  stable softmax, then log(A2): {np.sum(A_stable[Y == 1] == 0)}/{m} correct-class "
        f"probabilities underflow to 0, loss = {loss_logA}; "
        f"warnings: {sorted({str(x.message) for x in w2})}"
    )
    logp = Z2 - Z2.max(0, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(0, keepdims=True))  # log-softmax
    print(
        f"  log-softmax (Z - max - log sum exp): loss = {-np.sum(Y * logp) / m:.2f} "
        "(finite, large: confidently wrong),\n  dZ2 = (A2 - Y)/m finite: "
        f"{np.isfinite(A_stable - Y).all()}"
    )


def section_init():
    header("6. Initialisation: randn*0.01 vs Glorot vs He (ReLU layers)")
    rng = np.random.default_rng(4)
    n_x, width, depth, m = 3072, 512, 10, 256
    X = rng.standard_normal((n_x, m))  # like standardised CIFAR inputs
    schemes = {
        "randn*0.01": lambda i, o: 0.01,
        "Glorot": lambda i, o: np.sqrt(2 / (i + o)),
        "He": lambda i, o: np.sqrt(2 / i),
    }
    print(f"{depth} ReLU layers of {width} units, input std 1.")
    fwd, bwd = {}, {}
    for name, s in schemes.items():
        r = np.random.default_rng(5)
        A, Ws, Zs = X, [], []
        for l in range(depth):
            W = r.standard_normal((width, A.shape[0])) * s(A.shape[0], width)
            Z = W @ A
            A = relu(Z)
            Ws.append(W)
            Zs.append(Z)
        fwd[name] = [relu(Z).std() for Z in Zs]
        # backward: the same random upstream gradient dA[10] for every scheme
        dA = np.random.default_rng(6).standard_normal(A.shape) / m
        top, out = dA.std(), []
        for l in reversed(range(depth)):
            dZ = dA * (Zs[l] > 0)
            out.append(dZ.std() / top)
            dA = Ws[l].T @ dZ
        bwd[name] = out[::-1]
    print("std of A[l], l = 1..10:")
    for name, v in fwd.items():
        print(f"  {name:11s}", " ".join(f"{x:8.2e}" for x in v))
    print("std of dZ[l] / std of dA[10] (backward signal), l = 1..10:")
    for name, v in bwd.items():
        print(f"  {name:11s}", " ".join(f"{x:8.2e}" for x in v))
    # The 2-layer CIFAR-sized net itself
    X = rng.standard_normal((n_x, m))
    Y = np.eye(10)[:, rng.integers(0, 10, m)]
    for scale in (0.01, "he"):
        p = init(n_x, 1000, 10, np.random.default_rng(6), scale)
        A2, cache = forward(X, p)
        g = backward(X, Y, p, cache, A2)
        print(
            f"2-layer 3072-1000-10, init {str(scale):4s}: std Z1 {cache[0].std():.3f}, "
            f"std Z2 {cache[2].std():.4f}, ||dW1|| {np.linalg.norm(g['W1']):.2e}, "
            f"||dW2|| {np.linalg.norm(g['W2']):.2e}"
        )


def section_gradcheck():
    header("7. Gradient check: correct code vs typical bugs (tiny net, float64)")
    rng = np.random.default_rng(7)
    n_x, n_h, n_y, m = 7, 5, 4, 6
    X = rng.standard_normal((n_x, m))
    Y = np.eye(n_y)[:, rng.integers(0, n_y, m)]
    p = init(n_x, n_h, n_y, rng)
    f = lambda: cce(forward(X, p)[0], Y)
    num = {k: numerical_grad(f, p, k) for k in p}
    A2, cache = forward(X, p)
    Z1, A1, _ = cache
    good = backward(X, Y, p, cache, A2)

    def variant(dZ2, dZ1_fn):
        dA1 = p["W2"].T @ dZ2
        dZ1 = dZ1_fn(dA1)
        return {
            "W1": dZ1 @ X.T,
            "b1": dZ1.sum(1, keepdims=True),
            "W2": dZ2 @ A1.T,
            "b2": dZ2.sum(1, keepdims=True),
        }

    bugs = {
        "correct": good,
        "forgot the 1/m": variant(A2 - Y, lambda d: d * (Z1 > 0)),
        "no ReLU mask in dZ1": variant((A2 - Y) / m, lambda d: d),
        "mask from A1 values (dA1*A1)": variant((A2 - Y) / m, lambda d: d * A1),
        "dZ2 = A2 - Y with Y not one-hot (labels)": variant(
            (A2 - Y.argmax(0)) / m, lambda d: d * (Z1 > 0)
        ),
    }
    print(f"{'':42s}" + "".join(f"{k:>10s}" for k in ("dW1", "db1", "dW2", "db2")))
    for name, g in bugs.items():
        print(f"{name:42s}" + "".join(f"{rel_error(g[k], num[k]):10.1e}" for k in p))
    # the same correct code, checked in float32
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    f32 = lambda: cce(forward(X32, p32)[0], Y32)
    A2, cache = forward(X32, p32)
    g32 = backward(X32, Y32, p32, cache, A2)
    for eps in (1e-2, 1e-3, 1e-4):
        errs = [rel_error(g32[k].astype(np.float64), numerical_grad(f32, p32, k, eps)) for k in p]
        print(
            f"{'correct code in float32, eps=%.0e' % eps:42s}" + "".join(f"{e:10.1e}" for e in errs)
        )


if __name__ == "__main__":
    section_jacobian()
    section_softmax_hidden()
    section_bce()
    section_whole_matrix()
    section_overflow()
    section_init()
    section_gradcheck()
