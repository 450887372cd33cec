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
values of the wrong type) is a ``ConfigError`` with a one-line message;
metadata fields and layer settings this numprop does not know (written by a
newer one) are skipped with a warning.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numprop.errors import ConfigError
from numprop.nn.layers import LAYERS
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
        self, images: np.ndarray, batch_size: int = 1000, *, tta: bool = False
    ) -> np.ndarray:
        """Class probabilities (N, C) for raw inputs (uint8 images (N, H, W, C) or rows
        (N, D)), preprocessed as in training.

        ``tta=True`` (images only) averages them with the probabilities of the
        mirror images (``flip_tta``): test-time augmentation for data where a
        flip keeps the class. Raises ConfigError for ``tta`` on rows.
        """
        if tta and (self.inputs["kind"] != "images" or np.ndim(images) != 4):
            raise ConfigError(
                "test-time flips (--tta) are for images; this model takes rows of a table"
            )
        self.model.eval()
        chunks = []
        # Preprocess batch by batch: the whole test set as float32 would be 120 MB.
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size]
            chunks.append(
                flip_tta(self._probabilities, batch) if tta else self._probabilities(batch)
            )
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
    ``load`` would refuse, is a ConfigError and leaves no file behind.
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
            f"cannot save the model: its metadata is not JSON ({_line(exc)})"
        ) from None
    arrays[META] = np.frombuffer(text.encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_npz(path, arrays)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` as an .npz at ``path`` atomically; returns ``path``.

    Written beside the target, then renamed: a crash never leaves a half-written file.
    """
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | os.PathLike) -> SavedModel:
    """Rebuild a model saved by ``save`` (format version 1 or 2).

    Raises ConfigError, with a one-line message, for a missing, unreadable,
    corrupt or invalid file, or one written in a newer format. Metadata fields
    and layer settings this numprop does not know are skipped with a warning.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"no model file at {path}")
    if not path.is_file():
        raise ConfigError(
            f"no model file at {path}: it is a folder, not a file"
            if path.is_dir()
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

    try:
        model = from_architecture(
            meta["architecture"], dtype=np.dtype(meta["dtype"]), warn=notes.append
        )
        model.load_state_dict(params)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {_line(exc)}") from None
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, MemoryError) as exc:
        raise ConfigError(f"{path}: cannot rebuild the model ({_line(exc)})") from None
    model.eval()

    preprocessing = None
    if meta.get("preprocessing"):
        from numprop.data.preprocess import preprocessing_from_state

        pre = meta["preprocessing"]
        try:
            preprocessing = preprocessing_from_state(pre["name"], pre_arrays, pre["params"])
        except ConfigError as exc:
            raise ConfigError(f"{path}: {_line(exc)}") from None
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise ConfigError(f"{path}: bad preprocessing {pre['name']!r} ({_line(exc)})") from None
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
    size must match the bytes present before anything is allocated, and
    object arrays (pickles) are refused. The metadata is read and its version
    checked first, so a newer format is reported as such, not as corrupt.
    """
    not_model = f"{path} is not a numprop model file"
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            names = [m.filename for m in members]
            if len(set(names)) != len(names):
                raise ConfigError(f"{not_model} (a member appears twice)")
            if f"{META}.npy" not in names:
                raise ConfigError(f"{not_model} (no readable meta.json)")
            meta = _parse_meta(_read_npy(zf.read(f"{META}.npy")), not_model)
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
                arrays[name] = _read_npy(zf.read(member))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse the bytes means a bad file
        # zipfile, zlib and the .npy parser raise many types (BadZipFile, EOFError, OSError,
        # NotImplementedError for unknown compression, RuntimeError for encryption, ...).
        raise ConfigError(f"{not_model} ({type(exc).__name__}: {_line(exc)})") from None
    return meta, arrays, sorted(skipped)


def _read_npy(data: bytes) -> np.ndarray:
    """The array in the bytes of a .npy file; ValueError if it is not a plain, complete one."""
    fp = io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f".npy format version {version} is not supported")
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed (they would need pickle)")
    if any(n < 0 for n in shape):
        raise ValueError(f"negative array shape {shape}")
    count = math.prod(shape)
    offset = fp.tell()
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(
            f"array of shape {shape} and dtype {dtype} needs "
            f"{count * dtype.itemsize} bytes, the file holds {len(data) - offset}"
        )
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)
    return array.copy()  # writable, and independent of the file's bytes


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
        raise ConfigError(f"{not_model} (no readable meta.json: not JSON: {_line(exc)})") from None
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
        for key in ("optimizer", "schedule", "rng"):
            if key in training and not isinstance(training[key], dict):
                bad(f"training.{key} must be an object, got {_short(training[key])}")
        if "history" in training:
            _check_records(training["history"], "training.history", bad)
        opt = training.get("optimizer", {})
        if "type" in opt and not isinstance(opt["type"], str):
            bad(f"training.optimizer.type must be a string, got {_short(opt['type'])}")
        if "lr" in opt and not _is_real(opt["lr"]):
            bad(f"training.optimizer.lr must be a number, got {_short(opt['lr'])}")
        if "steps" in opt and not _is_int(opt["steps"]):
            bad(f"training.optimizer.steps must be an integer, got {_short(opt['steps'])}")


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
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        bad(f"{what} must be a list of objects (one per epoch), got {_short(records)}")


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
    text = _line(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _line(exc) -> str:
    """An exception's message (or any text) on one line."""
    return " ".join(str(exc).split())
