"""Save format v2: what it writes, the v1 files it still reads, and every bad file it refuses."""

import io
import json
import shutil
import struct
import warnings
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import numprop as npp
from numprop.data.preprocess import Standardize
from numprop.nn.layers import LAYERS
from numprop.nn.module import Module, Parameter, Sequential
from numprop.training import io as npio
from numprop.training.io import SavedModel, load, save

DATA = Path(__file__).parent / "data"


# -- helpers -------------------------------------------------------------------------------------


def toy_model(seed=0):
    """Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear on (N, 2, 2, 3) images, and inputs."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (20, 2, 2, 3), dtype=np.uint8)
    pre = Standardize().fit(images)
    model = npp.models.mlp([12, 6, 3], dropout=0.1, batchnorm=True, rng=seed)
    model[1].running_mean[:] = rng.normal(size=6)  # buffers that are not their defaults
    model[1].running_var[:] = rng.uniform(0.5, 2, size=6)
    return model, pre, images


def training_state(model):
    arrays = {f"velocity.{k}": np.full_like(p.data, 0.25) for k, p in model.named_parameters()}
    meta = {
        "optimizer": {"type": "SGD", "lr": 0.1, "steps": 2},
        "schedule": {},
        "history": [{"epoch": 1, "train_loss": 1.0}],
        "rng": {"bit_generator": "PCG64"},
    }
    return arrays, meta


@pytest.fixture
def saved(tmp_path):
    """A v2 file with everything in it, and what loading it must give back."""
    model, pre, images = toy_model()
    path = save(
        tmp_path / "m.npz",
        model,
        preprocessing=pre,
        config={"hidden": [6]},
        history=[{"epoch": 1, "train_loss": 1.5}],
        class_names=["a", "b", "c"],
        training=training_state(model),
    )
    model.eval()
    expected = npp.softmax(model.forward(pre.transform(images)))
    return path, images, expected


def read_raw(path):
    """(meta dict, {name: array}) of a model file, read with plain NumPy."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return json.loads(arrays.pop("meta.json").tobytes()), arrays


def rewrite(path, meta=None, arrays=None, raw_meta=None, out=None):
    """Write a model file with this metadata (or these raw meta.json bytes) and arrays."""
    arrays = dict(arrays)
    if raw_meta is None:
        raw_meta = json.dumps(meta).encode()
    arrays["meta.json"] = np.frombuffer(raw_meta, dtype=np.uint8)
    out = out or path.with_name("edited.npz")
    np.savez(out, **arrays)
    return out


def edited(path, edit):
    """A copy of the model file at ``path`` with ``edit(meta, arrays)`` applied."""
    meta, arrays = read_raw(path)
    edit(meta, arrays)
    return rewrite(path, meta, arrays)


def refused(path, match=None):
    """Loading ``path`` raises ConfigError with a one-line message (matching ``match``)."""
    with pytest.raises(npp.ConfigError, match=match) as info:
        load(path)
    assert "\n" not in str(info.value)
    return str(info.value)


def central_entries(data):
    """Offsets of (central directory entry, its local header) for each member of a zip."""
    assert data[-22:-18] == b"PK\x05\x06"  # end of central directory, no comment
    count, _, start = struct.unpack("<HII", data[-12:-2])
    offsets, pos = [], start
    for _ in range(count):
        assert data[pos : pos + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        local = struct.unpack("<I", data[pos + 42 : pos + 46])[0]
        assert data[local : local + 4] == b"PK\x03\x04"
        offsets.append((pos, local))
        pos += 46 + name_len + extra_len + comment_len
    return offsets


# -- what is written -----------------------------------------------------------------------------


def test_writes_format_version_2_with_the_numprop_version(saved):
    path, _, _ = saved
    meta, arrays = read_raw(path)
    assert npio.FORMAT_VERSION == 2
    assert meta["format"] == "numprop-model" and meta["format_version"] == 2
    assert meta["numprop_version"] == npp.__version__
    assert meta["class_names"] == ["a", "b", "c"] and meta["dtype"] == "float32"
    assert {"param/0.weight", "param/1.running_var", "pre/mean", "train/velocity.0.weight"} <= set(
        arrays
    )


def test_v2_round_trip_gives_identical_predictions_and_fields(saved):
    path, images, expected = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file of this version: no warning
        loaded = load(path)
    assert isinstance(loaded, SavedModel)
    assert [f.name for f in fields(SavedModel)] == [
        "model",
        "preprocessing",
        "class_names",
        "config",
        "history",
        "training",
        "inputs",
    ]
    np.testing.assert_array_equal(loaded.predict_proba(images), expected)
    assert loaded.class_names == ["a", "b", "c"] and loaded.config == {"hidden": [6]}
    assert loaded.history == [{"epoch": 1, "train_loss": 1.5}]
    arrays, meta = loaded.training
    assert meta["optimizer"] == {"type": "SGD", "lr": 0.1, "steps": 2}
    np.testing.assert_array_equal(arrays["velocity.0.weight"], np.full((12, 6), 0.25, np.float32))
    arrays["velocity.0.weight"][0, 0] = 1  # loaded arrays are writable copies
    assert not loaded.model.training  # ready to predict


def test_v1_file_loads_and_predicts_bit_for_bit_as_before():
    expected = np.load(DATA / "v1_expected.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load(DATA / "v1_model.npz")
    # Same float32 operations on the same inputs: the very same bits as the release that wrote it.
    probs = loaded.predict_proba(expected["images"])
    assert probs.dtype == np.float32
    np.testing.assert_array_equal(probs, expected["probs"])
    assert loaded.class_names == ["a", "b", "c"]
    assert len(loaded.history) == 2 and type(loaded.preprocessing).__name__ == "Standardize"
    arrays, meta = loaded.training
    assert meta["optimizer"]["type"] == "SGD" and "velocity.4.bias" in arrays
    assert [type(m).__name__ for m in loaded.model] == [
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Dropout",
        "Linear",
    ]


def test_atomic_write_leaves_the_old_file_when_writing_fails(saved, monkeypatch):
    path, images, expected = saved
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(npio.np, "savez", broken_savez)
    model, pre, _ = toy_model(seed=1)
    with pytest.raises(OSError, match="disk full"):
        save(path, model, preprocessing=pre)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.npz"]  # no temp file left
    np.testing.assert_array_equal(load(path).predict_proba(images), expected)


# -- newer and unknown versions ------------------------------------------------------------------


def test_newer_format_version_is_refused_naming_the_writer(saved):
    path, _, _ = saved

    def newer(meta, arrays):
        meta.update(format_version=3, numprop_version="9.1.0", architecture="a new layout")

    message = refused(edited(path, newer), "format version 3")
    assert "written by numprop 9.1.0" in message
    assert "reads versions 1 to 2" in message

    def newer_unsigned(meta, arrays):
        meta["format_version"] = 99
        del meta["numprop_version"]

    assert "written by a newer numprop" in refused(edited(path, newer_unsigned), "version 99")


@pytest.mark.parametrize("version", [0, -1, "2", 2.0, True, None, [2]])
def test_unknown_format_version_values_are_refused(saved, version):
    path, _, _ = saved
    refused(
        edited(path, lambda meta, arrays: meta.update(format_version=version)),
        "unknown format version",
    )


# -- tolerated with a warning --------------------------------------------------------------------


def test_unknown_metadata_fields_warn_and_load(saved):
    path, images, expected = saved
    extra = edited(path, lambda meta, arrays: meta.update(future_field={"x": 1}, zeta=2))
    with pytest.warns(UserWarning, match="ignored metadata fields .*future_field, zeta") as rec:
        loaded = load(extra)
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    assert rec[0].filename == __file__  # it points at the caller of load()
    np.testing.assert_array_equal(loaded.predict_proba(images), expected)


def test_unknown_layer_settings_warn_and_load(saved):
    path, images, expected = saved

    def add_setting(meta, arrays):
        meta["architecture"][0]["sparsity"] = 0.5
        meta["architecture"][3]["mode"] = "spatial"

    with pytest.warns(UserWarning) as rec:
        loaded = load(edited(path, add_setting))
    messages = [str(w.message) for w in rec]
    assert any("layer Linear" in m and "sparsity" in m for m in messages)
    assert any("layer Dropout" in m and "mode" in m for m in messages)
    np.testing.assert_array_equal(loaded.predict_proba(images), expected)


def test_unknown_arrays_and_members_warn_and_load(saved):
    path, images, expected = saved
    extra = edited(path, lambda meta, arrays: arrays.update({"future/table": np.arange(3)}))
    with zipfile.ZipFile(extra, "a") as zf:
        zf.writestr("NOTES.txt", "not an array")
    with pytest.warns(UserWarning, match="ignored members .*: NOTES.txt, future/table"):
        loaded = load(extra)
    np.testing.assert_array_equal(loaded.predict_proba(images), expected)


def test_a_member_twice_is_refused(saved):
    path, _, _ = saved
    with zipfile.ZipFile(path) as zf:
        member = zf.read("param/0.bias.npy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("param/0.bias.npy", member)
    refused(path, "a member appears twice")


# -- refused: the file itself --------------------------------------------------------------------


def test_missing_file_and_folder_are_refused(tmp_path):
    refused(tmp_path / "missing.npz", "no model file")
    (tmp_path / "folder.npz").mkdir()
    refused(tmp_path / "folder.npz", "folder")


@pytest.mark.parametrize(
    "content", [b"", b"hello, not a zip", b"PK\x03\x04" + bytes(40), b"PK\x05\x06" + bytes(18)]
)
def test_files_that_are_not_zips_are_refused(tmp_path, content):
    (tmp_path / "junk.npz").write_bytes(content)
    refused(tmp_path / "junk.npz", "not a numprop model file")


def test_npy_renamed_npz_is_refused(tmp_path):
    np.save(tmp_path / "weights.npy", np.zeros((3, 3), np.float32))
    shutil.move(tmp_path / "weights.npy", tmp_path / "weights.npz")
    refused(tmp_path / "weights.npz", "not a numprop model file")


def test_zip_without_meta_json_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    refused(tmp_path / "other.npz", "no readable meta.json")
    with zipfile.ZipFile(tmp_path / "plain.npz", "w") as zf:
        zf.writestr("readme.txt", "hello")
    refused(tmp_path / "plain.npz", "no readable meta.json")


@pytest.mark.parametrize(
    "raw, match",
    [
        (b'\xff\xfe{"format": 1}', "not UTF-8"),
        (b'{"format": ', "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b"null", "a JSON null"),
        (b'"numprop-model"', "a JSON string"),
        (b"2", "a JSON number"),
        (b'{"format": "other-tool"}', "format 'other-tool'"),
    ],
)
def test_meta_json_that_is_not_a_json_object_is_refused(saved, raw, match):
    path, _, _ = saved
    _, arrays = read_raw(path)
    refused(rewrite(path, arrays=arrays, raw_meta=raw), match)


def test_meta_json_that_is_not_bytes_is_refused(saved):
    path, _, _ = saved
    meta, arrays = read_raw(path)
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8).astype(np.float32)
    np.savez(path.with_name("floaty.npz"), **arrays)
    refused(path.with_name("floaty.npz"), "no readable meta.json")


def test_object_arrays_are_refused_without_unpickling(saved):
    path, _, _ = saved
    meta, arrays = read_raw(path)
    arrays["param/0.bias"] = np.array([object()] * 6, dtype=object)
    rewrite(path, meta, arrays, out=path.with_name("pickled.npz"))
    refused(path.with_name("pickled.npz"), "object arrays are not allowed")


# -- refused: the metadata -----------------------------------------------------------------------


def drop(key):
    return lambda meta, arrays: meta.pop(key)


def set_meta(**values):
    return lambda meta, arrays: meta.update(values)


def set_layer(i, **values):
    return lambda meta, arrays: meta["architecture"][i].update(values)


def set_training(**values):
    return lambda meta, arrays: meta["training"].update(values)


@pytest.mark.parametrize(
    "edit, match",
    [
        (drop("architecture"), "no 'architecture'"),
        (drop("dtype"), "no 'dtype'"),
        (set_meta(architecture={"type": "Linear"}), "architecture must be a list"),
        (set_meta(architecture="Linear"), "architecture must be a list"),
        (set_meta(architecture=[["Linear"]]), "layer 0 of the architecture must be an object"),
        (set_meta(architecture=[{"in_features": 3}]), "layer 0 .* has no type name"),
        (set_meta(architecture=[{"type": "Conv9d"}]), "unknown layer type 'Conv9d'"),
        (set_layer(0, in_features="x"), r"in_features = 'x' is not int"),
        (set_layer(0, in_features=12.0), r"in_features = 12.0 is not int"),
        (set_layer(0, in_features=True), r"in_features = True is not int"),
        (set_layer(0, init=3), r"init = 3 is not str"),
        (set_layer(0, scale="big"), r"scale = 'big' is not float \| None"),
        (set_layer(1, eps="x"), r"eps = 'x' is not float"),
        (set_layer(3, p=[0.5]), r"p = \[0.5\] is not float"),
        (set_layer(3, p=1.5), "Dropout p must be in"),
        (set_layer(0, init="zeros"), "unknown init 'zeros'"),
        (set_layer(0, in_features=10**15), "cannot rebuild the model"),  # 48 PB: MemoryError
        (set_meta(dtype="float99"), "dtype 'float99' is not one numprop models use"),
        (set_meta(dtype="object"), "dtype 'object'"),
        (set_meta(dtype="int8"), "dtype 'int8'"),
        (set_meta(dtype="float16"), "dtype 'float16'"),
        (set_meta(dtype=32), "dtype 32"),
        (set_meta(class_names="abc"), "class_names must be a list of strings"),
        (set_meta(class_names=[0, 1, 2]), "class_names must be a list of strings"),
        (set_meta(config=[1]), "config must be an object"),
        (set_meta(history={"epoch": 1}), "history must be a list of objects"),
        (set_meta(history=[1.5]), "history must be a list of objects"),
        (set_meta(numprop_version=2), "numprop_version must be a string"),
        (set_meta(preprocessing="standardize"), "preprocessing must be an object"),
        (set_meta(preprocessing={"name": "standardize"}), "preprocessing must be an object"),
        (
            set_meta(preprocessing={"name": "fourier", "params": {}}),
            "unknown preprocessing 'fourier'",
        ),
        (
            set_meta(preprocessing={"name": "standardize", "params": {"input_dim": "x"}}),
            "input_dim",
        ),
        (
            set_meta(preprocessing={"name": "pca", "params": {"seed": "x"}}),
            "bad preprocessing 'pca'",
        ),
        (set_meta(training="resume me"), "training .* must be an object, got 'resume me'"),
        (set_meta(training=[1, 2]), "training .* must be an object"),
        (set_meta(training=7), "training .* must be an object"),
        (set_training(optimizer="SGD"), "training.optimizer must be an object"),
        (set_training(schedule=[]), "training.schedule must be an object"),
        (set_training(rng=12), "training.rng must be an object"),
        (set_training(history="x"), "training.history must be a list of objects"),
        (
            set_training(optimizer={"type": "SGD", "lr": "fast", "steps": 2}),
            "training.optimizer.lr must be a number",
        ),
        (
            set_training(optimizer={"type": "SGD", "lr": 0.1, "steps": 2.5}),
            "training.optimizer.steps must be an integer",
        ),
    ],
)
def test_metadata_of_the_wrong_shape_or_type_is_refused(saved, edit, match):
    path, _, _ = saved
    refused(edited(path, edit), match)


# -- refused: the arrays -------------------------------------------------------------------------


def set_array(name, value):
    return lambda meta, arrays: arrays.__setitem__(name, value)


def drop_array(name):
    return lambda meta, arrays: arrays.pop(name)


@pytest.mark.parametrize(
    "edit, match",
    [
        (drop_array("param/0.weight"), r"missing \['0.weight'\]"),
        (drop_array("param/1.running_var"), r"missing \['1.running_var'\]"),
        (set_array("param/2.weight", np.zeros(3, np.float32)), r"unexpected \['2.weight'\]"),
        (set_array("param/0.weight", np.zeros((6, 12), np.float32)), "'0.weight' has shape"),
        (set_array("param/0.bias", np.zeros(7, np.float32)), "'0.bias' has shape"),
        (set_array("param/0.bias", np.zeros(6, np.int32)), "'0.bias' has dtype int32"),
        (set_array("param/0.bias", np.array(list("abcdef"))), "'0.bias' has dtype <U1"),
        (set_array("param/0.bias", np.zeros(6, np.complex64)), "'0.bias' has dtype complex64"),
        (set_array("param/0.bias", np.zeros(6, "V4")), "'0.bias' has dtype"),
        (set_array("pre/mean", np.array(["r", "g", "b"])), "'mean' has dtype <U1, not a number"),
        (set_array("pre/std", np.zeros(4)), "standardize state: array 'std'"),
        (drop_array("pre/mean"), "array 'mean' missing"),
        (set_array("train/velocity.0.bias", np.array(["x"] * 6)), "'velocity.0.bias' has dtype"),
    ],
)
def test_arrays_of_the_wrong_name_shape_or_dtype_are_refused(saved, edit, match):
    path, _, _ = saved
    refused(edited(path, edit), match)


def npy_bytes(array, shape, extra=b""):
    """The bytes of a .npy file whose header claims ``shape`` for the data of ``array``."""
    buf = io.BytesIO()
    header = {
        "descr": np.lib.format.dtype_to_descr(array.dtype),
        "fortran_order": False,
        "shape": shape,
    }
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + array.tobytes() + extra


@pytest.mark.parametrize(
    "shape, extra, match",
    [
        (
            (10**15,),
            b"",
            r"shape \(1000000000000000,\) .* needs 4000000000000000 bytes, .* holds 24",
        ),
        ((6,), b"\0" * 4, "needs 24 bytes, the file holds 28"),
        ((7,), b"", "needs 28 bytes, the file holds 24"),
    ],
)
def test_arrays_whose_header_does_not_match_their_data_are_refused(saved, shape, extra, match):
    path, _, _ = saved
    bad = path.with_name("lying.npz")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "param/0.bias.npy":  # (6,) float32: 24 bytes of data
                data = npy_bytes(np.ones(6, np.float32), shape, extra)
            dst.writestr(info.filename, data)
    refused(bad, match)


# -- refused: damaged zips -----------------------------------------------------------------------


@pytest.mark.parametrize("method", [1, 8, 12, 14, 99])
@pytest.mark.parametrize("member", ["first", "meta", "all"])
def test_unknown_or_wrong_compression_method_is_refused(saved, method, member):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    entries = central_entries(bytes(data))
    with zipfile.ZipFile(path) as zf:
        names = [i.filename for i in zf.infolist()]
    chosen = {"first": [0], "meta": [names.index("meta.json.npy")], "all": range(len(entries))}[
        member
    ]
    for i in chosen:
        central, local = entries[i]
        data[central + 10 : central + 12] = struct.pack("<H", method)  # central directory
        data[local + 8 : local + 10] = struct.pack("<H", method)  # local header
    path.write_bytes(bytes(data))
    refused(path, "not a numprop model file")


@pytest.mark.parametrize("member", [0, -1])
def test_encrypted_members_are_refused(saved, member):
    path, _, _ = saved
    data = bytearray(path.read_bytes())
    central, local = central_entries(bytes(data))[member]
    for flags_at in (central + 8, local + 6):
        data[flags_at] |= 0x01  # general purpose flag: encrypted
    path.write_bytes(bytes(data))
    refused(path, "encrypted")


def test_byte_corruptions_and_truncations_load_or_raise_config_error(saved):
    path, images, expected = saved
    good = path.read_bytes()
    rng = np.random.default_rng(12345)
    bad = path.with_name("bad.npz")
    # 200 random positions, and every byte of the zip's structure that says where meta.json
    # is and how it is stored: its local header, its central directory entry, the end record.
    entries = central_entries(good)
    with zipfile.ZipFile(path) as zf:
        meta_at = [i.filename for i in zf.infolist()].index("meta.json.npy")
    central, local = entries[meta_at]
    structure = [
        *range(local, local + 30),
        *range(central, central + 46),
        *range(len(good) - 22, len(good)),
    ]
    where = [*rng.integers(0, len(good), 200), *structure]
    outcomes = {"loaded": 0, "refused": 0}
    for pos in where:
        data = bytearray(good)
        data[pos] = (data[pos] + int(rng.integers(1, 256))) % 256  # a different byte
        bad.write_bytes(bytes(data))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                loaded = load(bad)
        except npp.NumpropError as exc:
            assert isinstance(exc, npp.ConfigError) and "\n" not in str(exc), (pos, exc)
            outcomes["refused"] += 1
        else:  # CRC-32 guards every member: what loads is the model that was saved
            np.testing.assert_array_equal(loaded.predict_proba(images), expected, err_msg=pos)
            outcomes["loaded"] += 1
    assert outcomes["refused"] > 150 and outcomes["loaded"] > 0, outcomes
    for size in [0, 1, 21, 22, len(good) - 1, len(good) - 22, *rng.integers(0, len(good), 44)]:
        bad.write_bytes(good[:size])
        with pytest.raises(npp.ConfigError, match="not a numprop model file"):
            load(bad)


# -- layers of one's own -------------------------------------------------------------------------


class Scale(Module):
    """y = x * gain * factor, with a learnt per-feature gain: a layer this file defines."""

    def __init__(self, features: int, factor: float = 2.0, *, dtype=np.float32):
        self.features, self.factor = features, factor
        self.gain = Parameter(np.ones(features, dtype))

    def forward(self, x):
        return x * self.gain.data * self.factor

    def config(self):
        return {"features": self.features, "factor": self.factor}


@pytest.fixture
def scale_registered():
    name = "TestIoScale"
    assert name not in LAYERS
    register = getattr(npp, "register_layer", None) or npp.nn.layers.register_layer
    try:
        register(Scale, name=name)
        yield name
    finally:
        LAYERS._entries.pop(name, None)


def custom_model(seed=0):
    model = Sequential(npp.Linear(4, 3, rng=seed), Scale(3, factor=0.5), npp.ReLU())
    model[1].gain.data[:] = [1.0, -2.0, 3.0]
    return model


def test_saving_an_unregistered_layer_is_refused_before_writing(tmp_path):
    target = tmp_path / "sub" / "m.npz"
    with pytest.raises(npp.ConfigError, match="Scale is not registered"):
        save(target, custom_model())
    assert list(tmp_path.iterdir()) == []  # no file, no temp file, no folder
    (tmp_path / "sub").mkdir()
    with pytest.raises(npp.ConfigError, match="not registered"):
        save(target, custom_model())
    assert list((tmp_path / "sub").iterdir()) == []


def test_saving_metadata_load_would_refuse_is_refused_before_writing(tmp_path):
    model, _, _ = toy_model()
    with pytest.raises(npp.ConfigError, match="class_names must be a list of strings"):
        save(tmp_path / "m.npz", model, class_names=[0, 1, 2])
    with pytest.raises(npp.ConfigError, match="not JSON"):
        save(tmp_path / "m.npz", model, history=[{"loss": np.float32(1.0)}])
    assert list(tmp_path.iterdir()) == []


def test_registered_custom_layer_round_trips(tmp_path, scale_registered):
    model = custom_model()
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    path = save(tmp_path / "custom.npz", model, class_names=["p", "q", "r"])
    meta, _ = read_raw(path)
    assert meta["architecture"][1] == {"type": scale_registered, "features": 3, "factor": 0.5}
    loaded = load(path)
    assert isinstance(loaded.model[1], Scale) and loaded.model[1].factor == 0.5
    np.testing.assert_array_equal(loaded.model[1].gain.data, [1.0, -2.0, 3.0])
    np.testing.assert_array_equal(loaded.model.predict(x), model.predict(x))
    bad = edited(path, lambda meta, arrays: meta["architecture"][1].update(factor="half"))
    refused(bad, r"factor = 'half' is not float")
    LAYERS._entries.pop(scale_registered)  # as in a program that forgot to register
    refused(path, f"unknown layer type '{scale_registered}'")


def test_inputs_are_saved_and_a_file_without_them_means_cifar10_images(tmp_path):
    model = npp.models.mlp([4, 3, 2], rng=0)
    table = {"kind": "table", "width": 4, "columns": ["a", "b", "c", "d"]}
    assert load(save(tmp_path / "t.npz", model, inputs=table)).inputs == table
    images = {"kind": "images", "shape": [2, 2, 1]}
    assert load(save(tmp_path / "i.npz", model, inputs=images)).inputs == images
    # Written before inputs were recorded: what those models were trained on.
    assert load(save(tmp_path / "old.npz", model)).inputs == {
        "kind": "images",
        "shape": [32, 32, 3],
    }


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"kind": "audio"}, "inputs must be an object of kind"),
        ({"kind": "images", "shape": [32, 32]}, "inputs.shape must be"),
        ({"kind": "images", "shape": [32, 32, "3"]}, "inputs.shape must be"),
        ({"kind": "table", "width": 0}, "inputs.width must be"),
        ({"kind": "table", "width": 4, "columns": ["a"]}, "inputs.columns must be a list of 4"),
    ],
)
def test_bad_inputs_are_refused_on_save(tmp_path, inputs, message):
    with pytest.raises(npp.ConfigError, match=message):
        save(tmp_path / "m.npz", npp.models.mlp([4, 3, 2], rng=0), inputs=inputs)
    assert not (tmp_path / "m.npz").exists()


def test_nested_blocks_round_trip(tmp_path):
    """Residual blocks (a Sequential inside, or one layer) save and load to the same outputs."""
    model = npp.models.bottleneck_mlp(12, 6, 2, 3, expansion=2, dropout=0.1, rng=0)
    model.layers.insert(1, npp.Residual(npp.LayerNorm(6)))
    rng = np.random.default_rng(1)
    for p in model.parameters():  # LayerNorm parameters off their defaults too
        p.data[:] = rng.normal(size=p.shape)
    x = rng.normal(size=(5, 12)).astype(np.float32)
    path = save(tmp_path / "blocks.npz", model)
    meta, arrays = read_raw(path)
    assert meta["architecture"][1] == {
        "type": "Residual",
        "inner": {"type": "LayerNorm", "features": 6, "eps": 1e-5},
    }
    block = meta["architecture"][2]
    assert block["type"] == "Residual" and block["inner"]["type"] == "Sequential"
    assert [e["type"] for e in block["inner"]["layers"]] == [
        "LayerNorm",
        "Linear",
        "GELU",
        "Dropout",
        "Linear",
    ]
    assert "param/2.inner.1.weight" in arrays
    loaded = load(path)
    assert repr(loaded.model[2]) == repr(model[2])
    assert loaded.model.summary(12) == model.summary(12)
    np.testing.assert_array_equal(loaded.model.predict(x), model.predict(x))
    # a wrong setting deep inside is named by its path
    bad = edited(
        path,
        lambda meta, arrays: meta["architecture"][2]["inner"]["layers"][1].update(
            in_features="six"
        ),
    )
    refused(bad, r"layer 2\.inner\.1 \(Linear\): setting in_features = 'six' is not int")
    bad = edited(path, lambda meta, arrays: meta["architecture"][2]["inner"].update(layers=3))
    refused(bad, r"layer 2\.inner \(Sequential\) must list its layers")


def test_an_unregistered_layer_inside_a_block_is_refused_on_save(tmp_path):
    model = Sequential(npp.Residual(Sequential(npp.Linear(3, 3), Scale(3))))
    with pytest.raises(npp.ConfigError, match="Scale is not registered"):
        save(tmp_path / "m.npz", model)
    assert list(tmp_path.iterdir()) == []
