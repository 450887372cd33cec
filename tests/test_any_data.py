"""Any data, end to end through `numprop train / evaluate / predict / plot`: tables and images.

Every data set here is written by the test in the format a user would have:
an .npz, a .csv, an image folder, MNIST's official IDX files.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import struct

import numpy as np
import pytest
from PIL import Image

import numprop as npp
from numprop.cli import main
from numprop.data import catalog
from numprop.data.dataset import Dataset, encode_labels
from numprop.training.experiment import TrainConfig, train

QUICK = ["--epochs", "5", "--batch-size", "16", "--quiet", "--no-plots", "--lr", "0.05"]
QUICK += ["--val-size", "20"]


def blobs(n=300, d=6, seed=0):
    """Three well-separated Gaussian blobs in d dimensions, labelled with strings."""
    rng = np.random.default_rng(seed)
    names = np.array(["cat", "dog", "bird"])
    y = names[rng.integers(0, 3, n)]
    centres = {name: rng.normal(0, 4, d) for name in names}
    x = np.stack([centres[c] for c in y]) + rng.normal(0, 1, (n, d))
    # Columns on very different scales: the per-column standardisation must handle them.
    return (x * np.logspace(-2, 3, d)).astype(np.float32), y


def accuracy_in(out: str, word: str = "test accuracy") -> float:
    return float(re.search(rf"{word} (\d+\.\d\d)%", out).group(1))


# -- tables ----------------------------------------------------------------------------------


def test_npz_table_with_string_labels_end_to_end(tmp_path, capsys):
    x, y = blobs()
    np.savez(tmp_path / "blobs.npz", X=x[:240], y=y[:240], X_test=x[240:], y_test=y[240:])
    run = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "blobs.npz"), "--hidden", "16", "--out", str(run)]
    assert main(argv + QUICK) == 0
    out = capsys.readouterr().out
    assert "on 220 blobs.npz rows (20 held out for validation, 60 for the test)" in out
    assert accuracy_in(out) > 90  # separable blobs
    # The summary table of the layers is printed before training.
    assert "Linear(in_features=6, out_features=16" in out and "total parameters: 163" in out

    saved = npp.load(run / "model.npz")
    assert saved.class_names == ["bird", "cat", "dog"]  # sorted string labels, kept as names
    assert saved.inputs == {"kind": "table", "width": 6, "columns": None}
    assert saved.preprocessing.name == "columns"  # tables are standardised per column

    # predict prints class names; the rows of an .npz are named by their index.
    np.savez(tmp_path / "new.npz", X=x[240:245])
    assert main(["predict", str(run), str(tmp_path / "new.npz"), "--top", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    for line, truth in zip(lines, y[240:245]):
        assert re.fullmatch(r".*new\.npz:\d+: (bird|cat|dog) \d+\.\d%", line), line
        assert line.split(": ")[1].split()[0] == truth

    # evaluate on the model's own data: its X_test / y_test.
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "on 60 examples (the blobs.npz test set)" in out and "precision" in out


def test_csv_with_target_column_and_a_held_out_test_split(tmp_path, capsys):
    x, y = blobs(n=250, d=4, seed=1)
    path = tmp_path / "animals.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["weight", "species", "height", "age", "speed"])
        for row, label in zip(x, y):
            w.writerow([row[0], label, *row[1:]])
    run = tmp_path / "run"
    argv = ["train", "--data", str(path), "--target", "species", "--hidden", "16"]
    assert main(argv + ["--out", str(run), *QUICK]) == 0
    out = capsys.readouterr().out
    # No test split in a csv: a fifth is held out, stratified.
    assert "50 for the test, drawn from the training data" in out
    assert accuracy_in(out) > 90
    saved = npp.load(run / "model.npz")
    assert saved.inputs["columns"] == ["weight", "height", "age", "speed"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_examples"] == 50 and summary["config"]["target"] == "species"

    # predict on a csv whose columns come in another order and without the label:
    # they are picked by name.
    new = tmp_path / "new.csv"
    with open(new, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["speed", "age", "height", "weight"])
        for row in x[:3]:
            w.writerow([row[3], row[2], row[1], row[0]])
    assert main(["predict", str(run), str(new), "--top", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split(": ")[1].split()[0] for ln in lines] == list(y[:3])

    # evaluate on a file: every row of it, labels matched to the model's classes by name.
    assert main(["evaluate", str(run), "--data", str(path), "--target", "species"]) == 0
    out = capsys.readouterr().out
    assert "on 250 examples (all of animals.csv)" in out and accuracy_in(out, "accuracy") > 90
    # Without --data there is no separate test split to evaluate on: say so.
    assert main(["evaluate", str(run)]) == 2
    assert "no separate test split" in capsys.readouterr().err


def test_flips_on_a_table_are_refused_before_a_run_folder_exists(tmp_path, capsys):
    x, y = blobs(n=60)
    np.savez(tmp_path / "t.npz", X=x, y=y)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "t.npz"), "--flip", "--out", str(run)]) == 2
    assert "flips and crops apply to images only" in capsys.readouterr().err
    assert not run.exists()


def test_unknown_data_name_lists_the_data_sets(tmp_path, capsys):
    assert main(["train", "--data", "imagenet", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "no data set named 'imagenet'" in err
    assert "cifar10, cifar100, mnist, fashion-mnist" in err


def test_labels_outside_the_models_classes_are_named(tmp_path, capsys):
    x, y = blobs(n=120)
    np.savez(tmp_path / "t.npz", X=x, y=y)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "t.npz"), "--out", str(run), *QUICK]) == 0
    capsys.readouterr()
    np.savez(tmp_path / "other.npz", X=x[:5], y=np.array(["cat", "cow", "dog", "cat", "emu"]))
    assert main(["evaluate", str(run), "--data", str(tmp_path / "other.npz")]) == 2
    err = capsys.readouterr().err
    assert "'cow'" in err and "'emu'" in err and "not among the model's 3 classes" in err


# -- images ----------------------------------------------------------------------------------


def digit_images(n, seed):
    """Grey 28x28 images whose class (0..9) is where a bright bar lies; (N, 28, 28) uint8."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    for img, c in zip(images, labels):
        img[2 + 2 * c : 4 + 2 * c, 4:24] = 255
    return images, labels.astype(np.uint8)


def idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes())


def write_mnist(root):
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for prefix, (images, labels) in (
        ("train", digit_images(300, 0)),
        ("t10k", digit_images(100, 1)),
    ):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_gz(images))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_gz(labels))


def test_mnist_by_name_trains_grey_images_and_plots_without_the_data(tmp_path, capsys, monkeypatch):
    write_mnist(tmp_path / "data")
    run = tmp_path / "run"
    argv = ["train", "--data", "mnist", "--data-dir", str(tmp_path / "data"), "--no-download"]
    assert main(argv + ["--hidden", "32", "--out", str(run), *QUICK]) == 0
    out = capsys.readouterr().out
    assert "on 280 mnist images" in out and accuracy_in(out) > 90
    saved = npp.load(run / "model.npz")
    assert saved.inputs == {"kind": "images", "shape": [28, 28, 1]}
    assert saved.preprocessing.channels == 1  # one grey channel, from the data
    assert saved.config["flip"] is None  # digits: the data set's own default, no flips

    # plot reads the run, never the data: make any data loading fail loudly.
    def no_data(*args, **kwargs):
        raise AssertionError("plot loaded a data set")

    monkeypatch.setattr(catalog, "load_data", no_data)
    monkeypatch.setattr(catalog.DATASETS, "get", no_data)
    assert main(["plot", str(run)]) == 0
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[1] for p in written] == [
        "curves.png",
        "confusion.png",
        "weights.png",
        "mistakes.png",
    ]
    found = npp.training.predictions.read_predictions(run / "predictions.npz")
    assert found.y_true.shape == (100,) and found.mistake_images.shape[1:] == (28, 28, 1)


def test_flip_default_follows_the_data_set():
    x = np.zeros((20, 4, 4, 3), np.uint8)
    y = np.arange(20) % 2
    from numprop.training.experiment import make_batches, make_preprocessing, split_data

    for data_flip, setting, expect in (
        (True, None, True),
        (False, None, False),
        (True, False, False),
        (False, True, True),
    ):
        data = Dataset(x, y, x[:4], y[:4], ["a", "b"], flip=data_flip)
        config = TrainConfig(flip=setting, val_size=0, batch_size=4)
        rng = np.random.default_rng(0)
        splits = split_data(data, config, rng)
        pre = make_preprocessing(data, config).fit(splits.x)
        loader, _, _ = make_batches(data, splits, pre, config, rng)
        assert (loader.augment is not None and loader.augment.flip) == expect


def write_image_folder(root, size=12, per_class=30):
    """red/ green/ blue/ folders of noisy solid-colour PNGs of assorted sizes."""
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            side = size + int(rng.integers(0, 8))
            img = np.clip(rng.normal(rgb, 40, (side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")


def test_image_folder_resized_and_predicted_by_name(tmp_path, capsys):
    write_image_folder(tmp_path / "colours")
    run = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "colours"), "--image-size", "8", "--hidden", "8"]
    assert main(argv + ["--out", str(run), *QUICK]) == 0
    out = capsys.readouterr().out
    assert accuracy_in(out) > 90
    saved = npp.load(run / "model.npz")
    assert saved.class_names == ["blue", "green", "red"]
    assert saved.inputs == {"kind": "images", "shape": [8, 8, 3]}
    # A new, larger photo is resized to the model's 8x8 on the way in.
    Image.fromarray(np.full((40, 30, 3), (200, 20, 20), np.uint8)).save(tmp_path / "new.png")
    assert main(["predict", str(run), str(tmp_path / "new.png"), "--top", "1"]) == 0
    assert re.fullmatch(r".*new\.png: red \d+\.\d%\n", capsys.readouterr().out)


def test_predicting_images_with_a_table_model_is_one_line(tmp_path, capsys):
    x, y = blobs(n=60)
    np.savez(tmp_path / "t.npz", X=x, y=y)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "t.npz"), "--out", str(run), *QUICK]) == 0
    capsys.readouterr()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(run), str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


# -- the library ----------------------------------------------------------------------------


def test_train_takes_a_dataset_in_memory(tmp_path):
    x, y = blobs(n=200, d=5)
    labels, names = encode_labels(y)
    data = Dataset(x[:150], labels[:150], x[150:], labels[150:], names, name="blobs")
    config = TrainConfig(hidden=[8], epochs=5, lr=0.05, val_size=0, batch_size=16)
    result = train(config, tmp_path / "run", data=data, progress=False, print_fn=lambda s: None)
    assert result.test_acc > 0.9 and result.data is data
    again = train(config, tmp_path / "run2", data=data, progress=False, print_fn=lambda s: None)
    # Same seed, same run (all but the wall-clock seconds).
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in result.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in again.history] == strip


def test_encode_labels_keeps_any_type_as_names():
    idx, names = encode_labels(np.array([10, 2, 10, 7]))
    assert names == ["2", "7", "10"] and idx.tolist() == [2, 0, 2, 1]  # numeric order
    idx, names = encode_labels(["b", "a", "b"])
    assert names == ["a", "b"] and idx.tolist() == [1, 0, 1]
    idx, _ = encode_labels(np.array([7.0, 2.0]), class_names=["2", "7", "10"])
    assert idx.tolist() == [1, 0]
    with pytest.raises(npp.DataError, match="fractional"):
        encode_labels(np.array([0.5, 1.0]))
    with pytest.raises(npp.DataError, match="missing values"):
        encode_labels(np.array(["a", None], dtype=object))
