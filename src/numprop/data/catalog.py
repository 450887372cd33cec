"""Data sets by name ("cifar10", "mnist", ...) or by path (.npz, .csv, image folder): one entry point.

``load_data("mnist")`` and ``load_data("my_table.csv", target="label")`` both
return a ``Dataset``; the training pipeline, ``evaluate`` and ``predict`` call
nothing else to get their data.
"""

from __future__ import annotations

import os
from pathlib import Path

from numprop.data.cifar10 import load_cifar10
from numprop.data.cifar100 import load_cifar100
from numprop.data.dataset import Dataset
from numprop.data.mnist import load_fashion_mnist, load_mnist
from numprop.errors import DataError
from numprop.registry import Registry

__all__ = ["DATASETS", "load_data"]

# The one table of named data sets: each loader takes (root, *, download, progress),
# finds its official files under root (or downloads and verifies them) and returns a Dataset.
DATASETS = Registry("data set")
DATASETS.add("cifar10", load_cifar10)
DATASETS.add("cifar100", load_cifar100)
DATASETS.add("mnist", load_mnist)
DATASETS.add("fashion-mnist", load_fashion_mnist)


def load_data(
    data: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
    target: str | None = None,
    image_size: int = 32,
    class_names: list[str] | None = None,
) -> Dataset:
    """Load a named data set, or a user's .npz / .csv / image folder.

    Parameters
    ----------
    data : str or path-like
        A name in ``DATASETS`` ("cifar10", "cifar100", "mnist",
        "fashion-mnist"), or the path of a file or folder.
    data_dir : str or path-like, optional
        Where named data sets live (``resolve_data_dir`` decides the default);
        unused for paths.
    download : bool, default True
        Download a named data set that is not there.
    progress : bool, default True
        Show download progress.
    target : str, optional
        The label column of a .csv.
    image_size : int, default 32
        Side in pixels that the images of a folder are resized to.
    class_names : list of str, optional
        The classes labels must belong to (a saved model's, when evaluating);
        a user's labels are encoded against them.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        If the data cannot be found, downloaded or read, or its classes are
        not ``class_names``.
    ConfigError
        For options that do not fit the kind of data (e.g. no ``target`` for a .csv).
    """
    name = str(data)
    if name in DATASETS:
        dataset = DATASETS.get(name)(data_dir, download=download, progress=progress)
        if class_names is not None and list(class_names) != dataset.class_names:
            raise DataError(
                f"the model was trained on other classes than {name}'s "
                f"({', '.join(class_names[:5])}{' ...' if len(class_names) > 5 else ''})"
            )
        return dataset
    path = Path(name).expanduser()
    if not path.exists():
        raise DataError(
            f"no data set named {name!r} (choices: {', '.join(DATASETS.names())}) "
            f"and no file or folder {path}"
        )
    from numprop.data.files import load_data as load_path

    return load_path(path, target=target, image_size=image_size, class_names=class_names)
