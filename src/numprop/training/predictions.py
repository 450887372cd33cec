"""A run's test-set predictions, saved beside the model so plots never need the data again.

``predictions.npz`` holds, for the N test examples: the true and predicted
classes and the predicted class's probability; and for the first few
mistakes, their index, full probability rows and (for images) the images
themselves. Plain arrays, loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numprop.errors import ConfigError
from numprop.training.io import write_npz

__all__ = ["TestPredictions", "write_predictions", "read_predictions", "MISTAKES_KEPT"]

MISTAKES_KEPT = 36  # as many as plot_misclassified shows
_KEYS = ("y_true", "y_pred", "confidence", "mistake_index", "mistake_probs")


@dataclass
class TestPredictions:
    """What a model predicted on the test set.

    Attributes
    ----------
    y_true, y_pred : ndarray, shape (N,), int64
        True and predicted class indices.
    confidence : ndarray, shape (N,), float32
        The probability the model gave its predicted class.
    mistake_index : ndarray, shape (M,), int64
        Indices of the first M <= 36 misclassified examples.
    mistake_probs : ndarray, shape (M, C), float32
        Their probability rows.
    mistake_images : ndarray, shape (M, H, W, C), uint8, or None
        Their images (None for tables).
    """

    y_true: np.ndarray
    y_pred: np.ndarray
    confidence: np.ndarray
    mistake_index: np.ndarray
    mistake_probs: np.ndarray
    mistake_images: np.ndarray | None = None


def write_predictions(
    path: str | os.PathLike, y_true: np.ndarray, probs: np.ndarray, inputs: np.ndarray
) -> Path:
    """Save the test predictions (from probabilities (N, C)) to ``path``, atomically.

    Parameters
    ----------
    path : str or path-like
        Ends in .npz.
    y_true : ndarray, shape (N,), int
    probs : ndarray, shape (N, C)
    inputs : ndarray, shape (N, ...)
        The test examples; kept for the mistakes when they are images (N, H, W, C) uint8.

    Returns
    -------
    Path
    """
    path = Path(path)
    y_pred = probs.argmax(axis=1).astype(np.int64)
    wrong = np.flatnonzero(y_pred != y_true)[:MISTAKES_KEPT]
    arrays = {
        "y_true": np.asarray(y_true, np.int64),
        "y_pred": y_pred,
        "confidence": probs[np.arange(len(y_pred)), y_pred].astype(np.float32),
        "mistake_index": wrong.astype(np.int64),
        "mistake_probs": probs[wrong].astype(np.float32),
    }
    if inputs.ndim == 4 and inputs.dtype == np.uint8:
        arrays["mistake_images"] = inputs[wrong]
    return write_npz(path, arrays)


def read_predictions(path: str | os.PathLike) -> TestPredictions:
    """Load what ``write_predictions`` saved; a ConfigError for anything else.

    Raises
    ------
    ConfigError
        If the file is missing, not an .npz of plain arrays, or its arrays
        disagree in shape.
    """
    from numprop.training.io import read_arrays

    path = Path(path)
    arrays = read_arrays(path, "a predictions file")
    missing = [k for k in _KEYS if k not in arrays]
    if missing:
        raise ConfigError(f"{path}: not a predictions file (no {', '.join(missing)})")
    if arrays["y_true"].ndim != 1 or arrays["mistake_index"].ndim != 1:
        raise ConfigError(f"{path}: the arrays of this predictions file do not fit together")
    n, m = arrays["y_true"].shape[0], arrays["mistake_index"].shape[0]
    images = arrays.get("mistake_images")
    if (
        arrays["y_true"].shape != (n,)
        or arrays["y_pred"].shape != (n,)
        or arrays["confidence"].shape != (n,)
        or arrays["mistake_probs"].ndim != 2
        or arrays["mistake_probs"].shape[0] != m
        or (images is not None and (images.ndim != 4 or images.shape[0] != m))
        or any(arrays[k].dtype.kind not in "iu" for k in ("y_true", "y_pred", "mistake_index"))
        or (m and (arrays["mistake_index"].min() < 0 or arrays["mistake_index"].max() >= n))
    ):
        raise ConfigError(f"{path}: the arrays of this predictions file do not fit together")
    return TestPredictions(
        arrays["y_true"].astype(np.int64),
        arrays["y_pred"].astype(np.int64),
        arrays["confidence"],
        arrays["mistake_index"].astype(np.int64),
        arrays["mistake_probs"],
        images,
    )
