"""MNIST / Fashion-MNIST: the strict IDX reader, the loaders and the checked download.

Every file is built here in the official format (gzip of the IDX bytes); the
download runs against a local HTTP server on 127.0.0.1. No network access.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import struct
import threading
import tracemalloc

import numpy as np
import pytest

import numprop as npp
from numprop.data import mnist
from numprop.data.mnist import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    load_fashion_mnist,
    load_mnist,
    read_idx,
    read_idx_images,
    read_idx_labels,
)
from numprop.errors import DataError

N_TRAIN, N_TEST = 7, 3
NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
NAMES += ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(array: np.ndarray, type_code: int = 0x08, ndim: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array: 0, 0, type, ndim, big-endian uint32 sizes, data."""
    ndim = array.ndim if ndim is None else ndim
    header = bytes([0, 0, type_code, ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_split(n: int, seed: int):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    rng.shuffle(labels)
    return images, labels


def official_files(seed: int = 0, n_train: int = N_TRAIN, n_test: int = N_TEST):
    """The four .gz files (name -> bytes) of a small data set, and its arrays."""
    train, test = make_split(n_train, seed), make_split(n_test, seed + 1)
    files = {
        NAMES[0]: gzip.compress(idx_bytes(train[0])),
        NAMES[1]: gzip.compress(idx_bytes(train[1])),
        NAMES[2]: gzip.compress(idx_bytes(test[0])),
        NAMES[3]: gzip.compress(idx_bytes(test[1])),
    }
    return files, train, test


def write_files(folder, files: dict[str, bytes]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def check_loaded(data, train, test, class_names):
    assert data.train_images.shape == (len(train[0]), 28, 28, 1)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.test_images.shape == (len(test[0]), 28, 28, 1)
    assert data.test_images.dtype == np.uint8 and data.test_labels.dtype == np.int64
    np.testing.assert_array_equal(data.train_images[..., 0], train[0])
    np.testing.assert_array_equal(data.train_labels, train[1])
    np.testing.assert_array_equal(data.test_images[..., 0], test[0])
    np.testing.assert_array_equal(data.test_labels, test[1])
    assert data.class_names == class_names


# --------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_idx_round_trip(tmp_path, compress):
    images, labels = make_split(5, 0)
    enc = gzip.compress if compress else (lambda b: b)
    suffix = ".gz" if compress else ""
    (tmp_path / f"img{suffix}").write_bytes(enc(idx_bytes(images)))
    (tmp_path / f"lab{suffix}").write_bytes(enc(idx_bytes(labels)))
    got = read_idx_images(tmp_path / f"img{suffix}")
    assert got.dtype == np.uint8 and got.shape == (5, 28, 28)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(read_idx_labels(tmp_path / f"lab{suffix}"), labels)
    # Row-major layout: byte k of the data is pixel (k // 784, (k % 784) // 28, k % 28).
    ramp = (np.arange(2 * 3 * 4) % 256).astype(np.uint8).reshape(2, 3, 4)
    (tmp_path / "ramp").write_bytes(idx_bytes(ramp))
    assert read_idx(tmp_path / "ramp", 3)[1, 2, 3] == 23


def header(magic: int, *sizes: int) -> bytes:
    return struct.pack(f">I{len(sizes)}I", magic, *sizes)


LABELS_5 = np.array([0, 1, 2, 3, 4], dtype=np.uint8)

MALFORMED = {
    "bad magic": (b"\x12\x34" + idx_bytes(LABELS_5)[2:], "bad magic number 0x12340801"),
    "html page": (b"<html>" + bytes(20), "bad magic number 0x3c68746d"),
    "type float": (idx_bytes(LABELS_5, type_code=0x0D), r"type code 0x0d \(float\)"),
    "wrong dimension count": (idx_bytes(LABELS_5.reshape(5, 1)), "2 dimension"),
    "truncated data": (idx_bytes(LABELS_5)[:-2], "truncated: 3 bytes of data"),
    "truncated header": (header(0x801)[:3], "truncated header: 3 of 4 bytes"),
    "truncated sizes": (header(0x801) + b"\0\0", "truncated dimension sizes"),
    "empty file": (b"", "empty or truncated before the header"),
    "trailing bytes": (idx_bytes(LABELS_5) + b"\0", "trailing bytes"),
    "zero size": (header(0x801, 0), "zero size"),
}


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_idx_is_refused(tmp_path, case, compress):
    data, message = MALFORMED[case]
    path = tmp_path / ("labels.gz" if compress else "labels")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataError, match=message) as err:
        read_idx_labels(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(path.name) and str(path) in text


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_images_where_labels_are_expected_and_back(tmp_path, compress):
    images, labels = make_split(2, 0)
    enc = gzip.compress if compress else (lambda b: b)
    (tmp_path / "img").write_bytes(enc(idx_bytes(images)))
    (tmp_path / "lab").write_bytes(enc(idx_bytes(labels)))
    with pytest.raises(DataError, match="3 dimension.*expected 1.*expected 0x00000801"):
        read_idx_labels(tmp_path / "img")
    with pytest.raises(DataError, match="1 dimension.*expected 3.*expected 0x00000803"):
        read_idx_images(tmp_path / "lab")


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_huge_header_in_a_small_file_allocates_nothing(tmp_path, compress):
    # 10^9 images of 28 x 28 (784 GB) declared in a file of a few hundred bytes.
    data = header(0x803, 10**9, 28, 28) + bytes(300)
    path = tmp_path / "huge"
    path.write_bytes(gzip.compress(data) if compress else data)
    tracemalloc.start()
    try:
        # Refused from the header alone: against the file's length (plain) or the most
        # a gzip file of that length can expand to (deflate: 1032:1).
        why = "more than a [0-9,]+-byte gzip file can hold" if compress else "truncated"
        with pytest.raises(DataError, match=f"{why}.*784,000,000,000 bytes|784,000,000,000.*{why}"):
            read_idx_images(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # well under what the header claims: a few MiB of buffers at most


def test_gzip_header_within_the_ratio_bound_but_short_data(tmp_path):
    # A claim the compressed size allows (random bytes do not compress) but the data is short.
    noise = np.random.default_rng(0).integers(0, 256, 500 * 784, dtype=np.uint8).tobytes()
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(header(0x803, 1000, 28, 28) + noise))
    with pytest.raises(DataError, match="truncated: 392,000 bytes of data.*784,000 bytes"):
        read_idx_images(path)


def test_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(make_split(3, 0)[0]))
    path = tmp_path / "images.gz"
    cases = {
        "cut": good[: len(good) // 2],
        "flipped": good[:30] + bytes(b ^ 0xFF for b in good[30:40]) + good[40:],
        "bad crc": good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:],
        "garbage after": good + b"garbage!",
    }
    for name, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(DataError, match=r"images\.gz: (corrupt gzip|truncated)") as err:
            read_idx_images(path)
        assert "\n" not in str(err.value), name
    path.write_bytes(idx_bytes(make_split(3, 0)[0])[:2] + b"xx")  # .gz name, not gzip
    with pytest.raises(DataError, match="not a gzip file"):
        read_idx_images(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.gz: missing"):
        read_idx_labels(tmp_path / "nope.gz")


# --------------------------------------------------------------------------- loaders


def test_load_via_argument_and_data_dir_setting(tmp_path):
    files, train, test = official_files()
    write_files(tmp_path / "mnist", files)
    check_loaded(load_mnist(tmp_path, download=False), train, test, MNIST_CLASSES)
    # The data set's folder itself may be given.
    check_loaded(load_mnist(tmp_path / "mnist", download=False), train, test, MNIST_CLASSES)
    npp.config.configure(data_dir=tmp_path)
    check_loaded(load_mnist(download=False), train, test, MNIST_CLASSES)
    assert MNIST_CLASSES == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


def test_fashion_mnist_folder_and_names(tmp_path):
    files, train, test = official_files(seed=5)
    write_files(tmp_path / "fashion-mnist", files)
    npp.config.configure(data_dir=tmp_path)
    data = load_fashion_mnist(download=False)
    check_loaded(data, train, test, FASHION_MNIST_CLASSES)
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    # The MNIST loader does not take Fashion-MNIST's folder.
    with pytest.raises(DataError, match="MNIST not found"):
        load_mnist(download=False)


def test_uncompressed_files_are_accepted(tmp_path):
    files, train, test = official_files()
    write_files(
        tmp_path / "mnist",
        {n.removesuffix(".gz"): gzip.decompress(d) for n, d in files.items()},
    )
    check_loaded(load_mnist(tmp_path, download=False), train, test, MNIST_CLASSES)


def test_nothing_there_without_download(tmp_path):
    files, _, _ = official_files()
    del files[NAMES[3]]
    write_files(tmp_path / "mnist", files)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz missing") as err:
        load_mnist(tmp_path, download=False)
    assert "NUMPROP_DATA_DIR" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("split", ["train", "t10k"])
def test_counts_that_disagree_are_refused(tmp_path, split):
    files, _, _ = official_files()
    name = f"{split}-labels-idx1-ubyte.gz"
    files[name] = gzip.compress(idx_bytes(np.zeros(N_TRAIN + N_TEST, dtype=np.uint8)))
    write_files(tmp_path / "mnist", files)
    with pytest.raises(DataError, match=f"{name}: 10 labels for .* images"):
        load_mnist(tmp_path, download=False)


def test_labels_out_of_range_and_wrong_image_size(tmp_path):
    files, _, _ = official_files()
    files[NAMES[1]] = gzip.compress(idx_bytes(np.array([0, 1, 2, 10, 4, 5, 6], dtype=np.uint8)))
    write_files(tmp_path / "mnist", files)
    with pytest.raises(DataError, match="bad label 10 at record 3"):
        load_mnist(tmp_path, download=False)
    files, _, _ = official_files()
    files[NAMES[0]] = gzip.compress(idx_bytes(np.zeros((N_TRAIN, 32, 32), dtype=np.uint8)))
    write_files(tmp_path / "mnist", files)
    with pytest.raises(DataError, match="images are 32x32, expected 28x28"):
        load_mnist(tmp_path, download=False)


# --------------------------------------------------------------------------- download


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.files[name] for GET /<name>; 404 for anything else."""

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        self.server.log.append(name)
        body = self.server.files.get(name)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log = {}, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/files/"
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def serve(monkeypatch, srv, files: dict[str, bytes], prefix: str = "MNIST"):
    """Serve `files` and point the module's URL and size/MD5 table at them."""
    srv.files = dict(files)
    table = {n: (len(d), hashlib.md5(d).hexdigest()) for n, d in files.items()}
    monkeypatch.setattr(mnist, f"{prefix}_URL", srv.url)
    monkeypatch.setattr(mnist, f"{prefix}_FILES", table)
    return table


@pytest.mark.parametrize(
    "loader, folder, prefix, names",
    [
        (load_mnist, "mnist", "MNIST", MNIST_CLASSES),
        (load_fashion_mnist, "fashion-mnist", "FASHION_MNIST", FASHION_MNIST_CLASSES),
    ],
)
def test_download(tmp_path, server, monkeypatch, loader, folder, prefix, names):
    files, train, test = official_files(seed=3)
    serve(monkeypatch, server, files, prefix)
    root = tmp_path / "data"
    check_loaded(loader(root, progress=False), train, test, names)
    assert sorted(server.log) == sorted(NAMES)
    assert sorted(p.name for p in (root / folder).iterdir()) == sorted(NAMES)  # no .part left
    for name, data in files.items():
        assert (root / folder / name).read_bytes() == data
    # The second load reads the disk only.
    check_loaded(loader(root, progress=True), train, test, names)
    assert len(server.log) == 4


def test_only_missing_files_are_downloaded(tmp_path, server, monkeypatch):
    files, train, test = official_files()
    serve(monkeypatch, server, files)
    write_files(tmp_path / "mnist", {n: files[n] for n in NAMES[:3]})
    check_loaded(load_mnist(tmp_path, progress=False), train, test, MNIST_CLASSES)
    assert server.log == [NAMES[3]]


def test_corrupt_download_fails_and_leaves_nothing(tmp_path, server, monkeypatch):
    files, _, _ = official_files()
    serve(monkeypatch, server, files)
    bad = bytearray(files[NAMES[0]])
    bad[len(bad) // 2] ^= 0xFF  # same size, wrong MD5
    server.files[NAMES[0]] = bytes(bad)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="MNIST: .*checksum mismatch") as err:
        load_mnist(root, progress=False)
    assert hashlib.md5(files[NAMES[0]]).hexdigest() in str(err.value)
    assert list((root / "mnist").iterdir()) == []  # neither the file nor a .part

    # A file of the wrong size is refused too, and nothing takes the data's name.
    server.files[NAMES[0]] = files[NAMES[0]] + b"\0"
    with pytest.raises(DataError, match="expected"):
        load_mnist(root, progress=False)
    assert list((root / "mnist").iterdir()) == []

    # Once the server is right, the same folder loads.
    server.files[NAMES[0]] = files[NAMES[0]]
    load_mnist(root, progress=False)


def test_download_http_error_names_mnist_not_cifar(tmp_path, server, monkeypatch):
    files, _, _ = official_files()
    serve(monkeypatch, server, files)
    del server.files[NAMES[2]]  # the server answers 404
    root = tmp_path / "data"
    with pytest.raises(DataError, match="HTTP 404") as err:
        load_mnist(root, progress=False)
    text = str(err.value)
    assert "CIFAR" not in text and "cifar" not in text
    assert NAMES[2] in text and "NUMPROP_DATA_DIR" in text and str(root / "mnist") in text
    assert not (root / "mnist" / NAMES[2]).exists()


def test_official_tables():
    for table in (mnist.MNIST_FILES, mnist.FASHION_MNIST_FILES):
        assert sorted(table) == sorted(NAMES)
        for size, md5 in table.values():
            assert size > 0 and len(md5) == 32 and int(md5, 16) >= 0
    assert mnist.MNIST_URL.startswith("https://") and mnist.MNIST_URL.endswith("/")
    assert mnist.FASHION_MNIST_URL.endswith("/")
