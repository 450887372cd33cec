"""Tests of numprop.data.cifar100: the binary and python layouts, fine and coarse labels,
every refusal, and the checked download.

Small data sets are written into tmp_path in the official formats; the download
runs against a local HTTP server on 127.0.0.1 serving archives built here.
"""

from __future__ import annotations

import hashlib
import http.server
import inspect
import io
import pickle
import socket
import tarfile
import threading

import numpy as np
import pytest

import numprop as npp
from numprop.data import cifar100
from numprop.data.cifar100 import load_cifar100
from numprop.errors import ConfigError, DataError

N_TRAIN, N_TEST = 12, 5
FOLDER = "cifar-100-binary"
PY_FOLDER = "cifar-100-python"
FINE_NAMES = ["apple", "aquarium_fish", "baby"] + [f"fine{i:02d}" for i in range(3, 100)]
COARSE_NAMES = ["aquatic_mammals", "fish"] + [f"coarse{i:02d}" for i in range(2, 20)]
NAMES_FILES = ["fine_label_names.txt", "coarse_label_names.txt"]


# --------------------------------------------------------------------------- official format


def make_split(n: int, seed: int):
    """Random images (n, 32, 32, 3) uint8 with hand-made ones in front, fine and coarse labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    images[0, ..., 0], images[0, ..., 1], images[0, ..., 2] = 1, 2, 3  # flat R, G, B planes
    # Image 1: pixel (y, x, c) holds (c * 1024 + y * 32 + x) % 251, its offset in the record.
    c, y, x = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    images[1] = ((c * 1024 + y * 32 + x) % 251).transpose(1, 2, 0)
    fine = rng.integers(20, 100, size=n)  # >= 20: a fine label is never a valid coarse one
    fine[:2] = [99, 42]
    coarse = (fine * 7) % 20  # differs from fine in every record
    coarse[:2] = [19, 3]
    return images, fine, coarse


def record_bytes(image, fine, coarse) -> bytes:
    """One record as the official page describes it: coarse byte, fine byte, R, G, B planes."""
    planes = b"".join(image[..., ch].tobytes() for ch in range(3))  # each plane row-major
    return bytes([int(coarse), int(fine)]) + planes


def bin_file(images, fine, coarse) -> bytes:
    return b"".join(record_bytes(*r) for r in zip(images, fine, coarse, strict=True))


def names_file(names) -> bytes:
    return ("\n".join(names) + "\n\n").encode()  # blank lines at the end, as the real files


def bin_files(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST):
    """The four files of the binary layout (name -> bytes) and the (train, test) arrays."""
    train, test = make_split(n_train, seed), make_split(n_test, seed + 1)
    files = {
        "train.bin": bin_file(*train),
        "test.bin": bin_file(*test),
        "fine_label_names.txt": names_file(FINE_NAMES),
        "coarse_label_names.txt": names_file(COARSE_NAMES),
    }
    return files, train, test


def write_files(folder, files: dict[str, bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_bin(root, seed: int = 0):
    files, train, test = bin_files(seed)
    write_files(root / FOLDER, files)
    return train, test


def write_py(root, seed: int = 0, protocol: int = 2):
    """Write cifar-100-python/ (train, test, meta pickles with bytes keys, as the official ones)."""
    train, test = make_split(N_TRAIN, seed), make_split(N_TEST, seed + 1)
    folder = root / PY_FOLDER
    folder.mkdir(parents=True)
    for name, (images, fine, coarse) in (("train", train), ("test", test)):
        batch = {
            b"filenames": [b"x.png"] * len(images),
            b"batch_label": b"training batch 1 of 1",
            b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) for v in coarse],
            b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072).copy(),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {
        b"fine_label_names": [n.encode() for n in FINE_NAMES],
        b"coarse_label_names": [n.encode() for n in COARSE_NAMES],
    }
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return train, test


def check_loaded(data, train, test, labels: str = "fine"):
    column = 1 if labels == "fine" else 2
    assert data.train_x.shape == (len(train[0]), 32, 32, 3) and data.train_x.dtype == np.uint8
    assert data.test_x.shape == (len(test[0]), 32, 32, 3) and data.test_x.dtype == np.uint8
    assert data.train_y.dtype == np.int64 and data.test_y.dtype == np.int64
    assert data.train_x.flags.c_contiguous and data.test_x.flags.c_contiguous
    np.testing.assert_array_equal(data.train_x, train[0])
    np.testing.assert_array_equal(data.test_x, test[0])
    np.testing.assert_array_equal(data.train_y, train[column])
    np.testing.assert_array_equal(data.test_y, test[column])
    assert data.class_names == (FINE_NAMES if labels == "fine" else COARSE_NAMES)
    assert data.name == "cifar100" and data.flip is True and data.is_images
    assert data.source["data"] == "cifar100"


def load(root, **kw):
    return load_cifar100(root, **{"download": False, "n_train": N_TRAIN, "n_test": N_TEST, **kw})


# --------------------------------------------------------------------------- loading


def test_binary_layout_fine_and_coarse(tmp_path):
    train, test = write_bin(tmp_path)
    fine = load(tmp_path)
    check_loaded(fine, train, test, "fine")
    assert fine.n_classes == 100 and fine.source == {"data": "cifar100"}
    # Channel planes land on the last axis; rows and columns in row-major order.
    assert (fine.train_x[0, ..., 0] == 1).all() and (fine.train_x[0, ..., 1] == 2).all()
    assert (fine.train_x[0, ..., 2] == 3).all()
    raw = (tmp_path / FOLDER / "train.bin").read_bytes()[3074 : 2 * 3074]  # record 1
    for y, x, c in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (31, 31, 0), (0, 0, 1), (5, 7, 2)]:
        assert fine.train_x[1, y, x, c] == raw[2 + c * 1024 + y * 32 + x]
    assert fine.train_x[1, 5, 7, 2] == (2 * 1024 + 5 * 32 + 7) % 251
    # Byte 0 is the coarse label, byte 1 the fine one.
    assert fine.train_y[0] == 99 and fine.train_y[1] == 42

    coarse = load(tmp_path, labels="coarse")
    check_loaded(coarse, train, test, "coarse")
    assert coarse.n_classes == 20 and coarse.train_y[0] == 19 and coarse.train_y[1] == 3
    assert coarse.source == {"data": "cifar100", "labels": "coarse"}
    assert coarse.train_y.max() < 20 and fine.train_y.min() >= 20  # really different bytes


def test_root_may_be_the_folder_itself_or_the_setting(tmp_path):
    train, test = write_bin(tmp_path)
    check_loaded(load(tmp_path / FOLDER), train, test)
    renamed = tmp_path / "elsewhere"
    (tmp_path / FOLDER).rename(renamed)
    check_loaded(load(renamed, labels="coarse"), train, test, "coarse")
    renamed.rename(tmp_path / FOLDER)
    npp.config.configure(data_dir=tmp_path)
    check_loaded(load(None), train, test)


@pytest.mark.parametrize("protocol", [2, 4])
def test_python_layout_matches_the_binary_one(tmp_path, protocol):
    train, test = write_py(tmp_path / "py", protocol=protocol)
    write_bin(tmp_path / "bin")  # same seed: the same data
    for labels in ("fine", "coarse"):
        from_py = load(tmp_path / "py", labels=labels)
        check_loaded(from_py, train, test, labels)
        from_bin = load(tmp_path / "bin", labels=labels)
        np.testing.assert_array_equal(from_py.train_x, from_bin.train_x)
        np.testing.assert_array_equal(from_py.test_y, from_bin.test_y)
    check_loaded(load(tmp_path / "py" / PY_FOLDER), train, test)  # the folder itself


def test_python_layout_refusals(tmp_path):
    write_py(tmp_path)
    folder = tmp_path / PY_FOLDER
    good = pickle.loads((folder / "train").read_bytes())
    (folder / "train").write_bytes(pickle.dumps({**good, b"fine_labels": [0] * 11 + [100]}))
    with pytest.raises(DataError, match=r"^train: bad fine label 100 at record 11"):
        load(tmp_path)
    (folder / "train").write_bytes(pickle.dumps({**good, b"coarse_labels": [20] + [0] * 11}))
    with pytest.raises(DataError, match=r"^train: bad coarse label 20 at record 0"):
        load(tmp_path)  # coarse labels are checked when fine ones are asked for too
    (folder / "train").write_bytes(pickle.dumps({**good, b"data": good[b"data"][:-1]}))
    with pytest.raises(DataError, match=r"^train: 'data' is uint8 \(11, 3072\), expected"):
        load(tmp_path)
    del good[b"coarse_labels"]
    (folder / "train").write_bytes(pickle.dumps(good))
    with pytest.raises(DataError, match="^train: 'coarse_labels' is missing"):
        load(tmp_path)
    write_py(tmp_path / "b")
    meta = tmp_path / "b" / PY_FOLDER / "meta"
    names = {b"fine_label_names": [b"x"] * 99, b"coarse_label_names": [b"y"] * 20}
    meta.write_bytes(pickle.dumps(names))
    load(tmp_path / "b", labels="coarse")  # the coarse names are fine
    with pytest.raises(DataError, match="^meta: expected 'fine_label_names', a list of 100 names"):
        load(tmp_path / "b")


def test_bad_options(tmp_path):
    write_bin(tmp_path)
    for labels in ("medium", "Fine", None, 100):
        with pytest.raises(ConfigError, match="labels must be 'fine' or 'coarse'"):
            load(tmp_path, labels=labels)
    for n in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match="n_train must be a positive integer"):
            load(tmp_path, n_train=n)
    with pytest.raises(ConfigError, match="n_test must be a positive integer"):
        load(tmp_path, n_test=0)
    with pytest.raises(ConfigError, match="md5"):
        load_cifar100(tmp_path / "empty", md5="abc", progress=False)
    with pytest.raises(ConfigError, match="size"):
        load_cifar100(tmp_path / "empty", size=0, progress=False)


@pytest.mark.parametrize("name", ["train.bin", "test.bin"])
def test_truncated_or_oversized_file(tmp_path, name):
    write_bin(tmp_path)
    path = tmp_path / FOLDER / name
    n = N_TRAIN if name == "train.bin" else N_TEST
    good = path.read_bytes()
    path.write_bytes(good[:-30])
    with pytest.raises(
        DataError,
        match=rf"^{name}: truncated: {n * 3074 - 30:,} bytes, expected {n * 3074:,} "
        rf"\({n} records of 3,074 bytes\), not a whole number of 3,074-byte records",
    ):
        load(tmp_path)
    path.write_bytes(good + good[:3074])  # one record too many
    with pytest.raises(DataError, match=rf"^{name}: too large: {(n + 1) * 3074:,} bytes") as err:
        load(tmp_path)
    assert "whole number" not in str(err.value) and str(path) in str(err.value)


def test_full_size_check_uses_the_official_counts_by_default(tmp_path):
    write_bin(tmp_path)
    with pytest.raises(
        DataError, match=r"^train\.bin: truncated: .* expected 153,700,000 \(50,000"
    ):
        load_cifar100(tmp_path, download=False)
    with pytest.raises(DataError, match=r"^test\.bin: truncated: .* expected 30,740,000 \(10,000"):
        load_cifar100(tmp_path, download=False, n_train=N_TRAIN)


@pytest.mark.parametrize("labels", ["fine", "coarse"])
@pytest.mark.parametrize(
    "byte, value, message",
    [(1, 100, "bad fine label 100 at record 3"), (0, 20, "bad coarse label 20 at record 3")],
    ids=["fine", "coarse"],
)
def test_label_out_of_range(tmp_path, labels, byte, value, message):
    write_bin(tmp_path)
    path = tmp_path / FOLDER / "test.bin"
    raw = bytearray(path.read_bytes())
    raw[3 * 3074 + byte] = value
    raw[4 * 3074 + byte] = 255
    path.write_bytes(bytes(raw))
    # Both label bytes are checked whichever labels are asked for.
    with pytest.raises(DataError, match=rf"^test\.bin: {message} .*2 bad record\(s\)") as err:
        load(tmp_path, labels=labels)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_largest_labels_are_accepted(tmp_path):
    train, test = write_bin(tmp_path)
    assert train[1][0] == 99 and train[2][0] == 19  # record 0 holds the largest of both
    assert load(tmp_path).train_y[0] == 99 and load(tmp_path, labels="coarse").train_y[0] == 19


@pytest.mark.parametrize(
    "labels, count, found",
    [("fine", 99, 99), ("fine", 101, 101), ("coarse", 19, 19), ("coarse", 21, 21)],
)
def test_wrong_number_of_names(tmp_path, labels, count, found):
    write_bin(tmp_path)
    name = f"{labels}_label_names.txt"
    (tmp_path / FOLDER / name).write_text("\n\n".join(f"c{i}" for i in range(count)) + "\n")
    other = "coarse" if labels == "fine" else "fine"
    load(tmp_path, labels=other)  # only the names asked for are read
    with pytest.raises(DataError, match=rf"^{name}: expected {100 if labels == 'fine' else 20} "):
        load(tmp_path, labels=labels)
    with pytest.raises(DataError, match=rf"found {found} \["):
        load(tmp_path, labels=labels)


def test_blank_lines_between_names_do_not_count(tmp_path):
    write_bin(tmp_path)
    (tmp_path / FOLDER / "coarse_label_names.txt").write_text("\n \n".join(COARSE_NAMES) + "\r\n\n")
    assert load(tmp_path, labels="coarse").class_names == COARSE_NAMES


def dead_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-100-binary.tar.gz"


@pytest.mark.parametrize(
    "name, labels",
    [
        ("train.bin", "fine"),
        ("test.bin", "coarse"),
        ("fine_label_names.txt", "fine"),
        ("coarse_label_names.txt", "coarse"),
    ],
)
def test_missing_file_in_a_present_folder(tmp_path, name, labels):
    write_bin(tmp_path)
    (tmp_path / FOLDER / name).unlink()
    # A present folder is never downloaded again: the message names the missing file.
    with pytest.raises(DataError, match=rf"^{name}: missing \(expected it in .*{FOLDER}\)"):
        load(tmp_path, labels=labels, download=True, url=dead_url())
    assert sorted(p.name for p in tmp_path.iterdir()) == [FOLDER]


def test_nothing_there_without_download(tmp_path):
    with pytest.raises(DataError, match="^CIFAR-100 not found in") as err:
        load(tmp_path)
    text = str(err.value)
    assert str(tmp_path / FOLDER) in text and str(tmp_path / PY_FOLDER) in text
    for name in ["train.bin", "test.bin", *NAMES_FILES]:
        assert name in text
    assert "NUMPROP_DATA_DIR" in text and "\n" not in text
    assert list(tmp_path.iterdir()) == []  # nothing created
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load(tmp_path / "file")


# --------------------------------------------------------------------------- download


def make_targz(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def archive(seed: int = 0, drop: str | None = None, extra=None, symlinks=None):
    """A small cifar-100-binary.tar.gz: (bytes, train, test, the four files)."""
    files, train, test = bin_files(seed)
    members = {f"{FOLDER}/{n}": d for n, d in files.items() if n != drop}
    members.update(extra or {})
    return make_targz(members, symlinks), train, test, files


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.content at any path."""

    def do_GET(self):
        self.server.log.append(self.path)
        body = self.server.content
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.content, srv.log = b"", []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/kriz/cifar-100-binary.tar.gz"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def serve(srv, data: bytes) -> dict:
    """Put `data` on the server; return the load_cifar100 keywords that fetch it."""
    srv.content = data
    return dict(
        url=srv.url,
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
        n_train=N_TRAIN,
        n_test=N_TEST,
        progress=False,
    )


def test_download_and_extract(tmp_path, server):
    data, train, test, files = archive(extra={f"{FOLDER}/readme.html": b"<html></html>"})
    root = tmp_path / "data"
    check_loaded(load_cifar100(root, labels="coarse", **serve(server, data)), train, test, "coarse")
    assert server.log == ["/kriz/cifar-100-binary.tar.gz"]
    # The verified archive is kept under its name; no part file, no temporary folder.
    assert sorted(p.name for p in root.iterdir()) == [FOLDER, "cifar-100-binary.tar.gz"]
    assert (root / "cifar-100-binary.tar.gz").read_bytes() == data
    # Only the four expected files were extracted, byte for byte.
    assert sorted(p.name for p in (root / FOLDER).iterdir()) == sorted(files)
    for name, content in files.items():
        assert (root / FOLDER / name).read_bytes() == content
    # The next load reads the disk only.
    check_loaded(load_cifar100(root, **serve(server, b"")), train, test, "fine")
    assert len(server.log) == 1
    # Without the folder, the kept archive is extracted again, still without a request.
    for p in (root / FOLDER).iterdir():
        p.unlink()
    (root / FOLDER).rmdir()
    check_loaded(load_cifar100(root, **serve(server, data)), train, test)
    assert len(server.log) == 1


def test_checksum_mismatch_leaves_no_file(tmp_path, server):
    data, train, test, _ = archive()
    kw = serve(server, data)
    server.content = data[:-5] + bytes(b ^ 0xFF for b in data[-5:])  # same size, wrong bytes
    root = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch") as err:
        load_cifar100(root, **kw)
    text = str(err.value)
    assert kw["md5"] in text and hashlib.md5(server.content).hexdigest() in text
    assert "cifar-100-binary.tar.gz" in text
    assert list(root.iterdir()) == []  # neither the archive, nor a .part, nor a folder

    # A file of the wrong size is refused before its checksum, and nothing is kept either.
    server.content = data + b"\0"
    with pytest.raises(
        DataError, match=f"downloaded {len(data) + 1:,} bytes, expected {len(data):,}"
    ):
        load_cifar100(root, **kw)
    assert list(root.iterdir()) == []

    # A damaged archive left under the final name is fetched again.
    (root / "cifar-100-binary.tar.gz").write_bytes(b"junk")
    server.content = data
    check_loaded(load_cifar100(root, **kw), train, test)
    assert len(server.log) == 3


def test_archive_that_is_not_cifar100(tmp_path, server):
    data, _, _, _ = archive(drop="coarse_label_names.txt")
    with pytest.raises(
        DataError,
        match=f"not the CIFAR-100 binary archive: missing {FOLDER}/coarse_label_names.txt",
    ):
        load_cifar100(tmp_path, **serve(server, data))
    # No folder that looks complete; the (verified) archive itself stays.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-100-binary.tar.gz"]


@pytest.mark.parametrize("kind", ["dotdot", "symlink"])
def test_unsafe_archive_members_are_refused(tmp_path, server, kind):
    root, outside = tmp_path / "data", tmp_path / "evil"
    if kind == "dotdot":
        data, _, _, _ = archive(extra={"../evil": b"x"})
    else:
        data, _, _, _ = archive(symlinks={f"{FOLDER}/link": str(outside)})
    with pytest.raises(DataError, match="refusing unsafe archive member"):
        load_cifar100(root, **serve(server, data))
    assert not outside.exists()
    assert sorted(p.name for p in root.iterdir()) == ["cifar-100-binary.tar.gz"]


def test_no_server_says_where_the_files_go(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataError, match="download of .* failed") as err:
        load_cifar100(root, url=dead_url(), progress=False)
    text = str(err.value)
    assert str(root / FOLDER) in text and "NUMPROP_DATA_DIR" in text
    assert "fine_label_names.txt" in text and "\n" not in text
    assert list(root.iterdir()) == []


def test_official_constants_are_the_defaults():
    assert cifar100.CIFAR100_URL == "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
    assert cifar100.CIFAR100_MD5 == "03b5dce01913d631647c71ecec9e9cb8"
    assert cifar100.CIFAR100_SIZE == 168_513_733
    defaults = {
        k: p.default for k, p in inspect.signature(load_cifar100).parameters.items() if k != "root"
    }
    assert defaults == {
        "download": True,
        "progress": True,
        "labels": "fine",
        "url": cifar100.CIFAR100_URL,
        "md5": cifar100.CIFAR100_MD5,
        "size": cifar100.CIFAR100_SIZE,
        "n_train": 50_000,
        "n_test": 10_000,
    }
