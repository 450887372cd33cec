"""Saving and loading models as data: one .npz of named arrays, with JSON metadata inside.

Layout of a saved model (``numprop.save``):

* ``param/<name>``: every parameter and buffer of the model (``0.weight``, ...);
* ``pre/<name>``: the arrays of the preprocessing (e.g. per-channel mean and std);
* ``train/<name>``: optimizer buffers, in checkpoints saved to resume training;
* ``meta.json``: a uint8 array holding UTF-8 JSON: format name and version, the
  architecture, dtype, preprocessing name and parameters, class names, the
  training configuration and history.

No pickle anywhere: files are read with ``allow_pickle=False``, so loading a
model file cannot run code.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from numprop.errors import ConfigError
from numprop.nn.models import architecture, from_architecture
from numprop.nn.module import Sequential

FORMAT = "numprop-model"
FORMAT_VERSION = 1


@dataclass
class SavedModel:
    """A loaded model with everything needed to use it on raw images."""

    model: Sequential
    preprocessing: object | None = None
    class_names: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    training: tuple[dict, dict] | None = None   # (arrays, meta) to resume training, if saved

    def predict_proba(self, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Class probabilities (N, C) for uint8 images (N, 32, 32, 3), preprocessed as in training."""
        from numprop.nn.losses import softmax
        self.model.eval()
        chunks = []
        # Preprocess batch by batch: the whole test set as float32 would be 120 MB.
        for i in range(0, len(images), batch_size):
            batch = images[i:i + batch_size]
            x = self.preprocessing.transform(batch) if self.preprocessing is not None else batch
            chunks.append(softmax(self.model.forward(np.asarray(x, self.model.dtype))))
        return np.concatenate(chunks) if chunks else np.empty((0, len(self.class_names)))


def save(path: str | os.PathLike, model: Sequential, preprocessing=None, config: dict | None = None,
         history: list[dict] | None = None, class_names: list[str] | None = None,
         training: tuple[dict, dict] | None = None) -> Path:
    """Write the model (and what it needs to predict) to ``path`` atomically.

    ``training``: (arrays, JSON-able dict) from ``Trainer.state()``, for resuming.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"model files end in .npz, got {path.name}")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "architecture": architecture(model), "dtype": str(model.dtype),
            "class_names": list(class_names or []), "config": config or {},
            "history": history or [], "preprocessing": None}
    arrays = {f"param/{k}": v for k, v in model.state_dict().items()}
    if preprocessing is not None:
        pre_arrays, pre_params = preprocessing.state()
        meta["preprocessing"] = {"name": preprocessing.name, "params": pre_params}
        arrays.update({f"pre/{k}": v for k, v in pre_arrays.items()})
    if training is not None:
        train_arrays, meta["training"] = training
        arrays.update({f"train/{k}": v for k, v in train_arrays.items()})
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target, then rename: a crash never leaves a half-written model.
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | os.PathLike) -> SavedModel:
    """Rebuild a model saved by ``save``; raises ConfigError for missing or invalid files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no model file at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"{path} is not a numprop model file ({exc})") from None
    try:
        meta = json.loads(arrays.pop("meta.json").tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not a numprop model file (no readable meta.json)") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a numprop model file (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path} has format version {meta.get('format_version')}; this "
                          f"numprop reads version {FORMAT_VERSION}")
    model = from_architecture(meta["architecture"], dtype=np.dtype(meta["dtype"]))
    model.load_state_dict({k[len("param/"):]: v for k, v in arrays.items()
                           if k.startswith("param/")})
    model.eval()
    preprocessing = None
    if meta.get("preprocessing"):
        from numprop.data.preprocess import preprocessing_from_state
        pre = meta["preprocessing"]
        preprocessing = preprocessing_from_state(
            pre["name"], {k[len("pre/"):]: v for k, v in arrays.items() if k.startswith("pre/")},
            pre["params"])
    training = None
    if meta.get("training") is not None:
        training = ({k[len("train/"):]: v for k, v in arrays.items() if k.startswith("train/")},
                    meta["training"])
    return SavedModel(model, preprocessing, meta.get("class_names", []), meta.get("config", {}),
                      meta.get("history", []), training)
