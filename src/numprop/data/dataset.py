"""The one shape every data set takes: train and test arrays, labels as class indices, class names.

A loader (CIFAR-10, MNIST, a user's .npz, .csv or image folder) returns a
``Dataset``; the training pipeline, evaluation and plots read only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from numprop.errors import DataError

__all__ = ["Dataset", "encode_labels", "class_names_of"]


@dataclass(frozen=True)
class Dataset:
    """A labelled data set: images (N, H, W, C) uint8 or table rows (N, D) float, labels 0..K-1.

    Attributes
    ----------
    train_x : ndarray
        Images (N_train, H, W, C) uint8 in HWC order, or rows (N_train, D) of
        finite numbers.
    train_y : ndarray, shape (N_train,), int64
        Class indices into ``class_names``.
    test_x, test_y : ndarray or None
        The test split likewise, or None when the data set has none (the
        pipeline then holds a test split out of the training data).
    class_names : list of str
        One name per class, in label order (CIFAR-10: "airplane", ...; a
        user's labels 3, 7 become "3", "7").
    name : str
        What the data set is called in messages ("cifar10", "digits.csv").
    flip : bool
        Whether a horizontal flip keeps an image's class (photos: yes; digits: no).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    class_names: list[str]
    name: str = "data"
    flip: bool = False
    source: dict = field(default_factory=dict)  # how to load it again (e.g. {"data": "mnist"})

    @property
    def is_images(self) -> bool:
        """True for images (N, H, W, C), False for table rows (N, D)."""
        return self.train_x.ndim == 4

    @property
    def channels(self) -> int | None:
        """C of images (N, H, W, C); None for tables."""
        return int(self.train_x.shape[-1]) if self.is_images else None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    # The names CIFAR-10's loader has always used, kept for callers that know them.
    @property
    def train_images(self) -> np.ndarray:
        return self.train_x

    @property
    def train_labels(self) -> np.ndarray:
        return self.train_y

    @property
    def test_images(self) -> np.ndarray | None:
        return self.test_x

    @property
    def test_labels(self) -> np.ndarray | None:
        return self.test_y


def class_names_of(labels) -> list[str]:
    """The sorted distinct labels as strings: the class names of labels of any type."""
    return [str(v) for v in np.unique(_label_array(labels, "labels"))]


def encode_labels(labels, class_names: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Turn labels of any type (ints, strings, booleans) into class indices (N,) int64.

    Parameters
    ----------
    labels : array_like, shape (N,)
    class_names : list of str, optional
        The known classes (e.g. a saved model's); each label, as a string,
        must be one of them. By default the sorted distinct labels.

    Returns
    -------
    indices : ndarray, shape (N,), int64
        ``class_names[indices[i]] == str(labels[i])``.
    class_names : list of str

    Raises
    ------
    DataError
        For labels that are not 1-D, hold NaN or None, or (with
        ``class_names``) name a class the list does not have.
    """
    labels = _label_array(labels, "labels")
    classes, inverse = np.unique(labels, return_inverse=True)
    names = [str(v) for v in classes]
    if class_names is None:
        return inverse.astype(np.int64), names
    index = {name: i for i, name in enumerate(class_names)}
    unknown = [name for name in names if name not in index]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(
            f"labels {shown} are not among the model's {len(class_names)} classes "
            f"({', '.join(class_names[:10])}{' ...' if len(class_names) > 10 else ''})"
        )
    lookup = np.array([index[name] for name in names], dtype=np.int64)
    return lookup[inverse], list(class_names)


def _label_array(labels, what: str) -> np.ndarray:
    """labels as a 1-D array of ints, booleans or strings; a DataError otherwise."""
    a = np.asarray(labels)
    if a.ndim != 1:
        raise DataError(f"{what} must be one label per example (1-D), got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DataError(f"{what} hold NaN or infinite values")
        if not (a == np.round(a)).all():
            raise DataError(
                f"{what} are fractional numbers ({a[a != np.round(a)][0]!r}): classes must be "
                "integers or strings (for regression use the scikit-learn MLPRegressor)"
            )
        a = a.astype(np.int64)
    elif a.dtype.kind == "O":
        if any(v is None for v in a):
            raise DataError(f"{what} hold missing values (None)")
        a = a.astype(str)
    elif a.dtype.kind not in "iubUS":
        raise DataError(f"{what} must be integers or strings, got {a.dtype}")
    return a
