"""Saving and loading models as data: one .npz of named arrays, with JSON metadata inside.

Layout of a saved model (``numprop.save``), format version 2:

* ``param/<name>``: every parameter and buffer of the model (``0.weight``, ...);
* ``pre/<name>``: the arrays of the preprocessing (e.g. per-channel mean and std);
* ``train/<name>``: optimizer buffers, in checkpoints saved to resume training;
* ``meta.json``: a uint8 array holding UTF-8 JSON: format name and version, the
  numprop version that wrote it, the architecture, dtype, preprocessing name
  and parameters, class names, what the inputs are (image shape or table
  columns), the training configuration and history.

Version 1 (numprop 0.1) is the same without ``numprop_version``; both load.

No pickle anywhere: the zip members are parsed here as .npy arrays of plain
dtypes, never unpickled, so loading a model file cannot run code. Every
problem with a file (missing, truncated, corrupt, of a newer format, with
values of the wrong type) is a ``ConfigError`` with a one-line message naming
it; metadata fields and layer settings this numprop does not know (written by
a newer one) are skipped with a warning. Sizes are not trusted: an array or
an architecture larger than its file or than the memory available is refused
before anything that size is allocated.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import os
import secrets
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numprop.errors import ConfigError, WriteError
from numprop.nn.layers import LAYERS, BatchNorm1d, Linear
from numprop.nn.models import architecture, from_architecture
from numprop.nn.module import Sequential

FORMAT = "numprop-model"
FORMAT_VERSION = 2
READS_VERSIONS = (1, FORMAT_VERSION)  # the oldest and newest format version load() reads
DTYPES = ("float32", "float64")  # the dtypes numprop models are built in

META = "meta.json"
_PREFIXES = ("param/", "pre/", "train/")
# Every top-level metadata field this numprop knows; others are skipped with a warning.
_META_FIELDS = (
    "format",
    "format_version",
    "numprop_version",
    "architecture",
    "dtype",
    "class_names",
    "inputs",
    "config",
    "history",
    "preprocessing",
    "training",
)


# What a model saved before the inputs were recorded was trained on: CIFAR-10 images.
LEGACY_INPUTS = {"kind": "images", "shape": [32, 32, 3]}


@dataclass
class SavedModel:
    """A loaded model with everything needed to use it on raw inputs.

    ``inputs`` says what those are: ``{"kind": "images", "shape": [H, W, C]}``
    or ``{"kind": "table", "width": D, "columns": [names] or None}``.
    """

    model: Sequential
    preprocessing: object | None = None
    class_names: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    training: tuple[dict, dict] | None = None  # (arrays, meta) to resume training, if saved
    inputs: dict = field(default_factory=lambda: dict(LEGACY_INPUTS))

    def predict_proba(
        self,
        images: np.ndarray,
        batch_size: int = 1000,
        *,
        tta: bool = False,
        tta_shift: int = 0,
    ) -> np.ndarray:
        """Class probabilities (N, C) for raw inputs (uint8 images (N, H, W, C) or rows
        (N, D)), preprocessed as in training.

        Test-time augmentation (images only): ``tta=True`` averages them with
        the probabilities of the mirror images (``flip_tta``), for data where a
        flip keeps the class; ``tta_shift=s`` averages over the 3x3 grid of
        translations by 0 and +-s pixels (``shift_tta``), for a model trained
        on random crops with padding s. With both, 18 views. Raises
        ConfigError for either on rows, and for a negative ``tta_shift``.
        """
        if tta_shift < 0:
            raise ConfigError(f"tta_shift must be a whole number of pixels >= 0, got {tta_shift}")
        if (tta or tta_shift) and (self.inputs["kind"] != "images" or np.ndim(images) != 4):
            raise ConfigError(
                "test-time augmentation (--tta, --tta-shift) is for images; "
                "this model takes rows of a table"
            )

        def views(batch):  # (B, C): the mean over the flips, when asked for
            return flip_tta(self._probabilities, batch) if tta else self._probabilities(batch)

        self.model.eval()
        chunks = []
        # Preprocess batch by batch: the whole test set as float32 would be 120 MB.
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size]
            chunks.append(shift_tta(views, batch, tta_shift) if tta_shift else views(batch))
        return np.concatenate(chunks) if chunks else np.empty((0, len(self.class_names)))

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (B, C) of one batch of raw inputs, a new array."""
        from numprop.nn.losses import softmax

        x = self.preprocessing.transform(batch) if self.preprocessing is not None else batch
        return softmax(self.model.forward(np.asarray(x, self.model.dtype)))


def flip_tta(predict_proba, images: np.ndarray) -> np.ndarray:
    """Test-time augmentation: the mean of the class probabilities on images and their mirrors.

    Parameters
    ----------
    predict_proba : callable
        Maps images (N, H, W, C) to class probabilities (N, C).
    images : ndarray, shape (N, H, W, C)
        Raw images, as ``predict_proba`` takes them; not modified.

    Returns
    -------
    ndarray, shape (N, C)
        ``(predict_proba(images) + predict_proba(hflip(images))) / 2``, a new array.
    """
    from numprop.data.batches import hflip

    plain = np.array(predict_proba(images))  # a copy: the second call may reuse its buffer
    return (plain + predict_proba(hflip(images))) / 2


def shift_tta(predict_proba, images: np.ndarray, pixels: int) -> np.ndarray:
    """Test-time augmentation: the mean of the class probabilities over 9 translated copies.

    The copies are the images moved by (dy, dx) for dy, dx in {-pixels, 0,
    +pixels}, zeros filling the gap (``batches.shift``): the corners and edge
    midpoints of the windows a random crop with that padding takes, and the centre.

    Parameters
    ----------
    predict_proba : callable
        Maps images (N, H, W, C) to class probabilities (N, C).
    images : ndarray, shape (N, H, W, C)
        Raw images, as ``predict_proba`` takes them; not modified.
    pixels : int
        The shift, >= 1.

    Returns
    -------
    ndarray, shape (N, C), a new array
    """
    from numprop.data.batches import shift

    offsets = (-pixels, 0, pixels)
    total = None
    for dy in offsets:
        for dx in offsets:
            p = predict_proba(shift(images, dy, dx))
            total = np.array(p) if total is None else total + p  # a copy: p may be reused
    return total / len(offsets) ** 2


def save(
    path: str | os.PathLike,
    model: Sequential,
    preprocessing=None,
    config: dict | None = None,
    history: list[dict] | None = None,
    class_names: list[str] | None = None,
    training: tuple[dict, dict] | None = None,
    inputs: dict | None = None,
) -> Path:
    """Write the model (and what it needs to predict) to ``path`` atomically.

    ``training``: (arrays, JSON-able dict) from ``Trainer.state()``, for resuming.
    ``inputs``: what the raw inputs are (see ``SavedModel``), so ``predict``
    can read new ones.
    Everything is checked before anything is written: a model with a layer
    class that is not registered (``numprop.register_layer``), or metadata
    ``load`` would refuse, is a ConfigError and leaves no file behind. A
    write that fails (disk full) is a WriteError and leaves the file that was
    at ``path`` as it was.
    """
    import numprop

    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"model files end in .npz, got {path.name}")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "numprop_version": numprop.__version__,
        "architecture": architecture(model),
        "dtype": str(model.dtype),
        "class_names": list(class_names or []),
        "config": config or {},
        "history": history or [],
        "preprocessing": None,
    }
    if inputs is not None:
        meta["inputs"] = inputs
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    if preprocessing is not None:
        pre_arrays, pre_params = preprocessing.state()
        meta["preprocessing"] = {"name": preprocessing.name, "params": pre_params}
        arrays.update({f"pre/{k}": v for k, v in pre_arrays.items()})
    if training is not None:
        train_arrays, meta["training"] = training
        arrays.update({f"train/{k}": v for k, v in train_arrays.items()})
    _check_meta(meta, "the model to save")  # what load() would refuse is not written
    try:
        text = json.dumps(meta, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"cannot save the model: its metadata is not JSON ({one_line(exc)})"
        ) from None
    arrays[META] = np.frombuffer(text.encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_npz(path, arrays)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an .npz at ``path`` atomically (see ``atomic_write``); returns ``path``."""
    # allow_pickle=False: an object array would be written as a pickle, which load() refuses.
    return atomic_write(path, lambda f: np.savez(f, allow_pickle=False, **arrays))


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Write a file through ``write(f)`` (``f`` a binary file) so that it is whole or not there.

    The bytes go to a temporary file beside ``path``, with a name unique to
    this process and call (so concurrent writers never share one), are flushed
    to disk, and only then renamed over ``path``; the folder is synced so the
    rename survives a power cut. If anything fails the temporary file is
    removed and the file that was at ``path`` is left as it was; a failure of
    the system (disk full, no permission) is a ``WriteError`` naming ``path``.
    """
    path = Path(path)
    try:
        tmp, fd = _create_temporary(path)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(
                f"cannot write {path}: {_reason(exc)} (the file there, if any, is unchanged)"
            ) from None
        raise
    _sync_folder(path.parent)
    return path


def lock_folder(folder: Path, what: str, busy: str):
    """Lock ``folder`` (its ``.lock`` file, ``fcntl.flock``) for this process, or say why not.

    Returns the open lock file: the folder stays locked until it is closed. A
    one-line ConfigError when the lock file cannot be made ("cannot write
    ``what`` ...") or another process holds the lock (``busy``). Where there is
    no ``fcntl`` (not POSIX) nothing is locked.
    """
    try:
        lock = open(folder / ".lock", "a+b")  # noqa: SIM115 - held open by the caller
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {folder}: {exc.strerror or exc}") from None
    try:
        import fcntl

        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:
        pass
    except OSError:
        lock.close()
        raise ConfigError(busy) from None
    return lock


def _create_temporary(path: Path) -> tuple[str, int]:
    """(name, descriptor) of a new, empty file beside ``path`` that no other writer uses."""
    for _ in range(100):
        # The pid and a random token keep processes and threads apart; O_EXCL makes sure.
        # Mode 0o666 lets the umask decide, so the file gets the usual permissions
        # (tempfile.mkstemp would make it private to the user).
        tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"))
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path.name}")


_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def _sync_folder(folder: Path) -> None:
    """Flush the folder's entries to disk, so a rename in it survives a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open folders; the rename itself is done
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync folders
        pass
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    """What went wrong, without the file name the caller gives anyway."""
    return one_line(exc.strerror or exc)


def load(path: str | os.PathLike) -> SavedModel:
    """Rebuild a model saved by ``save`` (format version 1 or 2).

    Raises ConfigError, with a one-line message naming the file, for a missing,
    unreadable, corrupt or invalid file, one written in a newer format, or one
    whose arrays or architecture are too large for it or for the memory
    available (refused before they are allocated). Metadata fields and layer
    settings this numprop does not know are skipped with a warning.
    """
    path = Path(path)
    try:
        exists, is_file, is_dir = path.exists(), path.is_file(), path.is_dir()
    except OSError as exc:  # a name too long, say
        raise ConfigError(f"cannot read {path}: {_reason(exc)}") from None
    if not exists:
        raise ConfigError(f"no model file at {path}")
    if not is_file:
        raise ConfigError(
            f"no model file at {path}: it is a folder, not a file"
            if is_dir
            else f"no model file at {path}: not a regular file"
        )

    notes: list[str] = []  # what was skipped, told once the model is rebuilt
    meta, arrays, skipped = _read(path)
    unknown = sorted(k for k in meta if k not in _META_FIELDS)
    if unknown:
        notes.append(f"ignored metadata fields this numprop does not know: {', '.join(unknown)}")
    if skipped:
        notes.append(f"ignored members this numprop does not know: {', '.join(skipped)}")
    _check_meta(meta, str(path))
    params, pre_arrays, train_arrays = (
        {k[len(p) :]: v for k, v in arrays.items() if k.startswith(p)} for p in _PREFIXES
    )
    for name, value in params.items():  # before copying: load_state_dict would cast them
        if value.dtype.kind != "f":
            raise ConfigError(
                f"{path}: parameter {name!r} has dtype {value.dtype}; numprop "
                f"models hold floating-point parameters"
            )
    for name, value in (*pre_arrays.items(), *train_arrays.items()):
        if value.dtype.kind not in "biuf":
            raise ConfigError(f"{path}: array {name!r} has dtype {value.dtype}, not a number")

    dtype = np.dtype(meta["dtype"])
    _check_size(meta["architecture"], dtype, sum(v.size for v in params.values()), path)
    try:
        model = from_architecture(meta["architecture"], dtype=dtype, warn=notes.append)
        model.load_state_dict(params)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - a layer's constructor may raise anything
        raise ConfigError(f"{path}: cannot rebuild the model ({one_line(exc)})") from None
    model.eval()

    preprocessing = None
    if meta.get("preprocessing"):
        from numprop.data.preprocess import preprocessing_from_state

        pre = meta["preprocessing"]
        try:
            preprocessing = preprocessing_from_state(pre["name"], pre_arrays, pre["params"])
        except ConfigError as exc:
            raise ConfigError(f"{path}: {one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - its from_state may raise anything
            raise ConfigError(
                f"{path}: bad preprocessing {pre['name']!r} ({one_line(exc)})"
            ) from None
    training = None
    if meta.get("training") is not None:
        training = (train_arrays, meta["training"])
    for note in notes:
        warnings.warn(f"{path}: {note}", stacklevel=2)
    return SavedModel(
        model,
        preprocessing,
        meta.get("class_names", []),
        meta.get("config", {}),
        meta.get("history", []),
        training,
        meta.get("inputs", dict(LEGACY_INPUTS)),
    )


# -- reading the file ----------------------------------------------------------------------------


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """(metadata, arrays by name, names of members skipped) from a model file;
    ConfigError for anything unreadable.

    The zip is read member by member with ``zipfile`` (which checks each
    member's CRC), and each member parsed as a .npy array here: its declared
    size must match the member's and fit in the memory available before
    anything is allocated, and object arrays (pickles) are refused. The
    metadata is read and its version checked first, so a newer format is
    reported as such, not as corrupt.
    """
    not_model = f"{path} is not a numprop model file"
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {_reason(exc)}") from None
    room = available_memory()  # what the arrays read so far leave is checked member by member
    try:
        with file, zipfile.ZipFile(file) as zf:
            members = zf.infolist()
            names = [m.filename for m in members]
            if len(set(names)) != len(names):
                raise ConfigError(f"{not_model} (a member appears twice)")
            if f"{META}.npy" not in names:
                raise ConfigError(f"{not_model} (no readable meta.json)")
            raw = _read_npy(zf, zf.getinfo(f"{META}.npy"), room, path)
            meta = _parse_meta(raw, not_model)
            _check_version(meta, path)
            arrays, skipped = {}, []
            for member in members:
                name = member.filename
                if name == f"{META}.npy":
                    continue
                if member.is_dir() or not name.endswith(".npy"):
                    skipped.append(name)
                    continue
                name = name[: -len(".npy")]
                if not name.startswith(_PREFIXES):
                    skipped.append(name)
                    continue
                arrays[name] = _read_npy(zf, member, room, path)
                if room is not None:
                    room -= arrays[name].nbytes
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse the bytes means a bad file
        # zipfile, zlib and the .npy parser raise many types (BadZipFile, EOFError, OSError,
        # NotImplementedError for unknown compression, RuntimeError for encryption,
        # tokenize.TokenError and UnicodeDecodeError for a mangled header, ...).
        raise ConfigError(f"{not_model} ({type(exc).__name__}: {one_line(exc)})") from None
    return meta, arrays, sorted(skipped)


def read_arrays(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """The arrays of a plain .npz (e.g. a run's predictions), checked as a model's are.

    Each member's size is checked against the file and the memory available
    before it is allocated; nothing is unpickled. ``what`` names the kind of
    file in the errors ("a predictions file").

    Raises
    ------
    ConfigError
        Naming ``path``, for a missing, unreadable or malformed file.
    """
    path = Path(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {_reason(exc)}") from None
    room = available_memory()
    arrays = {}
    try:
        with file, zipfile.ZipFile(file) as zf:
            for member in zf.infolist():
                if member.is_dir() or not member.filename.endswith(".npy"):
                    continue
                arrays[member.filename[: -len(".npy")]] = array = _read_npy(zf, member, room, path)
                if room is not None:
                    room -= array.nbytes
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - as in _read: any parse failure is a bad file
        raise ConfigError(f"{path} is not {what} ({type(exc).__name__}: {one_line(exc)})") from None
    return arrays


# The most bytes a .npy header takes: magic (6), version (2), length (4) and 64 KiB of text;
# numpy itself refuses headers over 10,000 characters.
_NPY_HEAD = 12 + 65_536
_CHUNK = 1 << 24  # the data is read into its array 16 MiB at a time, never copied whole


def _read_npy(zf: zipfile.ZipFile, member: zipfile.ZipInfo, room: int | None, path) -> np.ndarray:
    """The array in a .npy member; ValueError unless it is a plain, complete one.

    Only the header is read before the sizes are checked: an array that claims
    more bytes than the member holds is refused (ValueError), one that would
    not fit in ``room`` bytes of memory too (ConfigError naming ``path``),
    before anything that size is allocated.
    """
    with zf.open(member) as f:
        head = f.read(_NPY_HEAD)
        fp = io.BytesIO(head)
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f".npy format version {version} is not supported")
        if dtype.hasobject:
            raise ValueError("object arrays are not allowed (they would need pickle)")
        if dtype.itemsize == 0:
            raise ValueError(f"dtype {dtype} has no size")
        if any(n < 0 for n in shape):
            raise ValueError(f"negative array shape {shape}")
        count = math.prod(shape)
        offset = fp.tell()
        nbytes = count * dtype.itemsize
        if member.file_size - offset != nbytes:
            raise ValueError(
                f"array of shape {shape} and dtype {dtype} needs "
                f"{nbytes} bytes, the file holds {member.file_size - offset}"
            )
        if room is not None and nbytes > room:
            raise ConfigError(
                f"{path}: array {member.filename[: -len('.npy')]!r} of shape {_short(shape)} is "
                f"too large to load ({_size(nbytes)}, {_size(room)} of memory available)"
            )
        array = np.empty(count, dtype)
        raw = array.view(np.uint8)  # its bytes, filled in place
        body = head[offset:]
        raw[: len(body)] = np.frombuffer(body, np.uint8)
        filled = len(body)
        while filled < nbytes:
            chunk = f.read(min(_CHUNK, nbytes - filled))
            if not chunk:
                raise EOFError(
                    f"the member ends after {offset + filled} of {member.file_size} bytes"
                )
            raw[filled : filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
            filled += len(chunk)
        if f.read(1):  # also the read at which zipfile checks the CRC, if not done yet
            raise ValueError("the member holds more bytes than it says")
    return array.reshape(shape[::-1]).T.copy() if fortran_order else array.reshape(shape)


def available_memory() -> int | None:
    """Bytes of memory new arrays can take now, or None where the system does not say.

    Linux's MemAvailable (memory free or reclaimable from caches), else the
    free pages, capped by a cgroup's limit (a container's) where there is one.
    """
    free = None
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", "rb") as f:
        for line in f:
            if line.startswith(b"MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    if free is None:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            free = free if free > 0 else None
    with contextlib.suppress(OSError, ValueError, StopIteration):  # cgroup v2; "max": no limit
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            # Only the processes' own memory counts as used: the cgroup's file cache
            # (memory.current includes it) is given back when needed.
            stat = (cgroup / "memory.stat").read_text().splitlines()
            used = int(next(line.split()[1] for line in stat if line.startswith("anon ")))
            left = max(int(limit) - used, 0)
            free = left if free is None else min(free, left)
    return free


def _parse_meta(raw: np.ndarray, not_model: str) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ConfigError(
            f"{not_model} (no readable meta.json: {raw.dtype} {raw.shape} instead of UTF-8 bytes)"
        )
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{not_model} (no readable meta.json: not UTF-8)") from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(
            f"{not_model} (no readable meta.json: not JSON: {one_line(exc)})"
        ) from None
    if not isinstance(meta, dict):
        raise ConfigError(
            f"{not_model} (no readable meta.json: a JSON {_kind(meta)}, not an object)"
        )
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{not_model} (format {_short(meta.get('format'))})")
    return meta


def _check_version(meta: dict, path: Path) -> None:
    import numprop

    version = meta.get("format_version")
    oldest, newest = READS_VERSIONS
    reads = f"this numprop ({numprop.__version__}) reads versions {oldest} to {newest}"
    if not _is_int(version) or version < oldest:
        raise ConfigError(f"{path} has an unknown format version {_short(version)}; {reads}")
    if version > newest:
        writer = meta.get("numprop_version")
        by = f"numprop {writer}" if isinstance(writer, str) and writer else "a newer numprop"
        raise ConfigError(
            f"{path} has format version {version}, written by {by}; {reads}: "
            f"upgrade numprop to load it"
        )


# -- checking sizes ------------------------------------------------------------------------------


# Values (parameters and buffers) a layer numprop ships holds, from its settings; other layers'
# are not known before they are built, and count 0.
_LAYER_VALUES = {
    Linear: lambda c: c["in_features"] * c["out_features"] + c["out_features"],
    BatchNorm1d: lambda c: 4 * c["num_features"],  # gamma, beta, running mean and variance
}


def _check_size(spec: list, dtype: np.dtype, held: int, path: Path) -> None:
    """ConfigError unless the model ``spec`` describes fits in memory and in its file.

    Checked before the layers are built, as building allocates (and draws
    random initial weights for) every parameter the settings declare: a
    corrupt or hostile size must be refused, not allocated. ``held`` is the
    number of parameter values in the file, which a model that is not cheap to
    build must not exceed.
    """
    values = largest = 0
    for entry in spec:
        cls = LAYERS.get(entry["type"]) if entry["type"] in LAYERS else None
        count = _LAYER_VALUES.get(cls)
        if count is None or not all(v > 0 for v in entry.values() if _is_int(v)):
            continue  # a size below 1 is refused by the layer's constructor
        try:
            n = count(entry)
        except (KeyError, TypeError):  # a setting missing: the constructor says so too
            continue
        values += n
        if cls is Linear:
            largest = max(largest, n)
    # A Linear draws its weights in float64 before casting them: the largest draw is extra.
    need = values * dtype.itemsize + 8 * largest
    room = available_memory()
    if room is not None and need > room:
        raise ConfigError(
            f"{path}: cannot rebuild the model: its architecture is too large "
            f"({_count(values)} values, {_size(need)} to build; {_size(room)} of memory available)"
        )
    # A model that is cheap to build is built, and load_state_dict names each array that is
    # missing or of the wrong shape; one far larger than the file's arrays is refused unbuilt.
    if values > held and need > _CHEAP_BUILD:
        raise ConfigError(
            f"{path}: cannot rebuild the model: its architecture is too large for its file "
            f"({_count(values)} parameter values declared, {held:,} held)"
        )


_CHEAP_BUILD = 1 << 26  # bytes (64 MiB): a model this size is built in a fraction of a second


def _count(n: int) -> str:
    """A count for a message: "1,000,000", or "about 10^400" for the absurd."""
    return f"{n:,}" if n < 10**18 else f"about 10^{int(math.log10(n))}"


def _size(nbytes: int) -> str:
    """A number of bytes for a message: "4.0 TB"."""
    if nbytes >= 1000**6:
        return f"about 10^{int(math.log10(nbytes))} bytes"
    for power, unit in ((5, "PB"), (4, "TB"), (3, "GB"), (2, "MB"), (1, "kB")):
        if nbytes >= 1000**power:
            return f"{nbytes / 1000**power:.1f} {unit}"
    return f"{nbytes} bytes"


# -- checking the metadata -----------------------------------------------------------------------


def _check_meta(meta: dict, where: str) -> None:
    """ConfigError unless every field numprop uses has the type it needs."""

    def bad(what: str):
        raise ConfigError(f"{where}: {what}")

    for key in ("architecture", "dtype"):
        if key not in meta:
            bad(f"the metadata has no {key!r}")
    if meta.get("numprop_version") is not None and not isinstance(meta["numprop_version"], str):
        bad(f"numprop_version must be a string, got {_short(meta['numprop_version'])}")
    if meta["dtype"] not in DTYPES:
        bad(f"dtype {_short(meta['dtype'])} is not one numprop models use ({' or '.join(DTYPES)})")
    _check_architecture(meta["architecture"], bad)
    names = meta.get("class_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        bad(f"class_names must be a list of strings, got {_short(names)}")
    _check_inputs(meta.get("inputs", LEGACY_INPUTS), bad)
    if not isinstance(meta.get("config", {}), dict):
        bad(f"config must be an object, got {_short(meta['config'])}")
    _check_records(meta.get("history", []), "history", bad)
    pre = meta.get("preprocessing")
    if pre is not None and not (
        isinstance(pre, dict)
        and isinstance(pre.get("name"), str)
        and isinstance(pre.get("params"), dict)
    ):
        bad(f"preprocessing must be an object with a name and params, got {_short(pre)}")
    training = meta.get("training")
    if training is not None:
        if not isinstance(training, dict):
            bad(f"training (the state to resume from) must be an object, got {_short(training)}")
        # Trainer.state() writes these three, and Trainer.load_state() reads each.
        for key in ("optimizer", "schedule", "history"):
            if key not in training:
                bad(f"training (the state to resume from) has no {key!r}")
        for key in ("optimizer", "schedule", "rng"):
            if key in training and not isinstance(training[key], dict):
                bad(f"training.{key} must be an object, got {_short(training[key])}")
        _check_records(training["history"], "training.history", bad)
        opt = training["optimizer"]
        for key in ("type", "lr", "steps"):
            if key not in opt:
                bad(f"training.optimizer has no {key!r}")
        if not isinstance(opt["type"], str):
            bad(f"training.optimizer.type must be a string, got {_short(opt['type'])}")
        if not _is_real(opt["lr"]):
            bad(f"training.optimizer.lr must be a number, got {_short(opt['lr'])}")
        if not (_is_int(opt["steps"]) and opt["steps"] >= 0):
            bad(f"training.optimizer.steps must be an integer >= 0, got {_short(opt['steps'])}")


def _check_inputs(inputs, bad) -> None:
    """Refuse an ``inputs`` field that is not an image shape or a table description."""
    if not isinstance(inputs, dict) or inputs.get("kind") not in ("images", "table"):
        bad(f"inputs must be an object of kind 'images' or 'table', got {_short(inputs)}")
    if inputs["kind"] == "images":
        shape = inputs.get("shape")
        if not (
            isinstance(shape, list)
            and len(shape) == 3
            and all(_is_int(v) and 1 <= v <= 100_000 for v in shape)
        ):
            bad(f"inputs.shape must be [height, width, channels], got {_short(shape)}")
        return
    width, columns = inputs.get("width"), inputs.get("columns")
    if not (_is_int(width) and width >= 1):
        bad(f"inputs.width must be a positive integer, got {_short(width)}")
    if columns is not None and not (
        isinstance(columns, list)
        and len(columns) == width
        and all(isinstance(c, str) for c in columns)
    ):
        bad(f"inputs.columns must be a list of {width} column names, got {_short(columns)}")


def _check_records(records, what: str, bad) -> None:
    """Refuse a history that is not one object per epoch, each field numprop reads a number."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        bad(f"{what} must be a list of objects (one per epoch), got {_short(records)}")
    for i, record in enumerate(records):
        for key in _RECORD_FIELDS:
            value = record.get(key)
            if value is not None and not (_is_int(value) if key == "epoch" else _is_real(value)):
                kind = "an integer" if key == "epoch" else "a number or null"
                bad(f"{what}[{i}].{key} must be {kind}, got {_short(value)}")


# The fields of a History record (numprop.training.trainer.FIELDS) that plots, resumed runs
# and early stopping compare as numbers; others are kept as they are.
_RECORD_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def check_settings(values: dict, annotations: dict, where: str) -> None:
    """ConfigError naming ``where`` for a value whose JSON type is not its annotation's.

    ``annotations`` maps names to annotations as text ("int", "float | None",
    "list[int]"); values of names not in it, or of other annotations, pass.
    """
    for key, value in values.items():
        expected = _annotation_check(annotations.get(key, inspect.Parameter.empty))
        if expected is not None and not expected(value):
            raise ConfigError(
                f"{where}: setting {key} = {_short(value)} is not "
                f"{_annotation_text(annotations[key])}"
            )


def _check_architecture(spec, bad) -> None:
    """The layer list's shape, and each known setting's JSON type against the class's
    annotation (``in_features: int``, ``eps: float``), which the constructors do not
    all check. Unknown layer types and settings are left to ``from_architecture``."""
    if not isinstance(spec, list):
        bad(f"the architecture must be a list of layers, got {_short(spec)}")
    for i, entry in enumerate(spec):
        _check_layer(entry, str(i), bad)


def _check_layer(entry, where: str, bad) -> None:
    """``_check_architecture`` of one layer, named ``where`` (``"3"``, ``"3.inner.1"``),
    and of the modules nested in it: a Sequential's layers, a setting that is an object."""
    if not isinstance(entry, dict):
        bad(f"layer {where} of the architecture must be an object, got {_short(entry)}")
    name = entry.get("type")
    if not isinstance(name, str):
        bad(f"layer {where} of the architecture has no type name, got {_short(name)}")
    if name == "Sequential":
        layers = entry.get("layers")
        if not isinstance(layers, list):
            bad(f"layer {where} (Sequential) must list its layers, got {_short(layers)}")
        for j, inner in enumerate(layers):
            _check_layer(inner, f"{where}.{j}", bad)
        return
    for key, value in entry.items():
        if isinstance(value, dict):
            _check_layer(value, f"{where}.{key}", bad)
    if name not in LAYERS:
        return
    try:
        accepted = inspect.signature(LAYERS.get(name)).parameters
    except (TypeError, ValueError):
        return
    for key, value in entry.items():
        if key in ("type", "dtype", "rng") or key not in accepted or isinstance(value, dict):
            continue
        expected = _annotation_check(accepted[key].annotation)
        if expected is not None and not expected(value):
            bad(
                f"layer {where} ({name}): setting {key} = {_short(value)} is not "
                f"{_annotation_text(accepted[key].annotation)}"
            )


_SIMPLE_TYPES = {
    "int": lambda v: _is_int(v),
    "float": lambda v: _is_real(v),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "None": lambda v: v is None,
    "list[int]": lambda v: isinstance(v, list) and all(_is_int(x) for x in v),
}


def _annotation_text(annotation) -> str:
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation)


def _annotation_check(annotation):
    """A test for JSON values of a simple annotation ("int", "float | None"); None for others."""
    if annotation is inspect.Parameter.empty:
        return None
    parts = [p.strip() for p in _annotation_text(annotation).split("|")]
    if not all(p in _SIMPLE_TYPES for p in parts):
        return None
    return lambda value: any(_SIMPLE_TYPES[p](value) for p in parts)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value) -> str:
    return {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _short(value, limit: int = 60) -> str:
    """A value for a one-line message: its repr, cut short."""
    text = one_line(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(exc) -> str:
    """An exception's message (or any text) on one line."""
    return " ".join(str(exc).split())
