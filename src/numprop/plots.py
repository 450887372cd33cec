"""PNG figures for a training run: learning curves, confusion matrix, first-layer templates, mistakes.

matplotlib is imported inside each function, and forced onto the Agg backend
before pyplot, so importing numprop stays cheap and plotting works on a
machine with no display. Every figure is closed after saving and written to a
temporary name first, so a crash never leaves a half-written PNG at ``path``.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from numprop.errors import ConfigError, DataError

__all__ = ["plot_history", "plot_confusion", "plot_first_layer", "plot_misclassified"]

_HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def _pyplot():
    import sys

    import matplotlib

    # Only switch when pyplot is not loaded yet: switching under a running
    # interactive session (a notebook) would break the user's own figures.
    # Our figures are saved with savefig, which renders through Agg anyway.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically and close it."""
    plt = _pyplot()
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique name in the same folder so os.replace is an atomic rename;
        # savefig creates it normally, so the PNG gets the usual permissions.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            fig.savefig(tmp, format="png", dpi=100)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        plt.close(fig)
    return path


def _names(class_names: Sequence[str], n: int, what: str) -> list[str]:
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ConfigError(f"{what}: {len(names)} class names for {n} classes")
    return names


def plot_history(history, path: str | os.PathLike) -> Path:
    """Loss and accuracy curves (train and, where present, validation) per epoch; returns the Path.

    ``history`` is a list of per-epoch dicts (epoch, train_loss, train_acc,
    val_loss, val_acc, ...; val values may be None) or a ``train.History``.
    """
    records = history.to_list() if hasattr(history, "to_list") else list(history)
    if not records:
        raise DataError("plot_history: the history is empty (no epoch finished)")
    for r in records:
        missing = [k for k in _HISTORY_KEYS if k not in r]
        if missing:
            raise DataError(f"plot_history: an epoch record lacks {', '.join(missing)}")

    def column(key):
        # None (no validation set that epoch) becomes NaN, which matplotlib leaves as a gap.
        return np.array([np.nan if r[key] is None else float(r[key]) for r in records])

    epochs = column("epoch")
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    marker = "o" if len(records) <= 40 else None  # a single epoch still shows as a point
    for ax, key, label in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(epochs, column(f"train_{key}"), marker=marker, ms=3, label=f"train {label}")
        val = column(f"val_{key}")
        if np.isfinite(val).any():
            ax.plot(epochs, val, marker=marker, ms=3, label=f"validation {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax_loss.set_title("Loss")
    ax_acc.set_title("Accuracy")

    val_acc = column("val_acc")
    if np.isfinite(val_acc).any():
        best = int(np.nanargmax(val_acc))
        summary = f"best validation accuracy {val_acc[best]:.2%} at epoch {epochs[best]:g}"
    else:
        summary = f"final train accuracy {column('train_acc')[-1]:.2%}"
    fig.suptitle(f"Training history: {len(records)} epochs, {summary}")
    return _save(fig, path)


def plot_confusion(cm, class_names: Sequence[str], path: str | os.PathLike) -> Path:
    """Heat map of a confusion matrix (C, C), rows = true class, coloured by row fraction, counts in cells; returns the Path."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise DataError(f"plot_confusion: expected a square matrix (C, C), got shape {cm.shape}")
    n = cm.shape[0]
    names = _names(class_names, n, "plot_confusion")
    counts = cm.astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    # Row-normalised so a rare class is as readable as a common one; an empty row stays 0.
    frac = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)

    plt = _pyplot()
    side = max(5.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n), labels=names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 30:  # beyond that the numbers are unreadable anyway
        size = 9 if n <= 12 else 6
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{int(cm[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
    total = counts.sum()
    acc = np.trace(counts) / total if total else 0.0
    ax.set_title(f"Confusion matrix ({int(total)} examples, accuracy {acc:.2%})")
    return _save(fig, path)


def plot_first_layer(
    weights, path: str | os.PathLike, image_shape=(32, 32, 3), max_units: int = 100
) -> Path:
    """Grid of first-layer templates: column j of ``weights`` (in_features, hidden) as an image of ``image_shape``; returns the Path.

    Each unit is min-max scaled to [0, 1] on its own. Raises ConfigError when
    in_features is not the pixel count (e.g. after PCA the inputs are not images).
    """
    w = np.asarray(weights)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
        raise ConfigError(
            f"plot_first_layer: image_shape must be (H, W) or (H, W, 1|3), got {image_shape}"
        )
    if w.ndim != 2:
        raise ConfigError(
            f"plot_first_layer: expected a weight matrix (in_features, hidden), got shape {w.shape}"
        )
    pixels = math.prod(shape)
    if w.shape[0] != pixels:
        raise ConfigError(
            f"plot_first_layer: the first layer has {w.shape[0]} inputs, not the {pixels} pixels of a "
            f"{'x'.join(map(str, shape))} image, so its weights are not images (is the input "
            "PCA-reduced or otherwise preprocessed?)"
        )
    if isinstance(max_units, bool) or not isinstance(max_units, (int, np.integer)) or max_units < 1:
        raise ConfigError(
            f"plot_first_layer: max_units must be a positive integer, got {max_units!r}"
        )
    if w.shape[1] == 0:
        raise ConfigError("plot_first_layer: the layer has no units")
    if not np.isfinite(w).all():
        raise DataError("plot_first_layer: the weights contain NaN or infinity")

    n = min(w.shape[1], int(max_units))
    h, wd = shape[:2]
    ch = shape[2] if len(shape) == 3 else 1
    units = w[:, :n].T.astype(np.float64).reshape(n, h, wd, ch)
    lo = units.min(axis=(1, 2, 3), keepdims=True)
    span = units.max(axis=(1, 2, 3), keepdims=True) - lo
    # A constant unit (e.g. dead or zero-initialised) shows as mid-grey instead of dividing by 0.
    units = np.divide(units - lo, span, out=np.full_like(units, 0.5), where=span > 0)

    # One mosaic image instead of n subplots: a 100-axes figure is slow to draw.
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    pad = 1
    mosaic = np.ones((rows * (h + pad) + pad, cols * (wd + pad) + pad, ch))
    for k in range(n):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (wd + pad)
        mosaic[y : y + h, x : x + wd] = units[k]

    plt = _pyplot()
    tile = 0.6 / max(h, wd)  # inches per pixel: about 0.6 inch per tile, whatever its size
    fig, ax = plt.subplots(
        figsize=(max(3.5, cols * wd * tile + 0.4), max(3.0, rows * h * tile + 0.8)),
        layout="constrained",
    )
    if ch == 1:
        ax.imshow(mosaic[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    ax.set_title(
        f"First-layer templates\n{n} of {w.shape[1]} units, each scaled to its own range",
        fontsize=9,
    )
    return _save(fig, path)


def plot_misclassified(
    images,
    y_true,
    y_pred,
    class_names: Sequence[str],
    path: str | os.PathLike,
    max_images: int = 36,
    probs=None,
    counts: tuple[int, int] | None = None,
) -> Path:
    """Grid of the first ``max_images`` misclassified images (N, H, W, C) uint8, titled true / pred; returns the Path.

    With ``probs`` (N, C) the title also gives the predicted class's probability.
    ``counts`` = (misclassified, total) when ``images`` are a sample of a larger
    set (a run saves only its first mistakes); by default they are counted here.
    If nothing is misclassified the figure says so.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] not in (1, 3) or images.dtype != np.uint8:
        raise DataError(
            f"plot_misclassified: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}"
        )
    n = images.shape[0]
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if (
        t.shape != (n,)
        or p.shape != (n,)
        or (n and (t.dtype.kind not in "iu" or p.dtype.kind not in "iu"))
    ):
        raise DataError(
            f"plot_misclassified: y_true and y_pred must be integer labels of shape ({n},), "
            f"got {t.shape} and {p.shape}"
        )
    names = [str(c) for c in class_names]
    for what, y in (("y_true", t), ("y_pred", p)):
        if n and (y.min() < 0 or y.max() >= len(names)):
            raise DataError(f"plot_misclassified: {what} holds labels outside 0..{len(names) - 1}")
    if probs is not None:
        probs = np.asarray(probs)
        if probs.shape != (n, len(names)):
            raise DataError(
                f"plot_misclassified: probs must have shape ({n}, {len(names)}), got {probs.shape}"
            )
    if (
        isinstance(max_images, bool)
        or not isinstance(max_images, (int, np.integer))
        or max_images < 1
    ):
        raise ConfigError(
            f"plot_misclassified: max_images must be a positive integer, got {max_images!r}"
        )

    wrong = np.flatnonzero(t != p)
    shown = wrong[: int(max_images)]
    n_wrong, n_total = (wrong.size, n) if counts is None else (int(counts[0]), int(counts[1]))
    plt = _pyplot()
    if shown.size == 0:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            f"No misclassified examples\n({n_total} of {n_total} correct)",
            ha="center",
            va="center",
            fontsize=12,
        )
        return _save(fig, path)

    cols = min(6, shown.size)
    rows = math.ceil(shown.size / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.9 * cols, 2.1 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, k in zip(axes.flat, shown):
        img = images[k]
        ax.imshow(
            img[:, :, 0] if img.shape[2] == 1 else img,
            cmap="gray" if img.shape[2] == 1 else None,
            interpolation="nearest",
        )
        title = f"true: {names[t[k]]}\npred: {names[p[k]]}"
        if probs is not None:
            title += f" ({float(probs[k, p[k]]):.0%})"
        ax.set_title(title, fontsize=8)
    fig.suptitle(
        f"Misclassified: {n_wrong} of {n_total} ({n_wrong / max(n_total, 1):.1%}), "
        f"showing {shown.size}",
        fontsize=10,
    )
    return _save(fig, path)
