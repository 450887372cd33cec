"""MixUp and CutMix: batch transforms that mix pairs of examples, and their labels with them.

Each transform takes a batch ``(x, labels)`` and a ``numpy.random.Generator``
and returns the mixed batch with probability targets (B, C), which
``SoftmaxCrossEntropy`` takes in place of labels:

    mix = MixUp(alpha=0.2, classes=10)
    x_mixed, targets = mix(x, y, rng)           # x (B, D), y (B,) -> (B, D), (B, C)
    batches = MixedBatches(loader, [MixUp(0.2, 10), CutMix(1.0, 10, (32, 32, 3))], rng)

Each example i is paired with example ``perm[i]`` of the same batch (a random
permutation), with one mixing weight ``lam`` for the whole batch, as in the
papers. As with ``Augment``, ``draw`` makes the random choices and ``apply``
carries them out, so a test can give its own.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from numprop.data.batches import _check_rng
from numprop.errors import ConfigError, DataError

__all__ = ["one_hot", "MixUp", "CutMix", "MixedBatches"]


def one_hot(labels: np.ndarray, classes: int | None, dtype=np.float32) -> np.ndarray:
    """Probability rows (N, C) from labels (N,), or probability rows (N, C) as they are.

    Parameters
    ----------
    labels : ndarray, shape (N,) of int, or (N, C) of float
        Class indices in [0, C), or rows that are already probabilities (a
        batch mixed before).
    classes : int or None
        C; needed for labels (N,).
    dtype : dtype-like, default np.float32

    Returns
    -------
    ndarray, shape (N, C)
        A new array.

    Raises
    ------
    DataError
        For labels outside [0, C), or of another shape.
    ConfigError
        For labels (N,) without ``classes``.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        return labels.astype(dtype)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise DataError(
            f"labels must be class indices (N,) or probability rows (N, C), "
            f"got {labels.dtype} {labels.shape}"
        )
    if classes is None:
        raise ConfigError("mixing labels (N,) needs the number of classes (classes=C)")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"labels must lie in [0, {classes}), got {labels.min()}..{labels.max()}")
    rows = np.zeros((labels.size, classes), dtype)
    rows[np.arange(labels.size), labels] = 1
    return rows


def _check_alpha(alpha, who: str) -> float:
    """``alpha`` as a float if it is a positive number; a ConfigError otherwise."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ConfigError(f"{who}: alpha must be a positive number, got {alpha!r}")
    return float(alpha)


def _mix_targets(y, classes, lam: float, perm: np.ndarray, dtype) -> np.ndarray:
    """``lam * onehot(y) + (1 - lam) * onehot(y[perm])``, shape (B, C)."""
    t = one_hot(y, classes, dtype)
    if t.shape[0] != perm.size:
        raise DataError(f"{perm.size} examples but {t.shape[0]} labels")
    return lam * t + (1 - lam) * t[perm]


class MixUp:
    """MixUp (Zhang et al. 2018): ``x = lam x + (1 - lam) x[perm]``, the targets likewise.

    ``lam ~ Beta(alpha, alpha)``, one per batch. Works on any batch (B, ...):
    rows of features or images; the mixed x is float (that of x, or float32 for
    integer images).

    Parameters
    ----------
    alpha : float, default 0.2
        > 0; small values keep most mixes close to one of the two examples.
    classes : int, optional
        C, needed to mix integer labels.

    Raises
    ------
    ConfigError
        If ``alpha`` is not positive.
    """

    def __init__(self, alpha: float = 0.2, classes: int | None = None):
        self.alpha = _check_alpha(alpha, "MixUp")
        self.classes = classes

    def __repr__(self) -> str:
        return f"MixUp(alpha={self.alpha}, classes={self.classes})"

    def __call__(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
        """Mix a batch with randomness from ``rng``: ``apply(x, y, *draw(B, rng))``.

        Returns
        -------
        x : ndarray, shape of the input x
            A new float array.
        targets : ndarray, shape (B, C)
            Rows of probabilities, summing to 1.
        """
        _check_rng(rng, "MixUp")
        return self.apply(x, y, *self.draw(len(x), rng))

    def draw(self, b: int, rng: np.random.Generator) -> tuple[float, np.ndarray]:
        """The mixing weight ``lam`` and the partner of each of b examples, ``perm`` (B,)."""
        return float(rng.beta(self.alpha, self.alpha)), rng.permutation(b)

    def apply(self, x: np.ndarray, y: np.ndarray, lam: float, perm: np.ndarray):
        """Mix example i with example perm[i] with weights ``lam`` and ``1 - lam``.

        Parameters
        ----------
        x : ndarray, shape (B, ...)
            Not modified.
        y : ndarray, shape (B,) of int or (B, C)
        lam : float
            In [0, 1].
        perm : ndarray of int, shape (B,)

        Returns
        -------
        (ndarray, ndarray)
            The mixed x (a new float array) and the targets (B, C).
        """
        x = np.asarray(x)
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        mixed = x.astype(dtype)  # a copy: x itself is often a loader's reused buffer
        mixed *= lam
        mixed += (1 - lam) * x[perm].astype(dtype, copy=False)
        return mixed, _mix_targets(y, self.classes, lam, perm, dtype)


class CutMix:
    """CutMix (Yun et al. 2019): paste a box of image perm[i] into image i.

    The box covers about ``1 - lam`` of the image, ``lam ~ Beta(alpha, alpha)``,
    centred at a uniformly drawn pixel and cut off at the image's edges, the
    same box for the whole batch. The targets weigh each class by its share of
    the pixels: ``lam = 1 - box area / image area`` after the cut-off.

    Parameters
    ----------
    alpha : float, default 1.0
        > 0; 1 draws the box's share uniformly.
    classes : int, optional
        C, needed to mix integer labels.
    image_shape : (int, int, int), optional
        (H, W, C) of each image, for batches of rows (B, H*W*C) (flattened
        images in (H, W, C) order, as numprop's preprocessing gives them);
        batches (B, H, W, C) carry their own.

    Raises
    ------
    ConfigError
        If ``alpha`` is not positive or ``image_shape`` is not three positive
        integers.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        classes: int | None = None,
        image_shape: Sequence[int] | None = None,
    ):
        self.alpha = _check_alpha(alpha, "CutMix")
        self.classes = classes
        if image_shape is not None:
            image_shape = tuple(image_shape)
            if len(image_shape) != 3 or not all(
                isinstance(v, numbers.Integral) and v >= 1 for v in image_shape
            ):
                raise ConfigError(
                    f"CutMix: image_shape must be (height, width, channels), got {image_shape}"
                )
            image_shape = tuple(int(v) for v in image_shape)
        self.image_shape = image_shape

    def __repr__(self) -> str:
        return f"CutMix(alpha={self.alpha}, classes={self.classes}, image_shape={self.image_shape})"

    def _images(self, x: np.ndarray) -> tuple[int, int, int]:
        """(H, W, C) of the batch x; a DataError where x is not images of that shape."""
        if x.ndim == 4 and (self.image_shape is None or x.shape[1:] == self.image_shape):
            return x.shape[1:]
        if x.ndim == 2 and self.image_shape is not None and x.shape[1] == np.prod(self.image_shape):
            return self.image_shape
        raise DataError(
            f"CutMix needs images (B, H, W, C), or rows (B, H*W*C) with image_shape; "
            f"got shape {x.shape} and image_shape {self.image_shape}"
        )

    def __call__(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
        """Mix a batch with randomness from ``rng``: ``apply(x, y, *draw(B, (H, W), rng))``.

        Returns
        -------
        x : ndarray, shape and dtype of the input x
            A new array.
        targets : ndarray, shape (B, C)
            Rows of probabilities, summing to 1.
        """
        _check_rng(rng, "CutMix")
        x = np.asarray(x)
        h, w, _ = self._images(x)
        return self.apply(x, y, *self.draw(len(x), (h, w), rng))

    def draw(
        self, b: int, size: tuple[int, int], rng: np.random.Generator
    ) -> tuple[tuple[int, int, int, int], np.ndarray]:
        """The box ``(top, bottom, left, right)`` (end exclusive) and the partners ``perm`` (B,).

        Parameters
        ----------
        b : int
            B, the number of examples.
        size : (int, int)
            (H, W) of the images.
        rng : numpy.random.Generator
        """
        h, w = size
        lam = rng.beta(self.alpha, self.alpha)
        cut = np.sqrt(1.0 - lam)  # each side shrinks by sqrt, so the area is 1 - lam
        cut_h, cut_w = int(h * cut), int(w * cut)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        return (top, bottom, left, right), rng.permutation(b)

    def apply(self, x: np.ndarray, y: np.ndarray, box: tuple[int, int, int, int], perm):
        """Paste ``box`` of image perm[i] into image i; weigh the targets by pixel share.

        Parameters
        ----------
        x : ndarray, shape (B, H, W, C), or (B, H*W*C) with ``image_shape``
            Not modified.
        y : ndarray, shape (B,) of int or (B, C)
        box : (int, int, int, int)
            ``(top, bottom, left, right)``, end exclusive, inside the image.
        perm : ndarray of int, shape (B,)

        Returns
        -------
        (ndarray, ndarray)
            The mixed x (a new array, shape and dtype of x) and the targets (B, C),
            ``lam * onehot(y) + (1 - lam) * onehot(y[perm])`` with
            ``lam = 1 - box area / (H W)``.
        """
        x = np.asarray(x)
        h, w, c = self._images(x)
        top, bottom, left, right = box
        source = x.reshape(len(x), h, w, c)
        mixed = source.copy()  # a copy: x itself is often a loader's reused buffer
        mixed[:, top:bottom, left:right] = source[perm, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        return mixed.reshape(x.shape), _mix_targets(y, self.classes, lam, perm, dtype)


class MixedBatches:
    """The batches of a loader, each mixed by a transform (one drawn per batch from several).

    Parameters
    ----------
    batches : re-iterable of (x, y), with ``len``
        E.g. a ``BatchLoader``; iterated once per pass.
    transforms : callable or sequence of callables
        ``transform(x, y, rng) -> (x, targets)`` (``MixUp``, ``CutMix``); with
        several, each batch gets one, drawn uniformly.
    rng : numpy.random.Generator
        All the randomness (the choice of transform and the transform's own).

    Raises
    ------
    ConfigError
        If ``rng`` is not a Generator or there is no transform.
    """

    def __init__(self, batches, transforms, rng: np.random.Generator):
        self.batches = batches
        self.transforms = list(transforms) if isinstance(transforms, Sequence) else [transforms]
        if not self.transforms or not all(callable(t) for t in self.transforms):
            raise ConfigError("MixedBatches needs one or more transforms such as MixUp or CutMix")
        self.rng = _check_rng(rng, "MixedBatches")

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        """One pass: (mixed x, targets (B, C)), new arrays for every batch."""
        for x, y in self.batches:
            k = int(self.rng.integers(len(self.transforms))) if len(self.transforms) > 1 else 0
            yield self.transforms[k](x, y, self.rng)
