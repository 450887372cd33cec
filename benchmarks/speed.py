"""Speed benchmark: numprop against PyTorch (CPU) and scikit-learn's MLPClassifier.

Each side trains the same network (same layers, initial weights, optimizer and
hyper-parameters, batch size, data order and thread count) for one epoch over
the CIFAR-10 training set per repeat; numprop through ``npp.Trainer.train_step``.
Every side runs in its own subprocess (so peak memory is its own and one
library's thread pool cannot slow another) and the parent alternates them epoch
by epoch: on a shared, noisy machine only ratios measured inside one run, as
medians over alternated repeats, mean much.

    python benchmarks/speed.py                         # all configurations, 3 repeats
    python benchmarks/speed.py --configs h1000-b128,adam-h1000-b512 --repeats 5
    python benchmarks/speed.py --quick                 # a smoke run (10,000 examples)
    python benchmarks/speed.py --write                 # also write benchmarks/SPEED.md
    python benchmarks/speed.py --profile h1000-b128    # where numprop's time goes
    python benchmarks/speed.py --precision bf16 --write # numprop bf16 vs torch autocast: BF16.md
    python benchmarks/speed.py --compare-with 15e40d6 --repeats 3 \\
        --output benchmarks/REDESIGN.md                # an older commit's numprop against this one

Also reported: numprop's epoch against the matrix-product floor (the epoch's
GEMM FLOPs divided by np.matmul's float32 rate on 2048^3 products measured in
the numprop subprocess during the same run), eval-mode inference throughput on
the 10,000 test images, peak RSS of each subprocess, and numprop's matrix
products and weight updates alone (the same BLAS calls and optimizer step its
training step makes, with nothing else), which splits numprop's epoch into the
work no overhead hides and the rest that overhead work could still shave.

The code is in benchmarks/speedbench/ (its __init__ lists the parts). Needs the
benchmark extras: pip install torch==2.13.0 scikit-learn threadpoolctl (a side
whose library is missing is left out).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # speedbench/ sits next to this
    from speedbench.cli import main

    main(description=__doc__.split("\n\n")[0])
