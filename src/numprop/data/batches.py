"""Train/validation splitting, mini-batch iteration and data augmentation for image data sets."""

from __future__ import annotations

import math
import numbers

import numpy as np

from numprop._fast import kernels
from numprop._fast.bf16 import to_bf16
from numprop.errors import ConfigError, DataError

__all__ = ["stratified_split", "hflip", "shift", "Augment", "BatchLoader", "ArrayLoader"]


def _check_rng(rng, who: str) -> np.random.Generator:
    """``rng`` itself if it is a Generator; a ConfigError naming ``who`` otherwise."""
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(
            f"{who}: rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    return rng


def _check_int(value, name: str, minimum: int) -> int:
    """``value`` as an int if it is an integer >= ``minimum``; a ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def stratified_split(
    labels: np.ndarray, n_val: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split the indices of labels (N,) into sorted train and validation indices.

    Each class gives n_val * (its share of N) examples to validation; the
    fractional parts are settled by the largest-remainder rule (ties to the
    smaller label), so the total is exactly n_val. Which examples of a class go
    to validation is drawn from `rng`.

    Parameters
    ----------
    labels : ndarray, shape (N,)
        Class labels: integers, booleans or strings (any values ``np.unique`` sorts).
    n_val : int
        Number of validation examples, in [0, N).
    rng : numpy.random.Generator

    Returns
    -------
    train_idx : ndarray, shape (N - n_val,), int64
    val_idx : ndarray, shape (n_val,), int64
        Sorted, disjoint, together covering 0..N-1.

    Raises
    ------
    DataError
        If ``labels`` is not a 1-D array of integers, booleans or strings.
    ConfigError
        If ``n_val`` is not an integer in [0, N), or ``rng`` is not a Generator.
    """
    labels = np.asarray(labels)
    strings = labels.dtype.kind in "US" or (
        labels.dtype.kind == "O" and all(isinstance(v, str) for v in labels.ravel())
    )
    if labels.ndim != 1 or not (labels.dtype.kind in "iub" or strings):
        raise DataError(
            f"stratified_split: labels must be a 1-D array of integers, booleans or strings, "
            f"got {labels.dtype} {labels.shape}"
        )
    n = labels.shape[0]
    n_val = _check_int(n_val, "n_val", 0)
    if n_val >= n:
        raise ConfigError(f"n_val={n_val} leaves no training data: there are only {n} examples")
    _check_rng(rng, "stratified_split")

    classes, class_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = n_val * counts / n
    quota = np.floor(exact).astype(np.int64)
    short = n_val - int(quota.sum())
    # Largest remainders first; a stable sort gives ties to the smaller label, deterministically.
    quota[np.argsort(-(exact - quota), kind="stable")[:short]] += 1

    # Shuffle, then group by class keeping the shuffled order inside each class:
    # the first quota[c] members of class c's group go to validation.
    order = rng.permutation(n)
    order = order[np.argsort(class_of[order], kind="stable")]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    group = class_of[order]
    rank = np.arange(n) - starts[group]
    is_val = rank < quota[group]
    val_idx = np.sort(order[is_val]).astype(np.int64)
    train_idx = np.sort(order[~is_val]).astype(np.int64)
    return train_idx, val_idx


def _check_images(images, who: str) -> None:
    """A DataError naming ``who`` unless ``images`` is a 4-D array (N, H, W, C)."""
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise DataError(
            f"{who}: expected images (N, H, W, C), got {getattr(images, 'shape', type(images))}"
        )


def hflip(images: np.ndarray) -> np.ndarray:
    """Mirror each image left to right: (N, H, W, C) -> (N, H, W, C), a new contiguous array.

    Applied twice it gives the images back. A copy, not a view: the
    preprocessing's one-pass kernels read contiguous rows.

    Raises
    ------
    DataError
        If ``images`` is not a 4-D array.
    """
    _check_images(images, "hflip")
    return np.ascontiguousarray(images[:, :, ::-1])  # the width axis reversed


def shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move each image down by ``dy`` and right by ``dx`` pixels, zeros filling the gap.

    (N, H, W, C) -> (N, H, W, C), a new contiguous array: the picture a random
    crop after zero padding (``Augment``) takes at that offset. Negative
    offsets move up and left; an offset of the image's size or more leaves only zeros.

    Raises
    ------
    DataError
        If ``images`` is not a 4-D array.
    """
    _check_images(images, "shift")
    out = np.zeros_like(images, order="C")
    h, w = images.shape[1:3]
    dy, dx = max(-h, min(h, int(dy))), max(-w, min(w, int(dx)))
    # out[y + dy, x + dx] = images[y, x] wherever both lie inside the picture
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        :, max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


class Augment:
    """Random horizontal flips (p = 0.5) and random crops after zero padding, over a batch.

    Vectorised over the batch. A crop with padding p takes a window of the
    image's size from the image padded with p zero pixels on each side, at an
    offset drawn uniformly from the (2p + 1)^2 possible ones: the content
    shifts by up to p pixels and the uncovered border is black. crop_padding=0
    turns cropping off.

    Parameters
    ----------
    flip : bool, default True
        Flip each image left-right with probability 0.5.
    crop_padding : int, default 4
        p, in pixels, >= 0.

    Raises
    ------
    ConfigError
        If ``crop_padding`` is not an integer >= 0.
    """

    def __init__(self, flip: bool = True, crop_padding: int = 4) -> None:
        self.flip = bool(flip)
        self.crop_padding = _check_int(crop_padding, "crop_padding", 0)

    def __repr__(self) -> str:
        return f"Augment(flip={self.flip}, crop_padding={self.crop_padding})"

    def __call__(
        self, batch: np.ndarray, rng: np.random.Generator, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Augment a batch with randomness from `rng` (``apply(batch, draw(B, rng), out)``).

        Parameters
        ----------
        batch : ndarray, shape (B, H, W, C), uint8
            Not modified.
        rng : numpy.random.Generator
        out : ndarray, shape (B, H, W, C), uint8, optional
            Receives the result; must not overlap ``batch``.

        Returns
        -------
        ndarray, shape (B, H, W, C), uint8
            ``out`` if given, else a new array.

        Raises
        ------
        DataError
            If ``batch`` is not a 4-D array.
        ConfigError
            If ``rng`` is not a Generator, or ``out`` has the wrong shape or
            dtype or overlaps ``batch``.
        """
        _check_rng(rng, "Augment")
        if not isinstance(batch, np.ndarray) or batch.ndim != 4:
            raise DataError(
                f"Augment: expected a batch of images (B, H, W, C), got {getattr(batch, 'shape', type(batch))}"
            )
        return self.apply(batch, self.draw(batch.shape[0], rng), out)

    def draw(self, b: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The random moves of b images: flips, then row and column offsets.

        Parameters
        ----------
        b : int
            B, the number of images.
        rng : numpy.random.Generator

        Returns
        -------
        flips : ndarray, shape (B,), bool
        dy, dx : ndarray, shape (B,), int64
            Offsets in [-p, p]; zeros when cropping is off.
        """
        p = self.crop_padding
        if b == 0 or (not self.flip and p == 0):
            flips, dy, dx = np.zeros(b, dtype=bool), np.zeros(b, np.int64), np.zeros(b, np.int64)
            return flips, dy, dx
        flips = rng.random(b) < 0.5 if self.flip else np.zeros(b, dtype=bool)
        if p:
            dy, dx = rng.integers(-p, p + 1, size=(2, b))
        else:
            dy = dx = np.zeros(b, dtype=np.int64)
        return flips, dy, dx

    def apply(self, batch: np.ndarray, moves, out: np.ndarray | None = None) -> np.ndarray:
        """Move a batch as `draw` said: flip, then shift with zero fill.

        Parameters
        ----------
        batch : ndarray, shape (B, H, W, C), uint8
            Not modified.
        moves : tuple of ndarray
            ``(flips, dy, dx)`` from ``draw(B, rng)``.
        out : ndarray, shape (B, H, W, C), uint8, optional
            Receives the result; must not overlap ``batch``.

        Returns
        -------
        ndarray, shape (B, H, W, C), uint8
            ``out`` if given, else a new array.

        Raises
        ------
        ConfigError
            If ``out`` has the wrong shape or dtype, or overlaps ``batch``.
        """
        b, h, w, c = batch.shape
        if out is None:
            out = np.empty_like(batch)
        elif out.shape != batch.shape or out.dtype != batch.dtype:
            raise ConfigError(
                f"Augment: out must be {batch.dtype} {batch.shape}, got {out.dtype} {out.shape}"
            )
        elif np.shares_memory(out, batch):
            raise ConfigError("Augment: out must not overlap the input batch")
        if b == 0 or (not self.flip and self.crop_padding == 0):
            np.copyto(out, batch)
            return out
        flips, dy, dx = moves
        # Output pixel (y, x) of image i reads source row y + dy[i] and column
        # x + dx[i] of the (possibly flipped) image; reads outside it are padding.
        rows = np.arange(h) + dy[:, None]  # (B, H)
        cols = np.arange(w) + dx[:, None]  # (B, W)
        cols = np.where(flips[:, None], w - 1 - cols, cols)
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[
            :, None, :
        ]  # (B, H, W)
        flat = (
            np.arange(b)[:, None, None] * h + np.clip(rows, 0, h - 1)[:, :, None]
        ) * w + np.clip(cols, 0, w - 1)[:, None, :]
        # One gather of whole pixels (C bytes each) for the batch; mode="clip" writes straight into out.
        np.take(batch.reshape(b * h * w, c), flat, axis=0, out=out, mode="clip")
        out[~inside] = 0
        return out


def _augment_and_convert(
    images: np.ndarray, idx: np.ndarray, moves, preprocessing, out: np.ndarray
) -> bool:
    """Gather, augment and preprocess a batch in one pass (numba), when that can be done.

    The same numbers as take + Augment.apply + preprocessing.transform; False
    when the preprocessing is not a per-value affine map or numba is missing.
    """
    affine = getattr(preprocessing, "per_value_affine", None)
    if affine is None or not images.flags.c_contiguous:
        return False
    shift, scale = affine
    n, h, w, c = images.shape
    if shift.shape != (h * w * c,):  # fitted on other images: the NumPy path says so
        return False
    flips, dy, dx = moves
    return kernels.augment_rows(images, idx, flips, dy, dx, shift, scale, out)


def _gather_bf16(images: np.ndarray, idx: np.ndarray, moves, preprocessing, out) -> bool:
    """A batch straight to bf16 bits (uint16 ``out``) in one pass, where the kernels can.

    The same float32 values as the float path, rounded to bf16: False (nothing
    done) when the preprocessing is not a per-value affine map or numba is missing.
    """
    if moves is not None:
        return _augment_and_convert(images, idx, moves, preprocessing, out)
    affine = getattr(preprocessing, "per_value_affine", None)
    if affine is None or not images.flags.c_contiguous:
        return False
    shift, scale = affine
    source = images.reshape(len(images), -1)
    return shift.shape == (source.shape[1],) and kernels.affine_rows(source, idx, shift, scale, out)


class BatchLoader:
    """Iterate over mini-batches (x float32 (B, D), y int64 (B,)) of preprocessed images.

    Images are optionally augmented before preprocessing. Each pass covers
    every example (of `indices`, if given) exactly once, in an order drawn
    afresh from `rng` when shuffle=True, so the same seed gives the same
    sequence of orders. The uint8 gather buffer and the float32 output
    buffers are allocated once: the arrays yielded are views of them, reused
    and overwritten by the next batch, so copy them if you need to keep them.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, C), uint8
        Kept by reference, not copied.
    labels : ndarray of int, shape (N,)
    preprocessing : Preprocessing
        A fitted preprocessing (``transform(images, out=)`` and ``output_dim``
        D); it maps each batch to (B, D) float32.
    batch_size : int
        B, >= 1; the last batch of a pass may be smaller.
    shuffle : bool, default True
        Draw a new order for every pass (needs ``rng``).
    rng : numpy.random.Generator, optional
        Source of the orders and the augmentation; needed with ``shuffle`` or
        ``augment``.
    augment : Augment, optional
        Applied to each training batch before preprocessing.
    drop_last : bool, default False
        Skip the last, partial batch.
    indices : ndarray of int, shape (M,), optional
        Iterate over these examples only (e.g. from ``stratified_split``).
    bf16 : bool, default False
        Yield x as bf16 bits (uint16, ``numprop.nn.ops.to_bf16`` of the float32
        batch), for a model whose first product reads bf16 (``BF16`` precision):
        the conversion happens in the pass that makes the batch.

    Raises
    ------
    DataError
        If ``images`` is not uint8 (N, H, W, C) or ``labels`` not integers (N,).
    ConfigError
        For a bad ``batch_size``, ``rng``, ``augment``, ``preprocessing`` or
        ``indices`` (not 1-D integers in [0, N)), or shuffle/augment without ``rng``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        preprocessing,
        batch_size: int,
        *,
        shuffle: bool = True,
        rng: np.random.Generator | None = None,
        augment: Augment | None = None,
        drop_last: bool = False,
        indices: np.ndarray | None = None,
        bf16: bool = False,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise DataError(
                f"BatchLoader: images must be uint8 (N, H, W, C), got {images.dtype} {images.shape}"
            )
        if labels.shape != (images.shape[0],) or labels.dtype.kind not in "iu":
            raise DataError(
                f"BatchLoader: labels must be integers of shape ({images.shape[0]},), got {labels.dtype} {labels.shape}"
            )
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        if (shuffle or augment is not None) and rng is None:
            raise ConfigError("BatchLoader: shuffle/augment need rng=np.random.default_rng(seed)")
        if rng is not None:
            _check_rng(rng, "BatchLoader")
        if augment is not None and not callable(augment):
            raise ConfigError(
                f"BatchLoader: augment must be callable like Augment, got {type(augment).__name__}"
            )
        if not hasattr(preprocessing, "transform") or not hasattr(preprocessing, "output_dim"):
            raise ConfigError(
                "BatchLoader: preprocessing must have transform(images, out=) and output_dim"
            )

        n = images.shape[0]
        if indices is None:
            indices = np.arange(n, dtype=np.int64)
        else:
            indices = np.asarray(indices)
            if indices.ndim != 1 or (indices.size and indices.dtype.kind not in "iu"):
                raise ConfigError(
                    f"BatchLoader: indices must be a 1-D integer array, got {indices.dtype} {indices.shape}"
                )
            indices = indices.astype(np.int64)
            # Checked here because the gathers below use mode="clip", which would hide bad indices.
            if indices.size and (indices.min() < 0 or indices.max() >= n):
                raise ConfigError(
                    f"BatchLoader: indices must lie in [0, {n}), got range [{indices.min()}, {indices.max()}]"
                )

        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.preprocessing = preprocessing
        self.shuffle = bool(shuffle)
        self.rng = rng
        self.augment = augment
        self.drop_last = bool(drop_last)
        self.indices = indices
        self.n_examples = int(indices.size)

        bs = self.batch_size
        self._images_buf = np.empty((bs, *images.shape[1:]), dtype=np.uint8)
        self._augment_buf = np.empty_like(self._images_buf) if augment is not None else None
        self._x_buf = np.empty((bs, preprocessing.output_dim), dtype=np.float32)
        self._y_buf = np.empty(bs, dtype=np.int64)
        self.bf16 = bool(bf16)
        self._bits_buf = np.empty(self._x_buf.shape, np.uint16) if self.bf16 else None

    def __len__(self) -> int:
        """Number of batches per pass."""
        if self.drop_last:
            return self.n_examples // self.batch_size
        return math.ceil(self.n_examples / self.batch_size)

    def __iter__(self):
        """One pass over the examples.

        Yields
        ------
        x : ndarray, shape (B, D), float32 (uint16 bf16 bits with ``bf16``)
        y : ndarray, shape (B,), int64
            Views of reused buffers, overwritten by the next batch.
        """
        order = self.rng.permutation(self.indices) if self.shuffle else self.indices
        for k in range(len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            b = idx.size
            moves = self.augment.draw(b, self.rng) if self.augment is not None else None
            if not (
                self.bf16
                and _gather_bf16(self.images, idx, moves, self.preprocessing, self._bits_buf[:b])
            ):
                x = self._float_batch(idx, moves)
                if self.bf16:  # no one-pass kernel here: round the float batch
                    x = to_bf16(x, out=self._bits_buf[:b])
            x = self._bits_buf[:b] if self.bf16 else x
            y = self._y_buf[:b]
            np.take(self.labels, idx, out=y, mode="clip")
            yield x, y

    def _float_batch(self, idx: np.ndarray, moves) -> np.ndarray:
        """The float32 batch of rows ``idx``, augmented by ``moves`` (or None), preprocessed."""
        b = idx.size
        x = self._x_buf[:b]
        if moves is None and hasattr(self.preprocessing, "transform_rows"):
            # gather and convert in one pass (indices were checked above)
            return self.preprocessing.transform_rows(self.images, idx, out=x)
        if moves is not None and _augment_and_convert(
            self.images, idx, moves, self.preprocessing, x
        ):
            return x
        batch = self._images_buf[:b]
        if self.images.flags.c_contiguous:
            np.take(self.images, idx, axis=0, out=batch, mode="clip")
        else:  # np.take would first copy a strided array whole: index the rows
            batch[...] = self.images[idx]
        if moves is not None:
            batch = self.augment.apply(batch, moves, out=self._augment_buf[:b])
        return self.preprocessing.transform(batch, out=x)


class ArrayLoader:
    """Mini-batches of in-memory arrays: x (B, D) float and y (B,), for data that is not images.

    The counterpart of ``BatchLoader`` for tables and features: each pass
    covers every example (of ``indices``, if given) exactly once, in an order
    drawn afresh from ``rng`` when shuffling, so the same seed gives the same
    batches. ``x`` is converted to ``dtype`` once, here; each batch is gathered
    into buffers allocated once, and the arrays yielded are views of them,
    overwritten by the next batch (copy what you keep).

    Parameters
    ----------
    x : array_like, shape (N, D)
        Finite numbers (any real dtype; booleans and integers are converted).
    y : array_like, shape (N,) or (N, K)
        Targets of any dtype: class indices, regression values, label rows.
    batch_size : int
    shuffle : bool
        Draw a new order every pass (needs ``rng``).
    rng : numpy.random.Generator, optional
    drop_last : bool
        Leave out the last, partial batch.
    indices : array_like of int, optional
        The examples to iterate over (e.g. a training split); default all.
    dtype : float32 (default), float64 or "bf16"
        The dtype of the x batches; "bf16": bf16 bits (uint16, the float32
        values rounded once, here), for a model with ``BF16`` precision.

    Raises
    ------
    DataError
        If ``x`` is not a 2-D array of finite numbers or ``y`` does not have N rows.
    ConfigError
        For a bad batch size, rng, dtype or indices.
    """

    def __init__(
        self,
        x,
        y,
        batch_size: int,
        *,
        shuffle: bool = True,
        rng: np.random.Generator | None = None,
        drop_last: bool = False,
        indices=None,
        dtype=np.float32,
    ) -> None:
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or x.dtype.kind not in "biuf":
            raise DataError(
                f"ArrayLoader: x must be a 2-D array of numbers, got {x.dtype} {x.shape}"
            )
        if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
            raise DataError(
                f"ArrayLoader: y must have one row per example of x ({x.shape[0]}), got shape {y.shape}"
            )
        bf16 = isinstance(dtype, str) and dtype == "bf16"
        if not bf16 and (isinstance(dtype, str) or np.dtype(dtype) not in (np.float32, np.float64)):
            raise ConfigError(
                f"ArrayLoader: dtype must be float32, float64 or 'bf16', got {dtype!r}"
            )
        self.x = np.ascontiguousarray(x, dtype=np.float32 if bf16 else dtype)
        if not np.isfinite(self.x).all():
            raise DataError("ArrayLoader: x holds NaN or infinite values; fill or drop them first")
        if bf16:
            self.x = to_bf16(self.x)
        self.y = np.ascontiguousarray(y)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        if shuffle and rng is None:
            raise ConfigError("ArrayLoader: shuffle needs rng=np.random.default_rng(seed)")
        self.rng = _check_rng(rng, "ArrayLoader") if rng is not None else None
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        n = x.shape[0]
        if indices is None:
            self.indices = np.arange(n, dtype=np.int64)
        else:
            self.indices = np.asarray(indices)
            if self.indices.ndim != 1 or (
                self.indices.size and self.indices.dtype.kind not in "iu"
            ):
                raise ConfigError("ArrayLoader: indices must be a 1-D integer array")
            self.indices = self.indices.astype(np.int64)
            if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
                raise ConfigError(f"ArrayLoader: indices must lie in [0, {n})")
        self._x_buf = np.empty((self.batch_size, x.shape[1]), self.x.dtype)
        self._y_buf = np.empty((self.batch_size, *self.y.shape[1:]), self.y.dtype)

    def __len__(self) -> int:
        """Number of batches per pass."""
        n = self.indices.size
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        """One pass: (x (B, D), y (B,) or (B, K)) views of reused buffers."""
        order = self.rng.permutation(self.indices) if self.shuffle else self.indices
        for k in range(len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            b = idx.size
            # indices were checked above: "clip" only spares np.take its own check
            x = np.take(self.x, idx, axis=0, out=self._x_buf[:b], mode="clip")  # (B, D)
            y = np.take(self.y, idx, axis=0, out=self._y_buf[:b], mode="clip")
            yield x, y
