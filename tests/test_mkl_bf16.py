"""bf16: conversions (NumPy reference, compiled twin) and MKL's bf16 / float32 products.

The conversion tests need NumPy and numba only. The tests marked ``needs_mkl``
run where the ``mkl`` wheel is installed, and are skipped, with the reason,
where it is not: MKL is an optional extra. Where it is installed, MKL must
load and compute right (a failure, never a skip).
"""

import importlib.metadata
import json
import subprocess
import sys

import numpy as np
import pytest

from numprop._fast import bf16, blas, mkl
from numprop._fast.grain import GRAIN


def _mkl_installed() -> bool:
    try:
        importlib.metadata.distribution("mkl")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_mkl = pytest.mark.skipif(not _mkl_installed(), reason="the mkl wheel is not installed")


def _bits(*values: int) -> np.ndarray:
    return np.array(values, np.uint32).view(np.float32)


def _reference(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, np.uint16)
    return bf16.to_bf16_numpy(x, out)


# -- float32 -> bf16: the reference --------------------------------------------------------

# (float32 bits, bf16 bits) that pin the rounding down.
EDGE_CASES = [
    (0x00000000, 0x0000),  # +0
    (0x80000000, 0x8000),  # -0
    (0x3F800000, 0x3F80),  # 1
    (0x3F808000, 0x3F80),  # 1 + 2**-8: a tie, to even (down)
    (0x3F818000, 0x3F82),  # 1 + 3 * 2**-8: a tie, to even (up)
    (0x3F807FFF, 0x3F80),  # just below the tie
    (0x3F808001, 0x3F81),  # just above the tie
    (0xBF818000, 0xBF82),  # ties to even on negatives too
    (0x3F80FFFF, 0x3F81),
    (0x3FFFFFFF, 0x4000),  # the carry runs into the exponent
    (0x7F800000, 0x7F80),  # +inf
    (0xFF800000, 0xFF80),  # -inf
    (0x7F7F7FFF, 0x7F7F),  # stays the largest bf16
    (0x7F7F8000, 0x7F80),  # a tie above the largest bf16 (odd): to infinity
    (0x7F7FFFFF, 0x7F80),  # float32's largest finite: infinity
    (0xFF7FFFFF, 0xFF80),
    (0x00000001, 0x0000),  # the smallest subnormal: to zero
    (0x00008000, 0x0000),  # a subnormal tie, to even (zero)
    (0x00018000, 0x0002),  # a subnormal tie, to even (up)
    (0x00010000, 0x0001),  # bf16's smallest subnormal, kept
    (0x007FFFFF, 0x0080),  # the largest subnormal rounds to the smallest normal
    (0x80018000, 0x8002),
    (0x7FC00000, 0x7FC0),  # quiet NaN
    (0xFFC00000, 0xFFC0),  # negative quiet NaN
    (0x7F800001, 0x7FC0),  # signalling NaN with a low payload: NaN, not infinity
    (0x7FBF0000, 0x7FFF),  # signalling NaN: upper payload kept, made quiet
    (0x7FFFFFFF, 0x7FFF),  # NaN that rounding would carry into the sign
    (0xFFFFFFFF, 0xFFFF),  # ...or out of 32 bits
    (0xFF800001, 0xFFC0),
]


def test_reference_rounds_the_edge_cases_as_specified():
    x = _bits(*(f for f, _ in EDGE_CASES))
    expected = np.array([b for _, b in EDGE_CASES], np.uint16)
    got = _reference(x)
    wrong = [(hex(f), hex(b), hex(g)) for (f, _), b, g in zip(EDGE_CASES, expected, got) if g != b]
    assert not wrong, f"(float32, expected, got): {wrong}"


def _value(bits: np.ndarray) -> np.ndarray:
    """float64 values of bf16 bits, with 0x7F80 read as 2**128 (rounding's unbounded exponent)."""
    value = bf16.to_float32_numpy(bits, np.empty(bits.shape, np.float32)).astype(np.float64)
    big = (bits & 0x7FFF) == 0x7F80
    value[big] = np.copysign(2.0**128, value[big])
    return value


def test_reference_rounds_to_nearest_even_on_random_bits():
    # An independent statement of the rule: of the two bf16 values around x,
    # the nearer, ties to the even one. Differences are exact in float64.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint32).view(np.float32)
    x = x[np.isfinite(x)]
    got = _reference(x)
    down = (x.view(np.uint32) >> 16).astype(np.uint16)  # toward zero
    up = down + np.uint16(1)  # away from zero (never a NaN: 0x7F7F + 1 is infinity)
    xd = x.astype(np.float64)
    d_down, d_up = np.abs(xd - _value(down)), np.abs(_value(up) - xd)
    expected = np.where((d_up < d_down) | ((d_up == d_down) & (down % 2 == 1)), up, down)
    np.testing.assert_array_equal(got, expected)


def test_bf16_to_float32_is_exact_and_every_bf16_value_survives_the_round_trip():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    widened = bf16.to_float32_numpy(every, np.empty(every.shape, np.float32))
    np.testing.assert_array_equal(widened.view(np.uint32), every.astype(np.uint32) << 16)
    back = _reference(widened)
    nan = np.isnan(widened)
    np.testing.assert_array_equal(back[~nan], every[~nan])
    np.testing.assert_array_equal(back[nan], every[nan] | 0x0040)  # quieted, sign and payload kept


def test_round_float32_gives_bf16_values():
    x = np.array([1.0, 1 + 2**-8, 1 + 2**-7, np.pi], np.float32)
    np.testing.assert_array_equal(bf16.round_float32(x), [1.0, 1.0, 1 + 2**-7, 3.140625])


def test_conversions_check_dtypes_and_shapes():
    with pytest.raises(ValueError, match="float32"):
        bf16.to_bf16_numpy(np.zeros(3), np.empty(3, np.uint16))
    with pytest.raises(ValueError, match="shape"):
        bf16.to_bf16(np.zeros(3, np.float32), np.empty(4, np.uint16))
    with pytest.raises(ValueError, match="uint16"):
        bf16.to_float32(np.zeros(3, np.float32))


# -- the compiled twin: the reference's bits -----------------------------------------------


def _random_bits(n: int, seed: int = 0) -> np.ndarray:
    """float32s from random bits (every class: NaN, inf, subnormals, ties) plus the edge cases."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 1 << 32, n, dtype=np.uint32)
    bits[::7] &= 0xFFFF8000  # many exact ties
    bits[: len(EDGE_CASES)] = [f for f, _ in EDGE_CASES][:n]
    return bits.view(np.float32)


@pytest.mark.parametrize("n", [0, 1, 29, 1000, 2 * GRAIN.kernel + 12345, (1 << 20) + 3])
def test_compiled_conversions_give_the_reference_bits(n):
    assert bf16.compiled_available()  # the test extra installs numba
    x = _random_bits(n, seed=n)
    got = np.full(n, 0xAAAA, np.uint16)
    assert bf16.to_bf16_compiled(x, got)
    np.testing.assert_array_equal(got, _reference(x))
    with blas.serial():  # one piece: the same bits as the split
        one = np.empty(n, np.uint16)
        assert bf16.to_bf16_compiled(x, one)
    np.testing.assert_array_equal(one, got)
    wide = np.full(n, np.nan, np.float32)
    assert bf16.to_float32_compiled(got, wide)
    expected = bf16.to_float32_numpy(got, np.empty(n, np.float32))
    np.testing.assert_array_equal(wide.view(np.uint32), expected.view(np.uint32))


def test_compiled_conversions_take_any_shape_and_leave_strided_arrays_to_numpy():
    x = _random_bits(3 * 5 * 7000).reshape(3, 5, 7000)
    out = np.empty(x.shape, np.uint16)
    assert bf16.to_bf16_compiled(x, out)
    np.testing.assert_array_equal(out, _reference(x))
    strided = x[:, ::2]
    assert not bf16.to_bf16_compiled(strided, np.empty(strided.shape, np.uint16))
    np.testing.assert_array_equal(bf16.to_bf16(strided), _reference(strided))
    np.testing.assert_array_equal(bf16.to_bf16(x.T), _reference(x.T))


def test_the_kernels_setting_turns_the_compiled_conversions_off():
    import numprop as npp

    with npp.config.override(kernels="numpy"):
        assert not bf16.compiled_available()
        assert not bf16.to_bf16_compiled(np.ones(4, np.float32), np.empty(4, np.uint16))
        np.testing.assert_array_equal(bf16.to_bf16(np.ones(4, np.float32)), 0x3F80)


def test_importing_the_modules_loads_neither_mkl_nor_numba():
    script = """
import json, sys
import numprop
from numprop._fast import bf16, mkl
maps = open("/proc/self/maps").read()
print(json.dumps({"numba": "numba" in sys.modules, "mkl": "libmkl" in maps,
                  "looked_up": mkl._mkl.cache_info().currsize}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {"numba": False, "mkl": False, "looked_up": 0}


# -- the products -------------------------------------------------------------------------


def _operands(m, k, n, *, trans_a, trans_b, seed=0):
    """bf16 operands a (m, k) and b (k, n), transposed views where asked, and their float64s."""
    rng = np.random.default_rng(seed)
    a32 = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    b32 = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    a, b = bf16.to_bf16(a32), bf16.to_bf16(b32)
    a, b, a32, b32 = (
        v.T if t else v for v, t in ((a, trans_a), (b, trans_b), (a32, trans_a), (b32, trans_b))
    )
    return (
        a,
        b,
        bf16.to_float32(np.ascontiguousarray(a)).astype(np.float64),
        bf16.to_float32(np.ascontiguousarray(b)).astype(np.float64),
        a32,
        b32,
    )


def _assert_float32_sums(got, expected, bound_terms):
    """Within the worst-case rounding of float32 sums of exact products, k terms each:
    |error| <= k u / (1 - k u) * sum |terms|, u = 2**-24 (``bound_terms`` = |a| @ |b| (+ |beta c|))."""
    k = bound_terms[1]
    gamma = k * 2.0**-24 / (1 - k * 2.0**-24)
    error = np.abs(got.astype(np.float64) - expected)
    worst = np.max(error / (gamma * bound_terms[0] + np.finfo(np.float64).tiny))
    assert worst <= 1.0, f"error {worst:.3g} times float32's worst-case bound"


SHAPES = [(37, 300, 53), (1, 64, 7), (64, 1, 64), (256, 512, 1000), (1000, 128, 300)]


def _check_gemm(m, k, n, trans_a, trans_b, *, alpha=1.0, beta=0.0):
    a, b, a64, b64, a32, b32 = _operands(m, k, n, trans_a=trans_a, trans_b=trans_b)
    rng = np.random.default_rng(1)
    c0 = rng.standard_normal((m, n), dtype=np.float32)
    out = c0.copy() if beta else np.full((m, n), np.nan, np.float32)  # beta 0: out is ignored
    mkl.gemm_bf16(a, b, out, alpha=alpha, beta=beta)
    expected = alpha * (a64 @ b64) + beta * c0.astype(np.float64)
    magnitude = abs(alpha) * (np.abs(a64) @ np.abs(b64)) + abs(beta) * np.abs(c0)
    _assert_float32_sums(out, expected, (magnitude, k + (beta != 0)))
    return out, expected, magnitude, a32, b32


def test_gemm_bf16_without_mkl_widens_to_float32(monkeypatch):
    monkeypatch.setattr(mkl, "library", lambda: None)
    for trans_a in (False, True):
        for trans_b in (False, True):
            _check_gemm(37, 300, 53, trans_a, trans_b, alpha=0.5, beta=1.0)
            _check_gemm(37, 300, 53, trans_a, trans_b)


@needs_mkl
def test_mkl_loads_where_it_is_installed():
    assert mkl.available(), mkl.why_not()
    assert mkl.why_not() is None
    assert "threading pool" in mkl.describe()


@needs_mkl
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_bf16_is_the_float32_sum_of_the_bf16_products(shape, trans_a, trans_b):
    assert mkl.available(), mkl.why_not()
    out, expected, magnitude, a32, b32 = _check_gemm(*shape, trans_a, trans_b)
    # The bound is tight enough to tell bf16 operands from float32 ones:
    if shape[1] >= 64:
        unrounded = a32.astype(np.float64) @ b32.astype(np.float64)
        with pytest.raises(AssertionError, match="bound"):
            _assert_float32_sums(unrounded.astype(np.float32), expected, (magnitude, shape[1]))
    _check_gemm(*shape, trans_a, trans_b, alpha=0.5, beta=1.0)  # accumulating: a weight gradient
    _check_gemm(*shape, trans_a, trans_b, alpha=-2.0, beta=0.25)


@needs_mkl
def test_split_products_match_one_call():
    # "pool" threading cuts large products into blocks on OpenBLAS's threads.
    lib = mkl.library()
    assert lib is not None and lib.threading == "pool"
    for m, k, n in [(512, 3072, 1000), (3072, 512, 1000), (512, 1000, 3072)]:
        a, b, *_ = _operands(m, k, n, trans_a=False, trans_b=True)
        whole, split = np.empty((m, n), np.float32), np.empty((m, n), np.float32)
        assert mkl._call(lib, "bf16", a, b, whole, 1.0, 0.0)
        assert mkl._split_call(lib, "bf16", a, b, split, 1.0, 0.0)
        np.testing.assert_array_equal(split, whole)


@needs_mkl
@pytest.mark.parametrize("trans_b", [False, True])
def test_packed_weights_give_the_sums_of_the_plain_products(trans_b):
    # Inference packs each weight once (mkl.pack_bf16) instead of inside every product.
    k, n = 600, 700
    for m in (37, 512, 1000):
        a, b, a64, b64, *_ = _operands(m, k, n, trans_a=False, trans_b=trans_b)
        packed = mkl.pack_bf16(b)
        assert isinstance(packed, mkl.PackedBF16) and packed.shape == (k, n)
        assert len(packed.pieces) == mkl.library().threads()
        cuts = [(lo, hi) for lo, hi, _ in packed.pieces]
        assert cuts[0][0] == 0 and cuts[-1][1] == n
        assert all(hi == lo for (_, hi), (lo, _) in zip(cuts, cuts[1:]))
        assert packed.T is not None and np.shares_memory(packed.T, b)
        c0 = np.random.default_rng(m).standard_normal((m, n), dtype=np.float32)
        for alpha, beta in ((1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)):
            plain, got = c0.copy(), c0.copy()
            mkl.gemm_bf16(a, b, plain, alpha=alpha, beta=beta)
            mkl.gemm_bf16(a, packed, got, alpha=alpha, beta=beta)
            np.testing.assert_array_equal(got, plain)
    # One row: MKL may sum in another order than in a plain call; float32 sums all the same.
    a, b, a64, b64, *_ = _operands(1, k, n, trans_a=False, trans_b=trans_b)
    out = np.full((1, n), np.nan, np.float32)
    mkl.gemm_bf16(a, mkl.pack_bf16(b), out)
    _assert_float32_sums(out, a64 @ b64, (np.abs(a64) @ np.abs(b64), k))


@needs_mkl
def test_small_or_narrow_weights_stay_unpacked_and_shapes_are_checked():
    a, b, *_ = _operands(8, 600, 700, trans_a=False, trans_b=False)
    packed = mkl.pack_bf16(b)
    with pytest.raises(ValueError, match="do not match"):
        mkl.gemm_bf16(a[:, :500], packed, np.empty((8, 700), np.float32))
    small = bf16.to_bf16(np.ones((100, 200), np.float32))
    narrow = bf16.to_bf16(np.ones((8000, 100), np.float32))  # 10 classes' kind of width
    assert mkl.pack_bf16(small) is None and mkl.pack_bf16(narrow) is None
    from numprop.nn import ops

    assert ops.pack_bf16(small) is small  # the bits themselves: a plain product
    with pytest.raises(ValueError, match="uint16"):
        mkl.pack_bf16(np.ones((600, 700), np.float32))


def test_nothing_is_packed_without_mkl(monkeypatch):
    monkeypatch.setattr(mkl, "library", lambda: None)
    bits = bf16.to_bf16(np.ones((600, 700), np.float32))
    assert mkl.pack_bf16(bits) is None


@needs_mkl
def test_gemm_bf16_reads_column_slices_in_place_and_copies_other_layouts():
    a, b, a64, b64, *_ = _operands(40, 200, 90, trans_a=False, trans_b=False)
    # Row slices and every other row: leading dimensions; every other column: a copy.
    for sa, sb in [(np.s_[:, :150], np.s_[:150, 10:70]), (np.s_[::2, ::2], np.s_[::2, ::3])]:
        out = np.empty((a[sa].shape[0], b[sb].shape[1]), np.float32)
        mkl.gemm_bf16(a[sa], b[sb], out)
        bound = (np.abs(a64[sa]) @ np.abs(b64[sb]), a[sa].shape[1])
        _assert_float32_sums(out, a64[sa] @ b64[sb], bound)
    assert mkl._layout(a[:, :150]) == (mkl._NO_TRANS, 200)
    assert mkl._layout(a[::2]) == (mkl._NO_TRANS, 400)
    assert mkl._layout(a[:150].T) == (mkl._TRANS, 200)
    assert mkl._layout(a[:, ::2]) is None


@needs_mkl
def test_gemm_f32_is_mkl_sgemm():
    rng = np.random.default_rng(0)
    for trans_a, trans_b in [(False, False), (True, False), (False, True), (True, True)]:
        a = rng.standard_normal((300, 64) if trans_a else (64, 300), dtype=np.float32)
        b = rng.standard_normal((90, 300) if trans_b else (300, 90), dtype=np.float32)
        a, b = a.T if trans_a else a, b.T if trans_b else b
        c0 = rng.standard_normal((64, 90), dtype=np.float32)
        out = c0.copy()
        mkl.gemm_f32(a, b, out, alpha=0.5, beta=1.0)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        expected = 0.5 * (a64 @ b64) + c0
        magnitude = 0.5 * (np.abs(a64) @ np.abs(b64)) + np.abs(c0)
        _assert_float32_sums(out, expected, (magnitude, 301))


def test_empty_products_and_wrong_arguments():
    out = np.full((3, 4), np.nan, np.float32)
    mkl.gemm_bf16(np.empty((3, 0), np.uint16), np.empty((0, 4), np.uint16), out)
    np.testing.assert_array_equal(out, 0)  # an empty sum, beta 0
    out[...] = 2
    mkl.gemm_bf16(np.empty((3, 0), np.uint16), np.empty((0, 4), np.uint16), out, beta=0.5)
    np.testing.assert_array_equal(out, 1)
    mkl.gemm_bf16(
        np.empty((0, 5), np.uint16), np.empty((5, 4), np.uint16), np.empty((0, 4), np.float32)
    )
    with pytest.raises(ValueError, match="uint16"):
        mkl.gemm_bf16(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint16), out[:2, :2])
    with pytest.raises(ValueError, match="match"):
        mkl.gemm_bf16(np.zeros((2, 3), np.uint16), np.zeros((2, 2), np.uint16), out[:2, :2])
    with pytest.raises(ValueError, match="float32"):
        mkl.gemm_bf16(np.zeros((2, 2), np.uint16), np.zeros((2, 2), np.uint16), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="threading"):
        mkl.configure(threading="openmp")


@needs_mkl
@pytest.mark.parametrize("threading", ["sequential", "intel", "tbb", "gnu"])
def test_every_threading_layer_loads_or_says_why(threading):
    # In a child process: MKL fixes its layer for the life of a process, and a
    # layer whose runtime is missing must give a reason, not end the process.
    script = f"""
import json, numpy as np
from numprop._fast import bf16, mkl
mkl.configure(threading={threading!r})
ok = mkl.available()
if ok:
    a = bf16.to_bf16(np.arange(12, dtype=np.float32).reshape(3, 4))
    out = np.empty((3, 3), np.float32)
    mkl.gemm_bf16(a, a.T, out)
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    ok = bool(np.array_equal(out, x @ x.T))
print(json.dumps({{"ok": ok, "why": mkl.why_not(), "describe": mkl.describe()}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    if threading in ("sequential", "intel", "tbb"):  # their runtimes come with the mkl wheel
        assert result["ok"], result
        assert f"threading {threading}" in result["describe"]
    else:  # libgomp comes with the system's compiler, or not
        assert result["ok"] or "runtime" in result["why"], result
