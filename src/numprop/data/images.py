"""Reading your own pictures into CIFAR-shaped arrays, and writing PNGs, with Pillow.

Pillow is imported inside the functions so that the NumPy core of numprop
never needs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from numprop.errors import ConfigError, DataError

__all__ = ["IMAGE_SIZE", "read_images", "write_png"]

IMAGE_SIZE = (32, 32)  # (height, width) the models are trained on


def _to_rgb(img):
    """Any Pillow mode -> an 8-bit RGB image."""
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale (e.g. a 16-bit PNG): convert("L") would clip at 255
        # and turn most of the picture white, so scale the range down instead.
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    if mode == "F":
        a = np.nan_to_num(np.asarray(img, dtype=np.float64))
        lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return Image.fromarray(np.rint(a * 255).astype(np.uint8)).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        # Going through RGBA avoids Pillow's warning about palette transparency.
        img = img.convert("RGBA")
    # RGBA/LA: the alpha channel is dropped (the colour under it is kept), as
    # CIFAR images have no transparency to learn from.
    return img.convert("RGB")


def read_images(
    paths: Iterable[str | os.PathLike], *, size: tuple[int, int] = IMAGE_SIZE
) -> np.ndarray:
    """Decode image files into uint8 (N, H, W, 3) RGB, stretching any other size to ``size``.

    Reads any format Pillow reads; greyscale, palette and alpha images become
    RGB, and JPEG/TIFF EXIF orientation is applied. A missing or undecodable
    file, or one large enough to be a decompression bomb, raises DataError
    naming it.

    Parameters
    ----------
    paths : path-like or iterable of path-like
        One file, or N files.
    size : (int, int), optional
        (height, width) H, W of the result; by default 32x32, the CIFAR-10 size.

    Returns
    -------
    ndarray, shape (N, H, W, 3), uint8
        In the order of ``paths``, HWC like the CIFAR-10 arrays.

    Raises
    ------
    DataError
        For a missing, non-regular or unreadable file, or a decompression bomb.
    ConfigError
        If ``size`` is not two positive integers.
    """
    from PIL import Image, ImageOps

    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    height, width = _check_size(size)
    out = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if not path.is_file():
            raise DataError(f"{path}: not a regular file")
        try:
            with Image.open(path) as img:
                # For JPEG, let the decoder downscale by a power of two first:
                # far faster and lighter for camera-sized photos.
                img.draft("RGB", (width, height))
                img = ImageOps.exif_transpose(img)
                img = _to_rgb(img)
                if img.size != (width, height):
                    # LANCZOS antialiases when shrinking; reducing_gap lets Pillow
                    # box-reduce huge images first, which is much faster.
                    img = img.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
                out[i] = np.asarray(img, dtype=np.uint8)
        except Image.DecompressionBombError as exc:
            raise DataError(f"{path}: refused as a possible decompression bomb ({exc})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # UnidentifiedImageError and "image file is truncated" are OSErrors;
            # some plugins raise SyntaxError/ValueError on corrupt headers.
            raise DataError(f"{path}: not an image Pillow can read ({exc})") from None
    return out


def _check_size(size) -> tuple[int, int]:
    """``size`` as (height, width) positive ints; a ConfigError otherwise."""
    try:
        height, width = size
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok or height < 1 or width < 1:
        raise ConfigError(
            f"image size must be (height, width), two positive integers, got {size!r}"
        )
    return int(height), int(width)


def write_png(path: str | os.PathLike, image_u8: np.ndarray) -> Path:
    """Write a uint8 image as a PNG at ``path``; returns the Path.

    Parameters
    ----------
    path : str or path-like
        The file to write (its folder must exist).
    image_u8 : ndarray, shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8
        Greyscale, RGB or RGBA.

    Returns
    -------
    Path

    Raises
    ------
    DataError
        If the image is not uint8 or not of one of those shapes (or empty).
    """
    from PIL import Image

    a = np.asarray(image_u8)
    if a.dtype != np.uint8:
        raise DataError(f"write_png: expected a uint8 image, got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or 0 in a.shape:
        raise DataError(
            f"write_png: expected an image (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}"
        )
    path = Path(path)
    Image.fromarray(np.ascontiguousarray(a)).save(path, format="PNG")
    return path
