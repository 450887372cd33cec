"""CIFAR-100 loading (official binary or python layout) with fine or coarse labels.

The binary archive (cifar-100-binary.tar.gz) extracts to cifar-100-binary/:
train.bin (50,000 records), test.bin (10,000), fine_label_names.txt (100 names)
and coarse_label_names.txt (20 superclass names). A record is 3,074 bytes: the
coarse label, the fine label, then the R, G and B planes of a 32x32 image (as
CIFAR-10's). The python layout, cifar-100-python/ (train, test, meta pickles),
is read through CIFAR-10's restricted unpickler. Downloads go through
``cifar10.fetch`` (resumable, size and MD5 checked) and the same guarded,
all-or-nothing extraction as CIFAR-10.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path, PurePosixPath

import numpy as np

from numprop.data.cifar10 import (
    IMAGE_SHAPE,
    PIXELS,
    _download_and_extract,
    _extract_binary_archive,
    _field,
    _read_meta_txt,
    _unpickle,
    resolve_data_dir,
)
from numprop.data.dataset import Dataset
from numprop.errors import ConfigError, DataError

__all__ = [
    "CIFAR100_URL",
    "CIFAR100_MD5",
    "CIFAR100_SIZE",
    "load_cifar100",
    "download_cifar100",
]

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
CIFAR100_MD5 = "03b5dce01913d631647c71ecec9e9cb8"
# The archive's size in bytes, as mirrors record it beside the MD5 (e.g. the git-annex
# key MD5E-s168513733--03b5dce01913d631647c71ecec9e9cb8 in datasets-mila/datasets--cifar100).
CIFAR100_SIZE = 168_513_733

BIN_FOLDER = "cifar-100-binary"
PY_FOLDER = "cifar-100-python"
TRAIN_FILE, TEST_FILE = "train.bin", "test.bin"
NAMES_FILES = {"fine": "fine_label_names.txt", "coarse": "coarse_label_names.txt"}
NUM_CLASSES = {"fine": 100, "coarse": 20}
RECORD_BYTES = 2 + PIXELS  # coarse label byte, fine label byte, then the R, G and B planes
TRAIN_RECORDS, TEST_RECORDS = 50_000, 10_000

_BLOCK_RECORDS = 10_000  # records read at a time: peak memory is the result plus ~30 MB


def load_cifar100(
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    labels: str = "fine",
    url: str = CIFAR100_URL,
    md5: str = CIFAR100_MD5,
    size: int | None = CIFAR100_SIZE,
    n_train: int = TRAIN_RECORDS,
    n_test: int = TEST_RECORDS,
) -> Dataset:
    """Load CIFAR-100 from `root`: a folder holding cifar-100-binary/ or -python/, or that folder.

    When neither layout is there and `download` is true, the binary archive is
    fetched from `url`, checked against `size` and `md5`, and extracted into
    `root` (the archive is kept). Both label bytes of every record are checked
    (fine 0..99, coarse 0..19), whichever `labels` asks for.

    Parameters
    ----------
    root : str or path-like, optional
        The data folder; ``resolve_data_dir(root)`` decides the default.
    download : bool, default True
        Download the archive (about 169 MB) when the data is not there.
    progress : bool, default True
        Show a download progress bar.
    labels : {"fine", "coarse"}, default "fine"
        The 100 classes, or the 20 superclasses.
    url, md5 : str
        Where the archive comes from, and its MD5 (32 hex digits).
    size : int or None
        The archive's size in bytes; None skips the size check.
    n_train, n_test : int, default 50_000 and 10_000
        The number of images train.bin and test.bin must hold (tests lower them).

    Returns
    -------
    Dataset
        Images (n, 32, 32, 3) uint8 in HWC order, labels (n,) int64, the 100
        fine or 20 coarse class names; ``name="cifar100"``, ``flip=True``.

    Raises
    ------
    DataError
        If the data is missing (and not downloaded), incomplete, corrupt, or
        the download fails: one line naming the file and the fault.
    ConfigError
        For a bad ``labels``, ``n_train``, ``n_test``, ``md5`` or ``size``.
    """
    if not isinstance(labels, str) or labels not in NUM_CLASSES:
        raise ConfigError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    for what, n in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{what} must be a positive integer, got {n!r}")
    root = resolve_data_dir(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"CIFAR-100 data folder {root} is a file, not a folder")
    folder, layout = _locate(root)
    if folder is None:
        if not download:
            raise DataError(
                f"CIFAR-100 not found in {root}: expected the folder {root / BIN_FOLDER} "
                f"({TRAIN_FILE}, {TEST_FILE}, {NAMES_FILES['fine']}, {NAMES_FILES['coarse']}) "
                f"or {root / PY_FOLDER}. Allow the download, put the files there, or pass "
                f"--data-dir / set NUMPROP_DATA_DIR to the folder that contains {BIN_FOLDER}/."
            )
        folder = download_cifar100(root, url=url, md5=md5, size=size, progress=progress)
        layout = "bin"
    if layout == "bin":
        class_names = _read_meta_txt(folder / NAMES_FILES[labels], NUM_CLASSES[labels])
        train = _read_bin_file(folder / TRAIN_FILE, n_train, labels)
        test = _read_bin_file(folder / TEST_FILE, n_test, labels)
    else:
        class_names = _read_meta_pickle(folder / "meta", labels)
        train = _read_py_file(folder / "train", n_train, labels)
        test = _read_py_file(folder / "test", n_test, labels)
    source = {"data": "cifar100"} if labels == "fine" else {"data": "cifar100", "labels": labels}
    return Dataset(*train, *test, class_names, name="cifar100", flip=True, source=source)


def _locate(root: Path) -> tuple[Path | None, str | None]:
    """Find which layout `root` holds: (folder, 'bin' | 'py') or (None, None)."""
    if (root / BIN_FOLDER).is_dir():
        return root / BIN_FOLDER, "bin"
    if (root / PY_FOLDER).is_dir():
        return root / PY_FOLDER, "py"
    if not root.is_dir():
        return None, None
    # The data set's folder itself may be given, under its official name or another one.
    if root.name == BIN_FOLDER or any((root / n).is_file() for n in NAMES_FILES.values()):
        return root, "bin"
    if root.name == PY_FOLDER or ((root / "meta").is_file() and (root / "train").is_file()):
        return root, "py"
    return None, None


# --------------------------------------------------------------------------- binary layout


def _read_bin_file(path: Path, n_records: int, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Read train.bin or test.bin: images (n, 32, 32, 3) uint8 and the chosen labels (n,) int64."""
    if not path.is_file():
        raise DataError(f"{path.name}: missing (expected it in {path.parent})")
    expected = n_records * RECORD_BYTES
    actual = path.stat().st_size
    if actual != expected:
        what = "truncated" if actual < expected else "too large"
        whole = actual % RECORD_BYTES == 0
        detail = "" if whole else f", not a whole number of {RECORD_BYTES:,}-byte records"
        raise DataError(
            f"{path.name}: {what}: {actual:,} bytes, expected {expected:,} "
            f"({n_records:,} records of {RECORD_BYTES:,} bytes){detail} [{path}]"
        )
    images = np.empty((n_records, *IMAGE_SHAPE), dtype=np.uint8)
    label_bytes = np.empty((n_records, 2), dtype=np.uint8)  # columns: coarse, fine
    try:
        with open(path, "rb") as f:
            for start in range(0, n_records, _BLOCK_RECORDS):
                k = min(_BLOCK_RECORDS, n_records - start)
                raw = np.fromfile(f, dtype=np.uint8, count=k * RECORD_BYTES)
                if raw.size != k * RECORD_BYTES:  # the file shrank after stat()
                    raise DataError(
                        f"{path.name}: truncated: record {start + raw.size // RECORD_BYTES:,} "
                        f"is cut off, expected {n_records:,} records [{path}]"
                    )
                records = raw.reshape(k, RECORD_BYTES)
                label_bytes[start : start + k] = records[:, :2]
                # Each record stores three 32x32 planes (R, G, B); HWC wants the channel last.
                np.copyto(
                    images[start : start + k],
                    records[:, 2:].reshape(k, 3, 32, 32).transpose(0, 2, 3, 1),
                )
    except OSError as exc:
        raise DataError(f"{path.name}: cannot be read: {exc} [{path}]") from exc
    _check_labels(path, label_bytes[:, 0], "coarse")
    _check_labels(path, label_bytes[:, 1], "fine")
    column = 1 if labels == "fine" else 0
    return images, label_bytes[:, column].astype(np.int64)


def _check_labels(path: Path, values: np.ndarray, kind: str) -> None:
    """Refuse `kind` ('fine' or 'coarse') labels outside 0..NUM_CLASSES[kind] - 1."""
    limit = NUM_CLASSES[kind]
    bad = np.flatnonzero((values < 0) | (values >= limit))
    if bad.size:
        r = int(bad[0])
        raise DataError(
            f"{path.name}: bad {kind} label {int(values[r])} at record {r} ({kind} labels must be "
            f"0..{limit - 1}; {bad.size:,} bad record(s) in all) [{path}]"
        )


# --------------------------------------------------------------------------- python layout


def _read_py_file(path: Path, n_records: int, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the pickled train or test file ('data', 'fine_labels', 'coarse_labels')."""
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path.name}: expected a dict, found {type(batch).__name__} [{path}]")
    data = _field(batch, "data")
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path.name}: 'data' is missing or not an array [{path}]")
    if data.dtype != np.uint8 or data.shape != (n_records, PIXELS):
        raise DataError(
            f"{path.name}: 'data' is {data.dtype} {data.shape}, expected uint8 "
            f"({n_records}, {PIXELS}) [{path}]"
        )
    found = {}
    for kind in ("coarse", "fine"):
        key = f"{kind}_labels"
        values = _field(batch, key)
        if values is None:
            raise DataError(f"{path.name}: '{key}' is missing [{path}]")
        try:
            values = np.asarray(values)
        except Exception as exc:
            raise DataError(
                f"{path.name}: '{key}' is not a list of integers ({exc}) [{path}]"
            ) from exc
        if values.shape != (n_records,) or values.dtype.kind not in "iu":
            raise DataError(
                f"{path.name}: '{key}' has {values.size} entries of type {values.dtype}, "
                f"expected {n_records} integers [{path}]"
            )
        _check_labels(path, values, kind)
        found[kind] = values.astype(np.int64)
    images = np.ascontiguousarray(data.reshape(n_records, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, found[labels]


def _read_meta_pickle(path: Path, labels: str) -> list[str]:
    """Read the fine or coarse class names from the pickled meta file."""
    key, n = f"{labels}_label_names", NUM_CLASSES[labels]
    meta = _unpickle(path)
    names = _field(meta, key) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != n:
        found = f"{len(names)} names" if isinstance(names, list) else "no such list"
        raise DataError(
            f"{path.name}: expected '{key}', a list of {n} names, found {found} [{path}]"
        )
    try:
        names = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in names]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: class names are not UTF-8 ({exc}) [{path}]") from exc
    if not all(v.strip() for v in names):
        raise DataError(f"{path.name}: '{key}' holds an empty name [{path}]")
    return [v.strip() for v in names]


# --------------------------------------------------------------------------- download


def download_cifar100(
    root: str | os.PathLike,
    url: str = CIFAR100_URL,
    md5: str = CIFAR100_MD5,
    size: int | None = CIFAR100_SIZE,
    progress: bool = True,
) -> Path:
    """Download and extract the binary CIFAR-100 archive into `root`; as ``download_cifar10``.

    The archive streams to `<archive>.part` (resumed when one exists), is
    checked against `size` (None skips it) and `md5`, then takes its name; it
    is kept after extraction, and one already there with the right MD5 is not
    fetched again. Only the four expected files are extracted, all or nothing.

    Returns
    -------
    Path
        ``root / "cifar-100-binary"``.

    Raises
    ------
    DataError
        If the folder cannot be created, the download fails (a cut-off part
        file is kept for the next run), the checksum or size does not match
        (the file is deleted), or the archive is not the expected one.
    ConfigError
        For a malformed ``md5`` or ``size``.
    """
    target = Path(root) / BIN_FOLDER
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "cifar-100-binary.tar.gz"
    advice = (
        f"Download {name} from {url} by hand and extract it so that {target} holds "
        f"{TRAIN_FILE}, {TEST_FILE}, {NAMES_FILES['fine']} and {NAMES_FILES['coarse']}, "
        f"or pass --data-dir / set NUMPROP_DATA_DIR to a folder that contains {BIN_FOLDER}/."
    )
    members = {f"{BIN_FOLDER}/{n}" for n in (TRAIN_FILE, TEST_FILE, *NAMES_FILES.values())}
    _download_and_extract(
        root,
        url,
        md5=md5,
        size=size,
        progress=progress,
        advice=advice,
        default_name="cifar-100-binary.tar.gz",
        extract=lambda archive, root: _extract_binary_archive(
            archive, root, folder=BIN_FOLDER, members=members, title="CIFAR-100"
        ),
    )
    return target
