"""The compiled kernels behind ``numprop._kernels`` (imported only when numba is).

Every kernel is a C function with the signature OpenBLAS calls a piece with,
``(width, n, k, alpha, a, lda, b, ldb, c, ldc, sb)``, and covers the items
``[lo, lo + width)`` with ``lo = a // 4``. ``b`` holds float64 scalars; ``c``
holds int64s: the item size (4 or 8, which picks float32 or float64), then
the sizes and data addresses the kernel's docstring lists.

Each kernel does the same arithmetic in the same order as the NumPy code it
replaces (see the callers), so the two paths give the same bits. Loops that
LLVM must vectorise take 1-D contiguous arrays, count from 0 and are never
inlined: only then does numba tell LLVM that the arrays do not overlap.
Everything here is module-level, so numba's disk cache can hold it. That is
also why each kernel spells out its own float32/float64 branch: a shared
dispatcher taking the piece as an argument was tried, and numba then refused
to cache some of the kernels ("dynamic globals"), recompiling them in every
process. The tests turn NumbaWarning into an error to keep it that way.
"""

import numba
import numpy as np
from numba import carray, types
from numba.extending import intrinsic

SIGNATURE = types.intc(
    types.int64,
    types.int64,
    types.int64,
    types.float32,
    types.int64,
    types.int64,
    types.CPointer(types.float64),
    types.int64,
    types.CPointer(types.int64),
    types.int64,
    types.voidptr,
)

jit = numba.njit(error_model="numpy", cache=True)
loop = numba.njit(error_model="numpy", cache=True, inline="never")
kernel = numba.cfunc(SIGNATURE, nopython=True, error_model="numpy", cache=True)


@intrinsic
def _pointer(typingctx, address, dtype):
    """An int64 address as a pointer to `dtype` (numba has no cast for it)."""
    target = dtype.dtype
    sig = types.CPointer(target)(types.int64, dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(target)))

    return sig, codegen


@jit
def _array(ints, j, dtype, size):
    """The 1-D array of `size` items of `dtype` at address ints[j]."""
    return carray(_pointer(ints[j], dtype), size)


# --- Adam / AdamW: scalars (b1, 1-b1, b2, 1-b2, eps, step, decay, l2), ints (W, G, M, V) ---


@loop
def _adam_loop(w, g, m, v, b1, c1, b2, c2, eps, step, decay, l2):
    for i in range(w.size):
        gi = g[i] + l2 * w[i]  # Adam's L2 term (0 for AdamW)
        mi = m[i] * b1 + gi * c1
        vi = v[i] * b2 + (gi * gi) * c2
        m[i], v[i] = mi, vi
        w[i] = w[i] * decay + (mi / (np.sqrt(vi) + eps)) * step  # decay: AdamW's (1 for Adam)


@jit
def _adam_piece(lo, hi, s, ints, dtype):
    w, g, m, v = (
        _array(ints, 1, dtype, hi)[lo:],
        _array(ints, 2, dtype, hi)[lo:],
        _array(ints, 3, dtype, hi)[lo:],
        _array(ints, 4, dtype, hi)[lo:],
    )
    _adam_loop(
        w,
        g,
        m,
        v,
        dtype(s[0]),
        dtype(s[1]),
        dtype(s[2]),
        dtype(s[3]),
        dtype(s[4]),
        dtype(s[5]),
        dtype(s[6]),
        dtype(s[7]),
    )


@kernel
def adam(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _adam_piece(a // 4, a // 4 + width, s, ints, np.float32)
    else:
        _adam_piece(a // 4, a // 4 + width, s, ints, np.float64)
    return 0


# --- SGD with momentum, after v = m v + g: scalars (wd, -lr), ints (W, V) -------------
# v += wd W (when wd != 0), then W += (-lr) v.


@loop
def _sgd_momentum_loop(w, v, wd, step):
    decay = wd != 0
    for i in range(w.size):
        vi = v[i] + w[i] * wd if decay else v[i]
        v[i] = vi
        w[i] = w[i] + vi * step


@jit
def _sgd_momentum_piece(lo, hi, s, ints, dtype):
    _sgd_momentum_loop(
        _array(ints, 1, dtype, hi)[lo:], _array(ints, 2, dtype, hi)[lo:], dtype(s[0]), dtype(s[1])
    )


@kernel
def sgd_momentum(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _sgd_momentum_piece(a // 4, a // 4 + width, s, ints, np.float32)
    else:
        _sgd_momentum_piece(a // 4, a // 4 + width, s, ints, np.float64)
    return 0


# --- ReLU: ints (x, y), y = max(x, 0) (NaN stays NaN, as with np.maximum) ---------------


@loop
def _relu_loop(x, y):
    for i in range(x.size):
        y[i] = 0 if x[i] < 0 else x[i]


@jit
def _relu_piece(lo, hi, ints, dtype):
    _relu_loop(_array(ints, 1, dtype, hi)[lo:], _array(ints, 2, dtype, hi)[lo:])


@kernel
def relu(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _relu_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _relu_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0


# --- ReLU backward: ints (y, dout, dx), dx = dout * (y > 0) -----------------------------


@loop
def _relu_backward_loop(y, dout, dx, one, zero):
    for i in range(y.size):
        dx[i] = dout[i] * (one if y[i] > 0 else zero)


@jit
def _relu_backward_piece(lo, hi, ints, dtype):
    _relu_backward_loop(
        _array(ints, 1, dtype, hi)[lo:],
        _array(ints, 2, dtype, hi)[lo:],
        _array(ints, 3, dtype, hi)[lo:],
        dtype(1),
        dtype(0),
    )


@kernel
def relu_backward(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _relu_backward_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _relu_backward_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0


# --- Elementwise product: ints (x, y, out), out = x * y (Dropout's backward) ------------


@loop
def _multiply_loop(x, y, out):
    for i in range(x.size):
        out[i] = x[i] * y[i]


@jit
def _multiply_piece(lo, hi, ints, dtype):
    _multiply_loop(
        _array(ints, 1, dtype, hi)[lo:],
        _array(ints, 2, dtype, hi)[lo:],
        _array(ints, 3, dtype, hi)[lo:],
    )


@kernel
def multiply(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _multiply_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _multiply_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0


# --- Dropout forward: scalars (threshold, scale), ints (N, key, x, mask, out) -----------
# Element e's bits are lane e % 4 of mix64(key + e // 4) (layers.dropout_bits); pieces
# are ranges of 64-bit words. Each element hashes its own word: 4 times the hashing,
# but a loop LLVM vectorises (3 times faster than hashing once per word).


@jit
def _mix64(z):
    """SplitMix64's output function (Steele, Lea & Flood 2014), after a golden-ratio step."""
    z = z * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@loop
def _dropout_loop(start, key, x, mask, out, threshold, scale, zero):
    for j in range(x.size):
        e = np.uint64(start + j)
        z = _mix64(key + (e >> np.uint64(2)))
        bits = (z >> ((e & np.uint64(3)) << np.uint64(4))) & np.uint64(0xFFFF)
        mask[j] = scale if bits >= threshold else zero  # == (bits >= t) * scale
        out[j] = x[j] * mask[j]


@jit
def _dropout_piece(first, words, s, ints, dtype):
    size = ints[1]
    lo, hi = 4 * first, min(4 * (first + words), size)
    x, mask, out = (
        _array(ints, 3, dtype, size),
        _array(ints, 4, dtype, size),
        _array(ints, 5, dtype, size),
    )
    _dropout_loop(
        lo,
        np.uint64(ints[2]),
        x[lo:hi],
        mask[lo:hi],
        out[lo:hi],
        np.uint64(s[0]),
        dtype(s[1]),
        dtype(0),
    )


@kernel
def dropout(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _dropout_piece(a // 4, width, s, ints, np.float32)
    else:
        _dropout_piece(a // 4, width, s, ints, np.float64)
    return 0


# --- Row-segment loops for BatchNorm1d (columns [lo, hi) of one row) --------------------


@loop
def _copy(dst, src):
    for j in range(dst.size):
        dst[j] = src[j]


@loop
def _add(acc, row):
    for j in range(acc.size):
        acc[j] += row[j]


@loop
def _product(out, x, y):
    for j in range(out.size):
        out[j] = x[j] * y[j]


@loop
def _add_product(acc, x, y):
    for j in range(acc.size):
        acc[j] += x[j] * y[j]


@loop
def _subtract(out, row, vec):
    for j in range(out.size):
        out[j] = row[j] - vec[j]


@loop
def _center_add_square(acc, out, row, vec):
    for j in range(acc.size):
        out[j] = row[j] - vec[j]
        acc[j] += out[j] * out[j]


@loop
def _affine(out, row, gamma, inv_std, beta):
    for j in range(out.size):
        out[j] = row[j] * (gamma[j] * inv_std[j]) + beta[j]


@loop
def _batchnorm_dx(dx, dout, xc, a, b, c):
    for j in range(dx.size):
        dx[j] = ((dout[j] - xc[j] * a[j]) - b[j]) * c[j]


# --- BatchNorm1d forward in training: scalars (eps,),
# ints (N, H, x, xc, out, mean, var, inv_std, gamma, beta); pieces are column blocks.
# mean and biased var per column (sums over rows in order, as NumPy's reductions along
# axis 0), inv_std = 1 / sqrt(var + eps), xc = x - mean, out = xc * (gamma inv_std) + beta.


@jit
def _batchnorm_piece(lo, hi, s, ints, dtype):
    n, h = ints[1], ints[2]
    x, xc, out = (
        _array(ints, 3, dtype, n * h),
        _array(ints, 4, dtype, n * h),
        _array(ints, 5, dtype, n * h),
    )
    m, v, inv_std = (
        _array(ints, 6, dtype, h)[lo:hi],
        _array(ints, 7, dtype, h)[lo:hi],
        _array(ints, 8, dtype, h)[lo:hi],
    )
    gamma, beta = _array(ints, 9, dtype, h)[lo:hi], _array(ints, 10, dtype, h)[lo:hi]
    _copy(m, x[lo:hi])
    for i in range(1, n):
        _add(m, x[i * h + lo : i * h + hi])
    for j in range(hi - lo):
        m[j] /= dtype(n)
    _subtract(xc[lo:hi], x[lo:hi], m)
    _product(v, xc[lo:hi], xc[lo:hi])
    for i in range(1, n):  # xc = x - mean and var += xc^2, one pass
        _center_add_square(v, xc[i * h + lo : i * h + hi], x[i * h + lo : i * h + hi], m)
    eps = dtype(s[0])
    for j in range(hi - lo):
        v[j] /= dtype(n)
        inv_std[j] = dtype(1) / np.sqrt(v[j] + eps)
    for i in range(n):
        _affine(out[i * h + lo : i * h + hi], xc[i * h + lo : i * h + hi], gamma, inv_std, beta)


@kernel
def batchnorm(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _batchnorm_piece(a // 4, a // 4 + width, s, ints, np.float32)
    else:
        _batchnorm_piece(a // 4, a // 4 + width, s, ints, np.float64)
    return 0


# --- BatchNorm1d forward in eval mode: ints (N, H, x, out, mean, scale, beta); pieces
# are rows. out = (x - mean) * scale + beta, scale = gamma * inv_std of the running variance.


@loop
def _center_affine(out, row, mean, scale, beta):
    for j in range(out.size):
        out[j] = (row[j] - mean[j]) * scale[j] + beta[j]


@jit
def _batchnorm_eval_piece(lo, hi, ints, dtype):
    n, h = ints[1], ints[2]
    x, out = _array(ints, 3, dtype, n * h), _array(ints, 4, dtype, n * h)
    mean, scale, beta = (
        _array(ints, 5, dtype, h),
        _array(ints, 6, dtype, h),
        _array(ints, 7, dtype, h),
    )
    for i in range(lo, hi):
        _center_affine(out[i * h : (i + 1) * h], x[i * h : (i + 1) * h], mean, scale, beta)


@kernel
def batchnorm_eval(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _batchnorm_eval_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _batchnorm_eval_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0


# --- BatchNorm1d backward in training:
# ints (N, H, dout, xc, dx, inv_std, gamma, dgamma, dbeta); pieces are column blocks.
# dbeta = sum dout; dgamma = (sum dout xc) inv_std;
# dx = ((dout - xc (inv_std dgamma / N)) - dbeta / N) (gamma inv_std).


@jit
def _batchnorm_backward_piece(lo, hi, ints, dtype):
    n, h = ints[1], ints[2]
    dout, xc, dx = (
        _array(ints, 3, dtype, n * h),
        _array(ints, 4, dtype, n * h),
        _array(ints, 5, dtype, n * h),
    )
    inv_std, gamma = _array(ints, 6, dtype, h)[lo:hi], _array(ints, 7, dtype, h)[lo:hi]
    dgamma, dbeta = _array(ints, 8, dtype, h)[lo:hi], _array(ints, 9, dtype, h)[lo:hi]
    _copy(dbeta, dout[lo:hi])
    _product(dgamma, dout[lo:hi], xc[lo:hi])
    for i in range(1, n):
        _add(dbeta, dout[i * h + lo : i * h + hi])
        _add_product(dgamma, dout[i * h + lo : i * h + hi], xc[i * h + lo : i * h + hi])
    a, b, c = np.empty_like(inv_std), np.empty_like(inv_std), np.empty_like(inv_std)
    for j in range(hi - lo):
        dgamma[j] *= inv_std[j]
        a[j] = inv_std[j] * dgamma[j] / dtype(n)
        b[j] = dbeta[j] / dtype(n)
        c[j] = gamma[j] * inv_std[j]
    for i in range(n):
        _batchnorm_dx(
            dx[i * h + lo : i * h + hi],
            dout[i * h + lo : i * h + hi],
            xc[i * h + lo : i * h + hi],
            a,
            b,
            c,
        )


@kernel
def batchnorm_backward(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _batchnorm_backward_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _batchnorm_backward_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0


# --- Gather and standardise: ints (D, N, out, shift, scale, source uint8, rows int64) ---
# out[i] = (source[rows[i]] - shift) * scale, rows clipped to [0, N) (np.take's "clip");
# pieces are rows of out.


@loop
def _affine_row(out, src, shift, scale):
    for j in range(out.size):
        out[j] = (src[j] - shift[j]) * scale[j]


@jit
def _affine_rows_piece(lo, hi, ints, dtype):
    d, n = ints[1], ints[2]
    out = _array(ints, 3, dtype, hi * d)
    shift, scale = _array(ints, 4, dtype, d), _array(ints, 5, dtype, d)
    source, rows = _array(ints, 6, np.uint8, n * d), _array(ints, 7, np.int64, hi)
    for i in range(lo, hi):
        r = min(max(rows[i], 0), n - 1)
        _affine_row(out[i * d : (i + 1) * d], source[r * d : (r + 1) * d], shift, scale)


@kernel
def affine_rows(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _affine_rows_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _affine_rows_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0


# --- Gather, augment and standardise images:
# ints (H, W, C, N, out, shift, scale, images uint8, rows int64, flips uint8, dy int64, dx int64).
# Output image i, pixel (y, x), channel c reads image rows[i] (clipped to [0, N)) at row
# y + dy[i] and column x + dx[i], mirrored (W - 1 - column) when flips[i]; outside the
# image it reads 0. Then (value - shift) * scale, as batches.Augment.apply followed by
# preprocess.affine_rows. Pieces are output images.


@loop
def _augment_image(out, src, h, w, c, flip, oy, ox, shift, scale):
    for y in range(h):
        sy = y + oy
        for x in range(w):
            sx = x + ox
            col = w - 1 - sx if flip else sx
            inside = 0 <= sy < h and 0 <= col < w
            for k in range(c):
                j = (y * w + x) * c + k
                value = src[(sy * w + col) * c + k] if inside else np.uint8(0)
                out[j] = (value - shift[j]) * scale[j]


@jit
def _augment_rows_piece(lo, hi, ints, dtype):
    h, w, c, n = ints[1], ints[2], ints[3], ints[4]
    d = h * w * c
    out = _array(ints, 5, dtype, hi * d)
    shift, scale = _array(ints, 6, dtype, d), _array(ints, 7, dtype, d)
    images, rows = _array(ints, 8, np.uint8, n * d), _array(ints, 9, np.int64, hi)
    flips, dy, dx = (
        _array(ints, 10, np.uint8, hi),
        _array(ints, 11, np.int64, hi),
        _array(ints, 12, np.int64, hi),
    )
    for i in range(lo, hi):
        r = min(max(rows[i], 0), n - 1)
        _augment_image(
            out[i * d : (i + 1) * d],
            images[r * d : (r + 1) * d],
            h,
            w,
            c,
            flips[i] != 0,
            dy[i],
            dx[i],
            shift,
            scale,
        )


@kernel
def augment_rows(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _augment_rows_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _augment_rows_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0


# --- Softmax cross-entropy with integer labels: scalars (1 - eps, eps / C, 1 / N, eps),
# ints (C, logits, probs, grad, labels int64, totals float64[3]); pieces are rows.
# Per row, the NumPy path's steps: shifted = z - max z; p = exp(shifted) / sum;
# nll = log(sum) - shifted[y], mixed with log(sum) - mean(shifted) by label smoothing;
# grad = (p - (1 - eps) onehot(y) - eps / C) * (1 / N). Unlike the elementwise kernels
# it may differ from NumPy in the last bit: NumPy's exp and its sums are its own.
# totals gets (sum of nll, rows whose first largest logit is at the label, rows whose
# label is outside [0, C), left untouched): it is one sum, so the caller runs one piece.


@jit
def _softmax_xent_piece(lo, hi, s, ints, dtype):
    c = ints[1]
    z, p, g = (
        _array(ints, 2, dtype, hi * c),
        _array(ints, 3, dtype, hi * c),
        _array(ints, 4, dtype, hi * c),
    )
    labels, totals = _array(ints, 5, np.int64, hi), _array(ints, 6, np.float64, 3)
    keep, spread, inv_n, eps = dtype(s[0]), dtype(s[1]), dtype(s[2]), s[3]
    nll_sum, correct, bad = 0.0, 0, 0
    for i in range(lo, hi):
        y = labels[i]
        if y < 0 or y >= c:
            bad += 1
            continue
        row, prob, grad = z[i * c : (i + 1) * c], p[i * c : (i + 1) * c], g[i * c : (i + 1) * c]
        top, best = row[0], 0
        if top == top:  # the first NaN wins, as in np.max and np.argmax
            for j in range(1, c):
                if row[j] > top or row[j] != row[j]:
                    top, best = row[j], j
                    if top != top:
                        break
        correct += best == y
        total, shifted_sum = dtype(0), 0.0
        for j in range(c):
            shifted = row[j] - top
            shifted_sum += shifted
            prob[j] = np.exp(shifted)
            total += prob[j]
        log_sum = np.log(np.float64(total))
        loss = log_sum - np.float64(row[y] - top)
        if eps != 0:
            loss = (1 - eps) * loss + eps * (log_sum - shifted_sum / c)
        nll_sum += loss
        for j in range(c):
            prob[j] = prob[j] / total
            grad[j] = (prob[j] - keep if j == y else prob[j]) - spread
            grad[j] = grad[j] * inv_n
    totals[0], totals[1], totals[2] = nll_sum, correct, bad


@kernel
def softmax_xent(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _softmax_xent_piece(a // 4, a // 4 + width, s, ints, np.float32)
    else:
        _softmax_xent_piece(a // 4, a // 4 + width, s, ints, np.float64)
    return 0


# --- bf16 conversions: ints (x, out) or (out, x); see numprop._fast.bf16 ------------------
#
# float32 -> bf16: ints (x as float32, out as uint16); the loop reads x's bits as uint32.
# bf16 -> float32: ints (out as float32, x as uint16); writes out's bits as uint32.


@loop
def _to_bf16_loop(bits, out):
    for i in range(bits.size):
        b = bits[i]
        if (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):  # NaN: keep it, quiet
            out[i] = np.uint16((b >> np.uint32(16)) | np.uint32(0x0040))
        else:
            lsb = (b >> np.uint32(16)) & np.uint32(1)
            out[i] = np.uint16((b + np.uint32(0x7FFF) + lsb) >> np.uint32(16))


@kernel
def to_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    lo, hi = a // 4, a // 4 + width
    _to_bf16_loop(_array(ints, 1, np.uint32, hi)[lo:], _array(ints, 2, np.uint16, hi)[lo:])
    return 0


@loop
def _to_float32_loop(x, bits):
    for i in range(x.size):
        bits[i] = np.uint32(x[i]) << np.uint32(16)


@kernel
def to_float32(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    lo, hi = a // 4, a // 4 + width
    _to_float32_loop(_array(ints, 2, np.uint16, hi)[lo:], _array(ints, 1, np.uint32, hi)[lo:])
    return 0


# --- Adam / AdamW on float32, also writing W's bf16 copy: ints (W, G, M, V, W as bf16) ---
# (Here, after the bf16 loops: a cfunc compiles when defined, so what it calls comes first.)
# The piece is updated, then its bits rounded while they are still in cache
# (a piece of GRAIN.optimizer items fits in L2): one pass over W's memory.


@jit
def _adam_bf16_piece(lo, hi, s, ints):
    _adam_piece(lo, hi, s, ints, np.float32)
    _to_bf16_loop(_array(ints, 1, np.uint32, hi)[lo:], _array(ints, 5, np.uint16, hi)[lo:])


@kernel
def adam_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    _adam_bf16_piece(a // 4, a // 4 + width, s, ints)
    return 0


# --- SGD with momentum on float32 that also writes W's bf16 copy: ints (W, V, W as bf16) ---


@jit
def _sgd_momentum_bf16_piece(lo, hi, s, ints):
    _sgd_momentum_piece(lo, hi, s, ints, np.float32)
    _to_bf16_loop(_array(ints, 1, np.uint32, hi)[lo:], _array(ints, 3, np.uint16, hi)[lo:])


@kernel
def sgd_momentum_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    _sgd_momentum_bf16_piece(a // 4, a // 4 + width, s, ints)
    return 0


# --- Batches written as bf16 (for bf16 products): the affine_rows and augment_rows
# above, each row computed in float32 (the same values), then rounded to bf16 from a
# row-sized buffer still in cache. ints (D, N, shift, scale, out uint16, source uint8,
# rows int64) and (H, W, C, N, shift, scale, out uint16, images uint8, rows int64,
# flips uint8, dy int64, dx int64).


@jit
def _affine_rows_bf16_piece(lo, hi, ints):
    d, n = ints[1], ints[2]
    shift, scale = _array(ints, 3, np.float32, d), _array(ints, 4, np.float32, d)
    out = _array(ints, 5, np.uint16, hi * d)
    source, rows = _array(ints, 6, np.uint8, n * d), _array(ints, 7, np.int64, hi)
    row = np.empty(d, np.float32)
    bits = row.view(np.uint32)
    for i in range(lo, hi):
        r = min(max(rows[i], 0), n - 1)
        _affine_row(row, source[r * d : (r + 1) * d], shift, scale)
        _to_bf16_loop(bits, out[i * d : (i + 1) * d])


@kernel
def affine_rows_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    _affine_rows_bf16_piece(a // 4, a // 4 + width, ints)
    return 0


@jit
def _augment_rows_bf16_piece(lo, hi, ints):
    h, w, c, n = ints[1], ints[2], ints[3], ints[4]
    d = h * w * c
    shift, scale = _array(ints, 5, np.float32, d), _array(ints, 6, np.float32, d)
    out = _array(ints, 7, np.uint16, hi * d)
    images, rows = _array(ints, 8, np.uint8, n * d), _array(ints, 9, np.int64, hi)
    flips, dy, dx = (
        _array(ints, 10, np.uint8, hi),
        _array(ints, 11, np.int64, hi),
        _array(ints, 12, np.int64, hi),
    )
    row = np.empty(d, np.float32)
    bits = row.view(np.uint32)
    for i in range(lo, hi):
        r = min(max(rows[i], 0), n - 1)
        _augment_image(
            row, images[r * d : (r + 1) * d], h, w, c, flips[i] != 0, dy[i], dx[i], shift, scale
        )
        _to_bf16_loop(bits, out[i * d : (i + 1) * d])


@kernel
def augment_rows_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    _augment_rows_bf16_piece(a // 4, a // 4 + width, ints)
    return 0


# --- ReLU rounded to bf16, for an eval-mode forward whose next product reads bf16:
# ints (x float32, out uint16). Blocks of 4,096 go through a float32 buffer in cache.


@jit
def _relu_bf16_piece(lo, hi, ints):
    x, out = _array(ints, 1, np.float32, hi), _array(ints, 2, np.uint16, hi)
    block = np.empty(4096, np.float32)
    bits = block.view(np.uint32)
    for start in range(lo, hi, 4096):
        n = min(4096, hi - start)
        _relu_loop(x[start : start + n], block[:n])
        _to_bf16_loop(bits[:n], out[start : start + n])


@kernel
def relu_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    _relu_bf16_piece(a // 4, a // 4 + width, ints)
    return 0


# --- ReLU backward that also rounds its output to bf16, for a Linear before it whose
# products read bf16: ints (y, dout, dx, dx as bf16), float32. Blocks of 4,096: dx is
# rounded while it is still in cache.


@jit
def _relu_backward_bf16_piece(lo, hi, ints):
    y, dout = _array(ints, 1, np.float32, hi), _array(ints, 2, np.float32, hi)
    dx, bits = _array(ints, 3, np.float32, hi), _array(ints, 3, np.uint32, hi)
    out = _array(ints, 4, np.uint16, hi)
    one, zero = np.float32(1), np.float32(0)
    for start in range(lo, hi, 4096):
        end = min(start + 4096, hi)
        _relu_backward_loop(y[start:end], dout[start:end], dx[start:end], one, zero)
        _to_bf16_loop(bits[start:end], out[start:end])


@kernel
def relu_backward_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    _relu_backward_bf16_piece(a // 4, a // 4 + width, ints)
    return 0


# --- GELU, tanh form (ops.gelu): the work around NumPy's tanh, which stays NumPy's -------
# (numba's tanh is the C library's, one value at a time: 60 times slower here than
# NumPy's vectorised one, and not the same in the last bit.)
# Argument: scalars (c, a, clip), ints (x, u); u = c (xc + a xc^3), xc = clip(x, -clip, clip).


@jit
def _clip(x, bound):
    """np.clip(x, -bound, bound): NaN stays NaN, -0.0 stays -0.0."""
    return -bound if x < -bound else (bound if x > bound else x)


@loop
def _gelu_argument_loop(x, u, c, a, clip):
    for i in range(x.size):
        xc = _clip(x[i], clip)
        u[i] = c * (xc + a * (xc * xc * xc))


@jit
def _gelu_argument_piece(lo, hi, s, ints, dtype):
    _gelu_argument_loop(
        _array(ints, 1, dtype, hi)[lo:],
        _array(ints, 2, dtype, hi)[lo:],
        dtype(s[0]),
        dtype(s[1]),
        dtype(s[2]),
    )


@kernel
def gelu_argument(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _gelu_argument_piece(a // 4, a // 4 + width, s, ints, np.float32)
    else:
        _gelu_argument_piece(a // 4, a // 4 + width, s, ints, np.float64)
    return 0


# Output: ints (x, t, y), y = (0.5 x) (1 + t), t the tanh. The bf16 variant, for a
# product that reads bf16 next: ints (x, t, y as bf16), float32; blocks of 4,096 go
# through a float32 buffer in cache, so y never reaches memory as float32.


@loop
def _gelu_output_loop(x, t, y, half, one):
    for i in range(x.size):
        y[i] = (half * x[i]) * (one + t[i])


@jit
def _gelu_output_piece(lo, hi, ints, dtype):
    _gelu_output_loop(
        _array(ints, 1, dtype, hi)[lo:],
        _array(ints, 2, dtype, hi)[lo:],
        _array(ints, 3, dtype, hi)[lo:],
        dtype(0.5),
        dtype(1),
    )


@kernel
def gelu_output(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _gelu_output_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _gelu_output_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0


@jit
def _gelu_output_bf16_piece(lo, hi, ints):
    x, t = _array(ints, 1, np.float32, hi), _array(ints, 2, np.float32, hi)
    out = _array(ints, 3, np.uint16, hi)
    block = np.empty(4096, np.float32)
    bits = block.view(np.uint32)
    half, one = np.float32(0.5), np.float32(1)
    for start in range(lo, hi, 4096):
        n = min(4096, hi - start)
        _gelu_output_loop(x[start : start + n], t[start : start + n], block[:n], half, one)
        _to_bf16_loop(bits[:n], out[start : start + n])


@kernel
def gelu_output_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    _gelu_output_bf16_piece(a // 4, a // 4 + width, ints)
    return 0


# --- GELU backward: scalars (c, 3a, clip), ints (x, t, dout, dx);
# dt = ((1 - t t) c) (1 + 3a xc xc), dx = dout ((0.5 (1 + t)) + (0.5 x) dt).
# The bf16 variant (float32) also rounds dx into ints[5], in blocks of 4,096 still in cache.


@loop
def _gelu_backward_loop(x, t, dout, dx, c, a3, clip, half, one):
    for i in range(x.size):
        xc = _clip(x[i], clip)
        ti = t[i]
        dt = (one - ti * ti) * c * (one + a3 * (xc * xc))
        dx[i] = dout[i] * (half * (one + ti) + half * x[i] * dt)


@jit
def _gelu_backward_piece(lo, hi, s, ints, dtype):
    _gelu_backward_loop(
        _array(ints, 1, dtype, hi)[lo:],
        _array(ints, 2, dtype, hi)[lo:],
        _array(ints, 3, dtype, hi)[lo:],
        _array(ints, 4, dtype, hi)[lo:],
        dtype(s[0]),
        dtype(s[1]),
        dtype(s[2]),
        dtype(0.5),
        dtype(1),
    )


@kernel
def gelu_backward(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _gelu_backward_piece(a // 4, a // 4 + width, s, ints, np.float32)
    else:
        _gelu_backward_piece(a // 4, a // 4 + width, s, ints, np.float64)
    return 0


@jit
def _gelu_backward_bf16_piece(lo, hi, s, ints):
    x, t = _array(ints, 1, np.float32, hi), _array(ints, 2, np.float32, hi)
    dout, dx = _array(ints, 3, np.float32, hi), _array(ints, 4, np.float32, hi)
    bits, out = _array(ints, 4, np.uint32, hi), _array(ints, 5, np.uint16, hi)
    c, a3, clip = np.float32(s[0]), np.float32(s[1]), np.float32(s[2])
    half, one = np.float32(0.5), np.float32(1)
    for start in range(lo, hi, 4096):
        end = min(start + 4096, hi)
        _gelu_backward_loop(
            x[start:end], t[start:end], dout[start:end], dx[start:end], c, a3, clip, half, one
        )
        _to_bf16_loop(bits[start:end], out[start:end])


@kernel
def gelu_backward_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    _gelu_backward_bf16_piece(a // 4, a // 4 + width, s, ints)
    return 0


# --- Lion: scalars (b1, 1-b1, b2, 1-b2, decay, -lr), ints (W, G, M) ----------------------
# c = b1 m + (1-b1) g; W = decay W + (-lr) sign(c); then m = b2 m + (1-b2) g.
# The bf16 variant (float32) also rounds the new W into ints[4], in the same pass.


@loop
def _lion_loop(w, g, m, b1, c1, b2, c2, decay, step, one, zero):
    for i in range(w.size):
        c = m[i] * b1 + g[i] * c1
        # np.sign: 1, -1, 0 for either zero, NaN for NaN
        sign = one if c > zero else (-one if c < zero else (zero if c == zero else c))
        w[i] = w[i] * decay + step * sign
        m[i] = m[i] * b2 + g[i] * c2


@jit
def _lion_piece(lo, hi, s, ints, dtype):
    _lion_loop(
        _array(ints, 1, dtype, hi)[lo:],
        _array(ints, 2, dtype, hi)[lo:],
        _array(ints, 3, dtype, hi)[lo:],
        dtype(s[0]),
        dtype(s[1]),
        dtype(s[2]),
        dtype(s[3]),
        dtype(s[4]),
        dtype(s[5]),
        dtype(1),
        dtype(0),
    )


@kernel
def lion(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _lion_piece(a // 4, a // 4 + width, s, ints, np.float32)
    else:
        _lion_piece(a // 4, a // 4 + width, s, ints, np.float64)
    return 0


@jit
def _lion_bf16_piece(lo, hi, s, ints):
    _lion_piece(lo, hi, s, ints, np.float32)
    _to_bf16_loop(_array(ints, 1, np.uint32, hi)[lo:], _array(ints, 4, np.uint16, hi)[lo:])


@kernel
def lion_bf16(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    _lion_bf16_piece(a // 4, a // 4 + width, s, ints)
    return 0


# --- LayerNorm forward: scalars (eps,), ints (N, D, x, xhat, out, inv_std, gamma, beta);
# pieces are rows. Per row: mean = sum(x) / D, xc = x - mean, var = sum(xc^2) / D,
# inv_std = 1 / sqrt(var + eps), xhat = xc * inv_std, out = xhat * gamma + beta.
# The row sums run in float64 with Neumaier's compensation (a float64 input's sum is as
# good as a float32 input's): within a unit or two of the exact values. NumPy's are
# pairwise, in float32 for float32 rows, in an order of its own: the two agree to
# rounding, not to the bit.


@jit
def _neumaier(total, carry, value):
    """Add value to total, keeping what the sum rounded off in carry (Neumaier 1974)."""
    t = total + value
    if abs(total) >= abs(value):
        carry += (total - t) + value
    else:
        carry += (value - t) + total
    return t, carry


@loop
def _row_sum(row):
    total, carry = 0.0, 0.0
    for j in range(row.size):
        total, carry = _neumaier(total, carry, np.float64(row[j]))
    return total + carry


@loop
def _row_sum_of_products(x, y):
    total, carry = 0.0, 0.0
    for j in range(x.size):
        total, carry = _neumaier(total, carry, np.float64(x[j]) * np.float64(y[j]))
    return total + carry


@loop
def _center(xc, x, mean):
    for j in range(x.size):
        xc[j] = x[j] - mean


@loop
def _normalise_affine(xhat, out, inv_std, gamma, beta):
    for j in range(xhat.size):
        xhat[j] = xhat[j] * inv_std
        out[j] = xhat[j] * gamma[j] + beta[j]


@jit
def _layernorm_piece(lo, hi, s, ints, dtype):
    n, d = ints[1], ints[2]
    x, xhat, out = (
        _array(ints, 3, dtype, n * d),
        _array(ints, 4, dtype, n * d),
        _array(ints, 5, dtype, n * d),
    )
    inv_std = _array(ints, 6, dtype, n)
    gamma, beta = _array(ints, 7, dtype, d), _array(ints, 8, dtype, d)
    eps = dtype(s[0])
    for i in range(lo, hi):
        row, xc = x[i * d : (i + 1) * d], xhat[i * d : (i + 1) * d]
        _center(xc, row, dtype(_row_sum(row) / d))
        var = dtype(_row_sum_of_products(xc, xc) / d)
        inv_std[i] = dtype(1) / np.sqrt(var + eps)
        _normalise_affine(xc, out[i * d : (i + 1) * d], inv_std[i], gamma, beta)


@kernel
def layernorm(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _layernorm_piece(a // 4, a // 4 + width, s, ints, np.float32)
    else:
        _layernorm_piece(a // 4, a // 4 + width, s, ints, np.float64)
    return 0


# --- LayerNorm backward, input gradient: ints (N, D, dout, xhat, inv_std, gamma, dx);
# pieces are rows. g = dout * gamma, dx = ((g - xhat * mean(g xhat)) - mean(g)) * inv_std,
# the two row means summed as the forward's (agreeing with NumPy's to rounding).


@loop
def _layernorm_dx(dx, dout, xhat, gamma, gx_mean, g_mean, inv_std):
    for j in range(dx.size):
        g = dout[j] * gamma[j]
        dx[j] = ((g - xhat[j] * gx_mean) - g_mean) * inv_std


@loop
def _scaled_sums(dout, xhat, gamma):
    """(sum of dout * gamma, sum of dout * gamma * xhat), compensated, in float64."""
    g_sum, g_carry, gx_sum, gx_carry = 0.0, 0.0, 0.0, 0.0
    for j in range(dout.size):
        g = dout[j] * gamma[j]
        g_sum, g_carry = _neumaier(g_sum, g_carry, np.float64(g))
        gx_sum, gx_carry = _neumaier(gx_sum, gx_carry, np.float64(g) * np.float64(xhat[j]))
    return g_sum + g_carry, gx_sum + gx_carry


@jit
def _layernorm_backward_piece(lo, hi, ints, dtype):
    n, d = ints[1], ints[2]
    dout, xhat = _array(ints, 3, dtype, n * d), _array(ints, 4, dtype, n * d)
    inv_std, gamma = _array(ints, 5, dtype, n), _array(ints, 6, dtype, d)
    dx = _array(ints, 7, dtype, n * d)
    for i in range(lo, hi):
        a, b = i * d, (i + 1) * d
        g_sum, gx_sum = _scaled_sums(dout[a:b], xhat[a:b], gamma)
        _layernorm_dx(
            dx[a:b], dout[a:b], xhat[a:b], gamma, dtype(gx_sum / d), dtype(g_sum / d), inv_std[i]
        )


@kernel
def layernorm_backward(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _layernorm_backward_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _layernorm_backward_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0


# --- Column sums for a normalisation's parameter gradients: ints (N, D, dout, xhat,
# dgamma, dbeta); pieces are column blocks. dbeta = sum over rows of dout,
# dgamma = sum over rows of dout * xhat, rows added in order as NumPy's reductions
# along axis 0 do: the same bits.


@jit
def _column_sums_piece(lo, hi, ints, dtype):
    n, d = ints[1], ints[2]
    dout, xhat = _array(ints, 3, dtype, n * d), _array(ints, 4, dtype, n * d)
    dgamma, dbeta = _array(ints, 5, dtype, d)[lo:hi], _array(ints, 6, dtype, d)[lo:hi]
    _copy(dbeta, dout[lo:hi])
    _product(dgamma, dout[lo:hi], xhat[lo:hi])
    for i in range(1, n):
        _add(dbeta, dout[i * d + lo : i * d + hi])
        _add_product(dgamma, dout[i * d + lo : i * d + hi], xhat[i * d + lo : i * d + hi])


@kernel
def column_sums(width, n, k, alpha, a, lda, s, ldb, ints, ldc, sb):
    if ints[0] == 4:
        _column_sums_piece(a // 4, a // 4 + width, ints, np.float32)
    else:
        _column_sums_piece(a // 4, a // 4 + width, ints, np.float64)
    return 0
