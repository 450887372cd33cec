"""What the elementwise paths cost: NumPy on one core, NumPy pieces on OpenBLAS's
threads, and the numba kernels (one core, and on OpenBLAS's threads).

Each operation runs right after a matrix product, as in training (OpenBLAS's
workers are awake then). The four paths alternate, 40 times each; medians.

    python benchmarks/elementwise.py            # print the table
    python benchmarks/elementwise.py --write    # and write it into RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

import numprop as npp
from numprop._fast import blas as _blas
from numprop._fast import kernels as _kernels
from numprop.data.preprocess import affine_rows

HERE = Path(__file__).resolve().parent


def numpy_only():
    """Turn the compiled kernels off (as NUMPROP_KERNELS=numpy does)."""
    return npp.config.override(kernels="numpy")


PATHS = {  # name -> the context managers that select it
    "NumPy, 1 core": (numpy_only, _blas.serial),
    "NumPy, all cores": (numpy_only,),
    "numba, 1 core": (_blas.serial,),
    "numba, all cores": (),
}


def operations(rng):
    """(name, setup() -> run()) pairs at the sizes of the speed benchmark's networks."""
    x = rng.standard_normal((512, 1024)).astype(np.float32)
    d = rng.standard_normal((512, 1024)).astype(np.float32)

    def layer(make, backward):
        def setup():
            m = make()
            m.forward(x)
            m.backward(d)
            return (lambda: m.backward(d)) if backward else (lambda: m.forward(x))

        return setup

    def adam():
        p = npp.Parameter(rng.standard_normal((3072, 1000)).astype(np.float32))
        opt = npp.Adam([p])
        p.grad = rng.standard_normal(p.data.shape).astype(np.float32)
        return opt.step

    def batch():
        source = rng.integers(0, 256, (50_000, 3072), dtype=np.uint8)
        rows = rng.permutation(50_000)[:512]
        shift, scale = np.full(3072, 120, np.float32), np.full(3072, 1 / 64, np.float32)
        out = np.empty((512, 3072), np.float32)
        return lambda: affine_rows(source, shift, scale, out, rows)

    def loss():
        logits = rng.standard_normal((512, 10)).astype(np.float32)
        labels = rng.integers(0, 10, 512)
        xent = npp.SoftmaxCrossEntropy()
        return lambda: (xent.forward(logits, labels), xent.backward())

    return [
        ("ReLU forward (512, 1024)", layer(npp.ReLU, False)),
        ("ReLU backward (512, 1024)", layer(npp.ReLU, True)),
        ("Dropout forward (512, 1024)", layer(lambda: npp.Dropout(0.2, rng=0), False)),
        ("Dropout backward (512, 1024)", layer(lambda: npp.Dropout(0.2, rng=0), True)),
        ("BatchNorm1d forward (512, 1024)", layer(lambda: npp.BatchNorm1d(1024), False)),
        ("BatchNorm1d backward (512, 1024)", layer(lambda: npp.BatchNorm1d(1024), True)),
        ("Adam step, 3072x1000 weight", adam),
        ("gather + standardise 512 uint8 images", batch),
        ("softmax cross-entropy, forward + backward (512, 10)", loss),
    ]


def measure(repeats: int = 40) -> list[tuple[str, dict[str, float]]]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 3072)).astype(np.float32)
    w = rng.standard_normal((3072, 1000)).astype(np.float32)
    c = np.empty((512, 1000), np.float32)
    rows = []
    for name, setup in operations(rng):
        times = {path: [] for path in PATHS}
        runs = {}
        for path, managers in PATHS.items():
            with ExitStack() as stack:
                for m in managers:
                    stack.enter_context(m())
                runs[path] = setup()
                runs[path]()  # warm up (and compile, the first time)
        for _ in range(repeats):
            for path, managers in PATHS.items():
                with ExitStack() as stack:
                    for m in managers:
                        stack.enter_context(m())
                    _blas.gemm(a, w, c)  # as in training: BLAS's workers are awake
                    t = time.perf_counter()
                    runs[path]()
                    times[path].append(time.perf_counter() - t)
        rows.append((name, {p: float(np.median(v)) * 1e3 for p, v in times.items()}))
    return rows


def table(rows) -> str:
    head = (
        "| operation | "
        + " | ".join(f"{p} (ms)" for p in PATHS)
        + " | NumPy 1 core / numba all cores |"
    )
    lines = [head, "|---|" + "---:|" * (len(PATHS) + 1)]
    for name, t in rows:
        cells = " | ".join(f"{t[p]:.3f}" for p in PATHS)
        lines.append(f"| {name} | {cells} | {t['NumPy, 1 core'] / t['numba, all cores']:.1f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--write", action="store_true", help="write the table into RESULTS.md")
    args = parser.parse_args()
    if not _kernels.available():
        raise SystemExit("numba is not installed (pip install -e '.[fast]'): nothing to compare")
    rows = measure(args.repeats)
    text = table(rows)
    print(text)
    if args.write:
        import sys

        sys.path.insert(0, str(HERE))
        from results_md import update_section

        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                platform.processor(),
            )
        import numba

        section = (
            "## Elementwise work: NumPy and numba, one core and all cores\n\n"
            f"Measured {time.strftime('%Y-%m-%d')} on {cpu}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, NumPy {np.__version__}, numba {numba.__version__}.\n\n"
            f"Command: `python benchmarks/elementwise.py --write` (medians of {args.repeats}, "
            "the four paths alternating, each right after a matrix product).\n\n" + text + "\n\n"
            '"all cores" runs the pieces on OpenBLAS\'s worker threads (`_blas.parallel_for` '
            "and `parallel_for_kernel`); every path gives the same bits (tests/test_parallel.py), "
            "except the loss, whose compiled exp agrees with NumPy's to rounding. The loss "
            "is small work and runs on one core on every path; right after a large matrix "
            "product much of its time goes to fetching evicted code and data back into the "
            "caches, so one compiled call instead of about fifteen NumPy calls gains less "
            "there than in a warm loop.\n"
        )
        print("wrote", update_section("elementwise", section))


if __name__ == "__main__":
    main()
