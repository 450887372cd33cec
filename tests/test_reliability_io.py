"""Reliability of model and checkpoint files: writes that are whole or not there, and loads
that end in a loaded model or a one-line NumpropError naming the file, whatever the bytes."""

import errno
import io
import json
import os
import pickle
import shutil
import stat
import struct
import threading
import time
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import numprop as npp
from numprop.data.preprocess import StandardizeColumns
from numprop.training import io as npio
from numprop.training.callbacks import atomic_write_text
from numprop.training.experiment import TrainConfig, train
from numprop.training.trainer import Callback, Trainer

# -- atomic writes -------------------------------------------------------------------------------


def test_write_goes_through_a_unique_temporary_file_synced_before_and_after_the_rename(
    tmp_path, monkeypatch
):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "history.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"] * 2
    assert [e[1] for e in events if e[0] == "fsync"] == ["file", "folder"] * 2
    temporaries = [e[1] for e in events if e[0] == "replace"]
    assert len(set(temporaries)) == 2  # a new name for every call
    for tmp in temporaries:
        assert os.path.dirname(tmp) == str(tmp_path)  # beside the target: the rename is atomic
        assert os.path.basename(tmp).startswith(f".history.json.{os.getpid()}.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        npp.save(tmp_path / "m.npz", npp.models.mlp([4, 3, 2], rng=0))
    finally:
        os.umask(old)
    for name in ("a.json", "m.npz"):  # not the 0o600 of tempfile.mkstemp
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
@pytest.mark.parametrize("kind", ["model", "text"])
def test_a_failed_write_leaves_the_old_file_and_raises_a_write_error(
    tmp_path, monkeypatch, where, kind
):
    target = tmp_path / ("m.npz" if kind == "model" else "summary.json")
    if kind == "model":
        npp.save(target, npp.models.mlp([4, 3, 2], rng=0))

        def write():
            npp.save(target, npp.models.mlp([4, 3, 2], rng=1))
    else:
        atomic_write_text(target, "old")

        def write():
            atomic_write_text(target, "new")

    before = target.read_bytes()
    patch = {"write": (npio.np, "savez"), "fsync": (os, "fsync"), "replace": (os, "replace")}
    if kind == "text" and where == "write":
        monkeypatch.setattr(npio, "atomic_write", _failing_after_some_bytes(npio.atomic_write))
    else:
        monkeypatch.setattr(*patch[where], disk_full)
    with pytest.raises(npp.WriteError) as info:
        write()
    monkeypatch.undo()
    message = str(info.value)
    assert isinstance(info.value, npp.NumpropError) and isinstance(info.value, OSError)
    assert str(target) in message and "No space left on device" in message
    assert "\n" not in message
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]  # no temporary left


def _failing_after_some_bytes(atomic_write):
    """``atomic_write`` whose writer runs out of disk after writing part of the file."""

    def failing(path, write):
        def partial(f):
            f.write(b"half a file")
            disk_full()

        return atomic_write(path, partial)

    return failing


def test_a_missing_folder_is_a_write_error_naming_the_file(tmp_path):
    target = tmp_path / "gone" / "history.csv"
    with pytest.raises(npp.WriteError, match=f"cannot write {target}: No such file"):
        atomic_write_text(target, "epoch\n")


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    target = tmp_path / "history.json"
    texts = [json.dumps({"writer": i, "pad": "x" * (5000 + i)}) for i in range(6)]
    errors = []

    def writer(text):
        try:
            for _ in range(20):
                atomic_write_text(target, text)
        except Exception as exc:  # noqa: BLE001 - any failure fails the test below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in texts  # one writer's whole text, never a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.json"]


# -- a valid file to damage ----------------------------------------------------------------------


ROWS = np.random.default_rng(7).normal(size=(10, 4))


@pytest.fixture
def good(tmp_path):
    """A checkpoint of a tiny model, as training writes one, and its predictions on ROWS."""
    model = npp.models.mlp([4, 3, 2], rng=0)
    pre = StandardizeColumns().fit(ROWS)
    optimizer = npp.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    arrays, meta = Trainer(model, npp.SoftmaxCrossEntropy(), optimizer).state()
    meta["rng"] = np.random.default_rng(3).bit_generator.state
    meta["history"] = [{"epoch": 1, "train_loss": 0.7, "train_acc": 0.5, "lr": 0.1}]
    path = npp.save(
        tmp_path / "last.npz",
        model,
        preprocessing=pre,
        config={"epochs": 3, "hidden": [3]},
        history=meta["history"],
        class_names=["no", "yes"],
        training=(arrays, meta),
        inputs={"kind": "table", "width": 4, "columns": None},
    )
    return path, npp.load(path).predict_proba(ROWS)


def members(path):
    """{name: bytes} of the zip at ``path``."""
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def write_members(path, content):
    """A zip at ``path`` holding ``content`` ({name: bytes}), stored as np.savez stores."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in content.items():
            zf.writestr(name, data)
    return path


def npy(array, header=None):
    """The bytes of a .npy file of ``array``; ``header`` replaces fields of its header."""
    buf = io.BytesIO()
    fields = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False}
    fields["shape"] = array.shape
    np.lib.format.write_array_header_1_0(buf, {**fields, **(header or {})})
    data = pickle.dumps(array) if array.dtype.hasobject else array.tobytes()
    return buf.getvalue() + data


def read_meta(path):
    raw = members(path)["meta.json.npy"]
    return json.loads(np.load(io.BytesIO(raw)).tobytes())


def with_meta(path, meta=None, raw=None):
    """A copy of the file at ``path`` whose meta.json is ``meta`` (or the bytes ``raw``)."""
    content = members(path)
    raw = json.dumps(meta).encode() if raw is None else raw
    content["meta.json.npy"] = npy(np.frombuffer(raw, np.uint8))
    return write_members(path.with_name("bad.npz"), content)


def with_members(path, changes):
    """A copy of the file at ``path`` with members replaced ({name: bytes}) or removed (None)."""
    content = members(path)
    for name, data in changes.items():
        if data is None:
            del content[name]
        else:
            content[name] = data
    return write_members(path.with_name("bad.npz"), content)


def refused(path, *fragments):
    """Loading ``path`` raises a NumpropError whose one-line message names it and says why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unknown fields: warned, then refused
        with pytest.raises(npp.NumpropError) as info:
            npp.load(path)
    message = str(info.value)
    assert isinstance(info.value, (npp.ConfigError, npp.DataError)), repr(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def edit(change):
    """A function of (path) giving a copy of the file with ``change(meta)`` applied."""

    def apply(path):
        meta = read_meta(path)
        change(meta)
        return with_meta(path, meta)

    return apply


def test_the_valid_file_loads(good):
    path, expected = good
    loaded = npp.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(ROWS), expected)
    assert loaded.training is not None and loaded.class_names == ["no", "yes"]


# -- refused: the metadata -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, says",
    [
        (b"[1, 2]", "a JSON list, not an object"),
        (b"null", "a JSON null, not an object"),
        (b'"model"', "a JSON string, not an object"),
        (b"3.5", "a JSON number, not an object"),
        (b"true", "a JSON boolean, not an object"),
        (b"", "not JSON"),
        (b'{"format": "numprop-model", ', "not JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 100_000, "not JSON"),  # deeper than the parser's recursion
        (b"{}", "format None"),
    ],
)
def test_metadata_that_is_not_a_json_object_is_refused(good, raw, says):
    refused(with_meta(good[0], raw=raw), says)


def pop(*keys):
    """A change removing ``meta[k1][k2]...``."""

    def change(meta):
        for key in keys[:-1]:
            meta = meta[key]
        del meta[keys[-1]]

    return change


@pytest.mark.parametrize(
    "keys, says",
    [
        (("format",), "format None"),
        (("format_version",), "unknown format version None"),
        (("architecture",), "the metadata has no 'architecture'"),
        (("dtype",), "the metadata has no 'dtype'"),
        (("preprocessing", "params"), "preprocessing must be an object with a name and params"),
        (("preprocessing", "name"), "preprocessing must be an object with a name and params"),
        (("inputs", "kind"), "inputs must be an object of kind"),
        (("inputs", "width"), "inputs.width must be a positive integer"),
        (("training", "optimizer"), "training (the state to resume from) has no 'optimizer'"),
        (("training", "schedule"), "training (the state to resume from) has no 'schedule'"),
        (("training", "history"), "training (the state to resume from) has no 'history'"),
        (("training", "optimizer", "lr"), "training.optimizer has no 'lr'"),
        (("training", "optimizer", "steps"), "training.optimizer has no 'steps'"),
        (("training", "optimizer", "type"), "training.optimizer has no 'type'"),
        (("architecture", 0, "in_features"), "bad settings for layer Linear"),
        (("architecture", 2, "type"), "layer 2 of the architecture has no type name"),
    ],
)
def test_missing_keys_are_refused(good, keys, says):
    refused(edit(pop(*keys))(good[0]), says)


def put(*keys, value):
    """A change setting ``meta[k1][k2]...`` to ``value``."""

    def change(meta):
        for key in keys[:-1]:
            meta = meta[key]
        meta[keys[-1]] = value

    return change


@pytest.mark.parametrize(
    "keys, value, says",
    [
        (("architecture", 0, "in_features"), "x", "in_features = 'x' is not int"),
        (("architecture", 0, "in_features"), True, "in_features = True is not int"),
        (("architecture", 0, "out_features"), 3.0, "out_features = 3.0 is not int"),
        (("architecture", 0, "out_features"), None, "out_features = None is not int"),
        (("architecture", 0, "in_features"), -4, "Linear needs positive sizes, got (-4, 3)"),
        (("architecture", 2, "out_features"), 0, "Linear needs positive sizes, got (3, 0)"),
        (("architecture", 0, "scale"), "big", "scale = 'big' is not float | None"),
        (("architecture", 0, "init"), "zeros", "unknown init 'zeros'"),
        (("architecture", 1), {"type": "Dropout", "p": "half"}, "p = 'half' is not float"),
        (("architecture", 1), {"type": "Dropout", "p": 1.0}, "Dropout p must be in [0, 1)"),
        (
            ("architecture", 1),
            {"type": "BatchNorm1d", "num_features": 0},
            "BatchNorm1d needs a positive number of features, got 0",
        ),
        (
            ("architecture", 1),
            {"type": "BatchNorm1d", "num_features": -3},
            "BatchNorm1d needs a positive number of features, got -3",
        ),
        (("architecture", 1), {"type": "Conv9d"}, "unknown layer type 'Conv9d'"),
        (("architecture",), {"0": "Linear"}, "the architecture must be a list of layers"),
        (("format_version",), "2", "unknown format version '2'"),
        (("format_version",), True, "unknown format version True"),
        (("numprop_version",), 3, "numprop_version must be a string"),
        (("class_names",), [0, 1], "class_names must be a list of strings"),
        (("config",), "epochs=3", "config must be an object"),
        (("history",), [{"epoch": "abc"}], "history[0].epoch must be an integer, got 'abc'"),
        (("history",), [{"epoch": 1.5}], "history[0].epoch must be an integer"),
        (("history",), [{"val_acc": "high"}], "history[0].val_acc must be a number or null"),
        (("history",), [{"lr": True}], "history[0].lr must be a number or null"),
        (("inputs", "width"), 0, "inputs.width must be a positive integer, got 0"),
        (("inputs", "width"), "4", "inputs.width must be a positive integer"),
        (("training", "optimizer", "lr"), "fast", "training.optimizer.lr must be a number"),
        (
            ("training", "optimizer", "steps"),
            -1,
            "training.optimizer.steps must be an integer >= 0",
        ),
        (("training", "optimizer", "steps"), True, "training.optimizer.steps must be an integer"),
        (("training", "optimizer", "type"), 5, "training.optimizer.type must be a string"),
        (("training", "schedule"), [], "training.schedule must be an object"),
        (("training", "rng"), "seed 3", "training.rng must be an object"),
        (("training", "history"), [{"epoch": "x"}], "training.history[0].epoch must be an integer"),
        (("preprocessing", "name"), "fourier", "unknown preprocessing 'fourier'"),
    ],
)
def test_values_of_the_wrong_type_or_range_are_refused(good, keys, value, says):
    refused(edit(put(*keys, value=value))(good[0]), says)


@pytest.mark.parametrize("dtype", ["float99", "object", "int8", "float16", "uint8", "", None, 32])
def test_dtypes_models_are_not_built_in_are_refused(good, dtype):
    refused(edit(put("dtype", value=dtype))(good[0]), "is not one numprop models use")


def test_float64_models_load(good):
    path, expected = good
    loaded = npp.load(edit(put("dtype", value="float64"))(path))
    assert loaded.model.dtype == np.float64
    np.testing.assert_allclose(loaded.predict_proba(ROWS), expected, rtol=1e-5)


# -- refused: the arrays -------------------------------------------------------------------------


UNPICKLED = []


class Trap:
    """Records that it was unpickled: loading a model file must never do that."""

    def __reduce__(self):
        return (UNPICKLED.append, ("a pickle in a model file was executed",))


@pytest.mark.parametrize(
    "member, data, says",
    [
        ("param/0.weight.npy", npy(np.full((4, 3), "w")), "'0.weight' has dtype <U1"),
        ("param/0.bias.npy", npy(np.array([b"a", b"b", b"c"])), "'0.bias' has dtype |S1"),
        ("param/0.bias.npy", npy(np.zeros(3, np.int8)), "'0.bias' has dtype int8"),
        ("param/0.bias.npy", npy(np.zeros(3, bool)), "'0.bias' has dtype bool"),
        ("param/0.bias.npy", npy(np.zeros(3, np.complex64)), "'0.bias' has dtype complex64"),
        ("param/0.bias.npy", npy(np.zeros(3, "V4")), "'0.bias' has dtype |V4"),
        ("param/0.bias.npy", npy(np.array([Trap()] * 3, object)), "object arrays are not allowed"),
        ("param/0.weight.npy", npy(np.zeros((3, 4), np.float32)), "'0.weight' has shape (3, 4)"),
        ("param/0.weight.npy", npy(np.zeros(12, np.float32)), "'0.weight' has shape (12,)"),
        ("param/2.bias.npy", npy(np.zeros((), np.float32)), "'2.bias' has shape ()"),
        ("param/0.weight.npy", None, "missing ['0.weight']"),
        ("param/9.weight.npy", npy(np.zeros(3, np.float32)), "unexpected ['9.weight']"),
        ("pre/mean.npy", npy(np.array(["a"] * 4)), "'mean' has dtype <U1, not a number"),
        ("pre/std.npy", npy(np.ones(5)), "columns state: array 'std'"),
        ("train/velocity.0.bias.npy", npy(np.array([Trap()], object)), "object arrays"),
        (
            "param/0.bias.npy",
            npy(np.zeros(3, np.float32), {"shape": (2,)}),
            "needs 8 bytes, the file holds 12",
        ),
        (
            "param/0.bias.npy",
            npy(np.zeros(3, np.float32), {"shape": (-1, -3)}),
            "negative array shape",
        ),
        ("param/0.bias.npy", b"\x93NUMPY\x03\x00" + bytes(20), "not supported"),
        ("param/0.bias.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'", "ValueError"),
        ("param/0.bias.npy", b"not an npy file", "ValueError"),
        ("meta.json.npy", npy(np.zeros(3, np.float32)), "no readable meta.json"),
    ],
)
def test_arrays_that_are_not_plain_or_do_not_fit_the_model_are_refused(good, member, data, says):
    path = with_members(good[0], {member: data})
    refused(path, says)
    assert UNPICKLED == []


# -- refused: what is not a model file, or a zip stored in ways it is not read ------------------


def test_an_npy_file_renamed_npz_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    np.save(path.with_suffix(".npy"), np.ones((4, 3), np.float32))
    path.with_suffix(".npy").rename(path)
    refused(path, "is not a numprop model file", "BadZipFile")


@pytest.mark.parametrize(
    "content", [b"", b"PK", b"\x93NUMPY", b"x" * 1000, b"PK\x05\x06" + bytes(18)]
)
def test_files_that_are_not_zips_of_a_model_are_refused(tmp_path, content):
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    refused(path, "is not a numprop model file")


def entries(data):
    """(offset of the central directory entry, of the local header) of each member of a zip."""
    count, _, start = struct.unpack("<HII", data[-12:-2])  # the end record, no comment
    found, pos = [], start
    for _ in range(count):
        name_len, extra_len, comment_len = struct.unpack("<HHH", data[pos + 28 : pos + 34])
        found.append((pos, struct.unpack("<I", data[pos + 42 : pos + 46])[0]))
        pos += 46 + name_len + extra_len + comment_len
    return found


def patched(path, change):
    """A copy of the file at ``path`` with ``change(data, central, local)`` applied to each member."""
    data = bytearray(path.read_bytes())
    for central, local in entries(bytes(data)):
        change(data, central, local)
    bad = path.with_name("bad.npz")
    bad.write_bytes(bytes(data))
    return bad


@pytest.mark.parametrize("method", [1, 6, 8, 9, 12, 14, 19, 98, 99, 0xFFFF])
def test_members_stored_with_an_unknown_or_wrong_compression_method_are_refused(good, method):
    def change(data, central, local):
        data[central + 10 : central + 12] = struct.pack("<H", method)
        data[local + 8 : local + 10] = struct.pack("<H", method)

    refused(patched(good[0], change), "is not a numprop model file")


@pytest.mark.parametrize("flag", [0x01, 0x09, 0x41])  # encrypted, with others set
def test_members_flagged_as_encrypted_are_refused(good, flag):
    def change(data, central, local):
        data[central + 8 : central + 10] = struct.pack("<H", flag)
        data[local + 6 : local + 8] = struct.pack("<H", flag)

    refused(patched(good[0], change), "is not a numprop model file")


def test_a_compressed_model_file_loads(good):
    path, expected = good
    compressed = path.with_name("compressed.npz")
    with zipfile.ZipFile(compressed, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members(path).items():
            zf.writestr(name, data)
    np.testing.assert_array_equal(npp.load(compressed).predict_proba(ROWS), expected)


# -- sizes are not trusted -----------------------------------------------------------------------


def refused_quickly(path, *fragments, peak_below=4_000_000):
    """``refused``, and without allocating what the file claims: quickly, in few bytes."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        message = refused(path, *fragments)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 0.5
    assert peak < peak_below, peak
    return message


@pytest.mark.parametrize(
    "sizes, says",
    [
        ((10**6, 10**6), "too large (1,000,001,000,008 values, 12.0 TB to build"),
        ((10**200, 3), "too large (about 10^200 values"),
        ((10**4, 10**4), "too large for its file (100,010,008 parameter values declared, 23 held)"),
    ],
)
def test_an_architecture_declaring_huge_layers_is_refused_before_building(good, sizes, says):
    change = put("architecture", 0, value={"type": "Linear", "in_features": sizes[0]})
    bad = edit(lambda meta: (change(meta), meta["architecture"][0].update(out_features=sizes[1])))
    refused_quickly(bad(good[0]), "cannot rebuild the model: its architecture is", says)


def test_a_batchnorm_declaring_a_huge_size_is_refused_before_building(good):
    layer = {"type": "BatchNorm1d", "num_features": 10**12}
    refused_quickly(edit(put("architecture", 1, value=layer))(good[0]), "too large")


def test_an_npy_header_claiming_400_gb_more_than_its_member_holds_is_refused(good):
    data = npy(np.zeros(3, np.float32), {"shape": (100_000_000_000,)})
    bad = with_members(good[0], {"param/0.bias.npy": data})
    refused_quickly(bad, "needs 400000000000 bytes, the file holds 12")


def test_an_npy_member_claiming_400_gb_in_header_and_zip_is_refused_before_reading(good):
    """The zip's own size of the member agrees with the header: memory is what refuses it."""
    header = npy(np.zeros(0, np.float32), {"shape": (100_000_000_000,)})
    bad = good[0].with_name("bad.npz")
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in members(good[0]).items():
            zf.writestr(name, header + bytes(64) if name == "param/0.bias.npy" else data)
            if name == "param/0.bias.npy":
                # What the central directory says the member holds once uncompressed (written
                # with a zip64 record): 400 GB, where 64 bytes are there.
                zf.filelist[-1].file_size = len(header) + 400_000_000_000
    with zipfile.ZipFile(bad) as zf:
        assert zf.getinfo("param/0.bias.npy").file_size > 400_000_000_000
    refused_quickly(bad, "array 'param/0.bias' of shape (100000000000,) is too large to load")


def test_arrays_larger_than_the_memory_available_are_refused_before_reading(tmp_path, monkeypatch):
    path = npp.save(tmp_path / "m.npz", npp.models.mlp([100_000, 3, 2], rng=0))  # a 1.2 MB weight
    monkeypatch.setattr(npio, "available_memory", lambda: 500_000)
    message = refused_quickly(
        path, "is too large to load (1.2 MB, 500.0 kB of memory available)", peak_below=1_000_000
    )
    assert "param/0.weight" in message
    monkeypatch.setattr(npio, "available_memory", lambda: 3_000_000)
    # Read (1.2 MB, in one chunk), but not built: that would take 1.2 MB more, and 2.4 to draw.
    refused_quickly(path, "its architecture is too large", "3.0 MB of memory available")
    monkeypatch.undo()
    assert npp.load(path).model[0].weight.data.shape == (100_000, 3)


def test_the_memory_available_is_at_most_what_linux_reports():
    free = npio.available_memory()
    if not os.path.exists("/proc/meminfo"):  # elsewhere: the free pages, where told
        assert free is None or free > 0
        return
    with open("/proc/meminfo") as f:
        reported = next(int(line.split()[1]) * 1024 for line in f if "MemAvailable:" in line)
    # A container's limit may make it less; it moves a little between the two reads.
    assert free is not None and 0 < free <= reported * 1.1


# -- fuzzing: whatever the bytes, a model or a NumpropError --------------------------------------


def outcome(path):
    """ "loaded" (with the SavedModel) or "refused", for a file; any other exception propagates."""
    with warnings.catch_warnings():
        # As outside the tests: warnings (unknown fields, overflow in casts) are only warnings.
        warnings.simplefilter("ignore")
        try:
            return "loaded", npp.load(path)
        except npp.NumpropError as exc:
            message = str(exc)
            assert "\n" not in message and str(path) in message, message
            return "refused", None


def raw_mutations(data, rng, count):
    """``count`` damaged copies of ``data``: byte changes, truncations, insertions, deletions."""
    n = len(data)
    for i in range(count):
        kind = ("flip", "truncate", "insert", "delete")[i % 4]
        at = int(rng.integers(0, n))
        if kind == "flip":
            damaged = bytearray(data)
            damaged[at] = (damaged[at] + int(rng.integers(1, 256))) % 256  # a different byte
        elif kind == "truncate":
            damaged = data[:at]
        elif kind == "insert":
            damaged = data[:at] + rng.bytes(int(rng.integers(1, 9))) + data[at:]
        else:
            damaged = data[:at] + data[at + int(rng.integers(1, 9)) :]
        yield kind, bytes(damaged)


def test_random_damage_to_the_bytes_ends_in_the_saved_model_or_a_numprop_error(good):
    path, expected = good
    data = path.read_bytes()
    bad = path.with_name("bad.npz")
    rng = np.random.default_rng(2024)
    counts = {}
    for kind, damaged in raw_mutations(data, rng, 400):
        bad.write_bytes(damaged)
        result, loaded = outcome(bad)
        counts[kind, result] = counts.get((kind, result), 0) + 1
        if loaded is not None:  # CRC-32 guards every member: what loads is what was saved
            np.testing.assert_array_equal(loaded.predict_proba(ROWS), expected, err_msg=kind)
    assert counts.get(("truncate", "loaded"), 0) == 0, counts
    assert sum(v for (_, r), v in counts.items() if r == "refused") > 300, counts


def test_random_damage_inside_the_members_ends_in_a_model_or_a_numprop_error(good):
    """Damage the zip's CRCs cannot see: meta.json's text and the .npy headers, re-zipped."""
    path, _ = good
    content = members(path)
    names = sorted(content)
    rng = np.random.default_rng(7)
    bad = path.with_name("bad.npz")
    counts = {"loaded": 0, "refused": 0}
    for i in range(300):
        name = "meta.json.npy" if i % 2 else names[int(rng.integers(0, len(names)))]
        damaged = bytearray(content[name])
        start = 128 if name == "meta.json.npy" else 0  # the JSON text, or the .npy header
        end = len(damaged) if name == "meta.json.npy" else min(128, len(damaged))
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(start, end))
            damaged[at] = (
                int(rng.integers(32, 127)) if rng.random() < 0.8 else int(rng.integers(0, 256))
            )
        write_members(bad, {**content, name: bytes(damaged)})
        result, loaded = outcome(bad)
        counts[result] += 1
        if loaded is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a header made big-endian: any values
                try:
                    probs = loaded.predict_proba(ROWS)
                except npp.NumpropError:
                    continue
            assert probs.shape == (len(ROWS), 2)
    assert counts["refused"] > 150 and counts["loaded"] > 10, counts


# -- resuming from a damaged checkpoint ----------------------------------------------------------


class Crash(Callback):
    """Stops a run after its first epoch, as a power cut would."""

    def on_epoch_end(self, trainer, record):
        raise KeyboardInterrupt


QUIET = {"progress": False, "print_fn": lambda *args: None}


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    """A run folder whose training stopped after epoch 1 of 2, with its last.npz checkpoint."""
    folder = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = (np.eye(3)[y] @ rng.normal(size=(3, 4)) + rng.normal(size=(90, 4))).astype(np.float32)
    np.savez(folder / "rows.npz", X=x, y=y)
    config = TrainConfig(
        data=str(folder / "rows.npz"),
        hidden=[3],
        epochs=2,
        batch_size=16,
        val_size=0,
        precision="fp32",
        diagnostics=False,
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, folder / "cut", callbacks=[Crash()], **QUIET)
    return folder / "cut"


def resume_from(cut_run, tmp_path, change=None):
    """Resume a copy of ``cut_run`` whose checkpoint has ``change(meta)`` applied."""
    folder = tmp_path / "cut"
    shutil.copytree(cut_run, folder)
    if change is not None:
        last = folder / "last.npz"
        edit(change)(last).replace(last)
    return train(None, folder, resume=True, **QUIET)


def test_an_intact_checkpoint_resumes(cut_run, tmp_path):
    result = resume_from(cut_run, tmp_path)
    assert [r["epoch"] for r in result.history] == [1, 2]


MT19937_STATE = {"bit_generator": "MT19937", "state": {"key": list(range(624)), "pos": 624}}


def put_config(**values):
    return lambda meta: meta["config"].update(values)


def put_training(**values):
    return lambda meta: meta["training"].update(values)


@pytest.mark.parametrize(
    "change, says",
    [
        (put_config(epochs="abc"), "setting epochs = 'abc' is not int"),
        (put_config(epochs=True), "setting epochs = True is not int"),
        (put_config(hidden="3"), "setting hidden = '3' is not list[int]"),
        (put_config(hidden=[3, "x"]), "setting hidden = [3, 'x'] is not list[int]"),
        (put_config(lr="fast"), "setting lr = 'fast' is not float"),
        (put_config(flip="yes"), "setting flip = 'yes' is not bool | None"),
        (put_config(data=None), "setting data = None is not str"),
        (put_config(epochs=0), "epochs must be at least 1, got 0"),
        (put_config(batch_size=-5), "batch size must be at least 1, got -5"),
        (put_config(optimizer="nadam"), "unknown optimizer 'nadam'"),
        (
            put_config(hidden=[100_000]),
            "its settings give hidden sizes [100000], its model has [3]",
        ),
        (pop("training", "rng"), "holds no state of the generator ('rng') to resume from"),
        (put_training(rng={"bit_generator": "PCG64"}), "training.rng is not the state of a PCG64"),
        (put_training(rng=MT19937_STATE), "training.rng is not the state of a PCG64"),
        (
            put_config(optimizer="adam"),
            "cannot resume from it: optimizer state is for SGD, not Adam",
        ),
        (put_config(schedule="plateau"), "its training state is malformed: KeyError: 'best'"),
        (pop("training"), "holds no training state to resume from"),
    ],
)
def test_a_damaged_checkpoint_is_refused_naming_it(cut_run, tmp_path, change, says):
    with pytest.raises(npp.ConfigError) as info:
        resume_from(cut_run, tmp_path, change)
    message = str(info.value)
    assert str(tmp_path / "cut" / "last.npz") in message and "\n" not in message
    assert says in message, message


def test_a_checkpoint_without_its_optimizer_arrays_is_refused_naming_it(cut_run, tmp_path):
    folder = tmp_path / "cut"
    shutil.copytree(cut_run, folder)
    last = folder / "last.npz"
    content = {k: v for k, v in members(last).items() if not k.startswith("train/")}
    write_members(last, content)
    with pytest.raises(npp.ConfigError, match="cannot resume from it: optimizer state") as info:
        train(None, folder, resume=True, **QUIET)
    assert str(last) in str(info.value)


def test_a_damaged_predictions_file_is_one_line_for_plot(tmp_path):
    import zipfile

    from numprop.training.predictions import read_predictions, write_predictions

    path = tmp_path / "predictions.npz"
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 40).astype(np.float32)
    write_predictions(
        path, rng.integers(0, 3, 40), probs, rng.integers(0, 256, (40, 4, 4, 3), np.uint8)
    )
    good = path.read_bytes()
    assert len(read_predictions(path).y_true) == 40
    outcomes = set()
    for i in range(200):  # byte flips and truncations: a result or a ConfigError naming the file
        data = bytearray(good)
        r = np.random.default_rng(i)
        if i % 2:
            data = data[: r.integers(0, len(data))]
        else:
            for j in r.integers(0, len(data), 4):
                data[j] ^= 1 << int(r.integers(0, 8))
        path.write_bytes(bytes(data))
        try:
            read_predictions(path)
            outcomes.add("read")
        except npp.ConfigError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            outcomes.add("refused")
    assert "refused" in outcomes
    with zipfile.ZipFile(path, "w") as zf:  # a 0-d y_true
        for name, value in {"y_true": np.int64(3), "y_pred": np.zeros(1, np.int64)}.items():
            with zf.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(value))
    with pytest.raises(npp.ConfigError, match="not a predictions file"):
        read_predictions(path)
