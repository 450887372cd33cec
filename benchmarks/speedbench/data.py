"""CIFAR-10 for the benchmark: uint8 rows, and batches converted inside the timed epoch.

Images stay uint8 (N, 3072). Each batch is gathered and converted to float32
with per-channel standardisation, ``(x - mean) * inv_std``, into buffers made
once. Every side does that conversion with its own tools (a *converter*: the
functions at the bottom), so it is part of every side's epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

# converter(idx, source, u8, out): out = (source[idx] - mean) * inv_std, gathering
# through the uint8 buffer u8 if the side needs one; idx None: every row of source.
Converter = Callable[[np.ndarray | None, np.ndarray, np.ndarray | None, np.ndarray], None]

TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"
ROW = 3073  # one label byte, then 3 x 32 x 32 pixel bytes


def read_rows(paths: list[Path], n: int, random: bool, rng: np.random.Generator):
    """Up to n (uint8 (n, 3072), int64 (n,)) rows, one file at a time (so that loading does
    not set the peak RSS); random: the same shapes with random content."""
    x, y, filled = np.empty((n, 3072), np.uint8), np.empty(n, np.int64), 0
    for path in paths:
        if filled == n:
            break
        if random:
            raw = rng.integers(0, 256, (10000, ROW), dtype=np.uint8)
            raw[:, 0] %= 10
        else:
            raw = np.fromfile(path, np.uint8).reshape(-1, ROW)
        take = min(n - filled, len(raw))
        x[filled : filled + take] = raw[:take, 1:]
        y[filled : filled + take] = raw[:take, 0]
        filled += take
    return x[:filled], y[:filled]


class Data:
    """The training and test images as uint8 rows, their per-channel mean and 1/std, and
    one epoch's batches in a fixed order. Random data of the same shape if CIFAR-10 is
    missing (``random`` is then True, and the report says so)."""

    def __init__(self, data_dir: Path, n_train: int, max_batch: int):
        files = [data_dir / name for name in TRAIN_FILES]
        test = data_dir / TEST_FILE
        self.random = not (all(f.exists() for f in files) and test.exists())
        rng = np.random.default_rng(0)
        self.x, self.y = read_rows(files, n_train, self.random, rng)  # (N, 3072) uint8
        self.x_test_u8, self.y_test = read_rows([test], 10000, self.random, rng)
        per_channel = self.x.reshape(len(self.x), 3, 1024)
        mean = per_channel.mean(axis=(0, 2), dtype=np.float64)
        std = per_channel.std(axis=(0, 2), dtype=np.float64)
        self.mean = np.repeat(mean, 1024).astype(np.float32)
        self.inv_std = np.repeat(1.0 / std, 1024).astype(np.float32)
        self.n = len(self.x)
        self._u8 = np.empty((max_batch, 3072), np.uint8)
        self._out = {np.dtype(np.float32): np.empty((max_batch, 3072), np.float32)}
        self.batch_dtype = np.dtype(np.float32)  # a side that takes bf16 batches sets uint16
        self.convert: Converter = numpy_converter(self.mean, self.inv_std)
        self.prep_seconds = 0.0  # time spent converting batches; the worker resets it

    def standardise(self, x_u8: np.ndarray) -> np.ndarray:
        """All of x_u8 as standardised float32 (N, 3072), with the side's converter."""
        out = np.empty(x_u8.shape, np.float32)
        self.convert(None, x_u8, None, out)
        return out

    def test_float(self) -> np.ndarray:
        return self.standardise(self.x_test_u8)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of epoch ``epoch``, the same on every side."""
        return np.random.default_rng(1000 + epoch).permutation(self.n)

    def batch(self, idx: np.ndarray):
        """(float32 (B, 3072), or bf16 bits where the side asked for them, int64 (B,)); the
        first array is overwritten by the next call."""
        n = len(idx)
        if self.batch_dtype not in self._out:
            self._out[self.batch_dtype] = np.empty(
                self._out[np.dtype(np.float32)].shape, self.batch_dtype
            )
        out = self._out[self.batch_dtype][:n]
        self.convert(idx, self.x, self._u8[:n], out)
        return out, self.y[idx]

    def batches(self, epoch: int, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch of batches, the last partial one included; the time spent making them
        adds up in ``prep_seconds``."""
        perm = self.permutation(epoch)
        clock = time.perf_counter
        for i in range(0, self.n, batch):
            t0 = clock()
            b = self.batch(perm[i : i + batch])
            self.prep_seconds += clock() - t0
            yield b

    def n_batches(self, batch: int) -> int:
        return -(-self.n // batch)


def numpy_converter(mean: np.ndarray, inv_std: np.ndarray) -> Converter:
    """Plain NumPy on one core (scikit-learn's side converts its whole set with this)."""

    def convert(idx, source, u8, out):
        if idx is not None:
            np.take(source, idx, axis=0, out=u8, mode="clip")
            source = u8
        np.subtract(source, mean, out=out, dtype=np.float32)
        out *= inv_std

    return convert


def numprop_converter(affine_rows, mean: np.ndarray, inv_std: np.ndarray) -> Converter:
    """numprop's own gather-and-standardise: ``affine_rows`` (one pass, all cores)."""

    def convert(idx, source, u8, out):
        affine_rows(source, mean, inv_std, out, idx)

    return convert


def numprop_bf16_converter(mean: np.ndarray, inv_std: np.ndarray) -> Converter | None:
    """numprop's gather-and-standardise writing bf16 bits (uint16 ``out``) in the same
    pass, as ``BatchLoader(bf16=True)`` does; None where this numprop has no such kernel."""
    try:
        from numprop._fast import kernels
    except ImportError:
        return None
    if kernels.address("affine_rows_bf16") is None:
        return None

    def convert(idx, source, u8, out):
        rows = np.arange(len(source)) if idx is None else idx
        if not kernels.affine_rows(source, rows, mean, inv_std, out):
            raise RuntimeError("the bf16 batch kernel refused these arrays")

    return convert


def torch_converter(torch, mean: np.ndarray, inv_std: np.ndarray) -> Converter:
    """The same arithmetic in torch ops (on torch's own threads)."""
    mean_t, inv_std_t = torch.from_numpy(mean), torch.from_numpy(inv_std)

    def convert(idx, source, u8, out):
        rows = torch.from_numpy(source)
        if idx is not None:
            rows = torch.index_select(rows, 0, torch.from_numpy(idx), out=torch.from_numpy(u8))
        result = torch.from_numpy(out)
        torch.sub(rows, mean_t, out=result)
        result.mul_(inv_std_t)

    return convert
