"""A user's own data files: .npz, .csv and image folders for train/evaluate, and predict's inputs."""

import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from numprop.data.files import (
    load_csv,
    load_data,
    load_image_folder,
    load_npz,
    read_inputs,
)
from numprop.data.images import read_images
from numprop.errors import ConfigError, DataError

# ----------------------------------------------------------------------- helpers


def write_csv(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def solid(path, colour, size=(12, 10), mode="RGB"):
    """A one-colour image (width, height) = size; one colour survives any resize exactly."""
    Image.new(mode, size, colour).save(path)
    return path


def image_folder(root, classes):
    """root/<class>/<i>.png, one solid colour per class; classes: {name: (colour, count)}."""
    for name, (colour, count) in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            solid(root / name / f"{i}.png", colour)
    return root


RED, GREEN, BLUE = (200, 10, 20), (5, 180, 40), (30, 60, 220)


# ----------------------------------------------------------------------- .npz


def test_npz_rows_with_int_labels(tmp_path):
    x = np.array([[0.5, -1.0], [2.0, 3.25], [1e-3, 7.0]])
    np.savez(tmp_path / "d.npz", X=x, y=np.array([7, 3, 7]))
    d = load_npz(tmp_path / "d.npz")
    assert d.train_x.dtype == np.float32 and d.train_x.shape == (3, 2)
    np.testing.assert_array_equal(d.train_x, x.astype(np.float32))
    assert d.class_names == ["3", "7"]
    assert d.train_y.dtype == np.int64
    np.testing.assert_array_equal(d.train_y, [1, 0, 1])
    assert d.test_x is None and d.test_y is None
    assert d.name == "d.npz" and d.flip is False and not d.is_images
    assert d.source == {"data": str(tmp_path / "d.npz")}


def test_npz_int_labels_sort_as_numbers(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((3, 1)), y=np.array([10, 2, 10]))
    d = load_npz(tmp_path / "d.npz")
    assert d.class_names == ["2", "10"]
    np.testing.assert_array_equal(d.train_y, [1, 0, 1])


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.bool_, np.float16])
def test_npz_integer_and_bool_rows_become_float32(tmp_path, dtype):
    x = np.array([[1, 0], [0, 1], [1, 1]]).astype(dtype)
    np.savez(tmp_path / "d.npz", X=x, y=np.array(["a", "b", "a"]))
    d = load_npz(tmp_path / "d.npz")
    assert d.train_x.dtype == np.float32
    np.testing.assert_array_equal(d.train_x, [[1, 0], [0, 1], [1, 1]])


def test_npz_string_labels_and_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    y = np.array(["dog", "cat", "dog", "bird"])
    np.savez_compressed(tmp_path / "d.npz", X=x, y=y, X_test=xt, y_test=np.array(["dog", "dog"]))
    d = load_npz(tmp_path / "d.npz")
    assert d.class_names == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(d.train_y, [2, 1, 2, 0])
    # The test labels use the training classes, though the test split has only "dog".
    np.testing.assert_array_equal(d.test_y, [2, 2])
    np.testing.assert_array_equal(d.test_x, xt.astype(np.float32))


def test_npz_grey_images_get_a_channel(tmp_path):
    x = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    np.savez(tmp_path / "d.npz", X=x, y=np.array([0, 1]))
    d = load_npz(tmp_path / "d.npz")
    assert d.is_images and d.train_x.shape == (2, 4, 5, 1) and d.train_x.dtype == np.uint8
    np.testing.assert_array_equal(d.train_x[..., 0], x)
    assert d.channels == 1


@pytest.mark.parametrize("channels", [1, 3])
def test_npz_images_with_channels_are_kept(tmp_path, channels):
    x = np.random.default_rng(1).integers(0, 256, (3, 4, 4, channels), dtype=np.uint8)
    xt = x[:2].copy()
    np.savez(tmp_path / "d.npz", X=x, y=[1, 2, 1], X_test=xt, y_test=[2, 2])
    d = load_npz(tmp_path / "d.npz")
    np.testing.assert_array_equal(d.train_x, x)
    np.testing.assert_array_equal(d.test_x, xt)
    assert d.channels == channels
    np.testing.assert_array_equal(d.test_y, [1, 1])


def test_npz_with_a_models_class_names(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 1)), y=np.array(["cat", "cat"]))
    d = load_npz(tmp_path / "d.npz", class_names=["zebra", "cat", "ant"])
    assert d.class_names == ["zebra", "cat", "ant"]
    np.testing.assert_array_equal(d.train_y, [1, 1])
    with pytest.raises(DataError, match=r"d\.npz.*'cat'.*not among"):
        load_npz(tmp_path / "d.npz", class_names=["dog", "ant"])


def test_npz_object_array_is_refused_not_unpickled(tmp_path):
    y = np.array(["a", None, "b"], dtype=object)
    np.savez(tmp_path / "o.npz", X=np.zeros((3, 2)), y=y)
    with pytest.raises(DataError, match=r"o\.npz.*'y'.*Python objects"):
        load_npz(tmp_path / "o.npz")


def test_npz_not_a_zip(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"hello, not an archive")
    with pytest.raises(DataError, match=r"d\.npz: not a \.npz file"):
        load_npz(tmp_path / "d.npz")
    np.save(tmp_path / "a.npy", np.zeros(3))  # a lone .npy renamed is not an archive either
    (tmp_path / "a.npy").rename(tmp_path / "a.npz")
    with pytest.raises(DataError, match=r"a\.npz: not a \.npz file"):
        load_npz(tmp_path / "a.npz")


def test_npz_corrupt_member(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.arange(400.0).reshape(100, 4), y=np.arange(100))
    with zipfile.ZipFile(tmp_path / "d.npz") as z:
        offset = z.getinfo("X.npy").header_offset
    data = bytearray((tmp_path / "d.npz").read_bytes())
    data[offset + 300 : offset + 310] = b"\xff" * 10  # inside X's stored bytes: a CRC error
    (tmp_path / "d.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"d\.npz: array 'X' is corrupt \(Bad CRC"):
        load_npz(tmp_path / "d.npz")


def test_npz_truncated(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((50, 4)), y=np.zeros(50))
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"d\.npz: not a \.npz file .*or a truncated one"):
        load_npz(tmp_path / "d.npz")


def test_npz_missing_arrays_are_listed(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 2)), labels=np.zeros(2))
    with pytest.raises(DataError, match=r"no array 'y'; it holds 'X', 'labels'"):
        load_npz(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", data=np.zeros((2, 2)))
    with pytest.raises(DataError, match=r"no array 'X' or 'y'; it holds 'data'"):
        load_npz(tmp_path / "e.npz")


@pytest.mark.parametrize("have,lack", [("X_test", "y_test"), ("y_test", "X_test")])
def test_npz_test_arrays_come_in_pairs(tmp_path, have, lack):
    extra = {have: np.zeros((1, 2)) if have == "X_test" else np.zeros(1)}
    np.savez(tmp_path / "d.npz", X=np.zeros((2, 2)), y=np.zeros(2), **extra)
    with pytest.raises(DataError, match=f"holds {have} but not {lack}"):
        load_npz(tmp_path / "d.npz")


def test_npz_test_class_absent_from_training_is_named(tmp_path):
    np.savez(
        tmp_path / "d.npz",
        X=np.zeros((2, 1)),
        y=np.array(["cat", "dog"]),
        X_test=np.zeros((2, 1)),
        y_test=np.array(["cat", "emu"]),
    )
    with pytest.raises(DataError, match=r"y_test has class\(es\) 'emu' that the training"):
        load_npz(tmp_path / "d.npz")


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"X": np.zeros((1, 2)), "y": np.zeros(1)}, r"1 example\(s\); at least 2"),
        ({"X": np.zeros((3, 2)), "y": np.zeros(2)}, r"y holds 2 labels but X holds 3"),
        ({"X": np.zeros((2, 2)), "y": np.zeros((2, 1))}, r"y must be one label per example"),
        (
            {"X": np.array([[1.0], [np.nan]]), "y": np.zeros(2)},
            r"X: holds NaN or infinite.*\[1, 0\]",
        ),
        (
            {"X": np.array([[1.0], [1e300]]), "y": np.zeros(2)},
            r"X: value 1e\+300 at \[1, 0\] is too large for float32",
        ),
        ({"X": np.zeros((2, 0)), "y": np.zeros(2)}, r"rows with no columns"),
        ({"X": np.zeros(4), "y": np.zeros(4)}, r"X has shape \(4,\).*expected rows \(N, D\)"),
        ({"X": np.zeros((2, 3, 3, 3)), "y": np.zeros(2)}, r"images must be uint8"),
        ({"X": np.zeros((2, 3, 3, 4), np.uint8), "y": np.zeros(2)}, r"C 1 or 3"),
        ({"X": np.array([["a"], ["b"]]), "y": np.zeros(2)}, r"dtype <U1; expected rows"),
        ({"X": np.zeros((2, 1)), "y": np.array([0.5, 1.0])}, r"y: labels are fractional"),
        (
            {"X": np.zeros((2, 3)), "y": np.zeros(2), "X_test": np.zeros((1, 4)), "y_test": [0]},
            r"X_test examples have shape \(4,\), X's have \(3,\)",
        ),
        (
            {"X": np.zeros((2, 3)), "y": np.zeros(2), "X_test": np.zeros((2, 3)), "y_test": [0]},
            r"y_test holds 1 labels but X_test holds 2",
        ),
    ],
)
def test_npz_bad_contents(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"bad\.npz.*" + message):
        load_npz(tmp_path / "bad.npz")


# ----------------------------------------------------------------------- .csv


def test_csv_rows_string_labels_and_columns(tmp_path):
    write_csv(tmp_path / "t.csv", "a,species,b\n1.5,setosa,-2\n3,virginica,4e1\n0,setosa,1\n")
    d = load_csv(tmp_path / "t.csv", "species")
    assert d.train_x.dtype == np.float32 and d.train_x.shape == (3, 2)
    np.testing.assert_array_equal(d.train_x, [[1.5, -2], [3, 40], [0, 1]])
    assert d.class_names == ["setosa", "virginica"]
    np.testing.assert_array_equal(d.train_y, [0, 1, 0])
    assert d.test_x is None and d.test_y is None and d.flip is False and d.name == "t.csv"
    assert d.source == {"data": str(tmp_path / "t.csv"), "target": "species", "columns": ["a", "b"]}


def test_csv_int_labels_sort_as_numbers_and_keep_their_text(tmp_path):
    write_csv(tmp_path / "t.csv", "x,label\n1,10\n2,2\n3,10\n4,-1\n")
    d = load_csv(tmp_path / "t.csv", "label")
    assert d.class_names == ["-1", "2", "10"]
    np.testing.assert_array_equal(d.train_y, [2, 1, 2, 0])
    # "007" is not plainly an integer: labels stay text, so the name stays "007".
    write_csv(tmp_path / "z.csv", "x,label\n1,007\n2,2\n")
    assert load_csv(tmp_path / "z.csv", "label").class_names == ["007", "2"]


def test_csv_bom_whitespace_crlf_and_blank_lines(tmp_path):
    text = "\ufeff a , label \r\n 1 , yes \r\n\r\n2,no\r\n\r\n"
    write_csv(tmp_path / "t.csv", text)
    d = load_csv(tmp_path / "t.csv", "label")
    np.testing.assert_array_equal(d.train_x, [[1], [2]])
    assert d.class_names == ["no", "yes"] and d.source["columns"] == ["a"]
    np.testing.assert_array_equal(d.train_y, [1, 0])


def test_csv_quoted_fields(tmp_path):
    write_csv(tmp_path / "t.csv", 'a,"the label"\n"1.5","New York, NY"\n2,Paris\n')
    d = load_csv(tmp_path / "t.csv", "the label")
    assert d.class_names == ["New York, NY", "Paris"]
    np.testing.assert_array_equal(d.train_x, [[1.5], [2]])


def test_csv_with_a_models_class_names(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,3\n2,7\n")
    d = load_csv(tmp_path / "t.csv", "label", class_names=["7", "5", "3"])
    assert d.class_names == ["7", "5", "3"]
    np.testing.assert_array_equal(d.train_y, [2, 0])
    with pytest.raises(DataError, match=r"t\.csv.*'7'.*not among"):
        load_csv(tmp_path / "t.csv", "label", class_names=["3", "5"])


def test_csv_needs_a_target(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,x\n2,y\n")
    with pytest.raises(ConfigError, match=r"--target COLUMN is needed for a \.csv.*'a', 'label'"):
        load_csv(tmp_path / "t.csv", None)


def test_csv_unknown_target_lists_the_columns(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,x\n2,y\n")
    with pytest.raises(DataError, match=r"t\.csv: no column 'class'; the columns are 'a', 'label'"):
        load_csv(tmp_path / "t.csv", "class")


def test_csv_with_another_separator_gets_a_hint(tmp_path):
    write_csv(tmp_path / "t.csv", "a;label\n1;x\n2;y\n")
    with pytest.raises(DataError, match=r"no column 'label'.*comma-separated"):
        load_csv(tmp_path / "t.csv", "label")


def test_csv_numeric_first_row_is_not_a_header(tmp_path):
    write_csv(tmp_path / "t.csv", "1,2,0\n3,4,1\n")
    with pytest.raises(DataError, match=r"t\.csv: the first row must be a header"):
        load_csv(tmp_path / "t.csv", "0")


def test_csv_empty_cell_names_row_and_column(tmp_path):
    # The header is row 1, so the second data row is row 3.
    write_csv(tmp_path / "t.csv", "a,b,label\n1,2,x\n3,,y\n4,5,x\n")
    with pytest.raises(DataError, match=r"t\.csv: row 3, column 'b': an empty cell"):
        load_csv(tmp_path / "t.csv", "label")


def test_csv_row_numbers_count_blank_lines(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,x\n\n,y\n")
    with pytest.raises(DataError, match=r"row 4, column 'a': an empty cell"):
        load_csv(tmp_path / "t.csv", "label")


@pytest.mark.parametrize("cell", ["NA", "nan", "?"])
def test_csv_missing_value_markers(tmp_path, cell):
    write_csv(tmp_path / "t.csv", f"a,label\n1,x\n{cell},y\n")
    with pytest.raises(
        DataError, match=rf"row 3, column 'a': a missing value \('{re.escape(cell)}'\)"
    ):
        load_csv(tmp_path / "t.csv", "label")


def test_csv_infinite_value(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,x\ninf,y\n")
    with pytest.raises(DataError, match=r"row 3, column 'a': 'inf' is not finite"):
        load_csv(tmp_path / "t.csv", "label")


def test_csv_value_too_large_for_float32(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,x\n1e300,y\n")
    with pytest.raises(DataError, match=r"row 3, column 'a': 1e300 is too large for float32"):
        load_csv(tmp_path / "t.csv", "label")


def test_csv_non_numeric_column(tmp_path):
    write_csv(tmp_path / "t.csv", "a,colour,label\n1,2,x\n2,red,y\n3,blue,x\n")
    with pytest.raises(
        DataError, match=r"t\.csv: column 'colour' is not numeric: row 3 holds 'red'.*drop.*encode"
    ):
        load_csv(tmp_path / "t.csv", "label")


def test_csv_wrong_number_of_fields(tmp_path):
    write_csv(tmp_path / "t.csv", "a,b,label\n1,2,x\n1,2,3,y\n")
    with pytest.raises(DataError, match=r"t\.csv: row 3 has 4 field\(s\); the header has 3"):
        load_csv(tmp_path / "t.csv", "label")


def test_csv_missing_label(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,x\n2,\n")
    with pytest.raises(DataError, match=r"row 3, label column 'label': missing label"):
        load_csv(tmp_path / "t.csv", "label")


@pytest.mark.parametrize(
    "text,message",
    [
        ("", r"empty file"),
        ("\n\n", r"empty file"),
        ("label\nx\ny\n", r"no feature columns"),
        ("a,label\n1,x\n", r"1 data row\(s\) under the header; at least 2"),
        ("a,a,label\n1,2,x\n3,4,y\n", r"names column 'a' twice"),
        (",a,label\n0,1,x\n1,2,y\n", r"column 1 has no name.*index=False"),
        ('a,label\n1,"x\n', r"row 2: not valid CSV"),
    ],
)
def test_csv_bad_files(tmp_path, text, message):
    write_csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=r"bad\.csv.*" + message):
        load_csv(tmp_path / "bad.csv", "label")


def test_csv_not_utf8(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,caf\u00e9\n2,x\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"t\.csv: not UTF-8 text"):
        load_csv(tmp_path / "t.csv", "label")


# ----------------------------------------------------------------------- image folders


def test_image_folder(tmp_path):
    root = image_folder(tmp_path / "pets", {"dog": (RED, 2), "cat": (GREEN, 3)})
    solid(root / "cat" / "BIG.PNG", BLUE, size=(40, 30))  # any case of extension
    solid(root / "cat" / ".hidden.png", RED)  # hidden files are ignored
    (root / "cat" / "notes.txt").write_text("not an image")  # so are other files
    (root / ".cache").mkdir()  # and hidden folders
    solid(root / ".cache" / "x.png", RED)
    d = load_image_folder(root, image_size=6)
    assert d.class_names == ["cat", "dog"]
    assert d.train_x.shape == (6, 6, 6, 3) and d.train_x.dtype == np.uint8
    # Within a class, files come sorted by name: cat/0,1,2.png, cat/BIG.PNG, dog/0,1.png.
    np.testing.assert_array_equal(d.train_y, [0, 0, 0, 0, 1, 1])
    expected = [GREEN, GREEN, GREEN, BLUE, RED, RED]
    np.testing.assert_array_equal(d.train_x[:, 2, 3], expected)
    assert (d.train_x == np.array(expected, np.uint8)[:, None, None]).all()
    assert d.test_x is None and d.flip is False and d.name == "pets"
    assert d.source == {"data": str(root), "image_size": 6}


def test_image_folder_default_size_and_grey_files(tmp_path):
    root = image_folder(tmp_path / "d", {"a": (RED, 1)})
    (root / "b").mkdir()
    solid(root / "b" / "g.jpg", 90, mode="L")
    d = load_image_folder(root)
    assert d.train_x.shape == (2, 32, 32, 3)
    assert np.abs(d.train_x[1].astype(int) - 90).max() <= 2  # greyscale JPEG -> RGB


def test_image_folder_train_test_layout(tmp_path):
    image_folder(tmp_path / "d" / "train", {"b": (RED, 2), "a": (GREEN, 1), "c": (BLUE, 1)})
    image_folder(tmp_path / "d" / "test", {"c": (BLUE, 2)})
    d = load_image_folder(tmp_path / "d", image_size=4)
    assert d.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(d.train_y, [0, 1, 1, 2])
    assert d.test_x.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(d.test_y, [2, 2])  # the training classes' indices
    np.testing.assert_array_equal(d.test_x[:, 0, 0], [BLUE, BLUE])


def test_image_folder_classes_named_train_and_test_without_subfolders(tmp_path):
    # Two class folders that happen to be called train and test: a two-class data set.
    d = load_image_folder(image_folder(tmp_path / "d", {"train": (RED, 1), "test": (BLUE, 1)}))
    assert d.class_names == ["test", "train"] and d.test_x is None


def test_image_folder_test_class_absent_from_train(tmp_path):
    image_folder(tmp_path / "d" / "train", {"a": (RED, 1), "b": (GREEN, 1)})
    image_folder(tmp_path / "d" / "test", {"a": (RED, 1), "zebra": (BLUE, 1)})
    with pytest.raises(DataError, match=r"test.*'zebra'.*training"):
        load_image_folder(tmp_path / "d")


def test_image_folder_with_a_models_class_names(tmp_path):
    root = image_folder(tmp_path / "d", {"a": (RED, 1), "b": (GREEN, 1)})
    d = load_image_folder(root, image_size=2, class_names=["b", "x", "a"])
    assert d.class_names == ["b", "x", "a"]
    np.testing.assert_array_equal(d.train_y, [2, 0])
    with pytest.raises(DataError, match=r"'a'.*not among"):
        load_image_folder(root, class_names=["b", "x"])


def test_image_folder_class_without_images(tmp_path):
    root = image_folder(tmp_path / "d", {"a": (RED, 1), "b": (GREEN, 1)})
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("nothing")
    with pytest.raises(DataError, match=r"empty: class folder with no images.*\.png"):
        load_image_folder(root)


def test_image_folder_needs_two_classes(tmp_path):
    root = image_folder(tmp_path / "d", {"a": (RED, 2)})
    with pytest.raises(DataError, match=r"1 class folder\(s\), at least 2 needed"):
        load_image_folder(root)
    flat = tmp_path / "flat"
    flat.mkdir()
    solid(flat / "x.png", RED)
    with pytest.raises(DataError, match=r"flat: 0 class folder.*its 1 image\(s\) must go into"):
        load_image_folder(flat)


def test_image_folder_unreadable_image_names_the_file(tmp_path):
    root = image_folder(tmp_path / "d", {"a": (RED, 1), "b": (GREEN, 1)})
    (root / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png: not an image Pillow can read"):
        load_image_folder(root)


def test_image_folder_bad_arguments(tmp_path):
    with pytest.raises(DataError, match=r"nope: no such folder"):
        load_image_folder(tmp_path / "nope")
    write_csv(tmp_path / "f.csv", "a\n")
    with pytest.raises(DataError, match=r"f\.csv: not a folder"):
        load_image_folder(tmp_path / "f.csv")
    with pytest.raises(ConfigError, match=r"positive integer, got 0"):
        load_image_folder(tmp_path, image_size=0)


def test_read_images_takes_a_size(tmp_path):
    solid(tmp_path / "a.png", RED, size=(20, 20))
    out = read_images([tmp_path / "a.png"], size=(6, 10))  # (height, width)
    assert out.shape == (1, 6, 10, 3)
    assert (out == np.array(RED, np.uint8)).all()
    assert read_images([], size=(5, 7)).shape == (0, 5, 7, 3)
    with pytest.raises(ConfigError, match=r"\(height, width\)"):
        read_images([tmp_path / "a.png"], size=(0, 4))


# ----------------------------------------------------------------------- load_data


def test_load_data_dispatches_on_the_kind_of_path(tmp_path):
    root = image_folder(tmp_path / "imgs", {"a": (RED, 1), "b": (GREEN, 1)})
    d = load_data(root, image_size=3)
    assert d.is_images and d.train_x.shape == (2, 3, 3, 3)

    np.savez(tmp_path / "d.npz", X=np.ones((2, 2)), y=[0, 1])
    (tmp_path / "d.npz").rename(tmp_path / "d.NPZ")  # any case of suffix
    d = load_data(tmp_path / "d.NPZ", target="ignored")
    assert not d.is_images and d.name == "d.NPZ"

    write_csv(tmp_path / "t.csv", "a,label\n1,x\n2,y\n")
    d = load_data(tmp_path / "t.csv", target="label", class_names=["y", "x"])
    assert d.source["target"] == "label"
    np.testing.assert_array_equal(d.train_y, [1, 0])
    with pytest.raises(ConfigError, match=r"--target COLUMN"):
        load_data(tmp_path / "t.csv")


def test_load_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"gone\.npz: no such file or folder"):
        load_data(tmp_path / "gone.npz")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(
        DataError, match=r"d\.txt: unknown kind of data \(\.txt\).*\.npz.*\.csv.*folder"
    ):
        load_data(tmp_path / "d.txt")


# ----------------------------------------------------------------------- predict's inputs


def test_read_inputs_grey_images(tmp_path):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    rgb = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "c.png")
    x, names = read_inputs([tmp_path / "g.png", str(tmp_path / "c.png")], image_shape=(8, 8, 1))
    assert x.shape == (2, 8, 8, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[0, ..., 0], grey)  # greyscale comes back exactly
    expected = np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    np.testing.assert_array_equal(x[1, ..., 0], expected)  # colour through Pillow's 'L'
    assert names == [str(tmp_path / "g.png"), str(tmp_path / "c.png")]


def test_read_inputs_rgb_images_are_resized(tmp_path):
    solid(tmp_path / "cat.png", BLUE, size=(30, 20))
    rgb = np.random.default_rng(3).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "dog.PNG")
    x, names = read_inputs([tmp_path / "cat.png", tmp_path / "dog.PNG"], image_shape=(5, 4, 3))
    assert x.shape == (2, 5, 4, 3) and x.dtype == np.uint8
    assert (x[0] == np.array(BLUE, np.uint8)).all()
    np.testing.assert_array_equal(x[1], rgb)
    assert [n.rsplit("/", 1)[-1] for n in names] == ["cat.png", "dog.PNG"]


def test_read_inputs_images_need_an_image_shape(tmp_path):
    solid(tmp_path / "cat.png", RED)
    with pytest.raises(ConfigError, match=r"cat\.png: an image, but the model takes table rows"):
        read_inputs([tmp_path / "cat.png"])
    with pytest.raises(ConfigError, match=r"C 1 or 3"):
        read_inputs([tmp_path / "cat.png"], image_shape=(8, 8, 2))


def test_read_inputs_csv_picks_the_models_columns(tmp_path):
    write_csv(tmp_path / "t.csv", "id,b,label,a\nq,1,x,2\nr,3,y,4\n")
    write_csv(tmp_path / "u.csv", "a,b\n5,6\n")
    x, names = read_inputs([tmp_path / "t.csv", tmp_path / "u.csv"], columns=["a", "b"])
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [[2, 1], [4, 3], [5, 6]])
    t, u = str(tmp_path / "t.csv"), str(tmp_path / "u.csv")
    assert names == [f"{t}:row 2", f"{t}:row 3", f"{u}:row 2"]


def test_read_inputs_csv_missing_column(tmp_path):
    write_csv(tmp_path / "t.csv", "a,label\n1,x\n")
    with pytest.raises(
        DataError, match=r"t\.csv: no column 'b', which the model takes.*'a', 'label'"
    ):
        read_inputs([tmp_path / "t.csv"], columns=["a", "b"])


def test_read_inputs_csv_without_columns_must_be_all_numeric(tmp_path):
    write_csv(tmp_path / "t.csv", "a,b\n1,2\n3,4\n")
    x, _ = read_inputs(tmp_path / "t.csv")
    np.testing.assert_array_equal(x, [[1, 2], [3, 4]])
    write_csv(tmp_path / "s.csv", "a,label\n1,x\n")
    with pytest.raises(DataError, match=r"s\.csv: column 'label' is not numeric: row 2 holds 'x'"):
        read_inputs([tmp_path / "s.csv"])
    write_csv(tmp_path / "v.csv", "b,a\n1,2\n")
    with pytest.raises(DataError, match=r"v\.csv: columns 'b', 'a' differ from"):
        read_inputs([tmp_path / "t.csv", tmp_path / "v.csv"])


def test_read_inputs_csv_errors(tmp_path):
    write_csv(tmp_path / "h.csv", "a,b\n")
    with pytest.raises(DataError, match=r"h\.csv: no data rows"):
        read_inputs([tmp_path / "h.csv"])
    write_csv(tmp_path / "n.csv", "1,2\n3,4\n")
    with pytest.raises(DataError, match=r"n\.csv: the first row must be a header"):
        read_inputs([tmp_path / "n.csv"])
    write_csv(tmp_path / "e.csv", "a,b\n1,\n")
    with pytest.raises(DataError, match=r"e\.csv: row 2, column 'b': an empty cell"):
        read_inputs([tmp_path / "e.csv"], columns=["b"])
    write_csv(tmp_path / "t.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match=r"t\.csv: a table, but the model takes 4x4x3 images"):
        read_inputs([tmp_path / "t.csv"], image_shape=(4, 4, 3))


def test_read_inputs_npz(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.array([[1, 2], [3, 4]]), y=[0, 1])
    np.savez(tmp_path / "b.npz", rows=np.array([[5.5, 6.0]]))  # the only array
    x, names = read_inputs([tmp_path / "a.npz", tmp_path / "b.npz"])
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, [[1, 2], [3, 4], [5.5, 6]])
    a, b = str(tmp_path / "a.npz"), str(tmp_path / "b.npz")
    assert names == [f"{a}:0", f"{a}:1", f"{b}:0"]


def test_read_inputs_npz_images(tmp_path):
    imgs = np.random.default_rng(4).integers(0, 256, (3, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "i.npz", X=imgs)
    x, names = read_inputs([tmp_path / "i.npz"], image_shape=(4, 4, 1))
    np.testing.assert_array_equal(x[..., 0], imgs)
    assert x.shape == (3, 4, 4, 1) and len(names) == 3
    with pytest.raises(
        DataError, match=r"i\.npz: 'X' holds images of shape \(4, 4, 1\).*\(5, 5, 1\)"
    ):
        read_inputs([tmp_path / "i.npz"], image_shape=(5, 5, 1))
    with pytest.raises(ConfigError, match=r"i\.npz: 'X' holds images.*takes table rows"):
        read_inputs([tmp_path / "i.npz"])


def test_read_inputs_npz_errors(tmp_path):
    np.savez(tmp_path / "m.npz", a=np.zeros((1, 2)), b=np.zeros((1, 2)))
    with pytest.raises(DataError, match=r"m\.npz: no array 'X' and 2 arrays \('a', 'b'\)"):
        read_inputs([tmp_path / "m.npz"])
    np.savez(tmp_path / "o.npz", X=np.array([[1], None], dtype=object))
    with pytest.raises(DataError, match=r"o\.npz: array 'X' holds Python objects.*as numbers"):
        read_inputs([tmp_path / "o.npz"])
    np.savez(tmp_path / "r.npz", X=np.zeros((1, 3)))
    np.savez(tmp_path / "s.npz", X=np.zeros((1, 2)))
    with pytest.raises(DataError, match=r"s\.npz: 'X' examples have shape \(2,\)"):
        read_inputs([tmp_path / "r.npz", tmp_path / "s.npz"])
    with pytest.raises(DataError, match=r"r\.npz: 'X' holds table rows.*takes images"):
        read_inputs([tmp_path / "r.npz"], image_shape=(2, 2, 3))
    (tmp_path / "z.npz").write_text("plain text")
    with pytest.raises(DataError, match=r"z\.npz: not a \.npz file"):
        read_inputs([tmp_path / "z.npz"])


def test_read_inputs_kinds(tmp_path):
    solid(tmp_path / "a.png", RED)
    write_csv(tmp_path / "t.csv", "a\n1\n")
    with pytest.raises(DataError, match=r"mix kinds of files \(\.csv files, image files\)"):
        read_inputs([tmp_path / "a.png", tmp_path / "t.csv"], image_shape=(4, 4, 3))
    (tmp_path / "x.tiff").write_bytes(b"")
    with pytest.raises(DataError, match=r"x\.tiff: unknown kind of input \(\.tiff\)"):
        read_inputs([tmp_path / "x.tiff"])
    with pytest.raises(DataError, match=r"nope\.png: no such file"):
        read_inputs([tmp_path / "nope.png"], image_shape=(4, 4, 3))
    with pytest.raises(DataError, match=r"no input files"):
        read_inputs([])
