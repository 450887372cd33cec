"""CIFAR-10 loading (official binary or python layout) and a resumable, checked download.

The binary layout is read with NumPy alone; the python layout goes through a
restricted unpickler that can rebuild NumPy arrays and plain containers but
nothing else, so a tampered pickle cannot run code.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

import numpy as np

from numprop import config
from numprop.data.dataset import Dataset
from numprop.errors import ConfigError, DataError

__all__ = [
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "CIFAR10_SIZE",
    "Cifar10",
    "resolve_data_dir",
    "load_cifar10",
    "download_cifar10",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_SIZE = 170_052_171

BIN_FOLDER = "cifar-10-batches-bin"
PY_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3  # 3,072 bytes of pixels per image
RECORD_BYTES = 1 + PIXELS  # one label byte, then the R, G and B planes
RECORDS_PER_BATCH = 10_000

_CHUNK = 1 << 20  # download and hashing block: 1 MiB
_TIMEOUT_S = 60.0  # per socket operation, not for the whole download


# What CIFAR-10 loads into, under the name older code imports.
Cifar10 = Dataset


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data folder: the argument, else the ``data_dir`` setting, else the cache.

    The setting is ``numprop.config``'s ``data_dir`` (from $NUMPROP_DATA_DIR);
    the cache is ~/.cache/numprop. The folder need not exist.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Used when given and not empty; ``~`` is expanded.

    Returns
    -------
    Path
    """
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    setting = config.current().data_dir
    if setting:
        return Path(setting).expanduser()
    return Path.home() / ".cache" / "numprop"


def load_cifar10(
    root: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    size: int | None = CIFAR10_SIZE,
    records_per_batch: int = RECORDS_PER_BATCH,
) -> Dataset:
    """Load CIFAR-10 from `root`: a folder holding cifar-10-batches-bin/ or -py/, or that folder.

    When neither layout is there and `download` is true, the binary archive is
    fetched from `url`, checked against `size` and `md5`, and extracted into
    `root`. `records_per_batch` is the number of images each batch file must
    hold (10,000 in the real data set; tests lower it).

    Parameters
    ----------
    root : str or path-like, optional
        The data folder; ``resolve_data_dir(root)`` decides the default.
    download : bool, default True
        Download the archive (about 170 MB) when the data is not there.
    progress : bool, default True
        Show a download progress bar.
    url, md5 : str
        Where the archive comes from, and its MD5 (32 hex digits).
    size : int or None
        The archive's size in bytes; None skips the size check.
    records_per_batch : int, default 10_000
        Images per batch file, >= 1.

    Returns
    -------
    Dataset
        ``5 * records_per_batch`` training and ``records_per_batch`` test images.

    Raises
    ------
    DataError
        If the data is missing (and not downloaded), incomplete, corrupt, or
        the download fails.
    ConfigError
        For a bad ``records_per_batch``, ``md5`` or ``size``.
    """
    root = resolve_data_dir(root)
    if (
        isinstance(records_per_batch, bool)
        or not isinstance(records_per_batch, int)
        or records_per_batch < 1
    ):
        raise ConfigError(
            f"records_per_batch must be a positive integer, got {records_per_batch!r}"
        )
    if root.exists() and not root.is_dir():
        raise DataError(f"CIFAR-10 data folder {root} is a file, not a folder")
    folder, layout = _locate(root)
    if folder is None:
        if not download:
            raise DataError(
                f"CIFAR-10 not found in {root}: expected the folder {root / BIN_FOLDER} "
                f"(data_batch_1.bin .. data_batch_5.bin, test_batch.bin, batches.meta.txt) "
                f"or {root / PY_FOLDER}. Allow the download, put the files there, or pass "
                f"--data-dir / set NUMPROP_DATA_DIR to the folder that contains {BIN_FOLDER}/."
            )
        folder = download_cifar10(root, url=url, md5=md5, size=size, progress=progress)
        layout = "bin"
    if layout == "bin":
        return _load_binary(folder, records_per_batch)
    return _load_python(folder, records_per_batch)


def _locate(root: Path) -> tuple[Path | None, str | None]:
    """Find which layout `root` holds: ('bin' | 'py', batches folder) or (None, None)."""
    if (root / BIN_FOLDER).is_dir():
        return root / BIN_FOLDER, "bin"
    if (root / PY_FOLDER).is_dir():
        return root / PY_FOLDER, "py"
    # The batches folder itself may be given, under its official name or another one.
    if (
        root.name == BIN_FOLDER
        or (root / "data_batch_1.bin").is_file()
        or (root / "batches.meta.txt").is_file()
    ):
        return (root, "bin") if root.is_dir() else (None, None)
    if (
        root.name == PY_FOLDER
        or (root / "data_batch_1").is_file()
        or (root / "batches.meta").is_file()
    ):
        return (root, "py") if root.is_dir() else (None, None)
    return None, None


# --------------------------------------------------------------------------- binary layout


def _load_batches(folder: Path, n: int, read_batch, suffix: str, class_names: list[str]) -> Dataset:
    """Read the five training batches and the test batch with `read_batch` into a Dataset.

    Fills preallocated arrays batch by batch, so peak memory is the final size plus one batch.
    """
    train_images = np.empty((len(TRAIN_BATCHES) * n, *IMAGE_SHAPE), dtype=np.uint8)
    train_labels = np.empty(len(TRAIN_BATCHES) * n, dtype=np.int64)
    for i, name in enumerate(TRAIN_BATCHES):
        read_batch(
            folder / f"{name}{suffix}",
            n,
            train_images[i * n : (i + 1) * n],
            train_labels[i * n : (i + 1) * n],
        )
    test_images = np.empty((n, *IMAGE_SHAPE), dtype=np.uint8)
    test_labels = np.empty(n, dtype=np.int64)
    read_batch(folder / f"{TEST_BATCH}{suffix}", n, test_images, test_labels)
    return Dataset(
        train_images,
        train_labels,
        test_images,
        test_labels,
        class_names,
        name="cifar10",
        flip=True,
        source={"data": "cifar10"},
    )


def _load_binary(folder: Path, records_per_batch: int) -> Dataset:
    """Read the official binary layout from `folder` into a Dataset."""
    class_names = _read_meta_txt(folder / "batches.meta.txt")
    return _load_batches(folder, records_per_batch, _read_bin_batch, ".bin", class_names)


def _read_bin_batch(
    path: Path, n_records: int, images_out: np.ndarray, labels_out: np.ndarray
) -> None:
    """Read one binary batch file of `n_records` records into images_out and labels_out.

    images_out is (n, 32, 32, 3) uint8, labels_out (n,) int64.
    """
    if not path.is_file():
        raise DataError(f"{path.name}: missing (expected it in {path.parent})")
    expected = n_records * RECORD_BYTES
    actual = path.stat().st_size
    if actual != expected:
        whole = actual % RECORD_BYTES == 0
        what = "truncated" if actual < expected else "too large"
        detail = "" if whole else f", not a whole number of {RECORD_BYTES:,}-byte records"
        raise DataError(
            f"{path.name}: {what}: {actual:,} bytes, expected {expected:,} "
            f"({n_records:,} records of {RECORD_BYTES:,} bytes){detail} [{path}]"
        )
    try:
        raw = np.fromfile(path, dtype=np.uint8, count=expected)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path.name}: cannot be read: {exc} [{path}]") from exc
    if raw.size != expected:  # the file shrank between stat() and read
        raise DataError(
            f"{path.name}: truncated: read {raw.size:,} bytes, expected {expected:,} [{path}]"
        )
    records = raw.reshape(n_records, RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        r = int(bad[0])
        raise DataError(
            f"{path.name}: bad label {int(labels[r])} at record {r} (labels must be 0..{NUM_CLASSES - 1}; "
            f"{bad.size:,} bad record(s) in all) [{path}]"
        )
    labels_out[...] = labels
    # Each record stores three 32x32 planes (R, G, B); HWC wants the channel last.
    np.copyto(images_out, records[:, 1:].reshape(n_records, 3, 32, 32).transpose(0, 2, 3, 1))


def _read_meta_txt(path: Path, n_classes: int = NUM_CLASSES) -> list[str]:
    """Read `n_classes` class names, one a line, from a names file (CIFAR-10: batches.meta.txt)."""
    if not path.is_file():
        raise DataError(f"{path.name}: missing (expected it in {path.parent})")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(f"{path.name}: cannot be read: {exc} [{path}]") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: not UTF-8 text ({exc}) [{path}]") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != n_classes:
        raise DataError(
            f"{path.name}: expected {n_classes} class names, one a line, found {len(names)} [{path}]"
        )
    return names


# --------------------------------------------------------------------------- python layout


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 pickle needs: NumPy array and dtype reconstruction."""
    try:  # NumPy >= 2 (and 1.26, which ships numpy._core for forward compatibility)
        from numpy._core import multiarray, numeric
    except ImportError:  # pragma: no cover - older NumPy
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocol <= 2.
        ("_codecs", "encode"): __import__("_codecs").encode,
    }
    # Pickles name the module where NumPy kept these when they were written: numpy.core before 2.0.
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds NumPy arrays and builtin containers, refusing other globals."""

    _allowed = _numpy_pickle_globals()

    def __init__(self, file, source: str):
        # The official pickles come from Python 2: 'bytes' keeps their str objects as bytes.
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str):
        """The allowed global ``module.name``; a DataError for any other."""
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._source}: the pickle tries to load '{module}.{name}' and is refused "
                f"(only NumPy arrays and plain data are allowed)"
            ) from None


def _unpickle(path: Path) -> object:
    """Unpickle `path` with the restricted unpickler, mapping every failure to DataError."""
    if not path.is_file():
        raise DataError(f"{path.name}: missing (expected it in {path.parent})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path.name}: cannot be read: {exc} [{path}]") from exc
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path.name).load()
    except DataError:
        raise
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DataError(
            f"{path.name}: not a valid pickle: {type(exc).__name__}: {exc} [{path}]"
        ) from exc


def _field(d: dict, key: str):
    """Look `key` up as bytes (Python 2 pickles) or str (Python 3 pickles)."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _load_python(folder: Path, records_per_batch: int) -> Dataset:
    """Read the official python (pickle) layout from `folder` into a Dataset."""
    class_names = _read_meta_pickle(folder / "batches.meta")
    return _load_batches(folder, records_per_batch, _read_py_batch, "", class_names)


def _read_py_batch(
    path: Path, n_records: int, images_out: np.ndarray, labels_out: np.ndarray
) -> None:
    """Read one pickled batch ('data' (n, 3072) uint8 and 'labels') into the outputs."""
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path.name}: expected a dict, found {type(batch).__name__} [{path}]")
    data, labels = _field(batch, "data"), _field(batch, "labels")
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path.name}: 'data' is missing or not an array [{path}]")
    if data.dtype != np.uint8 or data.shape != (n_records, PIXELS):
        raise DataError(
            f"{path.name}: 'data' is {data.dtype} {data.shape}, expected uint8 ({n_records}, {PIXELS}) [{path}]"
        )
    if labels is None:
        raise DataError(f"{path.name}: 'labels' is missing [{path}]")
    try:
        labels = np.asarray(labels)
    except Exception as exc:
        raise DataError(
            f"{path.name}: 'labels' is not a list of integers ({exc}) [{path}]"
        ) from exc
    if labels.shape != (n_records,) or labels.dtype.kind not in "iu":
        raise DataError(
            f"{path.name}: 'labels' has {labels.size} entries of type {labels.dtype}, "
            f"expected {n_records} integers [{path}]"
        )
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        r = int(bad[0])
        raise DataError(f"{path.name}: bad label {int(labels[r])} at record {r} [{path}]")
    labels_out[...] = labels
    np.copyto(images_out, data.reshape(n_records, 3, 32, 32).transpose(0, 2, 3, 1))


def _read_meta_pickle(path: Path) -> list[str]:
    """Read the class names from the pickled batches.meta ('label_names')."""
    meta = _unpickle(path)
    names = _field(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DataError(
            f"{path.name}: expected 'label_names', a list of {NUM_CLASSES} names [{path}]"
        )
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name}: class names are not UTF-8 ({exc}) [{path}]") from exc


# --------------------------------------------------------------------------- download


def download_cifar10(
    root: str | os.PathLike,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    size: int | None = CIFAR10_SIZE,
    progress: bool = True,
) -> Path:
    """Download and extract the binary CIFAR-10 archive into `root`.

    The archive is streamed to `<archive>.part` (resumed with an HTTP Range
    request when a part file exists), checked against `size` (None skips the
    size check) and `md5`, then renamed into place. It is kept after extraction
    so that a deleted batches folder can be rebuilt without the network.
    An archive already in `root` with the right MD5 is not fetched again.

    Parameters
    ----------
    root : str or path-like
        The data folder, created if needed.
    url : str
        Where the archive comes from.
    md5 : str
        Its MD5, 32 hex digits.
    size : int or None
        Its size in bytes; None skips the size check.
    progress : bool, default True
        Show a progress bar.

    Returns
    -------
    Path
        ``root / "cifar-10-batches-bin"``.

    Raises
    ------
    DataError
        If the folder cannot be created, the download fails or is cut off
        (the part file is kept for the next run), the checksum does not match
        (the file is deleted), or the archive is not the expected one.
    ConfigError
        For a malformed ``md5`` or ``size``.
    """
    target = Path(root) / BIN_FOLDER
    _download_and_extract(
        root,
        url,
        md5=md5,
        size=size,
        progress=progress,
        advice=_help_text(target),
        default_name="cifar-10-binary.tar.gz",
        extract=_extract_binary_archive,
    )
    return target


def _download_and_extract(
    root, url: str, *, md5, size, progress: bool, advice: str, default_name: str, extract
) -> None:
    """Check md5 and size, fetch the archive into `root` unless a good copy is there, extract it.

    What the CIFAR-10 and CIFAR-100 downloads share: ``extract(archive, root)``
    does the data set's own guarded extraction.
    """
    root = Path(root)
    if (
        not isinstance(md5, str)
        or len(md5) != 32
        or any(c not in "0123456789abcdefABCDEF" for c in md5)
    ):
        raise ConfigError(f"md5 must be a 32-digit hex string, got {md5!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ConfigError(f"size must be a positive integer or None, got {size!r}")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data folder {root}: {exc}") from exc
    archive = root / (PurePosixPath(urllib.parse.urlparse(url).path).name or default_name)
    if archive.is_file() and _file_md5(archive) != md5.lower():
        archive.unlink()  # a stale or damaged archive from an earlier run; fetch it again
    if not archive.is_file():
        fetch(url, archive, md5=md5, size=size, progress=progress, advice=advice)
    extract(archive, root)


def _help_text(target: Path) -> str:
    """Tell the user where the files go when the download cannot be done."""
    return (
        f"Download cifar-10-binary.tar.gz by hand and extract it so that {target} holds "
        f"data_batch_1.bin .. data_batch_5.bin, test_batch.bin and batches.meta.txt, "
        f"or pass --data-dir / set NUMPROP_DATA_DIR to a folder that contains {BIN_FOLDER}/."
    )


def fetch(
    url: str, archive: Path, *, md5: str, size: int | None, progress: bool, advice: str
) -> None:
    """Stream `url` into archive.part (resuming if possible), verify it, rename it to `archive`.

    Every data set downloads through here. ``advice`` ends each error message:
    what the user can do instead (where to put the files by hand).
    """
    part = archive.with_name(archive.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()  # cannot be a prefix of the right file
        have = 0
    if size is None or have < size:
        _stream(url, part, have, size, progress, advice)
    _verify(part, md5=md5, size=size)
    os.replace(part, archive)  # atomic: the final name only ever holds a verified archive


def _stream(url: str, part: Path, have: int, size: int | None, progress: bool, advice: str) -> None:
    """Download url into `part`, asking for the bytes after the first `have` ones already there."""
    request = urllib.request.Request(url, headers={"User-Agent": "numprop"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our part file does not fit the server's file: start over
            exc.close()
            part.unlink(missing_ok=True)
            return _stream(url, part, 0, size, progress, advice)
        raise DataError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}. {advice}"
        ) from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"download of {url} failed: {reason}. {advice}") from exc

    with response:
        status = getattr(response, "status", 200)
        if have and status == 206 and _content_range_start(response) != have:
            # Some other slice of the file: appending it would corrupt the part file.
            response.close()
            part.unlink(missing_ok=True)
            return _stream(url, part, 0, size, progress, advice)
        if have and status == 206:
            mode = "ab"
        else:  # the server ignored the Range header (200): restart from byte 0
            mode, have = "wb", 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None and length.isdigit() else size

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=expected,
                initial=have,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
            )
        got = have
        try:
            with open(part, mode) as f:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        except (
            TimeoutError,
            http.client.IncompleteRead,
            http.client.HTTPException,
            OSError,
        ) as exc:
            raise DataError(
                f"download of {url} was cut off after {got:,} bytes ({type(exc).__name__}: {exc}); "
                f"the partial file {part} is kept and the next run resumes it. {advice}"
            ) from exc
        finally:
            if bar is not None:
                bar.close()
    if expected is not None and got < expected:
        # http.client returns a short body without raising when the server closes early.
        raise DataError(
            f"download of {url} was cut off after {got:,} of {expected:,} bytes; the partial file "
            f"{part} is kept and the next run resumes it. {advice}"
        )


def _content_range_start(response) -> int | None:
    """First byte offset of a 206 answer, from 'Content-Range: bytes START-END/TOTAL'."""
    value = response.headers.get("Content-Range", "")
    try:
        unit, span = value.split(" ", 1)
        return int(span.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _verify(part: Path, *, md5: str, size: int | None) -> None:
    """Check the downloaded file's size and MD5; on a mismatch delete it and raise DataError."""
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DataError(
            f"{part.name}: downloaded {actual_size:,} bytes, expected {size:,}; the file was deleted, run again"
        )
    actual = _file_md5(part)
    if actual != md5.lower():
        part.unlink()
        raise DataError(
            f"{part.name}: checksum mismatch: expected MD5 {md5.lower()}, got {actual}; "
            f"the file was deleted, run again"
        )


def _file_md5(path: Path) -> str:
    """MD5 hex digest of a file, read in blocks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _expected_members() -> set[str]:
    """Archive paths of the files the loader needs."""
    names = [f"{b}.bin" for b in (*TRAIN_BATCHES, TEST_BATCH)] + ["batches.meta.txt"]
    return {f"{BIN_FOLDER}/{n}" for n in names}


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse members that could write outside the target folder.

    That is absolute paths, '..', links and devices.
    """
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{archive.name}: refusing unsafe archive member {name!r}: absolute path")
    if ".." in parts:
        raise DataError(f"{archive.name}: refusing unsafe archive member {name!r}: '..' in path")
    if member.issym() or member.islnk():
        raise DataError(f"{archive.name}: refusing unsafe archive member {name!r}: link")
    if not (member.isreg() or member.isdir()):
        raise DataError(
            f"{archive.name}: refusing unsafe archive member {name!r}: not a regular file"
        )


def _extract_binary_archive(
    archive: Path,
    root: Path,
    *,
    folder: str = BIN_FOLDER,
    members: set[str] | None = None,
    title: str = "CIFAR-10",
) -> None:
    """Extract only the expected files into root/`folder`, all or nothing.

    `members` are the archive paths to extract (default: CIFAR-10's batch files);
    `title` names the data set in messages. CIFAR-100 passes its own.
    """
    target = root / folder
    wanted = _expected_members() if members is None else set(members)
    # Extract into a hidden temporary folder and rename it at the end, so that an
    # interrupted extraction never leaves a folder that looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".{title.lower()}-extract-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(m, archive)
                found = {
                    m.name.removeprefix("./"): m
                    for m in members
                    if m.name.removeprefix("./") in wanted
                }
                missing = sorted(wanted - found.keys())
                if missing:
                    raise DataError(
                        f"{archive.name}: not the {title} binary archive: missing {', '.join(missing)}"
                    )
                for member_name, m in found.items():
                    if not m.isreg():
                        raise DataError(f"{archive.name}: {member_name} is not a regular file")
                    src = tar.extractfile(m)
                    # Write to a name we choose: the member's path is never used as a path.
                    with src, open(tmp / PurePosixPath(member_name).name, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
        except DataError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise DataError(
                f"{archive.name}: cannot extract the archive: {exc} [{archive}]"
            ) from exc
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise DataError(f"cannot move the extracted files to {target}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
