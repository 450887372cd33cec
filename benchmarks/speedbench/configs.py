"""What is timed: the networks, their optimizers, and the constants of a run."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent
REPO = BENCHMARKS.parent
SCRIPT = BENCHMARKS / "speed.py"

# Like numprop itself: NUMPROP_DATA_DIR names the folder that holds cifar-10-batches-bin/.
DEFAULT_DATA = Path(os.environ.get("NUMPROP_DATA_DIR", REPO.parent / "shared" / "datasets"))
if (DEFAULT_DATA / "cifar-10-batches-bin").is_dir():
    DEFAULT_DATA = DEFAULT_DATA / "cifar-10-batches-bin"

# Set on some machines; they pin OpenBLAS to a kernel / cache size. Removed in the
# benchmark subprocesses so every library sees the machine as it is.
UNSET_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREADS = 2
# OpenBLAS's (and OpenMP's) idle worker threads spin for about 0.1 s after their
# last job (measured: 0.11 s of CPU burnt by a process that has just finished
# its products and then sleeps). Every timed call waits this long first, so that
# no side starts while the previous one's threads still hold a core.
SETTLE_S = 0.25

LR = {"sgd": 0.01, "adam": 1e-3}
MOMENTUM = 0.9
INFER_BATCH = 1000
N_TEST = 10000
FLOOR_N = 2048  # the GEMM floor's rate: np.matmul on FLOOR_N^3 float32 products


def _configs() -> dict[str, dict]:
    """name -> network (layer sizes, BatchNorm, dropout), batch size, optimizer."""
    configs = {}
    for hidden in (100, 1000, 4000):
        for batch in (128, 512):
            configs[f"h{hidden}-b{batch}"] = {
                "sizes": [3072, hidden, 10],
                "batch": batch,
                "opt": "sgd",
            }
    configs["bn3x1024-b512"] = {
        "sizes": [3072, 1024, 1024, 1024, 10],
        "batchnorm": True,
        "dropout": 0.2,
        "batch": 512,
        "opt": "sgd",
    }
    configs["adam-h1000-b512"] = {"sizes": [3072, 1000, 10], "batch": 512, "opt": "adam"}
    return configs


CONFIGS = _configs()
QUICK_CONFIGS = ["h100-b128", "h1000-b512"]
QUICK_N_TRAIN = 10000


def describe(cfg: dict) -> str:
    """'hidden 1000, batch 512, SGD m=0.9' and the like."""
    hidden = "x".join(str(s) for s in cfg["sizes"][1:-1])
    extra = f" +BN +Dropout({cfg['dropout']:.1f})" if cfg.get("batchnorm") else ""
    opt = "SGD m=0.9" if cfg["opt"] == "sgd" else "Adam"
    return f"hidden {hidden}{extra}, batch {cfg['batch']}, {opt}"


def gemm_flops(sizes: list[int], n: int) -> float:
    """FLOPs of one epoch's matrix products: forward, weight grads, input grads of layers 2.."""
    prods = [a * b for a, b in itertools.pairwise(sizes)]
    return 2.0 * n * (2 * sum(prods) + sum(prods[1:]))
