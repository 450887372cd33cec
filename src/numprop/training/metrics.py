"""Classification metrics from integer labels: confusion matrix, precision, recall, accuracy.

NumPy only. Every function checks its input and raises DataError / ConfigError
with a message, so a wrong shape never surfaces as an IndexError deep inside.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from numprop.errors import ConfigError, DataError

__all__ = ["confusion_matrix", "precision_recall", "accuracy", "classification_report"]


def _labels(name: str, y) -> np.ndarray:
    """``y`` as int64 class indices (N,); a DataError names ``name`` otherwise."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of class indices, got shape {y.shape}")
    if y.size and y.dtype.kind not in "iu":
        # Floats such as 2.0 would silently index fine; 2.5 would not. Refuse both.
        raise DataError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Both label arrays, checked and of equal length."""
    t, p = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if t.shape != p.shape:
        raise DataError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    return t, p


def _square_counts(cm) -> np.ndarray:
    """``cm`` as an int64 (C, C) count matrix; a DataError otherwise."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise DataError(
            f"a confusion matrix must be square (C, C) with C >= 1, got shape {cm.shape}"
        )
    if cm.dtype.kind not in "iu" or (cm < 0).any():
        raise DataError("a confusion matrix must hold non-negative integer counts")
    return cm.astype(np.int64, copy=False)


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Counts (C, C) int64: entry [i, j] is how many examples of true class i were predicted as j.

    Parameters
    ----------
    y_true, y_pred : array_like of int, shape (N,)
        Class indices in [0, C).
    n_classes : int
        C, >= 1.

    Returns
    -------
    ndarray, shape (C, C), int64
        Rows are true classes, columns predictions; the entries sum to N.

    Raises
    ------
    ConfigError
        If ``n_classes`` is not a positive integer.
    DataError
        If the labels are not 1-D integer arrays of equal length, or a label is
        outside [0, C).
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ConfigError(f"n_classes must be a positive integer, got {n_classes!r}")
    n_classes = int(n_classes)
    t, p = _pair(y_true, y_pred)
    for name, y in (("y_true", t), ("y_pred", p)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            bad = y[(y < 0) | (y >= n_classes)][0]
            raise DataError(f"{name} holds class {bad}, outside 0..{n_classes - 1}")
    # One bincount over the flattened (true, pred) index beats a Python loop or np.add.at.
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64, copy=False)


def precision_recall(cm) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (C,) and recall (C,) float64 from a confusion matrix (C, C).

    A class never predicted has precision 0 and a class that never occurs has
    recall 0, rather than NaN and a division warning.

    Parameters
    ----------
    cm : array_like of int, shape (C, C)
        As from ``confusion_matrix``: rows true classes, columns predictions.

    Returns
    -------
    precision : ndarray, shape (C,), float64
        ``cm[i, i] / cm[:, i].sum()``.
    recall : ndarray, shape (C,), float64
        ``cm[i, i] / cm[i, :].sum()``.

    Raises
    ------
    DataError
        If ``cm`` is not a square matrix of non-negative integer counts.
    """
    cm = _square_counts(cm)
    hits = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    return precision, recall


def accuracy(y_true, y_pred) -> float:
    """Fraction of examples where y_pred (N,) equals y_true (N,).

    Parameters
    ----------
    y_true, y_pred : array_like of int, shape (N,)
        Class indices.

    Returns
    -------
    float
        In [0, 1].

    Raises
    ------
    DataError
        If the labels are not 1-D integer arrays of equal length, or N is 0.
    """
    t, p = _pair(y_true, y_pred)
    if t.size == 0:
        raise DataError("accuracy of zero examples is undefined")
    return float(np.mean(t == p))


def classification_report(cm, class_names: Sequence[str]) -> str:
    """A fixed-width text table of precision, recall and support per class.

    The table ends with the macro averages (unweighted means over classes) and
    the accuracy; support is the number of examples of each true class.

    Parameters
    ----------
    cm : array_like of int, shape (C, C)
        As from ``confusion_matrix``.
    class_names : sequence of str, length C

    Returns
    -------
    str
        The table, lines joined by newlines (no trailing newline).

    Raises
    ------
    DataError
        If ``cm`` is not a square matrix of non-negative integer counts.
    ConfigError
        If the number of names is not C.
    """
    cm = _square_counts(cm)
    names = [str(n) for n in class_names]
    if len(names) != cm.shape[0]:
        raise ConfigError(f"{len(names)} class names for a {cm.shape[0]}-class confusion matrix")
    precision, recall = precision_recall(cm)
    support = cm.sum(axis=1)
    total = int(support.sum())
    acc = float(np.trace(cm) / total) if total else 0.0

    width = max(12, *(len(n) for n in names))
    head = f"{'class':<{width}}  {'precision':>9}  {'recall':>9}  {'support':>9}"
    lines = [head, "-" * len(head)]
    for name, p, r, s in zip(names, precision, recall, support):
        lines.append(f"{name:<{width}}  {p:>9.4f}  {r:>9.4f}  {int(s):>9d}")
    lines.append("-" * len(head))
    lines.append(
        f"{'macro avg':<{width}}  {precision.mean():>9.4f}  {recall.mean():>9.4f}  {total:>9d}"
    )
    lines.append(f"{'accuracy':<{width}}  {'':>9}  {acc:>9.4f}  {total:>9d}")
    return "\n".join(lines)
