"""A user's own data: .npz arrays, .csv tables and folders of images, read into a ``Dataset``.

These back ``numprop train --data PATH``, ``numprop evaluate MODEL --data PATH``
(``load_data``) and ``numprop predict MODEL FILE...`` (``read_inputs``).

Every reader checks what it reads and raises ``DataError`` (or ``ConfigError``
for a missing option) with one line that names the file, never an exception
from deep inside NumPy, csv or Pillow. Labels of any type (ints, strings) become
class indices with ``encode_labels``; their text is kept as the class names.

- **.npz**: arrays ``X`` and ``y``, optionally ``X_test`` and ``y_test``. ``X`` is
  table rows (N, D) of numbers, or uint8 images (N, H, W) or (N, H, W, C) with
  C of 1 or 3. Read with ``allow_pickle=False``: nothing is ever unpickled.
- **.csv**: comma-separated with a header row; the ``target`` column holds the
  labels, every other column is a numeric feature.
- **an image folder**: one subfolder per class (the folder names are the class
  names), or two folders ``train`` and ``test`` that each hold class folders.
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from numprop.data.dataset import Dataset, class_names_of, encode_labels
from numprop.data.images import read_images
from numprop.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "load_data",
    "load_npz",
    "load_csv",
    "load_image_folder",
    "read_inputs",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# Cells that spreadsheets and pandas write for "no value": reported as missing, not as text.
_MISSING = {"", "na", "n/a", "nan", "null", "none", "?", "-"}
_KINDS = "a .npz file, a .csv file or a folder of images (one subfolder per class)"


# ----------------------------------------------------------------------- dispatch


def load_data(
    path: str | os.PathLike,
    *,
    target: str | None = None,
    image_size: int = 32,
    class_names: list[str] | None = None,
) -> Dataset:
    """Load a user's data set from a folder of images, a .npz or a .csv file.

    Parameters
    ----------
    path : str or path-like
        A folder (images, one subfolder per class), a ``.npz`` or a ``.csv`` file.
    target : str, optional
        The label column of a .csv (needed there; ignored for other kinds).
    image_size : int
        The side images in a folder are resized to (ignored for other kinds).
    class_names : list of str, optional
        A saved model's classes, to evaluate against: labels are encoded with
        them and must be among them.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        For a missing path, an unknown kind of file, or anything wrong inside it.
    ConfigError
        For a .csv without ``target``, or an invalid ``image_size``.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        return load_image_folder(path, image_size=image_size, class_names=class_names)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path, class_names=class_names)
    if suffix == ".csv":
        return load_csv(path, target, class_names=class_names)
    raise DataError(
        f"{path}: unknown kind of data ({suffix or 'no suffix'}); --data takes {_KINDS}"
    )


# ----------------------------------------------------------------------- .npz


def load_npz(path: str | os.PathLike, *, class_names: list[str] | None = None) -> Dataset:
    """Load arrays ``X``, ``y`` (and optionally ``X_test``, ``y_test``) from a .npz file.

    Parameters
    ----------
    path : str or path-like
        A file written by ``np.savez`` or ``np.savez_compressed``.
    class_names : list of str, optional
        A saved model's classes; by default the sorted distinct labels of ``y``.

    Returns
    -------
    Dataset
        Rows (N, D) float32, or images (N, H, W, C) uint8 with C of 1 or 3.

    Raises
    ------
    DataError
        For a file that is not a readable .npz, a missing array, arrays of
        Python objects, shapes or lengths that disagree, values that are not
        finite, or test labels naming a class the training labels lack.
    """
    path = Path(path)
    arrays = _read_npz(path, ("X", "y", "X_test", "y_test"), required=("X", "y"))
    if ("X_test" in arrays) != ("y_test" in arrays):
        have, lack = ("X_test", "y_test") if "X_test" in arrays else ("y_test", "X_test")
        raise DataError(f"{path}: holds {have} but not {lack}: give both or neither")

    train_x = _features(path, "X", arrays["X"])
    train_y, names = _labels(path, "y", arrays["y"], len(train_x), class_names)
    if len(train_x) < 2:
        raise DataError(f"{path}: X holds {len(train_x)} example(s); at least 2 are needed")

    test_x = test_y = None
    if "X_test" in arrays:
        test_x = _features(path, "X_test", arrays["X_test"])
        if test_x.shape[1:] != train_x.shape[1:]:
            raise DataError(
                f"{path}: X_test examples have shape {arrays['X_test'].shape[1:]}, "
                f"X's have {arrays['X'].shape[1:]}: they must match"
            )
        if len(test_x) < 1:
            raise DataError(f"{path}: X_test is empty")
        if class_names is None:
            _check_known(path, "y_test", arrays["y_test"], names)
        test_y, _ = _labels(path, "y_test", arrays["y_test"], len(test_x), names)
    return Dataset(
        train_x,
        train_y,
        test_x,
        test_y,
        names,
        name=path.name,
        flip=False,
        source={"data": str(path)},
    )


def _read_npz(path: Path, wanted: Iterable[str], required: Iterable[str] = ()) -> dict:
    """The arrays of ``wanted`` that the .npz at ``path`` holds; DataError for a bad file."""
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path}: not a .npz file (the zip archive numpy.savez writes), or a truncated one"
        )
    out = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            present = list(npz.files)
            missing = [name for name in required if name not in present]
            if missing:
                raise DataError(
                    f"{path}: no array {' or '.join(repr(m) for m in missing)}; it holds "
                    f"{', '.join(repr(p) for p in present) or 'no arrays'} "
                    f"(expected 'X' and 'y', optionally 'X_test' and 'y_test')"
                )
            for name in wanted:
                if name in present:
                    out[name] = _read_member(path, npz, name)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    return out


def _read_member(path: Path, npz, name: str) -> np.ndarray:
    """One array of an open .npz; DataError for object arrays or a corrupt member."""
    try:
        return npz[name]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            example = (
                f"strings or integers (e.g. {name}.astype(str))"
                if name.startswith("y")
                else f"numbers (e.g. {name}.astype(np.float32))"
            )
            raise DataError(
                f"{path}: array {name!r} holds Python objects (dtype object), which numprop "
                f"does not unpickle: save it as {example}"
            ) from None
        raise DataError(f"{path}: array {name!r} is corrupt ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: array {name!r} is corrupt ({exc})") from None
    except MemoryError:
        raise DataError(f"{path}: array {name!r} is too large to load") from None


def _features(path: Path, name: str, a: np.ndarray) -> np.ndarray:
    """An .npz's X as rows (N, D) float32 or images (N, H, W, C) uint8; DataError otherwise."""
    accepted = (
        "expected rows (N, D) of numbers, or uint8 images (N, H, W) or (N, H, W, C) with C 1 or 3"
    )
    if a.ndim == 2 and a.dtype.kind in "fiub":
        if a.shape[1] == 0:
            raise DataError(f"{path}: {name} has shape {a.shape}: rows with no columns")
        return _finite_rows(a, f"{path}: {name}")
    if a.dtype == np.uint8 and (a.ndim == 3 or (a.ndim == 4 and a.shape[3] in (1, 3))):
        if 0 in a.shape[1:3]:
            raise DataError(f"{path}: {name} has shape {a.shape}: empty images")
        return a[..., None] if a.ndim == 3 else a
    if a.ndim in (3, 4) and a.dtype.kind in "fiub" and a.dtype != np.uint8:
        raise DataError(
            f"{path}: {name} has shape {a.shape} and dtype {a.dtype}: images must be uint8 "
            f"(0-255); {accepted}"
        )
    raise DataError(f"{path}: {name} has shape {a.shape} and dtype {a.dtype}; {accepted}")


def _finite_rows(a: np.ndarray, where: str) -> np.ndarray:
    """Rows of numbers as float32, checked finite before and after the conversion."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        row, col = np.argwhere(~np.isfinite(a))[0]
        raise DataError(f"{where}: holds NaN or infinite values (first at [{row}, {col}])")
    with np.errstate(over="ignore"):
        out = a.astype(np.float32)
    if not np.isfinite(out).all():
        row, col = np.argwhere(~np.isfinite(out))[0]
        raise DataError(
            f"{where}: value {a[row, col].item()!r} at [{row}, {col}] is too large for float32"
        )
    return out


def _labels(path: Path, name: str, y: np.ndarray, n: int, class_names) -> tuple:
    """Labels (n,) encoded as class indices; DataError naming the file and the array."""
    if y.ndim != 1:
        raise DataError(f"{path}: {name} must be one label per example (1-D), got shape {y.shape}")
    if len(y) != n:
        x = "X" if name == "y" else "X_test"
        raise DataError(f"{path}: {name} holds {len(y)} labels but {x} holds {n} examples")
    try:
        return encode_labels(y, class_names)
    except DataError as exc:
        raise DataError(f"{path}: {name}: {exc}") from None


def _check_known(path: Path, name: str, labels, train_names: list[str]) -> None:
    """DataError naming the test classes that training never saw."""
    try:
        names = class_names_of(labels)
    except DataError as exc:
        raise DataError(f"{path}: {name}: {exc}") from None
    unknown = [n for n in names if n not in set(train_names)]
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(
            f"{path}: {name} has class(es) {shown} that the training labels do not have "
            f"(training classes: {', '.join(train_names[:10])}"
            f"{' ...' if len(train_names) > 10 else ''})"
        )


# ----------------------------------------------------------------------- .csv


def load_csv(
    path: str | os.PathLike, target: str | None, *, class_names: list[str] | None = None
) -> Dataset:
    """Load a comma-separated table: a header row, a label column ``target``, numeric features.

    Parameters
    ----------
    path : str or path-like
        A UTF-8 .csv file (a byte-order mark is fine) whose first row names the columns.
    target : str
        The column that holds the labels (ints or strings); every other column
        is a feature and must hold numbers.
    class_names : list of str, optional
        A saved model's classes; by default the sorted distinct labels (integer
        labels sort as numbers).

    Returns
    -------
    Dataset
        Rows (N, D) float32 in the file's column order, no test split;
        ``source["columns"]`` names the D feature columns.

    Raises
    ------
    ConfigError
        When ``target`` is None.
    DataError
        For a missing header, an unknown target, rows of the wrong length,
        empty or non-numeric feature cells, or fewer than 2 rows.
    """
    path = Path(path)
    header, rows, numbers = _read_table(path)
    if target is None:
        raise ConfigError(
            f"--target COLUMN is needed for a .csv: which column holds the labels? "
            f"({path.name} has columns {_show_columns(header)})"
        )
    if target not in header:
        hint = _delimiter_hint(header)
        raise DataError(
            f"{path}: no column {target!r}; the columns are {_show_columns(header)}{hint}"
        )
    t = header.index(target)
    columns = [c for i, c in enumerate(header) if i != t]
    if not columns:
        raise DataError(f"{path}: no feature columns besides the target {target!r}")
    if len(rows) < 2:
        raise DataError(f"{path}: {len(rows)} data row(s) under the header; at least 2 are needed")

    x = _numeric(path, header, rows, numbers, [i for i in range(len(header)) if i != t])
    labels = [row[t] for row in rows]
    for label, number in zip(labels, numbers):
        if label.lower() in _MISSING:
            raise DataError(
                f"{path}: row {number}, label column {target!r}: missing label ({label!r})"
            )
    y, names = _labels(path, f"column {target!r}", _label_values(labels), len(x), class_names)
    return Dataset(
        x,
        y,
        None,
        None,
        names,
        name=path.name,
        flip=False,
        source={"data": str(path), "target": target, "columns": columns},
    )


def _read_table(path: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """A .csv's header, data rows (fields stripped) and each row's spreadsheet number.

    Row numbers count as a spreadsheet does: the header is row 1. Blank lines are
    skipped (but counted).
    """
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    rows, numbers = [], []
    number = 0
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for number, row in enumerate(csv.reader(f, strict=True), start=1):
                if not row:
                    continue
                rows.append([field.strip() for field in row])
                numbers.append(number)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: row {number + 1}: not valid CSV ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not rows:
        raise DataError(f"{path}: empty file; expected a header row and data rows")
    header, rows, numbers = rows[0], rows[1:], numbers[1:]
    if all(_is_number(field) for field in header):
        raise DataError(
            f"{path}: the first row must be a header naming the columns; "
            f"it holds numbers ({', '.join(header[:5])}{' ...' if len(header) > 5 else ''})"
        )
    for i, name in enumerate(header):
        if not name:
            raise DataError(
                f"{path}: column {i + 1} has no name in the header row "
                "(an unnamed index column? write the file with index=False)"
            )
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: the header names column {name!r} twice")
        seen.add(name)
    for row, number in zip(rows, numbers):
        if len(row) != len(header):
            raise DataError(
                f"{path}: row {number} has {len(row)} field(s); the header has {len(header)}"
            )
    return header, rows, numbers


def _numeric(
    path: Path, header: list[str], rows: list[list[str]], numbers: list[int], cols: list[int]
) -> np.ndarray:
    """The cells of columns ``cols`` as float32 (N, len(cols)); DataError at the first bad cell."""
    cells = [[row[j] for j in cols] for row in rows]
    try:
        values = np.array(cells, dtype=np.float64).reshape(len(rows), len(cols))
        bad = None if np.isfinite(values).all() else np.argwhere(~np.isfinite(values))[0]
    except (ValueError, OverflowError):
        # Find the first bad cell, row by row, to name it.
        bad = next(
            (
                (r, c)
                for r, row in enumerate(cells)
                for c, v in enumerate(row)
                if not _is_finite_number(v)
            ),
            None,
        )
        if bad is None:  # NumPy refused a number float() reads: convert one by one
            values = np.array([[float(v) for v in row] for row in cells], dtype=np.float64)
    if bad is not None:
        r, c = bad
        cell, name, number = cells[r][c], header[cols[c]], numbers[r]
        if cell.lower() in _MISSING:
            what = "an empty cell" if not cell else f"a missing value ({cell!r})"
            raise DataError(
                f"{path}: row {number}, column {name!r}: {what}; numprop needs every value "
                "(fill in or drop the rows with missing values)"
            )
        if _is_number(cell):
            raise DataError(f"{path}: row {number}, column {name!r}: {cell!r} is not finite")
        raise DataError(
            f"{path}: column {name!r} is not numeric: row {number} holds {cell!r} "
            "(drop the column, or encode it as numbers)"
        )
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    if not np.isfinite(out).all():
        r, c = np.argwhere(~np.isfinite(out))[0]
        raise DataError(
            f"{path}: row {numbers[r]}, column {header[cols[c]]!r}: {cells[r][c]} "
            "is too large for float32"
        )
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _is_finite_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _label_values(labels: list[str]) -> np.ndarray:
    """Label texts as ints when every one is an integer written plainly ("3", "-1"), else strings.

    Integers then sort as numbers (2 before 10) and their names stay the file's text.
    """
    try:
        ints = [int(s) for s in labels]
    except ValueError:
        return np.array(labels, dtype=str)
    if all(str(i) == s for i, s in zip(ints, labels)):
        try:
            return np.array(ints, dtype=np.int64)
        except OverflowError:
            pass
    return np.array(labels, dtype=str)


def _show_columns(header: list[str]) -> str:
    shown = ", ".join(repr(c) for c in header[:20])
    return shown + (f" ... ({len(header)} in all)" if len(header) > 20 else "")


def _delimiter_hint(header: list[str]) -> str:
    if len(header) == 1 and any(d in header[0] for d in ";\t|"):
        return " (numprop reads comma-separated files; this one seems to use another separator)"
    return ""


# ----------------------------------------------------------------------- image folders


def load_image_folder(
    path: str | os.PathLike, *, image_size: int = 32, class_names: list[str] | None = None
) -> Dataset:
    """Load a folder of images with one subfolder per class, resized to image_size x image_size.

    The class names are the subfolder names, sorted. A folder that holds exactly
    two subfolders ``train`` and ``test``, each with class folders, gives the two
    splits (test classes must be among train's). Image files are recognised by
    their extension (``IMAGE_EXTENSIONS``, any case); hidden files and folders,
    and other files, are ignored.

    Parameters
    ----------
    path : str or path-like
    image_size : int
        Side S of the square images returned.
    class_names : list of str, optional
        A saved model's classes; every folder must be one of them.

    Returns
    -------
    Dataset
        Images (N, S, S, 3) uint8 RGB, ``flip=False``.

    Raises
    ------
    DataError
        For a missing folder, fewer than 2 classes, a class folder without
        images, test classes absent from train, or an image Pillow cannot read
        (naming the file).
    ConfigError
        If ``image_size`` is not a positive integer.
    """
    path = Path(path)
    if (
        not isinstance(image_size, (int, np.integer))
        or isinstance(image_size, bool)
        or image_size < 1
    ):
        raise ConfigError(f"image size must be a positive integer, got {image_size!r}")
    if not path.exists():
        raise DataError(f"{path}: no such folder")
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    size = (int(image_size), int(image_size))
    subfolders = _visible_dirs(path)
    split = [d.name for d in subfolders] == ["test", "train"] and all(
        _visible_dirs(d) for d in subfolders
    )
    test_x = test_y = None
    if split:
        train_files, train_labels = _class_files(path / "train")
        test_files, test_labels = _class_files(path / "test", at_least=1)
        names = sorted(set(train_labels))
        if class_names is None:
            _check_known(path / "test", "the test folder", np.array(test_labels), names)
        train_y, names = _folder_labels(path / "train", train_labels, class_names)
        test_y, _ = _folder_labels(path / "test", test_labels, names)
        train_x = read_images(train_files, size=size)
        test_x = read_images(test_files, size=size)
    else:
        files, labels = _class_files(path)
        train_y, names = _folder_labels(path, labels, class_names)
        train_x = read_images(files, size=size)
    return Dataset(
        train_x,
        train_y,
        test_x,
        test_y,
        names,
        name=path.name,
        flip=False,
        source={"data": str(path), "image_size": int(image_size)},
    )


def _visible_dirs(path: Path) -> list[Path]:
    """The subfolders of ``path`` whose names do not start with a dot, sorted by name."""
    try:
        return sorted(
            (p for p in path.iterdir() if not p.name.startswith(".") and p.is_dir()),
            key=lambda p: p.name,
        )
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _is_image_file(p: Path) -> bool:
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def _class_files(path: Path, at_least: int = 2) -> tuple[list[Path], list[str]]:
    """Every image file in the class folders of ``path``, and its class (the folder name)."""
    classes = _visible_dirs(path)
    if len(classes) < at_least:
        loose = [p for p in path.iterdir() if _is_image_file(p)]
        hint = (
            f"; its {len(loose)} image(s) must go into one subfolder per class"
            if loose
            else ": put each class's images in a subfolder named after the class"
        )
        raise DataError(f"{path}: {len(classes)} class folder(s), at least {at_least} needed{hint}")
    files, labels = [], []
    for folder in classes:
        try:
            found = sorted((p for p in folder.iterdir() if _is_image_file(p)), key=lambda p: p.name)
        except OSError as exc:
            raise DataError(f"{folder}: cannot be read ({exc.strerror or exc})") from None
        if not found:
            raise DataError(
                f"{folder}: class folder with no images (looked for {', '.join(IMAGE_EXTENSIONS)})"
            )
        files += found
        labels += [folder.name] * len(found)
    return files, labels


def _folder_labels(path: Path, labels: list[str], class_names) -> tuple[np.ndarray, list[str]]:
    try:
        return encode_labels(np.array(labels, dtype=str), class_names)
    except DataError as exc:
        raise DataError(f"{path}: class folders: {exc}") from None


# ----------------------------------------------------------------------- predict's inputs


def read_inputs(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    *,
    image_shape: tuple[int, int, int] | None = None,
    columns: list[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Read the inputs of ``predict``: image files, .csv files or .npz files (one kind per call).

    Parameters
    ----------
    paths : path-like or iterable of path-like
    image_shape : (H, W, C), optional
        The model's input images: image files are resized to H x W and made
        greyscale (C = 1) or RGB (C = 3); an .npz's images must have this shape.
        None for a model of table rows.
    columns : list of str, optional
        The model's feature columns, in order: a .csv's columns are picked by
        these names (others, such as the label column, are ignored). Without
        it every column of a .csv must be numeric.

    Returns
    -------
    x : ndarray
        Images (N, H, W, C) uint8, or rows (N, D) float32.
    names : list of str
        What each row is called: "cat.png" (the path as given),
        "table.csv:row 2" (the spreadsheet row; the header is row 1),
        "data.npz:3" (the index into the array).

    Raises
    ------
    DataError
        For missing or unreadable files, unknown kinds, a mix of kinds, missing
        columns, non-numeric or missing values, or shapes that disagree.
    ConfigError
        For image inputs (files or an .npz of images) when ``image_shape`` is
        None, or an ``image_shape`` that is not (H, W, 1) or (H, W, 3).
    """
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise DataError("no input files given")
    if image_shape is not None:
        image_shape = _check_image_shape(image_shape)
    kinds = {}
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such file")
        if not p.is_file():
            raise DataError(f"{p}: not a file")
        kinds[p] = _input_kind(p)
    if len(set(kinds.values())) > 1:
        shown = ", ".join(sorted(set(kinds.values())))
        raise DataError(
            f"the inputs mix kinds of files ({shown}): give image files, .csv files "
            "or .npz files, one kind at a time"
        )
    kind = kinds[paths[0]]
    if kind == "image files":
        if image_shape is None:
            raise ConfigError(
                f"{paths[0]}: an image, but the model takes table rows, not images: "
                "give .csv or .npz files"
            )
        return _read_image_inputs(paths, image_shape), [os.fspath(p) for p in paths]
    if kind == ".csv files":
        return _read_csv_inputs(paths, image_shape, columns)
    return _read_npz_inputs(paths, image_shape)


def _check_image_shape(shape) -> tuple[int, int, int]:
    try:
        h, w, c = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"image shape must be (H, W, C), got {shape!r}") from None
    if h < 1 or w < 1 or c not in (1, 3):
        raise ConfigError(f"image shape must be (H, W, C) with C 1 or 3, got {tuple(shape)}")
    return h, w, c


def _input_kind(p: Path) -> str:
    suffix = p.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image files"
    if suffix == ".csv":
        return ".csv files"
    if suffix == ".npz":
        return ".npz files"
    raise DataError(
        f"{p}: unknown kind of input ({suffix or 'no suffix'}); predict takes image files "
        f"({', '.join(IMAGE_EXTENSIONS)}), .csv files or .npz files"
    )


def _read_image_inputs(paths: list[Path], image_shape: tuple[int, int, int]) -> np.ndarray:
    """Image files as uint8 (N, H, W, C): RGB, or greyscale through Pillow's 'L' for C = 1."""
    from PIL import Image

    h, w, c = image_shape
    rgb = read_images(paths, size=(h, w))
    if c == 3:
        return rgb
    if len(rgb) == 0:
        return np.empty((0, h, w, 1), dtype=np.uint8)
    # 'L' is computed per pixel, so one tall image converts all of them at once.
    tall = Image.fromarray(np.ascontiguousarray(rgb.reshape(-1, w, 3)), "RGB").convert("L")
    return np.asarray(tall, dtype=np.uint8).reshape(len(rgb), h, w, 1)


def _read_csv_inputs(paths: list[Path], image_shape, columns) -> tuple[np.ndarray, list[str]]:
    if image_shape is not None:
        h, w, c = image_shape
        raise DataError(
            f"{paths[0]}: a table, but the model takes {h}x{w}x{c} images: give image files "
            "or an .npz of images"
        )
    parts, names, first = [], [], None
    for p in paths:
        header, rows, numbers = _read_table(p)
        if columns is not None:
            missing = [c for c in columns if c not in header]
            if missing:
                shown = ", ".join(repr(m) for m in missing[:5])
                raise DataError(
                    f"{p}: no column {shown}, which the model takes; the file has columns "
                    f"{_show_columns(header)}{_delimiter_hint(header)}"
                )
            cols = [header.index(c) for c in columns]
        else:
            if first is not None and header != first:
                raise DataError(
                    f"{p}: columns {_show_columns(header)} differ from {paths[0]}'s "
                    f"({_show_columns(first)})"
                )
            first = header
            cols = list(range(len(header)))
        if not rows:
            raise DataError(f"{p}: no data rows under the header")
        parts.append(_numeric(p, header, rows, numbers, cols))
        names += [f"{os.fspath(p)}:row {n}" for n in numbers]
    return np.concatenate(parts), names


def _read_npz_inputs(paths: list[Path], image_shape) -> tuple[np.ndarray, list[str]]:
    parts, names = [], []
    for p in paths:
        if not zipfile.is_zipfile(p):
            raise DataError(
                f"{p}: not a .npz file (the zip archive numpy.savez writes), or a truncated one"
            )
        try:
            with np.load(p, allow_pickle=False) as npz:
                present = list(npz.files)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataError(f"{p}: not a readable .npz file ({exc})") from None
        if "X" in present:
            key = "X"
        elif len(present) == 1:
            key = present[0]
        else:
            raise DataError(
                f"{p}: no array 'X' and {len(present)} arrays "
                f"({', '.join(repr(a) for a in present) or 'none'}): name the inputs 'X'"
            )
        x = _features(p, key, _read_npz(p, [key])[key])
        if len(x) == 0:
            raise DataError(f"{p}: array {key!r} is empty")
        if x.ndim == 4:
            if image_shape is None:
                raise ConfigError(
                    f"{p}: {key!r} holds images {x.shape[1:]}, but the model takes table rows"
                )
            if x.shape[1:] != image_shape:
                raise DataError(
                    f"{p}: {key!r} holds images of shape {x.shape[1:]}; the model takes "
                    f"{image_shape}"
                )
        elif image_shape is not None:
            raise DataError(
                f"{p}: {key!r} holds table rows {x.shape}; the model takes images {image_shape}"
            )
        if parts and x.shape[1:] != parts[0].shape[1:]:
            raise DataError(
                f"{p}: {key!r} examples have shape {x.shape[1:]}; {paths[0]}'s have "
                f"{parts[0].shape[1:]}"
            )
        parts.append(x)
        names += [f"{os.fspath(p)}:{i}" for i in range(len(x))]
    return np.concatenate(parts), names
