"""parallel_for: NumPy elementwise work on OpenBLAS's threads gives the same bits as one piece."""

import importlib.util
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import numprop as npp
from numprop._fast import blas as _blas
from numprop._fast import kernels as _kernels
from numprop.data.batches import Augment, BatchLoader
from numprop.data.preprocess import MeanImage, Standardize, affine_rows
from numprop.errors import ConfigError, DataError


def test_pool_is_used_where_it_can_be():
    # Wheels of NumPy ship a threaded OpenBLAS; on a multi-core machine the pool must be on.
    if _blas.available() and (os.cpu_count() or 1) > 1 and _blas.library().threads() > 1:
        assert _blas.parallel_available()


def test_pieces_cover_the_range_once():
    for n, grain in [(10, 100), (1000, 1), (100_003, 1000), (1 << 20, 1 << 16)]:
        hits = np.zeros(n, np.int64)
        threads = set()

        def piece(lo, hi):
            hits[lo:hi] += 1
            threads.add(threading.get_ident())

        _blas.parallel_for(n, piece, grain)
        assert (hits == 1).all()
        if _blas.parallel_available() and n >= 2 * grain:
            assert len(threads) > 1, "the range was not split across threads"
        with _blas.serial():
            calls = []
            _blas.parallel_for(n, lambda lo, hi: calls.append((lo, hi)), grain)
        assert calls == [(0, n)]


def test_an_exception_in_a_piece_is_raised_in_the_caller():
    def piece(lo, hi):
        if lo > 0:
            raise ValueError("bad piece")

    with pytest.raises(ValueError, match="bad piece"):
        _blas.parallel_for(1 << 20, piece, 1 << 10)
    with pytest.raises(ZeroDivisionError):
        _blas.parallel_for(1 << 20, lambda lo, hi: 1 / 0, 1 << 10)
    # ...and the pool still works afterwards
    x = np.arange(1 << 20, dtype=np.float32)
    _blas.parallel_for(x.size, lambda lo, hi: np.multiply(x[lo:hi], 2, out=x[lo:hi]), 1 << 10)
    np.testing.assert_array_equal(x, 2 * np.arange(1 << 20, dtype=np.float32))


def test_nested_parallel_for_runs_inline():
    outer_hits = np.zeros(1 << 16, np.int64)

    def inner_piece(lo, hi):
        outer_hits[lo:hi] += 1

    def piece(lo, hi):
        _blas.parallel_for(hi - lo, lambda a, b: inner_piece(lo + a, lo + b), 16)

    _blas.parallel_for(outer_hits.size, piece, 1 << 10)
    assert (outer_hits == 1).all()


def _both_paths(fn, monkeypatch):
    """fn() run serially and in parallel; also checks every parallel_for got a splittable range."""
    ranges = []
    real = _blas.parallel_for

    def spy(n, piece, grain=1 << 16):
        ranges.append((n, grain))
        real(n, piece, grain)

    monkeypatch.setattr(_blas, "parallel_for", spy)
    parallel = fn()
    assert ranges and all(n >= 2 * grain for n, grain in ranges), ranges
    with _blas.serial():
        serial = fn()
    return parallel, serial


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "make,training",
    [
        (npp.ReLU, True),
        (npp.ReLU, False),
        (lambda: npp.Dropout(0.3, rng=5), True),
        (lambda: npp.BatchNorm1d(1024), True),
        (lambda: npp.BatchNorm1d(1024), False),
    ],
    ids=["relu-train", "relu-eval", "dropout-train", "batchnorm-train", "batchnorm-eval"],
)
def test_layers_give_the_same_bits_in_parallel(make, training, monkeypatch, numpy_only):
    _assert_same(*_both_paths(lambda: _layer_run(make, training), monkeypatch))


def _layer_run(make, training, shape=(600, 1024)):
    """Outputs, input gradients, parameter gradients and state of two rounds of a layer."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    layer = make()
    layer.train(training)
    outs = []
    for _ in range(2):  # the second round uses updated running statistics / a new mask
        outs += [layer.forward(x).copy(), layer.backward(dout).copy()]
        outs += [p.grad.copy() for p in layer.parameters() if p.grad is not None]
    return outs + [v.copy() for v in layer.state_dict().values()]


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda ps: npp.Adam(ps, lr=1e-3),
        lambda ps: npp.Adam(ps, lr=1e-3, weight_decay=0.1),
        lambda ps: npp.AdamW(ps, lr=1e-3, weight_decay=0.1),
        lambda ps: npp.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    ],
    ids=["adam", "adam-l2", "adamw", "sgd-momentum-wd"],
)
def test_optimizers_give_the_same_bits_in_parallel(make_opt, monkeypatch, numpy_only):
    def run():
        rng = np.random.default_rng(1)
        p = npp.Parameter(rng.standard_normal((300, 700)).astype(np.float32))
        opt = make_opt([p])
        for _ in range(3):
            p.grad = rng.standard_normal(p.data.shape).astype(np.float32)
            opt.step()
        return [p.data.copy()] + [v for v in opt.state_dict()["arrays"].values()]

    _assert_same(*_both_paths(run, monkeypatch))


def test_standardize_gives_the_same_bits_in_parallel(monkeypatch, numpy_only):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (500, 3072), dtype=np.uint8)
    prep = Standardize(channels=3).fit(images)
    _assert_same(*_both_paths(lambda: [prep.transform(images)], monkeypatch))


# --- compiled kernels (numba, the `fast` extra; the test extra installs it) ----------


def test_numba_kernels_are_in_use_in_the_test_install():
    assert importlib.util.find_spec("numba") is not None, "pip install -e '.[test]' brings numba"
    for name in (
        "adam",
        "sgd_momentum",
        "relu",
        "relu_backward",
        "multiply",
        "dropout",
        "batchnorm",
        "batchnorm_eval",
        "batchnorm_backward",
        "adam_bf16",
        "sgd_momentum_bf16",
        "relu_bf16",
        "relu_backward_bf16",
        "affine_rows_bf16",
        "augment_rows_bf16",
        "to_bf16",
        "to_float32",
        "affine_rows",
        "augment_rows",
        "softmax_xent",
        "gelu_argument",
        "gelu_output",
        "gelu_output_bf16",
        "gelu_backward",
        "gelu_backward_bf16",
        "lion",
        "lion_bf16",
        "layernorm",
        "layernorm_backward",
        "column_sums",
    ):
        assert _kernels.address(name) is not None, name


@pytest.fixture
def kernel_calls(monkeypatch):
    """Every compiled-kernel launch from here on, as (kernel name, whether the kernel ran)."""
    calls = []
    real_run = _kernels._launch

    def spy(name, *args, **kwargs):
        ran = real_run(name, *args, **kwargs)
        calls.append((name, ran))
        return ran

    monkeypatch.setattr(_kernels, "_launch", spy)
    return calls


@pytest.fixture
def numpy_only(monkeypatch):
    """Turn the compiled kernels off, as NUMPROP_KERNELS=numpy does."""
    npp.config.configure(kernels="numpy")


def _adam_run(make_opt, dtype=np.float32, shape=(300, 700), steps=3):
    rng = np.random.default_rng(1)
    p = npp.Parameter(rng.standard_normal(shape).astype(dtype))
    opt = make_opt([p])
    for _ in range(steps):
        p.grad = rng.standard_normal(shape).astype(dtype)
        opt.step()
    return [p.data.copy()] + [v for v in opt.state_dict()["arrays"].values()]


ADAMS = [
    lambda ps: npp.Adam(ps, lr=1e-3),
    lambda ps: npp.Adam(ps, lr=1e-3, weight_decay=0.1),
    lambda ps: npp.AdamW(ps, lr=1e-3, weight_decay=0.1),
    lambda ps: npp.SGD(ps, lr=0.05, momentum=0.9),
    lambda ps: npp.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
]
OPT_IDS = ["adam", "adam-l2", "adamw", "sgd-momentum", "sgd-momentum-wd"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make_opt", ADAMS, ids=OPT_IDS)
def test_optimizer_kernels_match_the_numpy_path_bit_for_bit(make_opt, dtype, monkeypatch):
    compiled = _adam_run(make_opt, dtype)
    npp.config.configure(kernels="numpy")
    _assert_same(compiled, _adam_run(make_opt, dtype))


@pytest.mark.parametrize("make_opt", ADAMS, ids=OPT_IDS)
def test_optimizer_kernels_give_the_same_bits_in_parallel(make_opt):
    parallel = _adam_run(make_opt)
    with _blas.serial():
        serial = _adam_run(make_opt)
    _assert_same(parallel, serial)


def test_kernels_can_be_turned_off_in_process_and_by_the_environment():
    assert _kernels.available()
    with npp.config.override(kernels="numpy"):
        assert _kernels.address("adam") is None and not _kernels.available()
    assert _kernels.address("adam") is not None
    script = "from numprop._fast import kernels; print(kernels.address('adam'))"
    env = dict(os.environ, NUMPROP_KERNELS="numpy")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "None"


LAYERS = [npp.ReLU, lambda: npp.Dropout(0.3, rng=5), lambda: npp.BatchNorm1d(1024)]


@pytest.mark.parametrize("make", LAYERS, ids=["relu", "dropout", "batchnorm"])
@pytest.mark.parametrize("shape", [(600, 1024), (37, 1024)])  # split across cores, and not
def test_layer_kernels_match_the_numpy_path_bit_for_bit(make, shape, monkeypatch, kernel_calls):
    compiled = _layer_run(make, True, shape=shape)
    assert kernel_calls and all(ran for _, ran in kernel_calls), (
        kernel_calls
    )  # every call took the kernel
    with _blas.serial():
        _assert_same(compiled, _layer_run(make, True, shape=shape))
    npp.config.configure(kernels="numpy")
    _assert_same(compiled, _layer_run(make, True, shape=shape))


@pytest.mark.parametrize("shape", [(600, 1024), (37, 1024)])
def test_batchnorm_eval_kernel_matches_the_numpy_path_bit_for_bit(shape, kernel_calls):
    def run():
        layer = npp.BatchNorm1d(1024)
        layer.forward(np.random.default_rng(2).standard_normal((64, 1024)).astype(np.float32))
        layer.gamma.data[:] = np.linspace(0.5, 2, 1024)  # statistics and parameters not trivial
        layer.beta.data[:] = np.linspace(-1, 1, 1024)
        return _layer_run(lambda: layer, False, shape=shape)

    compiled = run()
    assert all(ran for _, ran in kernel_calls) and ("batchnorm_eval", True) in kernel_calls
    with _blas.serial():
        _assert_same(compiled, run())
    npp.config.configure(kernels="numpy")
    _assert_same(compiled, run())


def _loss_run(dtype, eps):
    rng = np.random.default_rng(4)
    z = (rng.standard_normal((300, 10)) * 4).astype(dtype)
    z[0] = [1e4, -1e4] * 5  # exp would overflow unshifted
    z[1] = -3e4
    y = rng.integers(0, 10, 300).astype(np.int32)  # any integer dtype
    y[0] = 1  # 2e4 below row 0's best class
    loss = npp.SoftmaxCrossEntropy(label_smoothing=eps)
    value = loss.forward(z, y)
    return value, loss.backward().copy(), loss.probs.copy()


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_kernel_matches_the_numpy_path(dtype, eps, monkeypatch, kernel_calls):
    value, grad, probs = _loss_run(dtype, eps)
    assert kernel_calls == [("softmax_xent", True)]
    npp.config.configure(kernels="numpy")
    numpy_value, numpy_grad, numpy_probs = _loss_run(dtype, eps)
    # exp and the row sums are NumPy's own on one path: agreement to the last bits, not all.
    tol = {np.float32: 1e-6, np.float64: 1e-14}[dtype]
    assert value == pytest.approx(numpy_value, rel=tol)
    np.testing.assert_allclose(probs, numpy_probs, rtol=4 * tol, atol=tol / 300)
    np.testing.assert_allclose(grad, numpy_grad, rtol=4 * tol, atol=tol / 300)
    assert np.isfinite(value) and value > 2e4 / 300


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_counts_right_answers_as_argmax_does(dtype, compiled, monkeypatch, kernel_calls):
    rng = np.random.default_rng(5)
    z = rng.integers(-2, 3, (400, 10)).astype(dtype)  # many ties: the first largest counts
    z[3, 4] = np.nan  # the first NaN wins, as in np.argmax
    z[5, [0, 7]] = np.nan
    y = rng.integers(0, 10, 400)
    y[3], y[5] = 4, 0
    expected = int(np.count_nonzero(z.argmax(axis=1) == y))
    last_largest = int(np.count_nonzero(9 - z[:, ::-1].argmax(axis=1) == y))
    assert last_largest != expected  # the ties do decide the count
    if not compiled:
        npp.config.configure(kernels="numpy")
    loss = npp.SoftmaxCrossEntropy()
    with np.errstate(invalid="ignore"):
        loss.forward(z, y)
    assert kernel_calls == [("softmax_xent", compiled)]
    assert loss.count_correct() == expected
    assert loss.count_correct() == expected  # asking again changes nothing


@pytest.mark.parametrize("compiled", [True, False], ids=["kernel", "numpy"])
def test_out_of_range_labels_are_refused_on_both_paths(compiled, monkeypatch):
    if not compiled:
        npp.config.configure(kernels="numpy")
    loss = npp.SoftmaxCrossEntropy()
    z = np.zeros((4, 3), np.float32)
    for bad, shown in (([0, 1, 3, 2], "from 0 to 3"), ([0, -1, 2, 2], "from -1 to 2")):
        with pytest.raises(ConfigError, match=rf"labels must be in \[0, 3\), got values {shown}"):
            loss.forward(z, np.array(bad))
        with pytest.raises(ConfigError, match="needs a forward"):
            loss.count_correct()  # a refused forward leaves nothing
    assert loss.forward(z, np.array([0, 1, 2, 2])) == pytest.approx(np.log(3))
    assert loss.count_correct() == 1  # all tied: class 0 counts


@pytest.mark.parametrize("with_rows", [False, True])
def test_gather_and_standardise_kernel_matches_numpy_bit_for_bit(with_rows, monkeypatch):
    rng = np.random.default_rng(3)
    source = rng.integers(0, 256, (700, 3072), dtype=np.uint8)
    shift, scale = (rng.random(3072, dtype=np.float32) * 200, rng.random(3072, dtype=np.float32))
    rows = rng.integers(-5, 705, 300) if with_rows else None  # out of range: clipped
    b = len(rows) if with_rows else len(source)

    def run():
        return [affine_rows(source, shift, scale, np.empty((b, 3072), np.float32), rows)]

    compiled = run()
    expected = (source.take(rows, axis=0, mode="clip") if with_rows else source) - shift
    np.testing.assert_array_equal(compiled[0], (expected * scale).astype(np.float32))
    with _blas.serial():
        _assert_same(compiled, run())
    npp.config.configure(kernels="numpy")
    _assert_same(compiled, run())


@pytest.mark.parametrize(
    "augment",
    [
        Augment(flip=True, crop_padding=0),
        Augment(flip=True, crop_padding=4),
        Augment(flip=False, crop_padding=3),
    ],
    ids=["flip", "flip-crop", "crop"],
)
@pytest.mark.parametrize("prep", [Standardize, MeanImage], ids=["standardize", "mean-image"])
def test_augmented_batches_kernel_matches_the_numpy_path_bit_for_bit(
    augment, prep, monkeypatch, kernel_calls
):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 300)
    fitted = prep().fit(images)

    def batches():
        loader = BatchLoader(
            images, labels, fitted, 64, rng=np.random.default_rng(9), augment=augment
        )
        return [a.copy() for x, y in loader for a in (x, y)]

    compiled = batches()
    assert ("augment_rows", True) in kernel_calls
    with _blas.serial():
        _assert_same(compiled, batches())
    npp.config.configure(kernels="numpy")
    _assert_same(compiled, batches())


def test_mismatched_shapes_give_errors_not_stray_reads():
    images = np.zeros((20, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match="affine_rows"):
        affine_rows(
            images.reshape(20, -1),
            np.zeros(10, np.float32),
            np.ones(10, np.float32),
            np.empty((20, 3072), np.float32),
        )
    # preprocessing fitted on 16x16 images, applied to 32x32 ones through the fused batch path
    prep = Standardize().fit(np.zeros((4, 16, 16, 3), np.uint8))
    loader = BatchLoader(
        images, np.zeros(20, np.int64), prep, 8, rng=np.random.default_rng(0), augment=Augment()
    )
    with pytest.raises(DataError, match="fitted on 768 values per image"):
        next(iter(loader))


def test_batch_loader_never_copies_a_strided_image_array_whole(monkeypatch):
    """The augmenting loader's NumPy path (no numba) gathers rows, not the whole array."""
    import tracemalloc

    npp.config.configure(kernels="numpy")
    rng = np.random.default_rng(7)
    wide = rng.integers(0, 256, (400, 32, 64, 3), dtype=np.uint8)
    images = wide[:, :, ::2]  # (400, 32, 32, 3), not contiguous
    labels = rng.integers(0, 10, 400)
    prep = Standardize().fit(np.ascontiguousarray(images))

    def loader(images):
        return BatchLoader(images, labels, prep, 4, rng=np.random.default_rng(1), augment=Augment())

    next(iter(loader(images)))  # warm up
    batches = iter(loader(images))
    tracemalloc.start()
    x, y = (a.copy() for a in next(batches))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < images.nbytes // 10, peak  # 4 images, not 400
    same_x, same_y = next(iter(loader(np.ascontiguousarray(images))))
    np.testing.assert_array_equal(x, same_x)
    np.testing.assert_array_equal(y, same_y)


def test_transform_rows_of_a_strided_image_array_never_copies_it_whole():
    import tracemalloc

    rng = np.random.default_rng(6)
    wide = rng.integers(0, 256, (400, 32, 64, 3), dtype=np.uint8)
    images = wide[:, :, ::2]  # (400, 32, 32, 3), not contiguous
    prep = Standardize().fit(np.ascontiguousarray(images))
    rows = np.array([3, 0, 399, 7])
    out = np.empty((4, 3072), np.float32)
    prep.transform_rows(images, rows, out)  # load the kernels first
    tracemalloc.start()
    prep.transform_rows(images, rows, out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < images.nbytes // 10, peak  # 4 rows, not 400
    shift, scale = prep.per_value_affine
    np.testing.assert_array_equal(out, (images[rows].reshape(4, -1) - shift) * scale)


# --- GELU and Lion (the best recipe's elementwise work) ---------------------------------


def _gelu_input(shape, dtype, seed=8):
    """x of ``shape`` with the values that take every branch: NaN, signed zeros,
    infinities, the clip's edges and beyond, and extremes; and a gradient."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    special = [np.nan, -0.0, 0.0, np.inf, -np.inf, 10.0, -10.0, 10.5, -11.0, 1e30, -1e30, 1e-30]
    x.flat[: len(special)] = special
    return x, rng.standard_normal(shape).astype(dtype)


def _gelu_run(x, dout, bf16):
    """GELU's t, output and input gradient (each with its bf16 rounding where asked)."""
    t, dx = np.empty_like(x), np.empty_like(x)
    out = np.empty(x.shape, np.uint16 if bf16 else x.dtype)
    bits = np.empty(x.shape, np.uint16) if bf16 else None
    with np.errstate(invalid="ignore"):  # -inf gives NaN (-inf * 0) on both paths
        npp.nn.ops.gelu(x, t=t, out=out)
        npp.nn.ops.gelu_backward(x, t, dout, out=dx, bf16=bits)
    return [t, out, dx] + ([bits] if bf16 else [])


def _assert_same_bits(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}"))


@pytest.mark.parametrize(
    "dtype,bf16", [(np.float32, False), (np.float64, False), (np.float32, True)]
)
@pytest.mark.parametrize("shape", [(600, 1024), (37, 1023)])  # split across cores, and not
def test_gelu_kernels_match_the_numpy_path_bit_for_bit(shape, dtype, bf16, kernel_calls):
    x, dout = _gelu_input(shape, dtype)
    compiled = _gelu_run(x, dout, bf16)
    names = {"gelu_argument", "gelu_output_bf16" if bf16 else "gelu_output"}
    names.add("gelu_backward_bf16" if bf16 else "gelu_backward")
    assert set(kernel_calls) == {(name, True) for name in names}, kernel_calls
    with _blas.serial():
        _assert_same_bits(compiled, _gelu_run(x, dout, bf16))
    npp.config.configure(kernels="numpy")
    numpy_path = _gelu_run(x, dout, bf16)
    _assert_same_bits(compiled, numpy_path)
    # ...and that is the textbook formula: tanh's argument from x clipped to +-10
    xc = np.clip(x, -10, 10)
    t = np.tanh(np.sqrt(2 / np.pi).astype(dtype) * (xc + dtype(0.044715) * xc**3))
    finite = np.isfinite(x)
    rtol = 4 * np.finfo(dtype).eps  # the cube's and the constants' roundings
    np.testing.assert_allclose(numpy_path[0][finite], t[finite], rtol=rtol, atol=rtol)


def test_gelu_takes_strided_inputs_through_the_numpy_path(kernel_calls):
    x, dout = _gelu_input((64, 2 * 300), np.float32)
    strided, contiguous = x[:, ::2], np.ascontiguousarray(x[:, ::2])
    _assert_same_bits(
        _gelu_run(strided, dout[:, ::2], False), _gelu_run(contiguous, dout[:, ::2], False)
    )
    assert ("gelu_argument", False) in kernel_calls  # the strided input took NumPy


def _lion_run(dtype, bf16, shape=(300, 701), steps=3):
    """Weights, momentum and bf16 copy after a few Lion steps, decayed and not."""
    rng = np.random.default_rng(9)
    p = npp.Parameter(rng.standard_normal(shape).astype(dtype))
    q = npp.Parameter(rng.standard_normal(shape[1]).astype(dtype), decay=False)
    if bf16:
        p.bf16, q.bf16 = np.empty(shape, np.uint16), np.empty(shape[1], np.uint16)
    opt = npp.Lion([p, q], lr=1e-2, weight_decay=0.5)
    for _ in range(steps):
        for param in (p, q):
            param.grad = rng.standard_normal(param.shape).astype(dtype)
            param.grad.flat[:7] = 0  # with m = 0 at first: c = 0, whose sign is 0
        opt.step()
    out = [p.data, q.data, *(v for v in opt.state_dict()["arrays"].values())]
    return [a.copy() for a in out] + ([p.bf16.copy(), q.bf16.copy()] if bf16 else [])


@pytest.mark.parametrize(
    "dtype,bf16", [(np.float32, False), (np.float64, False), (np.float32, True)]
)
def test_lion_kernel_matches_the_numpy_path_bit_for_bit(dtype, bf16, kernel_calls):
    compiled = _lion_run(dtype, bf16)
    assert set(kernel_calls) == {("lion_bf16" if bf16 else "lion", True)}, kernel_calls
    with _blas.serial():
        _assert_same_bits(compiled, _lion_run(dtype, bf16))
    npp.config.configure(kernels="numpy")
    _assert_same_bits(compiled, _lion_run(dtype, bf16))
    if bf16:  # the copies are the weights rounded
        for w, bits in ((compiled[0], compiled[-2]), (compiled[1], compiled[-1])):
            _assert_same_bits([bits], [npp.nn.ops.to_bf16(w, out=np.empty_like(bits))])


# --- LayerNorm: row sums in float64 (kernel) or float32 pairwise (NumPy) -------------------


def _layernorm_inputs(shape, dtype, seed=10):
    rng = np.random.default_rng(seed)
    n, d = shape
    scale = rng.uniform(0.1, 30, (n, 1))  # rows of different sizes, means about their spread
    x = (scale * (rng.standard_normal(shape) + 1)).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, d).astype(dtype)
    beta = rng.standard_normal(d).astype(dtype)
    return x, dout, gamma, beta


def _layernorm_run(x, dout, gamma, beta, xhat_in=None):
    """xhat, out, inv_std, dx, dgamma, dbeta; the backward from ``xhat_in`` when given."""
    n, d = x.shape
    xhat, out, inv_std = np.empty_like(x), np.empty_like(x), np.empty((n, 1), x.dtype)
    dx, dgamma, dbeta = np.empty_like(x), np.empty(d, x.dtype), np.empty(d, x.dtype)
    npp.nn.ops.layernorm(x, gamma, beta, 1e-5, xhat=xhat, out=out, inv_std=inv_std)
    if xhat_in is not None:
        xhat, inv_std = xhat_in
    npp.nn.ops.layernorm_backward(dout, xhat, inv_std, gamma, dx=dx, dgamma=dgamma, dbeta=dbeta)
    return [xhat, out, inv_std, dx, dgamma, dbeta]


def _layernorm_exact(x, dout, gamma, beta):
    """xhat, out and dx in float64 (long double for float64 inputs), rounded to x's dtype."""
    wide = np.longdouble if x.dtype == np.float64 else np.float64
    xw, g = x.astype(wide), dout.astype(wide) * gamma.astype(wide)
    centred = xw - xw.mean(axis=1, keepdims=True)
    inv_std = 1 / np.sqrt((centred * centred).mean(axis=1, keepdims=True) + wide(1e-5))
    xhat = centred * inv_std
    dx = g - xhat * (g * xhat).mean(axis=1, keepdims=True) - g.mean(axis=1, keepdims=True)
    return xhat, xhat * gamma + beta, dx * inv_std


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(600, 1024), (37, 1023), (5, 3)])
def test_layernorm_kernels_agree_with_the_numpy_path_to_rounding(shape, dtype, kernel_calls):
    inputs = _layernorm_inputs(shape, dtype)
    compiled = _layernorm_run(*inputs)
    assert {name for name, ran in kernel_calls if ran} == {
        "layernorm",
        "layernorm_backward",
        "column_sums",
    }
    with _blas.serial():  # rows and columns are whole in every piece: the same bits
        _assert_same_bits(compiled, _layernorm_run(*inputs))
    npp.config.configure(kernels="numpy")
    numpy_path = _layernorm_run(*inputs)
    # Both within a few units in the last place of the exact values, relative to each
    # value (at least 1; dx: its largest entry, as a row's sums may cancel). Measured:
    # up to 5.5 for the kernel (out: xhat's error times gamma, and two roundings), 10
    # for NumPy's float32 pairwise sums; a divisor of D - 1 would be off by 2**-11.
    eps = np.finfo(dtype).eps
    for got in (compiled, numpy_path):
        for value, exact in zip([got[0], got[1], got[3]], _layernorm_exact(*inputs), strict=True):
            scale = np.maximum(np.abs(exact), np.abs(exact).max() if value is got[3] else 1)
            assert np.max(np.abs(value - exact) / scale) < 12 * eps
    # Given the same xhat, the parameters' gradients (column sums) are the same bits
    again = _layernorm_run(*inputs, xhat_in=(compiled[0], compiled[2]))
    npp.config.configure(kernels="auto")
    _assert_same_bits(compiled[4:], again[4:])


def test_layernorm_gradients_check_out_on_the_numpy_path():
    npp.config.configure(kernels="numpy")
    layer = npp.LayerNorm(7)
    layer.gamma.data[:] = np.linspace(0.5, 1.5, 7)
    report = npp.gradcheck(layer, np.random.default_rng(11).standard_normal((6, 7)))
    assert report.ok, str(report)
