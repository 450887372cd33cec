"""How finely work is split across cores: every grain size in one place.

A grain is the smallest piece of work worth a core of its own, counted in
array elements. Work under twice its grain runs on the calling thread: below
that, waking OpenBLAS's workers costs more than it saves. The values were
measured with ``benchmarks/elementwise.py`` on a 2-core machine; the results
never depend on them (pieces are elementwise, or reduce along unsplit axes).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Grains:
    kernel: int = 1 << 16  # compiled elementwise loops: ReLU, its backward, products
    numpy: int = 1 << 17  # NumPy pieces: ReLU's backward, Dropout's products, rows
    relu_numpy: int = 1 << 18  # NumPy's maximum is fast: larger pieces
    dropout_words: int = 1 << 14  # compiled Dropout: 64-bit words of random bits (4 elements)
    dropout_numpy: int = 1 << 16  # NumPy Dropout: mask and product pieces
    optimizer: int = 1 << 15  # SGD-momentum and Adam updates, both paths
    row_kernel: int = 1 << 15  # compiled row-wise work: BatchNorm columns, batch gathering
    # compiled LayerNorm (rows, and its column sums): the best recipe's (512, 512) runs
    # as one piece. Split on 2 cores, forward and backward took 0.3 and 0.4 ms on a
    # quiet machine, but 10 and 24 ms while another process kept the cores busy (a
    # launch waits for the worker's time slice), where one piece took 1.0 and 1.1 ms.
    layernorm: int = 1 << 18
    axpby_threaded: int = 1 << 16  # from here on, BLAS scal + axpy (all cores) beat axpby
    one_piece: int = 1 << 40  # a reduction into one total: never split

    @staticmethod
    def rows(elements: int, width: int, minimum: int = 1) -> int:
        """Rows (or columns) of ``width`` elements in a piece of about ``elements``."""
        return max(minimum, elements // max(1, width))


GRAIN = Grains()
