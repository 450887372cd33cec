"""Reliability of model and checkpoint files: writes that are whole or not there, and loads
that end in a loaded model or a one-line NumpropError naming the file, whatever the bytes."""

import errno
import json
import os
import stat
import threading

import pytest

import numprop as npp
from numprop.training import io as npio
from numprop.training.callbacks import atomic_write_text

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
