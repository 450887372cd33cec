"""Tests of numprop.data.cifar10 (loading, download), numprop.data.preprocess and numprop.data.batches.

Small data sets in the official layouts are written into tmp_path; the download
path runs against a local HTTP server on 127.0.0.1 serving archives built here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import pickle
import shutil
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

import numprop as npp
from numprop.data.batches import Augment, BatchLoader, stratified_split
from numprop.data.cifar10 import (
    BIN_FOLDER,
    Cifar10,
    load_cifar10,
    resolve_data_dir,
)
from numprop.data.preprocess import (
    PREPROCESSING,
    MeanImage,
    PCAWhiten,
    Standardize,
    make_preprocessing,
    preprocessing_from_state,
)
from numprop.errors import ConfigError, DataError

RPB = 10  # records per batch file in the small data sets
NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


# --------------------------------------------------------------------------- fixtures and helpers


def make_dataset(seed: int = 0, rpb: int = RPB):
    """Random images (6 * rpb, 32, 32, 3) uint8 and labels, with two hand-made images in front."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(6 * rpb, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=6 * rpb).astype(np.int64)
    images[0, ..., 0], images[0, ..., 1], images[0, ..., 2] = (
        1,
        2,
        3,
    )  # R plane 1, G plane 2, B plane 3
    images[1, ..., 0] = (np.arange(1024) % 251).reshape(
        32, 32
    )  # row-major pattern in the red plane
    return images, labels


def bin_batches(images, labels, rpb: int = RPB) -> dict[str, bytes]:
    """Encode a data set as the official binary files: label byte, then R, G, B planes of 32x32."""
    files = {}
    for k, name in enumerate(BATCHES):
        sl = slice(k * rpb, (k + 1) * rpb)
        planes = images[sl].transpose(0, 3, 1, 2).reshape(rpb, 3072)
        records = np.concatenate([labels[sl].astype(np.uint8)[:, None], planes], axis=1)
        files[f"{name}.bin"] = records.tobytes()
    files["batches.meta.txt"] = ("\n".join(NAMES) + "\n\n").encode()
    return files


def write_files(folder, files: dict[str, bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def write_bin(root, seed: int = 0):
    """Write the binary layout under root/cifar-10-batches-bin; return (images, labels)."""
    images, labels = make_dataset(seed)
    write_files(root / BIN_FOLDER, bin_batches(images, labels))
    return images, labels


def write_py(root, protocol: int = 2, str_keys: bool = False, seed: int = 0):
    """Write the python (pickle) layout under root/cifar-10-batches-py; return (images, labels)."""
    images, labels = make_dataset(seed)
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for k, name in enumerate(BATCHES):
        sl = slice(k * RPB, (k + 1) * RPB)
        batch = {
            key("batch_label"): b"training batch",
            key("labels"): [int(v) for v in labels[sl]],
            key("data"): images[sl].transpose(0, 3, 1, 2).reshape(RPB, 3072).copy(),
            key("filenames"): [b"x.png"] * RPB,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {key("label_names"): [n.encode() for n in NAMES], key("num_vis"): 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return images, labels


def check_loaded(data: Cifar10, images, labels):
    assert data.train_images.shape == (5 * RPB, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (RPB, 32, 32, 3)
    assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64
    assert data.train_images.flags.c_contiguous and data.test_images.flags.c_contiguous
    np.testing.assert_array_equal(data.train_images, images[: 5 * RPB])
    np.testing.assert_array_equal(data.test_images, images[5 * RPB :])
    np.testing.assert_array_equal(data.train_labels, labels[: 5 * RPB])
    np.testing.assert_array_equal(data.test_labels, labels[5 * RPB :])
    assert data.class_names == NAMES


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


def binary_archive(seed: int = 0, extra: dict[str, bytes] | None = None, symlinks=None):
    """A small cifar-10-binary.tar.gz: (archive bytes, images, labels)."""
    images, labels = make_dataset(seed)
    members = {f"{BIN_FOLDER}/{n}": d for n, d in bin_batches(images, labels).items()}
    members[f"{BIN_FOLDER}/readme.html"] = b"<html></html>"
    members.update(extra or {})
    return make_targz(members, symlinks), images, labels


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.content at any path; honours 'Range: bytes=N-' unless server.ranges is False."""

    def do_GET(self):
        srv = self.server
        data = srv.content
        header = self.headers.get("Range")
        srv.log.append(header)
        start = 0
        if header and srv.ranges:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut:  # announce the full length, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.content, srv.log, srv.ranges, srv.cut = b"", [], True, False
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/cifar-10-binary.tar.gz"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def serve(srv, archive: bytes) -> dict:
    """Put `archive` on the server; return the load_cifar10 keywords that fetch it."""
    srv.content = archive
    return dict(
        url=srv.url, md5=hashlib.md5(archive).hexdigest(), size=len(archive), records_per_batch=RPB
    )


# --------------------------------------------------------------------------- loading


def test_binary_layout_round_trip(tmp_path):
    images, labels = write_bin(tmp_path)
    data = load_cifar10(tmp_path, download=False, records_per_batch=RPB)
    check_loaded(data, images, labels)
    # Channel planes land on the last axis, rows and columns in row-major order.
    assert (data.train_images[0, ..., 0] == 1).all() and (data.train_images[0, ..., 1] == 2).all()
    assert (data.train_images[0, ..., 2] == 3).all()
    np.testing.assert_array_equal(
        data.train_images[1, ..., 0], (np.arange(1024) % 251).reshape(32, 32)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.class_names = []


def test_root_may_be_the_batches_folder(tmp_path):
    images, labels = write_bin(tmp_path)
    check_loaded(
        load_cifar10(tmp_path / BIN_FOLDER, download=False, records_per_batch=RPB), images, labels
    )


def test_env_var_setting_and_default_data_dir(tmp_path):
    assert npp.config.from_environment({"NUMPROP_DATA_DIR": str(tmp_path)}).data_dir == str(
        tmp_path
    )
    assert npp.config.from_environment({"NUMPROP_DATA_DIR": ""}).data_dir is None
    npp.config.configure(data_dir=tmp_path)
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    images, labels = write_bin(tmp_path)
    check_loaded(load_cifar10(download=False, records_per_batch=RPB), images, labels)
    npp.config.configure(data_dir=None)
    assert resolve_data_dir() == Path.home() / ".cache" / "numprop"


@pytest.mark.parametrize("protocol,str_keys", [(2, False), (4, False), (5, True)])
def test_python_layout_round_trip(tmp_path, protocol, str_keys):
    images, labels = write_py(tmp_path, protocol=protocol, str_keys=str_keys)
    check_loaded(load_cifar10(tmp_path, download=False, records_per_batch=RPB), images, labels)


def test_python_layout_accepts_pre_numpy2_module_names(tmp_path):
    images, labels = write_py(tmp_path, protocol=2)
    for f in (tmp_path / "cifar-10-batches-py").iterdir():
        raw = f.read_bytes()
        # Protocol 2 names globals as text: rewrite them the way NumPy 1.x wrote them.
        f.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert (
        b"numpy.core.multiarray\n" in (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    )
    check_loaded(load_cifar10(tmp_path, download=False, records_per_batch=RPB), images, labels)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_malicious_pickle_is_refused_and_does_not_run(tmp_path):
    write_py(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": np.zeros((RPB, 3072), np.uint8), b"labels": [0] * RPB, b"x": _Evil(marker)}
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(evil, protocol=2))
    # The payload is real: plain pickle.loads would run it.
    assert b"system" in (tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    with pytest.raises(
        DataError,
        match=r"data_batch_1: the pickle tries to load '(posix|os|nt)\.system' and is refused",
    ):
        load_cifar10(tmp_path, download=False, records_per_batch=RPB)
    assert not marker.exists()


def test_corrupt_or_wrong_pickles(tmp_path):
    write_py(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_4").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="data_batch_4: not a valid pickle"):
        load_cifar10(tmp_path, download=False, records_per_batch=RPB)
    (folder / "data_batch_4").write_bytes(
        pickle.dumps({b"data": np.zeros((RPB, 100), np.uint8), b"labels": [0] * RPB})
    )
    with pytest.raises(DataError, match=r"data_batch_4: 'data' is uint8 \(10, 100\)"):
        load_cifar10(tmp_path, download=False, records_per_batch=RPB)
    (folder / "data_batch_4").write_bytes(
        pickle.dumps({b"data": np.zeros((RPB, 3072), np.uint8), b"labels": [0] * (RPB - 1)})
    )
    with pytest.raises(DataError, match="data_batch_4: 'labels' has 9 entries"):
        load_cifar10(tmp_path, download=False, records_per_batch=RPB)
    (folder / "data_batch_4").write_bytes(
        pickle.dumps({b"data": np.zeros((RPB, 3072), np.uint8), b"labels": [0] * 9 + [12]})
    )
    with pytest.raises(DataError, match="data_batch_4: bad label 12 at record 9"):
        load_cifar10(tmp_path, download=False, records_per_batch=RPB)


def test_truncated_file(tmp_path):
    write_bin(tmp_path)
    path = tmp_path / BIN_FOLDER / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(
        DataError, match=r"data_batch_3\.bin: truncated: 30,700 bytes, expected 30,730 \(10 records"
    ):
        load_cifar10(tmp_path, download=False, records_per_batch=RPB)


def test_full_size_check_uses_10000_records_by_default(tmp_path):
    write_bin(tmp_path)  # files of 10 records
    with pytest.raises(
        DataError,
        match=r"data_batch_1\.bin: truncated: 30,730 bytes, expected 30,730,000 \(10,000 records of 3,073 bytes\)",
    ):
        load_cifar10(tmp_path, download=False)


def test_bad_label_byte(tmp_path):
    write_bin(tmp_path)
    path = tmp_path / BIN_FOLDER / "data_batch_2.bin"
    raw = bytearray(path.read_bytes())
    raw[5 * 3073] = 17
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"data_batch_2\.bin: bad label 17 at record 5"):
        load_cifar10(tmp_path, download=False, records_per_batch=RPB)


@pytest.mark.parametrize("name", ["test_batch.bin", "data_batch_5.bin", "batches.meta.txt"])
def test_missing_file(tmp_path, name):
    write_bin(tmp_path)
    (tmp_path / BIN_FOLDER / name).unlink()
    with pytest.raises(DataError, match=rf"{name}: missing"):
        load_cifar10(
            tmp_path, download=True, records_per_batch=RPB
        )  # a present folder is never re-downloaded


def test_bad_meta(tmp_path):
    write_bin(tmp_path)
    (tmp_path / BIN_FOLDER / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match=r"batches\.meta\.txt: expected 10 class names.*found 2"):
        load_cifar10(tmp_path, download=False, records_per_batch=RPB)


def test_nothing_there_without_download(tmp_path):
    with pytest.raises(DataError, match="NUMPROP_DATA_DIR") as err:
        load_cifar10(tmp_path, download=False)
    assert str(tmp_path / BIN_FOLDER) in str(err.value)


# --------------------------------------------------------------------------- download


def test_download_good_checksum(tmp_path, server):
    archive, images, labels = binary_archive()
    root = tmp_path / "data"
    data = load_cifar10(root, progress=True, **serve(server, archive))
    check_loaded(data, images, labels)
    assert (root / "cifar-10-binary.tar.gz").read_bytes() == archive
    assert not (root / "cifar-10-binary.tar.gz.part").exists()
    assert sorted(p.name for p in root.iterdir()) == [
        BIN_FOLDER,
        "cifar-10-binary.tar.gz",
    ]  # no temp folder left
    # Only the expected members were extracted.
    assert sorted(p.name for p in (root / BIN_FOLDER).iterdir()) == sorted(
        bin_batches(images, labels)
    )
    # A second load uses the files on disk.
    check_loaded(load_cifar10(root, **serve(server, b"")), images, labels)
    assert len(server.log) == 1


def test_download_bad_checksum_leaves_nothing(tmp_path, server):
    archive, _, _ = binary_archive()
    kw = serve(server, archive)
    kw["md5"] = "0" * 32
    root = tmp_path / "data"
    with pytest.raises(DataError, match="checksum") as err:
        load_cifar10(root, progress=False, **kw)
    assert "0" * 32 in str(err.value) and hashlib.md5(archive).hexdigest() in str(err.value)
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("delta", [1, -1])
def test_download_wrong_size_is_rejected(tmp_path, server, delta):
    archive, _, _ = binary_archive()
    kw = serve(server, archive)
    kw["size"] = len(archive) + delta
    with pytest.raises(
        DataError, match=f"downloaded {len(archive):,} bytes, expected {len(archive) + delta:,}"
    ):
        load_cifar10(tmp_path, progress=False, **kw)
    assert list(tmp_path.iterdir()) == []  # the complete but wrong file is not kept


@pytest.mark.parametrize("ranges", [True, False], ids=["resume", "restart"])
def test_download_cut_halfway_then_resume(tmp_path, server, ranges):
    archive, images, labels = binary_archive()
    kw = serve(server, archive)
    server.cut, server.ranges = True, ranges
    part = tmp_path / "cifar-10-binary.tar.gz.part"
    with pytest.raises(DataError, match="cut off") as err:
        load_cifar10(tmp_path, progress=False, **kw)
    assert str(part) in str(err.value)
    half = len(archive) // 2
    assert part.read_bytes() == archive[:half]
    assert (
        not (tmp_path / BIN_FOLDER).exists() and not (tmp_path / "cifar-10-binary.tar.gz").exists()
    )

    server.cut = False
    check_loaded(load_cifar10(tmp_path, progress=False, **kw), images, labels)
    assert server.log == [None, f"bytes={half}-"]  # the second request asked for the rest only
    assert not part.exists()


def test_stale_part_files(tmp_path, server):
    archive, images, labels = binary_archive()
    kw = serve(server, archive)
    part = tmp_path / "cifar-10-binary.tar.gz.part"
    # A part file that is not a prefix of the archive: resumed, fails the checksum, is deleted.
    part.write_bytes(b"\0" * 1000)
    with pytest.raises(DataError, match="checksum mismatch"):
        load_cifar10(tmp_path, progress=False, **kw)
    assert not part.exists()
    # A part file longer than the server's file (size unknown): 416 from the server, start over.
    part.write_bytes(b"\0" * (len(archive) + 10))
    check_loaded(load_cifar10(tmp_path, progress=False, **{**kw, "size": None}), images, labels)
    assert server.log[-2:] == [f"bytes={len(archive) + 10}-", None]


def test_kept_archive_is_reused_and_a_bad_one_replaced(tmp_path, server):
    archive, images, labels = binary_archive()
    kw = serve(server, archive)
    load_cifar10(tmp_path, progress=False, **kw)
    # Without the folder, the verified archive on disk is extracted again: no new request.
    shutil.rmtree(tmp_path / BIN_FOLDER)
    check_loaded(load_cifar10(tmp_path, progress=False, **kw), images, labels)
    assert len(server.log) == 1
    # A damaged archive is fetched again.
    shutil.rmtree(tmp_path / BIN_FOLDER)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"junk")
    check_loaded(load_cifar10(tmp_path, progress=False, **kw), images, labels)
    assert len(server.log) == 2


def test_bad_download_options(tmp_path):
    with pytest.raises(ConfigError, match="md5"):
        load_cifar10(tmp_path, md5="abc")
    with pytest.raises(ConfigError, match="records_per_batch"):
        load_cifar10(tmp_path, records_per_batch=0)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_unsafe_archive_members_are_rejected(tmp_path, server, kind):
    root = tmp_path / "data"
    outside = tmp_path / "evil"
    if kind == "dotdot":
        archive, _, _ = binary_archive(extra={"../evil": b"x"})
    elif kind == "absolute":
        archive, _, _ = binary_archive(extra={str(outside): b"x"})
    else:
        archive, _, _ = binary_archive(symlinks={f"{BIN_FOLDER}/link": str(outside)})
    with pytest.raises(DataError, match="refusing unsafe archive member"):
        load_cifar10(root, progress=False, **serve(server, archive))
    assert not outside.exists()
    assert not (root / BIN_FOLDER).exists()
    assert [p.name for p in root.iterdir()] == [
        "cifar-10-binary.tar.gz"
    ]  # no half-extracted folder


def test_archive_missing_members(tmp_path, server):
    images, labels = make_dataset()
    members = {
        f"{BIN_FOLDER}/{n}": d
        for n, d in bin_batches(images, labels).items()
        if n != "test_batch.bin"
    }
    with pytest.raises(DataError, match=f"missing {BIN_FOLDER}/test_batch.bin"):
        load_cifar10(tmp_path, progress=False, **serve(server, make_targz(members)))
    assert not (tmp_path / BIN_FOLDER).exists()


def test_no_server(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "data"
    with pytest.raises(DataError, match="download of .* failed") as err:
        load_cifar10(root, url=f"http://127.0.0.1:{port}/cifar-10-binary.tar.gz", progress=False)
    assert str(root / BIN_FOLDER) in str(err.value)
    assert "NUMPROP_DATA_DIR" in str(err.value) and "--data-dir" in str(err.value)


# --------------------------------------------------------------------------- preprocessing


def channel_images(n=300, h=8, w=8, seed=0):
    """Images whose three channels have clearly different means and spreads."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, h, w, 3)) * np.array([10.0, 30.0, 50.0]) + np.array(
        [40.0, 128.0, 200.0]
    )
    return np.clip(base, 0, 255).astype(np.uint8)


def test_standardize_per_channel():
    x = channel_images()
    p = Standardize().fit(x)
    y = p.transform(x)
    assert y.dtype == np.float32 and y.shape == (300, 8 * 8 * 3) and p.output_dim == 192
    per_channel = y.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(per_channel.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(per_channel.std(axis=0), 1, atol=1e-5)
    # Columns keep HWC order: reshaping gives the standardised images back.
    f = x.astype(np.float64)
    expect = (f - f.mean(axis=(0, 1, 2))) / f.std(axis=(0, 1, 2))
    np.testing.assert_allclose(y.reshape(x.shape), expect, atol=1e-5)
    np.testing.assert_array_equal(p.transform(x.reshape(300, -1)), y)  # flat input gives the same


def test_transform_writes_into_out():
    x = channel_images()
    for name in PREPROCESSING:
        p = make_preprocessing(name).fit(x)
        out = np.full((300, p.output_dim), np.nan, dtype=np.float32)
        result = p.transform(x, out=out)
        assert result is out, name
        np.testing.assert_array_equal(out, p.transform(x))
        view = out[:7]
        assert np.shares_memory(p.transform(x[:7], out=view), out)
        with pytest.raises(ConfigError):
            p.transform(x, out=np.empty((300, p.output_dim), np.float64))


def test_mean_image():
    x = channel_images()
    y = MeanImage().fit(x).transform(x).astype(np.float64)
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)  # every pixel centred
    assert abs(y.std() - 1) < 1e-5  # one global scale
    stds = y.reshape(-1, 3).std(axis=0)
    assert stds[0] < 0.5 < 1.2 < stds[2]  # per-channel spread is kept, not equalised


def correlated_images(n=2000, seed=1):
    """Images (n, 4, 4, 3) with strongly correlated pixels, so whitening has work to do."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(48, 48)) * 0.5 + 0.5
    # Correlated part plus independent noise, so no direction has (near) zero variance.
    z = rng.normal(size=(n, 48)) @ mix * 2 + rng.normal(size=(n, 48)) * 5
    return np.clip(128 + z, 0, 255).astype(np.uint8).reshape(n, 4, 4, 3)


def test_zca_whitens_its_fit_data():
    x = correlated_images()
    p = make_preprocessing("zca", eps=1e-6).fit(x)
    assert p.eigenvalues.min() > 1e-4  # so eps is negligible and the output covariance is ~ I
    assert p.name == "zca" and p.output_dim == 48
    np.testing.assert_allclose(p.components, p.components.T, atol=1e-5)  # ZCA matrix is symmetric
    y = p.transform(x).astype(np.float64)
    cov = (y - y.mean(0)).T @ (y - y.mean(0)) / len(y)
    assert np.abs(cov - np.eye(48)).max() < 0.01
    # Before whitening the pixels were far from identity covariance.
    raw = x.reshape(len(x), -1) / 255.0
    raw_cov = np.cov(raw, rowvar=False, bias=True)
    assert np.abs(raw_cov / np.diag(raw_cov).mean() - np.eye(48)).max() > 0.5
    # With a large eps the weak directions are damped: cov = U diag(lam / (lam + eps)) U^T.
    p2 = make_preprocessing("zca", eps=1e-1).fit(x)
    y2 = p2.transform(x).astype(np.float64)
    got = np.linalg.eigvalsh(np.cov(y2, rowvar=False, bias=True))[::-1]
    lam = p2.eigenvalues
    np.testing.assert_allclose(got, lam / (lam + 0.1), atol=1e-3)


def test_pca_components_and_seeded_subsample():
    x = correlated_images()
    p = PCAWhiten(n_components=5, eps=1e-6).fit(x)
    assert p.name == "pca" and p.output_dim == 5
    y = p.transform(x).astype(np.float64)
    np.testing.assert_allclose(np.cov(y, rowvar=False, bias=True), np.eye(5), atol=0.01)
    # Fitting on a subsample is seeded: same seed, same result; another seed differs.
    a = PCAWhiten(n_components=5, max_fit_images=500, seed=3).fit(x)
    b = PCAWhiten(n_components=5, max_fit_images=500, seed=3).fit(x)
    c = PCAWhiten(n_components=5, max_fit_images=500, seed=4).fit(x)
    np.testing.assert_array_equal(a.components, b.components)
    assert not np.array_equal(a.components, c.components)
    with pytest.raises(ConfigError):
        PCAWhiten(n_components=49).fit(x)


@pytest.mark.parametrize(
    "name,kw",
    [("standardize", {}), ("mean_image", {}), ("pca", {"n_components": 7}), ("zca", {"eps": 0.05})],
)
def test_state_round_trip(name, kw):
    x = correlated_images(500)
    p = make_preprocessing(name, **kw).fit(x)
    arrays, params = p.state()
    # Save as a model would: .npz for arrays, JSON for parameters.
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        loaded = {k: npz[k] for k in npz.files}
    q = preprocessing_from_state(name, loaded, json.loads(json.dumps(params)))
    assert q.name == name and q.output_dim == p.output_dim
    np.testing.assert_array_equal(q.transform(x), p.transform(x))


def test_preprocessing_errors():
    with pytest.raises(
        ConfigError, match="unknown preprocessing 'whiten'.*standardize, mean_image, pca, zca"
    ):
        make_preprocessing("whiten")
    with pytest.raises(ConfigError):
        make_preprocessing("standardize", eps=1)
    with pytest.raises(ConfigError, match="before fit"):
        Standardize().transform(channel_images(5))
    with pytest.raises(ConfigError):
        preprocessing_from_state("nope", {}, {})
    arrays, params = Standardize().fit(channel_images()).state()
    with pytest.raises(ConfigError):
        preprocessing_from_state("standardize", {"mean": arrays["mean"]}, params)
    with pytest.raises(DataError):
        Standardize().fit(channel_images()).transform(np.zeros((2, 5), np.uint8))


# --------------------------------------------------------------------------- splitting


def test_stratified_split():
    labels = np.repeat(np.arange(3), [34, 33, 33])
    np.random.default_rng(0).shuffle(labels)
    train, val = stratified_split(labels, 10, np.random.default_rng(1))
    assert len(val) == 10 and len(train) == 90
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(100))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    assert train.dtype == np.int64 and val.dtype == np.int64
    np.testing.assert_array_equal(
        np.bincount(labels[val], minlength=3), [4, 3, 3]
    )  # 3.4, 3.3, 3.3 rounded

    labels = np.repeat(np.arange(10), 50)
    a = stratified_split(labels, 100, np.random.default_rng(7))
    b = stratified_split(labels, 100, np.random.default_rng(7))
    c = stratified_split(labels, 100, np.random.default_rng(8))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    np.testing.assert_array_equal(np.bincount(labels[a[1]]), [10] * 10)

    train, val = stratified_split(labels, 0, np.random.default_rng(0))
    assert val.size == 0 and train.size == 500
    with pytest.raises(ConfigError):
        stratified_split(labels, 500, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        stratified_split(labels, 10, 123)


# --------------------------------------------------------------------------- batches


def id_images(n=103):
    """Images (n, 4, 4, 3) whose pixels encode the example number, labels = example number."""
    images = (np.arange(n)[:, None, None, None] * 7 + np.arange(48).reshape(4, 4, 3)) % 256
    return images.astype(np.uint8), np.arange(n)


def test_batch_loader_covers_every_example_once():
    images, labels = id_images()
    prep = Standardize().fit(images)
    loader = BatchLoader(images, labels, prep, 10, rng=np.random.default_rng(0))
    assert len(loader) == 11 and loader.n_examples == 103 and loader.batch_size == 10
    orders = []
    for _ in range(2):
        seen, sizes = [], []
        for x, y in loader:
            assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (len(y), 48)
            np.testing.assert_array_equal(x, prep.transform(images[y]))  # x belongs to y
            seen.extend(y.tolist())
            sizes.append(len(y))
        assert sizes == [10] * 10 + [3]
        assert sorted(seen) == list(range(103))
        orders.append(seen)
    assert orders[0] != orders[1] and orders[0] != list(range(103))  # reshuffled every pass

    again = BatchLoader(images, labels, prep, 10, rng=np.random.default_rng(0))
    assert [list(y) for _, y in again] == [orders[0][i : i + 10] for i in range(0, 103, 10)]

    dropped = BatchLoader(images, labels, prep, 10, rng=np.random.default_rng(0), drop_last=True)
    assert len(dropped) == 10 and sum(len(y) for _, y in dropped) == 100

    ordered = BatchLoader(images, labels, prep, 10, shuffle=False)
    assert [int(v) for _, y in ordered for v in y] == list(range(103))


def test_batch_loader_indices_and_buffer_reuse():
    images, labels = id_images()
    prep = Standardize().fit(images)
    idx = np.array([5, 17, 18, 40, 99, 100, 2])
    loader = BatchLoader(images, labels, prep, 4, rng=np.random.default_rng(1), indices=idx)
    batches = [(x, y.copy()) for x, y in loader]
    assert len(loader) == 2 and sorted(np.concatenate([y for _, y in batches])) == sorted(idx)
    assert np.shares_memory(batches[0][0], batches[1][0])  # documented: buffers are reused
    with pytest.raises(ConfigError):
        BatchLoader(images, labels, prep, 4, rng=np.random.default_rng(1), indices=[0, 103])
    with pytest.raises(ConfigError, match="rng"):
        BatchLoader(images, labels, prep, 4)


def test_batch_loader_with_augment_is_seeded():
    images, labels = id_images()
    prep = Standardize().fit(images)
    runs = []
    for _ in range(2):
        loader = BatchLoader(
            images, labels, prep, 16, rng=np.random.default_rng(5), augment=Augment(crop_padding=1)
        )
        runs.append([(x.copy(), y.copy()) for x, y in loader])
    for (xa, ya), (xb, yb) in zip(*runs):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    x0, y0 = runs[0][0]
    assert not np.array_equal(x0, prep.transform(images[y0]))  # augmentation changed something


def asymmetric_image(h=8, w=8):
    return (1 + np.arange(h * w * 3) % 250).reshape(1, h, w, 3).astype(np.uint8)  # no zero pixels


def test_augment_flip():
    img = asymmetric_image()
    batch = np.repeat(img, 64, axis=0)
    out = Augment(flip=True, crop_padding=0)(batch, np.random.default_rng(0))
    flipped = np.array([np.array_equal(o, img[0, :, ::-1]) for o in out])
    same = np.array([np.array_equal(o, img[0]) for o in out])
    assert (flipped | same).all() and 15 < flipped.sum() < 49
    np.testing.assert_array_equal(batch, np.repeat(img, 64, axis=0))  # input untouched
    again = Augment(flip=True, crop_padding=0)(batch, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)


def test_augment_crop_and_flip():
    img = asymmetric_image()
    p = 2
    batch = np.repeat(img, 200, axis=0)
    out = np.empty_like(batch)
    result = Augment(flip=True, crop_padding=p)(batch, np.random.default_rng(3), out=out)
    assert result is out
    windows = {}
    for flip in (False, True):
        src = img[0, :, ::-1] if flip else img[0]
        padded = np.pad(src, ((p, p), (p, p), (0, 0)))
        for dy in range(2 * p + 1):
            for dx in range(2 * p + 1):
                windows[(flip, dy, dx)] = padded[dy : dy + 8, dx : dx + 8]
    found = []
    for o in out:
        matches = [k for k, win in windows.items() if np.array_equal(o, win)]
        assert len(matches) == 1  # every output is exactly one flip-and-shift of the image
        found.append(matches[0])
    assert len(set(found)) > 30  # of the 50 possibilities
    shifted = [k for k in found if k[1:] != (p, p)]
    assert (
        shifted and (out[[i for i, k in enumerate(found) if k[1] == 0]][:, :p] == 0).all()
    )  # padding is black
    np.testing.assert_array_equal(Augment(crop_padding=p)(batch, np.random.default_rng(3)), out)
    with pytest.raises(ConfigError):
        Augment()(batch, np.random.default_rng(0), out=batch)
    with pytest.raises(ConfigError):
        Augment(crop_padding=-1)


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not os.environ.get("NUMPROP_DATA_DIR"), reason="NUMPROP_DATA_DIR not set")
def test_real_cifar10():
    data = load_cifar10(download=False)
    assert data.train_images.shape == (50_000, 32, 32, 3) and data.test_images.shape == (
        10_000,
        32,
        32,
        3,
    )
    assert data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(data.train_labels, minlength=10), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(data.test_labels, minlength=10), [1000] * 10)
    assert len(data.class_names) == 10 and data.class_names[0] == "airplane"


def test_standardize_takes_the_channel_count_from_the_data():
    # One grey channel (MNIST-like) and four channels: no 3 anywhere.
    rng = np.random.default_rng(3)
    for c in (1, 4):
        x = rng.integers(0, 256, (50, 6, 5, c), dtype=np.uint8)
        p = Standardize().fit(x)
        assert p.channels == c and p.mean.shape == (c,) and p.output_dim == 6 * 5 * c
        f = x.astype(np.float64)
        expect = (f - f.mean(axis=(0, 1, 2))) / f.std(axis=(0, 1, 2))
        np.testing.assert_allclose(p.transform(x).reshape(x.shape), expect, atol=1e-5)
        arrays, params = p.state()
        again = preprocessing_from_state("standardize", arrays, params)
        assert again.channels == c
        np.testing.assert_array_equal(again.transform(x), p.transform(x))


def test_standardize_refuses_flat_rows_without_a_channel_count():
    # A 6-column table must not be averaged as if columns {0,3}, {1,4}, {2,5} were colours.
    table = np.arange(60, dtype=np.float32).reshape(10, 6)
    with pytest.raises(DataError, match="'columns'"):
        Standardize().fit(table)
    p = Standardize(channels=2).fit(table)
    np.testing.assert_allclose(p.mean, [table[:, 0::2].mean(), table[:, 1::2].mean()])
    with pytest.raises(DataError, match="set up for 3 channels"):
        Standardize(channels=3).fit(np.zeros((4, 2, 2, 1), np.uint8))
    with pytest.raises(ConfigError, match="channels"):
        Standardize(channels=0)
