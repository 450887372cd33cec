"""MNIST and Fashion-MNIST: a strict IDX reader and loaders with a checked download.

The IDX format (big-endian): two zero bytes, a type byte (0x08: unsigned byte),
a byte with the number of dimensions, one uint32 per dimension, then the data
in row-major order. Images are 0x00000803 (N, rows, cols), labels 0x00000801 (N,).
Files may be plain or gzip-compressed (the official files are gzip). The reader
checks every size against what the file can hold before it allocates anything.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from numprop.data.cifar10 import fetch, resolve_data_dir
from numprop.data.dataset import Dataset
from numprop.errors import DataError

__all__ = [
    "MNIST_URL",
    "MNIST_FILES",
    "MNIST_CLASSES",
    "FASHION_MNIST_URL",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_CLASSES",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "load_mnist",
    "load_fashion_mnist",
]

# The four official files of each set: name -> (size in bytes, MD5).
# MNIST: torchvision's mirror (yann.lecun.com often refuses downloads); same files, same MD5s.
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES: dict[str, tuple[int | None, str]] = {
    "train-images-idx3-ubyte.gz": (9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": (28_881, "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": (1_648_877, "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": (4_542, "ec29112dd5afa0611ce80d1b7f02629c"),
}
MNIST_CLASSES = [str(d) for d in range(10)]

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES: dict[str, tuple[int | None, str]] = {
    "train-images-idx3-ubyte.gz": (26_421_880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train-labels-idx1-ubyte.gz": (29_515, "25c81989df183df01b3e8a0aad5dffbe"),
    "t10k-images-idx3-ubyte.gz": (4_422_102, "bef4ecab320f06d8554ea6380940ec79"),
    "t10k-labels-idx1-ubyte.gz": (5_148, "bb300cfdad3c16e7a12a480ee83cd310"),
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
IMAGE_ROWS = IMAGE_COLS = 28
NUM_CLASSES = 10

_UBYTE = 0x08  # the IDX type code for unsigned bytes, the only one these files use
_TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int"}
_TYPE_NAMES |= {0x0D: "float", 0x0E: "double"}
_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot compress better than 1032:1, so a gzip file of n bytes holds at most
# 1032 * n bytes: a header that claims more is refused before anything is read.
_MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- IDX reader


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with `ndim` dimensions, plain or gzip-compressed.

    Parameters
    ----------
    path : str or path-like
        The file. Gzip is recognised by its first two bytes, whatever the name.
    ndim : int
        The number of dimensions the file must declare (3 for images, 1 for labels).

    Returns
    -------
    ndarray, uint8, with the declared shape

    Raises
    ------
    DataError
        One line naming the file and the fault: missing, not IDX (bad magic
        number), another type code, another number of dimensions, a zero size,
        data shorter or longer than declared, a size the file cannot hold, or a
        corrupt gzip stream. Nothing larger than the file holds is allocated.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path.name}: missing (expected it in {path.parent})")
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as raw:
            compressed = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                    return _read_idx_stream(f, path, ndim, file_size, compressed=True)
            if path.suffix == ".gz":
                raise DataError(f"{path.name}: not a gzip file (bad gzip magic bytes) [{path}]")
            return _read_idx_stream(raw, path, ndim, file_size, compressed=False)
    except DataError:
        raise
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path.name}: corrupt gzip data ({type(exc).__name__}: {exc}) [{path}]"
        ) from exc
    except OSError as exc:
        raise DataError(f"{path.name}: cannot be read: {exc} [{path}]") from exc


def _read_exact(f, n: int, path: Path, what: str) -> bytes:
    """Read exactly n bytes (n small: a header) or raise a 'truncated' DataError."""
    data = f.read(n)
    if len(data) != n:
        raise DataError(
            f"{path.name}: truncated {what}: {len(data)} of {n} bytes [{path}]"
            if data
            else f"{path.name}: empty or truncated before the {what} [{path}]"
        )
    return data


def _read_idx_stream(f, path: Path, ndim: int, file_size: int, *, compressed: bool) -> np.ndarray:
    """Parse and check the header, then read exactly the declared data from `f`."""
    expected_magic = (_UBYTE << 8) | ndim
    magic = _read_exact(f, 4, path, "header")
    value = int.from_bytes(magic, "big")
    if magic[0] or magic[1]:
        raise DataError(
            f"{path.name}: not an IDX file: bad magic number 0x{value:08x} "
            f"(expected 0x{expected_magic:08x}) [{path}]"
        )
    if magic[2] != _UBYTE:
        kind = _TYPE_NAMES.get(magic[2], "unknown")
        raise DataError(
            f"{path.name}: IDX type code 0x{magic[2]:02x} ({kind}), expected 0x08 (unsigned byte); "
            f"magic number 0x{value:08x}, expected 0x{expected_magic:08x} [{path}]"
        )
    if magic[3] != ndim:
        raise DataError(
            f"{path.name}: {magic[3]} dimension(s), expected {ndim}; magic number 0x{value:08x}, "
            f"expected 0x{expected_magic:08x} [{path}]"
        )
    header = _read_exact(f, 4 * ndim, path, "dimension sizes")
    shape = tuple(int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(ndim))
    if any(d == 0 for d in shape):
        raise DataError(f"{path.name}: declared shape {shape} has a zero size [{path}]")
    total = math.prod(shape)  # a Python int: no overflow
    header_bytes = 4 + 4 * ndim
    if compressed:
        limit = _MAX_DEFLATE_RATIO * file_size
        if header_bytes + total > limit:
            raise DataError(
                f"{path.name}: header declares shape {shape} ({total:,} bytes of data), more than "
                f"a {file_size:,}-byte gzip file can hold (at most {limit:,}) [{path}]"
            )
    else:
        actual = file_size - header_bytes
        if actual != total:
            what = "truncated" if actual < total else "trailing bytes"
            raise DataError(
                f"{path.name}: {what}: {actual:,} bytes of data, the header declares shape "
                f"{shape} = {total:,} bytes [{path}]"
            )
    # Grow the buffer by what is actually read: a lying header cannot make us allocate.
    buf = bytearray()
    while len(buf) < total:
        chunk = f.read(min(_CHUNK, total - len(buf)))
        if not chunk:
            raise DataError(
                f"{path.name}: truncated: {len(buf):,} bytes of data, the header declares shape "
                f"{shape} = {total:,} bytes [{path}]"
            )
        buf += chunk
    extra = len(f.read(_CHUNK))
    if extra:
        more = "+" if extra == _CHUNK else ""
        raise DataError(
            f"{path.name}: trailing bytes: {extra:,}{more} bytes after the {total:,} bytes "
            f"of data that the header declares (shape {shape}) [{path}]"
        )
    return np.frombuffer(buf, dtype=np.uint8).reshape(shape)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX image file (magic 0x00000803): uint8 (N, rows, cols)."""
    return read_idx(path, 3)


def read_idx_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX label file (magic 0x00000801): uint8 (N,)."""
    return read_idx(path, 1)


# --------------------------------------------------------------------------- loaders


def load_mnist(
    root: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True
) -> Dataset:
    """Load MNIST from ``resolve_data_dir(root) / "mnist"``, downloading missing files.

    The folder holds the four official files (train-images-idx3-ubyte.gz,
    train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz,
    t10k-labels-idx1-ubyte.gz; each may also be there uncompressed, without
    ``.gz``). `root` may also be that folder itself. A download checks each
    file's size and MD5 before it takes the file's name.

    Parameters
    ----------
    root : str or path-like, optional
        The data folder; ``resolve_data_dir(root)`` decides the default.
    download : bool, default True
        Download the missing files (about 11 MB in all).
    progress : bool, default True
        Show a download progress bar.

    Returns
    -------
    Dataset
        train_images (60000, 28, 28, 1) uint8, train_labels (60000,) int64 in
        0..9, the test split likewise with 10,000 images, class_names "0".."9".

    Raises
    ------
    DataError
        If files are missing (and not downloaded), malformed, disagree in
        their counts, hold labels outside 0..9, or the download fails.
    """
    return _load("MNIST", "mnist", MNIST_URL, MNIST_FILES, MNIST_CLASSES, root, download, progress)


def load_fashion_mnist(
    root: str | os.PathLike | None = None, *, download: bool = True, progress: bool = True
) -> Dataset:
    """Load Fashion-MNIST from ``resolve_data_dir(root) / "fashion-mnist"``; as `load_mnist`.

    The files have the same names and format as MNIST's; the class names are
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot" (about 30 MB to download).
    """
    return _load(
        "Fashion-MNIST",
        "fashion-mnist",
        FASHION_MNIST_URL,
        FASHION_MNIST_FILES,
        FASHION_MNIST_CLASSES,
        root,
        download,
        progress,
    )


def _find(folder: Path, name: str) -> Path | None:
    """The file `name` in folder, or its uncompressed twin; None when neither is there."""
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _manual_help(folder: Path, base_url: str, files) -> str:
    """Tell the user where the files go when they are not there and cannot be downloaded."""
    return (
        f"Download {', '.join(files)} from {base_url} by hand into {folder}, "
        f"or pass --data-dir / set NUMPROP_DATA_DIR to the folder that contains {folder.name}/."
    )


def _load(
    title: str,
    folder_name: str,
    base_url: str,
    files: dict[str, tuple[int | None, str]],
    class_names: list[str],
    root,
    download: bool,
    progress: bool,
) -> Dataset:
    """Locate (or download) the four files of one data set and read them into a Dataset."""
    root = resolve_data_dir(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"{title} data folder {root} is a file, not a folder")
    folder = root / folder_name
    if not folder.is_dir() and _find(root, TRAIN_IMAGES) is not None:
        folder = root  # the data set's folder itself was given
    found = {name: _find(folder, name) for name in files}
    missing = [name for name, p in found.items() if p is None]
    if missing:
        help_text = _manual_help(folder, base_url, missing)
        if not download:
            raise DataError(
                f"{title} not found: {', '.join(missing)} missing in {folder}. "
                f"Allow the download, or {help_text[0].lower()}{help_text[1:]}"
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create the data folder {folder}: {exc}") from exc
        for name in missing:
            size, md5 = files[name]
            target = folder / name
            try:
                # Streams to <name>.part, verifies size and MD5, then renames: the final
                # name only ever holds a verified file.
                fetch(
                    base_url + name, target, md5=md5, size=size, progress=progress, advice=help_text
                )
            except DataError as exc:
                raise DataError(f"{title}: {exc}") from exc
            found[name] = target
    train = _read_split(found[TRAIN_IMAGES], found[TRAIN_LABELS])
    test = _read_split(found[TEST_IMAGES], found[TEST_LABELS])
    return Dataset(*train, *test, list(class_names), name=folder_name, source={"data": folder_name})


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one split: images (N, 28, 28, 1) uint8 and labels (N,) int64, checked against each other."""
    images = read_idx_images(images_path)
    if images.shape[1:] != (IMAGE_ROWS, IMAGE_COLS):
        raise DataError(
            f"{images_path.name}: images are {images.shape[1]}x{images.shape[2]}, "
            f"expected {IMAGE_ROWS}x{IMAGE_COLS} [{images_path}]"
        )
    labels = read_idx_labels(labels_path)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path.name}: {labels.shape[0]:,} labels for {images.shape[0]:,} images "
            f"in {images_path.name} [{labels_path}]"
        )
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        r = int(bad[0])
        raise DataError(
            f"{labels_path.name}: bad label {int(labels[r])} at record {r} (labels must be "
            f"0..{NUM_CLASSES - 1}; {bad.size:,} bad record(s) in all) [{labels_path}]"
        )
    return images[..., np.newaxis], labels.astype(np.int64)
