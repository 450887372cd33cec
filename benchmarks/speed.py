"""Speed benchmark: numprop against PyTorch (CPU) and scikit-learn's MLPClassifier.

Each side trains the same network (same layers, initial weights, optimizer and
hyper-parameters, batch size, data order and thread count) for one epoch over
the CIFAR-10 training set per repeat. Every side runs in its own subprocess (so
peak memory is its own and one library's thread pool cannot slow another) and
the parent alternates them epoch by epoch: on a shared, noisy machine only
ratios measured inside one run, as medians over alternated repeats, mean much.

    python benchmarks/speed.py                         # all configurations, 3 repeats
    python benchmarks/speed.py --configs h1000-b128,adam-h1000-b512 --repeats 5
    python benchmarks/speed.py --quick                 # a smoke run (10,000 examples)
    python benchmarks/speed.py --write                 # also write benchmarks/SPEED.md
    python benchmarks/speed.py --profile h1000-b128    # where numprop's time goes

Also reported: numprop's epoch against the matrix-product floor (the epoch's
GEMM FLOPs divided by np.matmul's float32 rate on 2048^3 products measured in
the numprop subprocess during the same run), eval-mode inference throughput on
the 10,000 test images, peak RSS of each subprocess, and numprop's matrix
products and weight updates alone (the same BLAS calls and optimizer step its
training step makes, with nothing else), which splits numprop's epoch into the
work no overhead hides and the rest that overhead work could still shave.

Needs the benchmark extras: pip install torch==2.13.0 scikit-learn threadpoolctl
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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

# name -> network, batch size, optimizer
CONFIGS: dict[str, dict] = {}
for _h in (100, 1000, 4000):
    for _b in (128, 512):
        CONFIGS[f"h{_h}-b{_b}"] = dict(sizes=[3072, _h, 10], batch=_b, opt="sgd")
CONFIGS["bn3x1024-b512"] = dict(sizes=[3072, 1024, 1024, 1024, 10], batchnorm=True, dropout=0.2,
                                batch=512, opt="sgd")
CONFIGS["adam-h1000-b512"] = dict(sizes=[3072, 1000, 10], batch=512, opt="adam")
QUICK_CONFIGS = ["h100-b128", "h1000-b512"]

LR = {"sgd": 0.01, "adam": 1e-3}
MOMENTUM = 0.9
INFER_BATCH = 1000
FLOOR_N = 2048


def describe(cfg: dict) -> str:
    hidden = "x".join(str(s) for s in cfg["sizes"][1:-1])
    extra = " +BN +Dropout(%.1f)" % cfg["dropout"] if cfg.get("batchnorm") else ""
    opt = "SGD m=0.9" if cfg["opt"] == "sgd" else "Adam"
    return f"hidden {hidden}{extra}, batch {cfg['batch']}, {opt}"


def gemm_flops(sizes: list[int], n: int) -> float:
    """FLOPs of one epoch's matrix products: forward, weight grads, input grads of layers 2.."""
    prods = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2.0 * n * (2 * sum(prods) + sum(prods[1:]))


# =============================================================================
# Worker side (runs in a subprocess; talks JSON lines on stdin/stdout)
# =============================================================================

class Data:
    """CIFAR-10 as uint8 rows (N, 3072); batches converted to float32 with per-channel
    standardisation, into reused buffers (the same code for every side)."""

    def __init__(self, data_dir: Path, n_train: int, max_batch: int):
        import numpy as np
        self.np = np
        files = [data_dir / f"data_batch_{i}.bin" for i in range(1, 6)]
        test_file = data_dir / "test_batch.bin"
        self.random = not (all(f.exists() for f in files) and test_file.exists())
        rng = np.random.default_rng(0)

        def read(paths, n):  # one file at a time, so loading does not set the peak RSS
            x, y, filled = np.empty((n, 3072), np.uint8), np.empty(n, np.int64), 0
            for path in paths:
                if filled == n:
                    break
                if self.random:  # same shapes, random content
                    raw = rng.integers(0, 256, (10000, 3073), dtype=np.uint8)
                    raw[:, 0] %= 10
                else:
                    raw = np.fromfile(path, np.uint8).reshape(-1, 3073)
                take = min(n - filled, len(raw))
                x[filled:filled + take] = raw[:take, 1:]
                y[filled:filled + take] = raw[:take, 0]
                filled += take
            return x[:filled], y[:filled]

        self.x, self.y = read(files, n_train)                          # (N, 3072) uint8, (N,)
        self.x_test_u8, self.y_test = read([test_file], 10000)
        per_channel = self.x.reshape(len(self.x), 3, 1024)
        mean = per_channel.mean(axis=(0, 2), dtype=np.float64)
        std = per_channel.std(axis=(0, 2), dtype=np.float64)
        self.mean = np.repeat(mean, 1024).astype(np.float32)
        self.inv_std = np.repeat(1.0 / std, 1024).astype(np.float32)
        self.n = len(self.x)
        self._u8 = np.empty((max_batch, 3072), np.uint8)
        self._f32 = np.empty((max_batch, 3072), np.float32)
        self.prep_seconds = 0.0

    def standardise(self, x_u8, out=None):
        """(x - mean) * inv_std as float32 (N, 3072), with the side's own tools."""
        out = self.np.empty(x_u8.shape, self.np.float32) if out is None else out
        self.make(None, x_u8, None, out)
        return out

    def make(self, idx, source, u8, out):
        """out = (source[idx] - mean) * inv_std, gathering into u8 (idx None: all rows).

        Plain NumPy on one core; the sides replace it with their own parallel tools."""
        np = self.np
        if idx is not None:
            np.take(source, idx, axis=0, out=u8, mode="clip")
            source = u8
        np.subtract(source, self.mean, out=out, dtype=np.float32)
        out *= self.inv_std

    def make_with_numprop(self):
        """numprop's own gather-and-standardise (one pass, all cores: preprocess.affine_rows)."""
        from numprop.data.preprocess import affine_rows
        mean, inv_std = self.mean, self.inv_std

        def make(idx, source, u8, out):
            affine_rows(source, mean, inv_std, out, idx)
        self.make = make

    def make_with_torch(self, torch):
        """The same arithmetic in torch ops (on torch's own threads)."""
        mean, inv_std = torch.from_numpy(self.mean), torch.from_numpy(self.inv_std)

        def make(idx, source, u8, out):
            rows = torch.from_numpy(source)
            if idx is not None:
                rows = torch.index_select(rows, 0, torch.from_numpy(idx), out=torch.from_numpy(u8))
            result = torch.from_numpy(out)
            torch.sub(rows, mean, out=result)
            result.mul_(inv_std)
        self.make = make

    def permutation(self, epoch: int):
        return self.np.random.default_rng(1000 + epoch).permutation(self.n)

    def batch(self, idx):
        """(float32 (B, 3072), int64 (B,)); the float array is overwritten by the next call."""
        n = len(idx)
        out = self._f32[:n]
        self.make(idx, self.x, self._u8[:n], out)
        return out, self.y[idx]

    def batches(self, epoch: int, batch: int):
        """One epoch of batches; the seconds spent making them add up in ``prep_seconds``."""
        perm = self.permutation(epoch)
        clock = time.perf_counter
        for i in range(0, self.n, batch):
            t0 = clock()
            b = self.batch(perm[i:i + batch])
            self.prep_seconds += clock() - t0
            yield b

    def test_float(self):
        return self.standardise(self.x_test_u8)


def rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def status_kb(field: str) -> int | None:
    """VmRSS (now) or VmHWM (peak since start or since reset_peak) in KiB, Linux only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def pools() -> list[dict]:
    from threadpoolctl import threadpool_info
    keep = ("user_api", "internal_api", "num_threads", "version", "architecture", "filepath")
    return [{k: p.get(k) for k in keep} for p in threadpool_info()]


class _TrainingSide:
    """What numprop's and PyTorch's sides share: an epoch is their own step over the batches,
    and the loss check runs one step with dropout off, then puts everything back."""

    def epoch(self, k):
        model, loss, opt, step = self.model, self.loss, self.opt, self.step
        last = None
        for xb, yb in self.data.batches(k, self.cfg["batch"]):
            last = step(model, loss, opt, xb, yb)
        return last

    def check(self, xb, yb):
        """Loss before and after one step on (xb, yb), dropout off; then back to the start."""
        model, initial = self.model, self.snapshot()
        dropouts = self.dropouts()
        ps = [m.p for m in dropouts]
        for m in dropouts:
            m.p = 0.0
        first = self.step(model, self.loss, self.opt, xb, yb)
        second = self.loss_value(xb, yb)
        for m, p in zip(dropouts, ps):
            m.p = p
        model.load_state_dict(initial)
        self.opt = self.optimizer(model)
        return [first, second]


class NumpropSide(_TrainingSide):
    name = "numprop"

    def __init__(self, cfg, data):
        import numpy as np
        import numprop as npp
        from numprop._fast import blas as _blas, kernels as _kernels
        self.np, self.npp, self.cfg, self.data = np, npp, cfg, data
        self.info = {"fast_blas": _blas.available(), "parallel_elementwise": _blas.parallel_available(),
                     "numba_kernels": _kernels.get("adam") is not None}
        data.make_with_numprop()

    def setup(self):
        self.model = self.build()
        self.loss = self.npp.SoftmaxCrossEntropy()
        self.opt = self.optimizer(self.model)

    def build(self):
        c = self.cfg
        return self.npp.models.mlp(c["sizes"], batchnorm=c.get("batchnorm", False),
                                   dropout=c.get("dropout", 0.0), rng=0)

    def optimizer(self, model):
        if self.cfg["opt"] == "sgd":
            return self.npp.SGD(model.named_parameters(), lr=LR["sgd"], momentum=MOMENTUM)
        return self.npp.Adam(model.named_parameters(), lr=LR["adam"])

    @staticmethod
    def step(model, loss, opt, xb, yb) -> float:
        logits = model.forward(xb)
        value = loss.forward(logits, yb)
        dlogits = loss.backward()
        opt.zero_grad()
        with opt.fused_backward():
            model.backward_params(dlogits)
        opt.step()
        return value

    def snapshot(self):
        return self.model.state_dict()

    def dropouts(self):
        return [m for m in self.model.modules() if isinstance(m, self.npp.Dropout)]

    def loss_value(self, xb, yb):
        return self.loss.forward(self.model.forward(xb), yb)

    def infer(self, x):
        model = self.model
        model.eval()
        for i in range(0, len(x), INFER_BATCH):
            model.forward(x[i:i + INFER_BATCH])
        model.train()

    def trainer_epoch(self, k):
        """One epoch through npp.train.Trainer (same batches), or None if there is none."""
        try:
            from numprop.training.trainer import Trainer
        except ImportError:
            return None
        data, batch = self.data, self.cfg["batch"]

        class Batches:  # re-iterable with a len, as Trainer.fit wants
            def __len__(self):
                return -(-data.n // batch)

            def __iter__(self):
                return data.batches(k, batch)

        history = Trainer(self.model, self.loss, self.opt).fit(Batches(), None, epochs=1)
        return history.records[-1]["train_loss"]

    def floor(self, reps):
        """GFLOP/s of np.matmul on FLOOR_N^3 float32 products, one value per rep."""
        np = self.np
        rng = np.random.default_rng(0)
        a = rng.standard_normal((FLOOR_N, FLOOR_N), dtype=np.float32)
        b = rng.standard_normal((FLOOR_N, FLOOR_N), dtype=np.float32)
        c = np.empty_like(a)
        np.matmul(a, b, out=c)
        out = []
        for _ in range(reps):
            t = time.perf_counter()
            np.matmul(a, b, out=c)
            out.append(2.0 * FLOOR_N ** 3 / (time.perf_counter() - t) / 1e9)
        return out


class TorchSide(_TrainingSide):
    name = "torch"

    def __init__(self, cfg, data):
        import numpy as np
        import torch
        from torch import nn
        torch.set_num_threads(THREADS)
        self.np, self.torch, self.nn, self.cfg, self.data = np, torch, nn, cfg, data
        self.info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                     "mkldnn": torch.backends.mkldnn.is_available()}
        data.make_with_torch(torch)
        self.loss = nn.CrossEntropyLoss()

    def setup(self):
        self.model = self.build()
        self.opt = self.optimizer(self.model)

    def build(self):
        """The numprop network (same seed, so the same weights) rebuilt in torch."""
        import numprop as npp
        torch, nn, c = self.torch, self.nn, self.cfg
        ref = npp.models.mlp(c["sizes"], batchnorm=c.get("batchnorm", False),
                             dropout=c.get("dropout", 0.0), rng=0)
        layers = []
        for layer in ref:
            kind = type(layer).__name__
            if kind == "Linear":
                lin = nn.Linear(layer.in_features, layer.out_features)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(layer.weight.data.T.copy()))
                    lin.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
                layers.append(lin)
            elif kind == "BatchNorm1d":
                layers.append(nn.BatchNorm1d(layer.num_features, eps=layer.eps,
                                             momentum=layer.momentum))
            elif kind == "ReLU":
                layers.append(nn.ReLU())
            elif kind == "Dropout":
                layers.append(nn.Dropout(layer.p))
            else:
                raise ValueError(f"no torch twin for {kind}")
        return nn.Sequential(*layers).train()

    def optimizer(self, model):
        if self.cfg["opt"] == "sgd":
            return self.torch.optim.SGD(model.parameters(), lr=LR["sgd"], momentum=MOMENTUM)
        return self.torch.optim.Adam(model.parameters(), lr=LR["adam"])

    def step(self, model, loss, opt, xb, yb) -> float:
        xt, yt = self.torch.from_numpy(xb), self.torch.from_numpy(yb)
        opt.zero_grad(set_to_none=True)
        value = loss(model(xt), yt)
        value.backward()
        opt.step()
        return value.item()

    def snapshot(self):
        import copy
        return copy.deepcopy(self.model.state_dict())

    def dropouts(self):
        return [m for m in self.model.modules() if isinstance(m, self.nn.Dropout)]

    def loss_value(self, xb, yb):
        with self.torch.no_grad():
            return self.loss(self.model(self.torch.from_numpy(xb)),
                             self.torch.from_numpy(yb)).item()

    def infer(self, x):
        torch, model = self.torch, self.model
        model.eval()
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            for i in range(0, len(x), INFER_BATCH):
                model(xt[i:i + INFER_BATCH])
        model.train()


class SklearnSide:
    """MLPClassifier, one epoch per fit (max_iter=1); no BatchNorm or Dropout there."""

    name = "sklearn"

    def __init__(self, cfg, data):
        import warnings

        import numpy as np
        import sklearn
        from sklearn.exceptions import ConvergenceWarning
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        self.np, self.cfg, self.data = np, cfg, data
        self.info = {"sklearn": sklearn.__version__}
        self.clf = None

    def setup(self):
        self.x = self.data.standardise(self.data.x)                    # (N, 3072) float32

    def make(self, k):
        from sklearn.neural_network import MLPClassifier
        c = self.cfg
        common = dict(hidden_layer_sizes=tuple(c["sizes"][1:-1]), activation="relu",
                      batch_size=c["batch"], max_iter=1, alpha=0.0, shuffle=True,
                      random_state=k, tol=0.0, n_iter_no_change=10 ** 9)
        if c["opt"] == "sgd":
            return MLPClassifier(solver="sgd", learning_rate="constant",
                                 learning_rate_init=LR["sgd"], momentum=MOMENTUM,
                                 nesterovs_momentum=False, **common)
        return MLPClassifier(solver="adam", learning_rate_init=LR["adam"], **common)

    def epoch(self, k):
        if k < 0:  # warm-up: a small fit touches the code paths
            self.make(0).fit(self.x[:4 * self.cfg["batch"]], self.data.y[:4 * self.cfg["batch"]])
            return None
        self.clf = self.make(k).fit(self.x, self.data.y)
        self.info["coef_dtype"] = str(self.clf.coefs_[0].dtype)
        return float(self.clf.loss_)

    def infer(self, x):
        self.clf.predict_proba(x)

    def check(self, xb, yb):
        return None


class ProductsSide:
    """numprop's matrix products and weight updates alone: the work no overhead hides.

    Per batch (same batch sizes as an epoch), each Linear layer's products as
    numprop's layers make them: the forward ``gemm(x, W, out)``, the weight
    gradient through ``Parameter.accumulate_matmul`` inside the optimizer's
    ``fused_backward`` (for SGD it accumulates straight into the momentum
    buffer), ``np.matmul(dout, W.T, out=dx)`` for every layer but the first;
    then numprop's optimizer step on those weights, timed on its own. The
    update must read and write every weight and its optimizer state once per
    step, which memory bandwidth bounds. On arrays made once; no data, no bias,
    no activations, no loss. Its own subprocess, so it does not change numprop's
    peak memory.
    """

    name = "products"

    def __init__(self, cfg, data):
        import numpy as np
        import numprop as npp
        from numprop._fast import blas as _blas
        self.np, self.npp, self.gemm, self.cfg, self.data = np, npp, _blas.gemm, cfg, data
        self.info = {"fast_blas": _blas.available()}

    def setup(self):
        np, npp, sizes, batch = self.np, self.npp, self.cfg["sizes"], self.cfg["batch"]
        rng = np.random.default_rng(0)

        def normal(shape, scale):
            return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

        # Small gradients keep the weights, and so every value, nearly where they
        # start over any number of epochs (values do not change BLAS's speed, but
        # an overflow would make NaNs): forward products overwrite (beta=0, where
        # numprop's Linear adds onto its bias: the same one pass over the output).
        self.acts = [normal((batch, s), 1.0) for s in sizes]           # layer inputs, then logits
        self.grads = [normal((batch, s), 1e-6) for s in sizes]         # d(loss)/d(each of those)
        self.params = [npp.Parameter(normal((a, b), a ** -0.5))
                       for a, b in zip(sizes[:-1], sizes[1:])]
        if self.cfg["opt"] == "sgd":
            self.opt = npp.SGD(self.params, lr=LR["sgd"], momentum=MOMENTUM)
        else:
            self.opt = npp.Adam(self.params, lr=LR["adam"])

    def epoch(self, k):
        """Returns the seconds spent in the optimizer's steps."""
        np, gemm, acts, grads, params, opt = (self.np, self.gemm, self.acts, self.grads,
                                              self.params, self.opt)
        n, batch, clock = self.data.n, self.cfg["batch"], time.perf_counter
        updating = 0.0
        for lo in range(0, n, batch):
            b = min(batch, n - lo)
            for i, p in enumerate(params):
                gemm(acts[i][:b], p.data, acts[i + 1][:b])                       # (b, in) @ (in, out)
            opt.zero_grad()
            with opt.fused_backward():
                for i in range(len(params) - 1, -1, -1):
                    params[i].accumulate_matmul(acts[i][:b].T, grads[i + 1][:b])  # (in, b) @ (b, out)
                    if i:
                        np.matmul(grads[i + 1][:b], params[i].data.T, out=grads[i][:b])
            t0 = clock()
            opt.step()
            updating += clock() - t0
        return updating

    def infer(self, x):
        return None

    def check(self, xb, yb):
        return None


SIDES = {"numprop": NumpropSide, "torch": TorchSide, "sklearn": SklearnSide,
         "products": ProductsSide}


def worker_main(side_name: str, cfg_json: str, data_dir: str, n_train: int) -> None:
    """Serve commands from the parent: one JSON object per line in, one per line out."""
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol

    def reply(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    cfg = json.loads(cfg_json)
    if side_name == "numprop":
        import numprop  # noqa: F401  (before anything that loads SciPy's OpenBLAS)
    import gc

    import numpy as np
    import threadpoolctl  # noqa: F401
    data = Data(Path(data_dir), n_train, cfg["batch"])
    side = SIDES[side_name](cfg, data)
    x_test = data.test_float()
    check_idx = data.permutation(-1)[:cfg["batch"]]
    xb, yb = data.batch(check_idx)
    xb = xb.copy()
    gc.collect()
    base_rss = status_kb("VmRSS")  # imports + data: what every side pays before its model
    peak_reset = reset_peak()
    side.setup()
    # The equality check: one step from the initial weights (dropout off), then the
    # model goes back to its initial state with a fresh optimizer.
    check = side.check(xb, yb)
    import importlib.util
    reply({"ready": True, "info": side.info,
           "has_trainer": importlib.util.find_spec("numprop.training.trainer") is not None, "pools": pools(), "random_data": data.random,
           "base_rss_kb": base_rss, "check": check, "numpy": np.__version__,
           "env": {k: os.environ.get(k) for k in UNSET_VARS}})
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            reply({"rss_kb": rss_kb(), "hwm_kb": status_kb("VmHWM") if peak_reset else None})
            return
        c0, t0 = os.times(), time.perf_counter()
        data.prep_seconds = 0.0
        if op == "epoch":
            result = side.epoch(cmd["k"])
        elif op == "infer":
            result = side.infer(x_test)
        elif op == "floor":
            result = side.floor(cmd["reps"])
        elif op == "trainer":
            result = side.trainer_epoch(cmd["k"])
        else:
            raise ValueError(op)
        seconds = time.perf_counter() - t0
        c1 = os.times()
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        reply({"seconds": seconds, "cpu": cpu, "result": result, "prep": data.prep_seconds})


# =============================================================================
# Parent side
# =============================================================================

class Worker:
    def __init__(self, side, cfg, args):
        env = dict(os.environ)
        for var in UNSET_VARS:
            env.pop(var, None)
        env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        self.side = side
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", side,
             json.dumps(cfg), str(args.data_dir), str(args.n_train)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.side} worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def send(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def call(self, **cmd):
        self.send(**cmd)
        return self.read()

    def close(self):
        reply = self.call(op="quit")
        self.proc.wait()
        return reply


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def run_config(name, cfg, args, log):
    sides = (["numprop", "torch"] + (["products"] if args.products else [])
             + ([] if args.no_sklearn else ["sklearn"]))
    timed = ["numprop", "torch"] + (["trainer"] if args.trainer else []) + sides[2:]
    res = {"name": name, "cfg": cfg, "epochs": {s: [] for s in timed},
           "cpu": {s: [] for s in timed}, "prep": {s: [] for s in timed},
           "infer": {s: [] for s in sides if s != "products"}, "floor": [], "updates": []}
    load0 = os.getloadavg()
    log(f"\n== {name}: {describe(cfg)} (load average {load0[0]:.1f})")
    workers = {}
    for s in sides:  # started one at a time: loading is not what we measure
        workers[s] = Worker(s, cfg, args)
        res[s] = workers[s].read()
        res[s]["started"] = True
    c_np, c_t = res["numprop"]["check"], res["torch"]["check"]
    rel = [abs(a - b) / abs(b) for a, b in zip(c_np, c_t)]
    res["check_rel"] = max(rel)
    verdict = "OK" if res["check_rel"] <= 1e-4 else "!!! MISMATCH: the two sides do NOT compute the same thing !!!"
    log(f"  check (loss before / after one identical step, dropout off): numprop {c_np[0]:.6f} "
        f"/ {c_np[1]:.6f}, torch {c_t[0]:.6f} / {c_t[1]:.6f}, max rel diff "
        f"{res['check_rel']:.1e} {verdict}")
    if not res["numprop"]["info"].get("fast_blas"):
        log("  !!! numprop's BLAS fast path is OFF in its worker (plain NumPy fallback)")

    # warm-up: one full epoch each (sklearn: a small fit)
    for s in sides:
        workers[s].call(op="epoch", k=-1)
    if args.trainer and not res["numprop"]["has_trainer"]:
        log("  (no numprop.training.trainer.Trainer: not timed)")
        timed.remove("trainer")
        del res["epochs"]["trainer"]
    res["floor"] += workers["numprop"].call(op="floor", reps=3)["result"]
    sk_left = args.sklearn_repeats
    for r in range(args.repeats):
        order = timed if r % 2 == 0 else timed[::-1]
        line = []
        for s in order:
            if s == "sklearn":
                if sk_left <= 0:
                    continue
                sk_left -= 1
            time.sleep(SETTLE_S)
            if s == "numprop":  # the floor, measured in the same process, right before
                res["floor"] += workers[s].call(op="floor", reps=2)["result"]
            if s == "trainer":
                rep = workers["numprop"].call(op="trainer", k=100 + r)
            else:
                rep = workers[s].call(op="epoch", k=r)
            res["epochs"][s].append(rep["seconds"])
            res["cpu"][s].append(rep["cpu"])
            res["prep"][s].append(rep["prep"])
            if s == "products":
                res["updates"].append(rep["result"])
            busy = rep["cpu"] / rep["seconds"]
            if s != "sklearn" and busy < 1.5:
                res["contended"] = res.get("contended", 0) + 1
            loss = (f", updates {rep['result']:.2f}s" if s == "products"
                    else "" if rep["result"] is None else f", loss {rep['result']:.3f}")
            line.append(f"{s} {rep['seconds']:.2f}s (cpu {busy:.2f}x{'*' if busy < 1.5 else ''}"
                        f"{loss})")
        log(f"  repeat {r + 1}: " + ", ".join(line))
    inferring = [s for s in sides if s != "products"]
    for r in range(args.infer_repeats):
        for s in (inferring if r % 2 == 0 else inferring[::-1]):
            time.sleep(SETTLE_S)
            res["infer"][s].append(workers[s].call(op="infer")["seconds"])
    for s in sides:
        end = workers[s].close()
        res[s]["peak_rss_kb"], res[s]["hwm_kb"] = end["rss_kb"], end["hwm_kb"]
    res["loadavg"] = [load0, os.getloadavg()]
    n_test = 10000
    np_s, t_s = median(res["epochs"]["numprop"]), median(res["epochs"]["torch"])
    res["np_s"], res["torch_s"] = np_s, t_s
    res["ratio_torch"] = np_s / t_s
    res["trainer_s"] = median(res["epochs"].get("trainer", []))
    res["gflops_peak"] = median(res["floor"])
    res["floor_s"] = gemm_flops(cfg["sizes"], args.n_train) / (res["gflops_peak"] * 1e9)
    res["ratio_floor"] = np_s / res["floor_s"]
    # the batch conversion (uint8 -> standardised float32) inside numprop's timed epochs
    res["prep_s"] = median(res["prep"]["numprop"])
    res["ratio_floor_noprep"] = median(
        [e - p for e, p in zip(res["epochs"]["numprop"], res["prep"]["numprop"])]) / res["floor_s"]
    # numprop's mandatory work: its matrix products, and its weight updates (timed apart)
    res["work_s"] = median(res["epochs"].get("products", []))
    res["updates_s"] = median(res["updates"])
    res["products_s"] = median([e - u for e, u in zip(res["epochs"].get("products", []),
                                                      res["updates"])])
    res["sk_s"] = median(res["epochs"].get("sklearn", []))
    res["speedup_sk"] = res["sk_s"] / np_s
    res["speedup_sk_noprep"] = res["sk_s"] / (np_s - res["prep_s"])
    res["ips"] = {s: n_test / median(v) for s, v in res["infer"].items()}
    log(f"  median epoch: numprop {np_s:.2f}s, torch {t_s:.2f}s (ratio {res['ratio_torch']:.2f}); "
        f"floor {res['floor_s']:.2f}s at {res['gflops_peak']:.0f} GFLOP/s (ratio "
        f"{res['ratio_floor']:.2f}; {res['ratio_floor_noprep']:.2f} without the "
        f"{res['prep_s']:.2f}s of batch conversion); sklearn {res['sk_s']:.2f}s "
        f"(x{res['speedup_sk']:.2f}; x{res['speedup_sk_noprep']:.2f} without batch conversion)")
    if res["work_s"] == res["work_s"]:
        log(f"  numprop's matrix products alone: {res['products_s']:.2f}s "
            f"({res['products_s'] / res['floor_s']:.2f} x floor), its weight updates "
            f"{res['updates_s']:.2f}s; the rest of its epoch {np_s - res['work_s']:.2f}s")
    return res


def mib(kb):
    return kb / 1024.0


def table(results):
    rows = ["| config | numprop s | PyTorch s | numprop / PyTorch | GEMM floor s | numprop / floor "
            "(w/o batch conversion) | sklearn s | speed-up vs sklearn (w/o batch conversion) "
            "| Trainer.fit s (/ PyTorch) | loss check (rel) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        sk = (f"{r['sk_s']:.2f}" if r["sk_s"] == r["sk_s"] else "–")
        sp = (f"{r['speedup_sk']:.2f}× ({r['speedup_sk_noprep']:.2f}×)"
              if r["speedup_sk"] == r["speedup_sk"] else "–")
        tr = (f"{r['trainer_s']:.2f} ({r['trainer_s'] / r['torch_s']:.2f})"
              if r["trainer_s"] == r["trainer_s"] else "–")
        if r["cfg"].get("batchnorm") and sk != "–":
            sk += "†"
            sp += "†"
        rows.append(f"| {r['name']} ({describe(r['cfg'])}) | {r['np_s']:.2f} | {r['torch_s']:.2f} "
                    f"| **{r['ratio_torch']:.2f}** | {r['floor_s']:.2f} | **{r['ratio_floor']:.2f}** "
                    f"({r['ratio_floor_noprep']:.2f}) "
                    f"| {sk} | {sp} | {tr} | {r['check_rel']:.1e} |")
    rows += ["", "| config | inference numprop img/s | inference PyTorch img/s "
             "| inference sklearn img/s | peak RSS numprop MiB (+model) "
             "| peak RSS PyTorch MiB (+model) | peak RSS sklearn MiB (+model) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cells = []
        for s in ("numprop", "torch", "sklearn"):
            cells.append(f"{r['ips'][s]:,.0f}" if s in r["ips"] and r["infer"][s] else "–")
        for s in ("numprop", "torch", "sklearn"):
            if s in r:
                peak, base = r[s]["peak_rss_kb"], r[s]["base_rss_kb"]
                hwm = r[s]["hwm_kb"] if r[s]["hwm_kb"] is not None else peak
                cells.append(f"{mib(peak):,.0f} (+{mib(hwm - base):,.0f})")
            else:
                cells.append("–")
        rows.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    with_products = [r for r in results if r["work_s"] == r["work_s"]]
    if with_products:
        rows += ["", "| config | numprop's products alone s (/ GEMM floor) | its weight updates s "
                 "| rest of numprop's epoch s (batch conversion) "
                 "| rest allowed by 0.90 × PyTorch s | rest allowed by 1.15 × floor s |",
                 "|---|---:|---:|---:|---:|---:|"]
        for r in with_products:
            work = r["work_s"]
            rows.append(f"| {r['name']} | {r['products_s']:.2f} ({r['products_s'] / r['floor_s']:.2f}) "
                        f"| {r['updates_s']:.2f} | {r['np_s'] - work:.2f} ({r['prep_s']:.2f}) "
                        f"| {0.90 * r['torch_s'] - work:.2f} | {1.15 * r['floor_s'] - work:.2f} |")
    return "\n".join(rows)


def targets(results):
    lines = []

    def verdict(ok):
        return "MET" if ok else "MISSED"

    big = [r for r in results if max(r["cfg"]["sizes"][1:-1]) >= 500]
    if big:
        worst = max(big, key=lambda r: r["ratio_torch"])
        ok = all(r["ratio_torch"] <= 0.90 for r in big)
        lines.append(f"- numprop ≤ 0.90 × PyTorch for hidden ≥ 500: **{verdict(ok)}** "
                     f"(worst {worst['name']}: {worst['ratio_torch']:.2f})")
        lines += _rest_needed([r for r in big if r["ratio_torch"] > 0.90],
                              lambda r: 0.90 * r["torch_s"])
    worst = max(results, key=lambda r: r["ratio_torch"])
    ok = all(r["ratio_torch"] <= 1.0 for r in results)
    lines.append(f"- numprop never slower than PyTorch: **{verdict(ok)}** "
                 f"(worst {worst['name']}: {worst['ratio_torch']:.2f})")
    fl = [r for r in results if min(r["cfg"]["sizes"][1:-1]) >= 1000 and r["cfg"]["batch"] == 512]
    if fl:
        worst = max(fl, key=lambda r: r["ratio_floor"])
        ok = all(r["ratio_floor"] <= 1.15 for r in fl)
        ok2 = all(r["ratio_floor_noprep"] <= 1.15 for r in fl)
        lines.append(f"- numprop ≤ 1.15 × GEMM floor for hidden ≥ 1000 at batch 512: "
                     f"**{verdict(ok)}** (worst {worst['name']}: {worst['ratio_floor']:.2f}; "
                     f"without the batch conversion {verdict(ok2).lower()}, worst "
                     f"{max(r['ratio_floor_noprep'] for r in fl):.2f})")
        lines += _rest_needed([r for r in fl if r["ratio_floor"] > 1.15],
                              lambda r: 1.15 * r["floor_s"])
    sk = [r for r in results if r["sk_s"] == r["sk_s"] and not r["cfg"].get("batchnorm")]
    if sk:
        worst = min(sk, key=lambda r: r["speedup_sk"])
        ok = all(r["speedup_sk"] >= 2.0 for r in sk)
        ok2 = all(r["speedup_sk_noprep"] >= 2.0 for r in sk)
        met = sum(r["speedup_sk"] >= 2.0 for r in sk)
        lines.append(f"- numprop ≥ 2 × faster than MLPClassifier (same network and solver): "
                     f"**{verdict(ok)}** ({met} of {len(sk)} configs; worst {worst['name']}: "
                     f"{worst['speedup_sk']:.2f}×; like-for-like, without numprop's batch "
                     f"conversion: {verdict(ok2).lower()}, worst "
                     f"{min(r['speedup_sk_noprep'] for r in sk):.2f}×)")
        # Where sklearn itself runs within 2x of the matrix products, no implementation
        # that does those products at the measured peak rate (or as fast as numprop's
        # BLAS does them, with the weight updates) can be 2x faster.
        unreachable = [f"{r['name']} (2× needs {r['sk_s'] / 2:.2f} s; the floor is "
                       f"{r['floor_s']:.2f} s, the products and updates alone take "
                       f"{r['work_s']:.2f} s)" for r in sk
                       if r["sk_s"] / 2 < max(r["floor_s"], _or_zero(r["work_s"]))]
        if unreachable:
            lines.append("  - out of reach on this machine, below the GEMM floor or below "
                         "numprop's products and weight updates alone: " + "; ".join(unreachable))
    bad = [r["name"] for r in results if r["check_rel"] > 1e-4]
    lines.append("- same computation (loss after one identical step within 1e-4 relative): "
                 + ("**MISMATCH in " + ", ".join(bad) + "**" if bad else "**OK** in every config"))
    return "\n".join(lines)


def _or_zero(x):
    return x if x == x else 0.0


def _rest_needed(missed, allowed):
    """For missed targets: what numprop's epoch less its products and updates would have to take.

    Out of reach where that is less than the batch conversion alone, which every
    side does inside its timed epoch.
    """
    missed = [r for r in missed if r["work_s"] == r["work_s"]]
    if not missed:
        return []
    parts, out = [], []
    for r in missed:
        left = allowed(r) - r["work_s"]
        parts.append(f"{r['name']} {r['np_s'] - r['work_s']:.2f} s → {left:.2f} s")
        if left < 0:
            out.append(f"{r['name']} (the products and updates alone take {r['work_s']:.2f} s "
                       f"of the {allowed(r):.2f} s)")
        elif left < r["prep_s"]:
            out.append(f"{r['name']} (that leaves {left:.2f} s; the batch conversion alone "
                       f"takes {r['prep_s']:.2f} s)")
    lines = ["  - to meet it, the rest of numprop's epoch (all but its matrix products and "
             "weight updates) would have to shrink: " + "; ".join(parts)]
    if out:
        lines.append("  - out of reach on this machine, the products, updates and batch "
                     "conversion alone exceed it: " + "; ".join(out))
    return lines


def machine(results):
    model, flags = "?", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    fl = line.split(":", 1)[1].split()
                    flags = " ".join(x for x in fl if x.startswith(("avx512f", "avx2", "fma")))
        mem = next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]
        mem = f"{int(mem) / 2 ** 20:.0f} GiB"
    except (OSError, StopIteration):
        mem = "?"
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    r0 = results[0]
    np_pools = [p for p in r0["numprop"]["pools"] if p["user_api"] == "blas"]
    t_pools = r0["torch"]["pools"]
    lines = [f"- CPU: {model} ({flags}), nproc {nproc}, {mem} RAM, {platform.platform()}",
             f"- Python {platform.python_version()}, NumPy {r0['numprop']['numpy']}, "
             f"PyTorch {r0['torch']['info']['torch']} ({r0['torch']['info']['threads']} threads, "
             f"MKL + oneDNN), scikit-learn {r0.get('sklearn', {}).get('info', {}).get('sklearn', '–')}",
             "- numprop worker BLAS (threadpoolctl): " + "; ".join(
                 f"{p['internal_api']} {p['version']} kernel {p['architecture']}, "
                 f"{p['num_threads']} threads" for p in np_pools)
             + f"; numprop ctypes GEMM fast path: {r0['numprop']['info'].get('fast_blas')}"
             + f"; elementwise work on OpenBLAS's threads: {r0['numprop']['info'].get('parallel_elementwise')}"
             + f"; numba kernels: {r0['numprop']['info'].get('numba_kernels')}",
             "- PyTorch worker pools (threadpoolctl): " + "; ".join(
                 f"{p['internal_api']} {p['num_threads']} threads ({Path(p['filepath']).name})"
                 for p in t_pools)]
    env = {k: os.environ.get(k) for k in UNSET_VARS}
    lines.append("- " + ", ".join(f"{k}={v!r}" for k, v in env.items())
                 + " in the parent; removed from every benchmark subprocess")
    return "\n".join(lines)


def write_md(results, args, text_log, path):
    r0 = results[0]
    random = r0["numprop"]["random_data"]
    cmd = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO)]
                               + sys.argv[1:])
    body = f"""# numprop speed benchmark

Written by `benchmarks/speed.py` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.

Command (from the repository root): `{cmd}`

## Machine

{machine(results)}
- Data: {"**random uint8 data (CIFAR-10 not found)**" if random else f"CIFAR-10 binary, {args.n_train:,} training images per epoch, 10,000 test images"}

## Method

Each side trains the same network for one epoch per repeat: same layers, same
initial weights (numprop's He/Glorot init with seed 0, copied into torch as
`weight = W.T`), same optimizer (SGD lr 0.01 momentum 0.9, or Adam lr 1e-3),
same batch size, same data order (one shared permutation per epoch, the last
partial batch included) and {THREADS} threads. Images stay uint8 and every side
gathers and converts each batch to float32 with per-channel standardisation,
inside the timed epoch, with its own tools: numprop with
`numprop.data.preprocess.affine_rows` (one pass on all cores), PyTorch with
`index_select`, `sub` and `mul_` on its own threads; the numbers are identical.
numprop's elementwise work (ReLU, Dropout, BatchNorm, Adam, the batch
conversion) runs as compiled numba kernels on OpenBLAS's threads when numba is
installed (the `fast` extra; status in the Machine section), as it is here.
Each side lives in its own subprocess; the
parent runs a warm-up epoch on each, then {args.repeats} timed epochs per side,
alternating the order (numprop first on odd repeats, last on even ones); the
numbers are medians. Before every timed epoch (and inference run) the parent
waits {SETTLE_S} s: BLAS and OpenMP worker threads spin for about 0.1 s after
their last job, and would otherwise take a core from the next side's start.
sklearn's `MLPClassifier` (float32 input, alpha=0,
max_iter=1, shuffle with a fixed random_state, same solver and learning rate)
gets {args.sklearn_repeats} timed epoch(s). † sklearn has no BatchNorm/Dropout:
for that row it trains the plain 3×1024 MLP, shown for reference and left out
of the target.
"w/o batch conversion": the same, less the time numprop's epoch spent turning
uint8 batches into standardised float32 (timed inside the epoch; PyTorch pays
for its own, sklearn gets its float32 array ready-made, so the second speed-up
is the like-for-like one). Epochs marked `*` in the raw log ran
with under 1.5 cores busy: another process had the CPU.
"Trainer.fit" is the same numprop model trained through `numprop.training.trainer.Trainer`
(same batches; it also counts correct predictions each step), timed in the same
alternation; the targets are judged on the plain training loop above.

The **GEMM floor** is the epoch's matrix-product FLOPs (2·B·in·out each for the
forward, the weight gradient and, for every layer but the first, the input
gradient) divided by the float32 rate of `np.matmul` on {FLOOR_N}³ matrices,
measured in the numprop subprocess right before each of its epochs (median of
all). **Loss check**: from the same weights, one step on the same batch, loss
before and after (dropout off), largest relative difference numprop vs PyTorch.
Inference: eval mode, 10,000 test images in batches of {INFER_BATCH}, median of
{args.infer_repeats}. Peak RSS: `ru_maxrss` of each subprocess (imports, uint8
data and the float32 test set included); "(+model)" is what training and
inference added: the peak RSS (VmHWM, reset after loading) minus the RSS after
imports, data loading and the loss check. sklearn's "+model" includes the
float32 copy of the whole training set that `fit` needs (600 MB).

**numprop's products alone, its weight updates**: a fourth subprocess makes,
batch by batch, only the matrix products of numprop's training step, with the
same calls and shapes as its Linear layers (forward, weight gradient through
the optimizer's fused backward, input gradient), then numprop's optimizer step
on those weights (timed apart: it must read and write every weight and its
optimizer state once a step, which memory bandwidth bounds), on arrays made
once: no data, bias, activations or loss. It is timed in the same alternation.
Together they are what a numprop with no overhead at all would take on this
BLAS and memory, so "rest of numprop's epoch" (its epoch minus both) is all
that work on overhead could still shave; of it, the batch conversion (in
brackets) is work every side does too. The "allowed" columns say how small the
rest must be to meet a target (negative: not even the products and updates fit).

The machine is shared and noisy: compare the ratios, not the seconds.

## Results

{table(results)}

## Targets

{targets(results)}

## Raw log

```
{text_log}
```
"""
    path.write_text(body)
    if path.resolve() != (HERE / "SPEED.md").resolve():
        return  # a trial written elsewhere (--output) leaves RESULTS.md to the real runs
    sys.path.insert(0, str(HERE))
    from results_md import update_section
    update_section("speed", f"""## Speed: an epoch of numprop against PyTorch and scikit-learn

Written by `benchmarks/speed.py` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')};
command (from the repository root): `{cmd}`. Method, raw log and inference/memory
figures: [SPEED.md](SPEED.md).

{machine(results)}

{table(results)}

{targets(results)}
""")


# =============================================================================
# Profile mode: where does numprop's time go?
# =============================================================================

def profile(name, args):
    """Per-phase times of one side (``--profile-side``), in this process.

    Each phase is timed per batch; besides the plain sum per epoch, the median
    per batch x batches per epoch is shown: on a shared machine the sum swallows
    every preemption, the median mostly does not.
    """
    import cProfile
    import pstats
    cfg = CONFIGS[name]
    data = Data(args.data_dir, args.n_train, cfg["batch"])
    clock = time.perf_counter
    phases: dict[str, list[float]] = {}

    def timed(key, fn, *a):
        t0 = clock()
        out = fn(*a)
        phases.setdefault(key, []).append(clock() - t0)
        return out

    if args.profile_side == "numprop":
        from numprop._fast import blas as _blas
        side = NumpropSide(cfg, data)
        side.setup()
        model, loss, opt = side.model, side.loss, side.opt
        layers = model.layers
        print(f"{name}: {describe(cfg)}; numprop, ctypes BLAS fast path {_blas.available()}")

        def one_step(xb, yb):
            x = xb
            for j, layer in enumerate(layers):
                x = timed(f"forward  {j}:{type(layer).__name__}", layer.forward, x)
            timed("loss forward", loss.forward, x, yb)
            d = timed("loss backward", loss.backward)
            timed("zero_grad", opt.zero_grad)
            with opt.fused_backward():
                for j in range(len(layers) - 1, 0, -1):
                    d = timed(f"backward {j}:{type(layers[j]).__name__}", layers[j].backward, d)
                timed(f"backward 0:{type(layers[0]).__name__} (weights only)",
                      layers[0].backward_params, d)
            timed("optimizer step", opt.step)
    else:
        side = TorchSide(cfg, data)
        side.setup()
        torch, model, loss, opt = side.torch, side.model, side.loss, side.opt
        print(f"{name}: {describe(cfg)}; torch {torch.__version__}")

        def one_step(xb, yb):
            xt, yt = torch.from_numpy(xb), torch.from_numpy(yb)
            timed("zero_grad", opt.zero_grad, True)
            out = timed("forward (all layers)", model, xt)
            value = timed("loss forward", loss, out, yt)
            timed("backward (all layers)", value.backward)
            timed("optimizer step", opt.step)
            timed("loss.item()", value.item)

    side.epoch(-1)  # warm-up
    walls = []
    for k in range(args.repeats):
        perm = data.permutation(k)
        t_ep = clock()
        for i in range(0, data.n, cfg["batch"]):
            xb, yb = timed("data: gather + standardise", data.batch, perm[i:i + cfg["batch"]])
            one_step(xb, yb)
        walls.append(clock() - t_ep)
    if args.profile_side == "numprop":
        peak = median(NumpropSide.floor(side, 5)) * 1e9
    else:
        peak = float("nan")
    n_batches = -(-data.n // cfg["batch"])
    total = median(walls)
    summed = sum(median(v) * n_batches for v in phases.values())
    print(f"epoch wall: median {total:.3f}s of {['%.2f' % w for w in walls]}; "
          f"sum of per-batch medians {summed:.3f}s; GEMM floor "
          f"{gemm_flops(cfg['sizes'], data.n) / peak:.3f}s ({peak / 1e9:.0f} GFLOP/s)")
    print(f"{'phase':45s} {'sum s/ep':>9s} {'median x batches':>17s} {'share':>6s}")
    for key, v in phases.items():
        m = median(v) * n_batches
        print(f"{key:45s} {sum(v) / args.repeats:9.3f} {m:17.3f} {100 * m / summed:5.1f}%")
    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        side.epoch(99)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)


# =============================================================================

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=None,
                   help="comma-separated, from: " + ", ".join(CONFIGS) + " (default: all)")
    p.add_argument("--repeats", type=int, default=None, help="timed epochs per side (default 3)")
    p.add_argument("--sklearn-repeats", type=int, default=None,
                   help="timed MLPClassifier epochs (default: min(repeats, 2))")
    p.add_argument("--infer-repeats", type=int, default=5)
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument("--no-products", dest="products", action="store_false",
                   help="do not time numprop's matrix products and weight updates alone "
                        "(timed by default)")
    p.add_argument("--no-trainer", dest="trainer", action="store_false",
                   help="do not time numprop's Trainer.fit (timed by default when it exists)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {', '.join(QUICK_CONFIGS)}, 10,000 images, 1 repeat")
    p.add_argument("--n-train", type=int, default=None, help="training images per epoch (50000)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--write", action="store_true", help="write benchmarks/SPEED.md")
    p.add_argument("--output", type=Path, default=HERE / "SPEED.md",
                   help="with --write: where the report goes; RESULTS.md is updated "
                        "only when it is the default benchmarks/SPEED.md")
    p.add_argument("--profile", metavar="CONFIG", help="time the phases of one side on one config")
    p.add_argument("--profile-side", choices=["numprop", "torch"], default="numprop")
    p.add_argument("--cprofile", action="store_true", help="with --profile: also cProfile an epoch")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        side, cfg_json, data_dir, n_train = args.worker
        worker_main(side, cfg_json, data_dir, int(n_train))
        return
    if args.n_train is None:
        args.n_train = 10000 if args.quick else 50000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.sklearn_repeats is None:
        args.sklearn_repeats = min(args.repeats, 2)
    if args.profile:
        for var in UNSET_VARS:
            if os.environ.get(var) is not None:
                print(f"note: {var} is set; run `env -u {var}` for numbers comparable to the benchmark")
        profile(args.profile, args)
        return
    names = (args.configs.split(",") if args.configs else
             QUICK_CONFIGS if args.quick else list(CONFIGS))
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    for var in UNSET_VARS:
        if os.environ.get(var) is not None:
            log(f"note: {var}={os.environ[var]} is set here; unset in the benchmark subprocesses")
    t0 = time.time()
    results = [run_config(n, CONFIGS[n], args, log) for n in names]
    log(f"\ntotal {time.time() - t0:.0f}s")
    if results[0]["numprop"]["random_data"]:
        log("!!! CIFAR-10 not found: RANDOM data of the same shape was used")
    print()
    print(machine(results))
    print()
    print(table(results))
    print()
    print(targets(results))
    if args.write:
        write_md(results, args, "\n".join(log_lines), args.output)
        print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
