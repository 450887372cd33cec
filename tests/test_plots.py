"""Metrics against hand-worked examples, image decoding round-trips, and every plot writing a real PNG."""

import numpy as np
import pytest
from PIL import Image

from numprop.data.images import read_images, write_png
from numprop.errors import ConfigError, DataError
from numprop.plots import plot_confusion, plot_first_layer, plot_history, plot_misclassified
from numprop.training.metrics import (
    accuracy,
    classification_report,
    confusion_matrix,
    precision_recall,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Four classes; class 3 never occurs in y_true and is never predicted, class 2 is never predicted.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 0, 1, 0, 1])
CM = np.array([[2, 1, 0, 0], [1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0]])


def assert_png(path, min_side=100):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        w, h = img.size
    assert min_side <= w <= 4000 and min_side <= h <= 4000
    assert not list(path.parent.glob(".*.tmp")), "a temporary file was left behind"


# ----------------------------------------------------------------- metrics


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert cm.dtype == np.int64 and cm.shape == (4, 4)
    np.testing.assert_array_equal(cm, CM)
    assert cm.sum() == len(Y_TRUE)


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(DataError, match="outside 0..3"):
        confusion_matrix([0, 4], [0, 1], 4)
    with pytest.raises(DataError, match="outside"):
        confusion_matrix([0, 1], [-1, 1], 4)
    with pytest.raises(DataError, match="length"):
        confusion_matrix([0, 1, 2], [0, 1], 4)
    with pytest.raises(DataError, match="integer"):
        confusion_matrix([0.5, 1.0], [0, 1], 4)
    with pytest.raises(ConfigError):
        confusion_matrix([0], [0], 0)
    assert confusion_matrix([], [], 3).sum() == 0


def test_precision_recall_by_hand():
    precision, recall = precision_recall(CM)
    # precision: column sums 4, 4, 0, 0 -> 2/4, 1/4, 0 (never predicted), 0
    np.testing.assert_allclose(precision, [0.5, 0.25, 0.0, 0.0])
    # recall: row sums 3, 2, 3, 0 -> 2/3, 1/2, 0/3, 0 (never occurs)
    np.testing.assert_allclose(recall, [2 / 3, 0.5, 0.0, 0.0])
    assert precision.dtype == recall.dtype == np.float64
    assert np.isfinite(precision).all() and np.isfinite(recall).all()


def test_accuracy():
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(3 / 8)
    assert accuracy([1, 2], [1, 2]) == 1.0
    with pytest.raises(DataError):
        accuracy([], [])


def test_classification_report_contains_names_and_numbers():
    names = ["cat", "dog", "frog", "unicorn"]
    report = classification_report(CM, names)
    for name in names:
        assert name in report
    cat = next(line for line in report.splitlines() if line.startswith("cat"))
    assert cat.split() == ["cat", "0.5000", "0.6667", "3"]
    frog = next(line for line in report.splitlines() if line.startswith("frog"))
    assert frog.split() == ["frog", "0.0000", "0.0000", "3"]
    acc = next(line for line in report.splitlines() if line.startswith("accuracy"))
    assert acc.split() == ["accuracy", "0.3750", "8"]
    # Fixed width: every table row has the same length.
    assert len({len(line) for line in report.splitlines()}) == 1
    with pytest.raises(ConfigError):
        classification_report(CM, names[:3])


# ----------------------------------------------------------------- images


def test_png_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", img)
    write_png(tmp_path / "b.png", img[::-1].copy())
    out = read_images([tmp_path / "a.png", str(tmp_path / "b.png")])
    assert out.dtype == np.uint8 and out.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(out[0], img)
    np.testing.assert_array_equal(out[1], img[::-1])


def test_jpeg_is_close(tmp_path):
    # A smooth image: JPEG is lossy, but the decode must land near the original.
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.stack([xx * 8, yy * 8, np.full_like(xx, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.jpg", quality=95)
    out = read_images([tmp_path / "a.jpg"])
    assert out.shape == (1, 32, 32, 3) and out.dtype == np.uint8
    assert np.abs(out[0].astype(int) - img).mean() < 4


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA"])
def test_other_modes_and_sizes_are_resized_to_rgb(tmp_path, mode):
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (48, 64, 4), dtype=np.uint8)  # 64 wide, 48 high
    Image.fromarray(rgba, "RGBA").convert(mode).save(tmp_path / "x.png")
    out = read_images([tmp_path / "x.png"])
    assert out.shape == (1, 32, 32, 3) and out.dtype == np.uint8
    if mode in ("L", "LA"):  # greyscale comes back with equal channels
        np.testing.assert_array_equal(out[0, ..., 0], out[0, ..., 1])


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    a = np.full((32, 32), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    Image.fromarray(a).save(tmp_path / "g16.png")
    out = read_images([tmp_path / "g16.png"])
    assert np.abs(out.astype(int) - 128).max() <= 1


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (40, 40), 1)
    img.putpalette([0, 0, 0, 200, 50, 10] + [0] * 762)
    img.save(tmp_path / "p.png", transparency=0)
    out = read_images([tmp_path / "p.png"])
    assert out.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(out[0, 5, 5], [200, 50, 10])


def test_uniform_big_image_keeps_its_colour(tmp_path):
    Image.new("RGB", (300, 200), (10, 200, 30)).save(tmp_path / "big.jpg", quality=100)
    out = read_images([tmp_path / "big.jpg"])
    assert out.shape == (1, 32, 32, 3)
    assert np.abs(out[0].astype(int) - [10, 200, 30]).max() <= 3


def test_not_an_image_names_the_file(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("this is not a picture\n")
    with pytest.raises(DataError, match=r"x\.png.*not an image Pillow can read"):
        read_images([bad])


def test_truncated_image_is_a_data_error(tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 77).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match=r"t\.jpg"):
        read_images([tmp_path / "t.jpg"])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png: no such file"):
        read_images([tmp_path / "nope.png"])


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    write_png(tmp_path / "big.png", np.zeros((64, 64, 3), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 px > 2x limit -> error
    with pytest.raises(DataError, match="decompression bomb"):
        read_images([tmp_path / "big.png"])


def test_empty_list():
    assert read_images([]).shape == (0, 32, 32, 3)


# ----------------------------------------------------------------- plots


def history(n=5, with_val=True):
    return [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "train_acc": 0.1 * e,
            "val_loss": 2.2 / e if with_val else None,
            "val_acc": 0.09 * e if with_val else None,
            "lr": 0.01,
            "seconds": 1.5,
        }
        for e in range(1, n + 1)
    ]


@pytest.mark.parametrize("with_val", [True, False])
def test_plot_history(tmp_path, with_val):
    out = plot_history(history(with_val=with_val), tmp_path / "history.png")
    assert out == tmp_path / "history.png"
    assert_png(out)


def test_plot_history_single_epoch_and_bad_input(tmp_path):
    assert_png(plot_history(history(1), tmp_path / "one.png"))
    with pytest.raises(DataError):
        plot_history([], tmp_path / "empty.png")
    with pytest.raises(DataError, match="val_acc"):
        plot_history(
            [{"epoch": 1, "train_loss": 1, "train_acc": 0.5, "val_loss": None}],
            tmp_path / "bad.png",
        )


def test_plot_confusion(tmp_path):
    out = plot_confusion(CM, ["cat", "dog", "frog", "unicorn"], tmp_path / "sub" / "cm.png")
    assert_png(out)
    with pytest.raises(ConfigError):
        plot_confusion(CM, ["cat"], tmp_path / "cm2.png")


def test_plot_first_layer(tmp_path):
    w = np.random.default_rng(2).standard_normal((32 * 32 * 3, 20)).astype(np.float32)
    w[:, 3] = 0.0  # a constant unit must not divide by zero
    assert_png(plot_first_layer(w, tmp_path / "w.png", max_units=12))


def test_plot_first_layer_rejects_non_image_weights(tmp_path):
    with pytest.raises(ConfigError, match="not images"):
        plot_first_layer(np.zeros((100, 10)), tmp_path / "w.png")
    assert not (tmp_path / "w.png").exists()


def test_plot_misclassified(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    y_true = np.arange(10) % 3
    y_pred = y_true.copy()
    y_pred[[1, 4, 7]] = (y_pred[[1, 4, 7]] + 1) % 3
    probs = rng.dirichlet(np.ones(3), size=10)
    names = ["cat", "dog", "ship"]
    assert_png(plot_misclassified(images, y_true, y_pred, names, tmp_path / "m.png", probs=probs))
    assert_png(plot_misclassified(images, y_true, y_pred, names, tmp_path / "m2.png", max_images=2))


def test_plot_misclassified_with_no_mistakes_still_writes(tmp_path):
    images = np.zeros((4, 32, 32, 3), np.uint8)
    y = np.array([0, 1, 2, 0])
    assert_png(plot_misclassified(images, y, y, ["a", "b", "c"], tmp_path / "none.png"))


def test_plot_overwrites_atomically(tmp_path):
    target = tmp_path / "h.png"
    target.write_bytes(b"old")
    plot_history(history(), target)
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.png"]
