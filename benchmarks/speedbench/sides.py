"""The sides of the benchmark, one class each; every side runs in its own worker process.

A side is built from a configuration and the ``Data``, and says how its library
converts batches (``data.convert``). The worker then calls:

- ``check(xb, yb)``: loss before and after one step from the initial weights on
  one batch, dropout off, on a throwaway model (None: the side has no such step);
- ``setup()``: builds the model that is timed;
- ``epoch(k)``: one epoch over ``data.batches(k, batch)`` (k < 0: the warm-up);
  returns the last batch's loss (or, for the products alone, their update seconds);
- ``infer(x)``: eval-mode forward over the test images in batches of INFER_BATCH.

``info`` (a dict) describes the library for the report. Every side gets the same
network: numprop's ``npp.models.mlp`` with seed 0, whose weights PyTorch copies.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from speedbench import compat
from speedbench.configs import FLOOR_N, INFER_BATCH, LR, MOMENTUM, THREADS
from speedbench.data import numprop_bf16_converter, numprop_converter, torch_converter


def numprop_mlp(npp, cfg: dict, dropout: float | None = None):
    """The configuration's network in numprop (seed 0); ``dropout`` overrides the config's."""
    p = cfg.get("dropout", 0.0) if dropout is None else dropout
    return npp.models.mlp(cfg["sizes"], batchnorm=cfg.get("batchnorm", False), dropout=p, rng=0)


def numprop_optimizer(npp, cfg: dict, params):
    """SGD lr 0.01 momentum 0.9, or Adam lr 1e-3, over ``params``."""
    if cfg["opt"] == "sgd":
        return npp.SGD(params, lr=LR["sgd"], momentum=MOMENTUM)
    return npp.Adam(params, lr=LR["adam"])


def matmul_rates(reps: int) -> list[float]:
    """GFLOP/s of np.matmul on FLOOR_N^3 float32 products, one value per rep (one untimed)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((FLOOR_N, FLOOR_N), dtype=np.float32)
    b = rng.standard_normal((FLOOR_N, FLOOR_N), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        rates.append(2.0 * FLOOR_N**3 / (time.perf_counter() - t) / 1e9)
    return rates


class NumpropSide:
    """numprop as its users train: ``npp.Trainer(model, loss, optimizer).train_step(x, y)``
    on every batch, the batches converted by ``affine_rows``.

    Also serves the GEMM floor's matmul rate (``floor``) and an epoch through
    ``Trainer.fit`` (``fit_epoch``) on the same model. It only uses names that
    exist before and after numprop's redesign, so it also times an older commit.
    """

    name = "numprop"

    def __init__(self, cfg: dict, data):
        import numprop as npp

        self.npp, self.cfg, self.data = npp, cfg, data
        data.convert = numprop_converter(compat.affine_rows(), data.mean, data.inv_std)
        self.info = compat.numprop_info()
        self.info["has_fit"] = hasattr(npp.Trainer, "fit")

    def new_training(self, dropout: float | None = None):
        """A fresh model (seed 0), loss and optimizer, and the Trainer over them (no schedule)."""
        npp = self.npp
        model = numprop_mlp(npp, self.cfg, dropout)
        loss = npp.SoftmaxCrossEntropy()
        opt = numprop_optimizer(npp, self.cfg, model.named_parameters())
        return model, loss, opt, npp.Trainer(model, loss, opt)

    def check(self, xb, yb) -> list[float]:
        model, loss, _, trainer = self.new_training(dropout=0.0)
        before, _ = trainer.train_step(xb, yb)
        after = loss.forward(model.forward(xb), yb)
        return [float(before), float(after)]

    def setup(self) -> None:
        self.model, self.loss, self.opt, self.trainer = self.new_training()

    def epoch(self, k: int) -> float:
        step, value = self.trainer.train_step, None
        for xb, yb in self.data.batches(k, self.cfg["batch"]):
            value, _ = step(xb, yb)
        return float(value)

    def fit_epoch(self, k: int) -> float:
        """One epoch through ``Trainer.fit`` (same model, optimizer and kind of batches)."""
        data, batch = self.data, self.cfg["batch"]

        class Batches:  # re-iterable with a len, as Trainer.fit wants
            def __len__(self):
                return data.n_batches(batch)

            def __iter__(self):
                return data.batches(k, batch)

        history = self.npp.Trainer(self.model, self.loss, self.opt).fit(Batches(), epochs=1)
        return float(history["train_loss"][-1])

    def infer(self, x: np.ndarray) -> None:
        self.model.predict(x, batch_size=INFER_BATCH)

    def floor(self, reps: int) -> list[float]:
        return matmul_rates(reps)


class TorchSide:
    """PyTorch (CPU, THREADS threads): the numprop network's twin with the same weights."""

    name = "torch"

    def __init__(self, cfg: dict, data):
        import torch
        from torch import nn

        torch.set_num_threads(THREADS)
        self.torch, self.nn, self.cfg, self.data = torch, nn, cfg, data
        self.info = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
        }
        data.convert = torch_converter(torch, data.mean, data.inv_std)
        self.loss = nn.CrossEntropyLoss()

    def build(self, dropout: float | None = None):
        """numprop's network (same seed, so the same weights) rebuilt in torch."""
        import numprop as npp

        torch, nn = self.torch, self.nn
        layers = []
        for layer in numprop_mlp(npp, self.cfg, dropout):
            kind = type(layer).__name__
            if kind == "Linear":
                lin = nn.Linear(layer.in_features, layer.out_features)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(layer.weight.data.T.copy()))
                    lin.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
                layers.append(lin)
            elif kind == "BatchNorm1d":
                layers.append(
                    nn.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
                )
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

    def step(self, model, opt, xb, yb) -> float:
        xt, yt = self.torch.from_numpy(xb), self.torch.from_numpy(yb)
        opt.zero_grad(set_to_none=True)
        value = self.loss(model(xt), yt)
        value.backward()
        opt.step()
        return value.item()

    def check(self, xb, yb) -> list[float]:
        model = self.build(dropout=0.0)
        before = self.step(model, self.optimizer(model), xb, yb)
        with self.torch.no_grad():
            after = self.loss(model(self.torch.from_numpy(xb)), self.torch.from_numpy(yb))
        return [before, after.item()]

    def setup(self) -> None:
        self.model = self.build()
        self.opt = self.optimizer(self.model)

    def epoch(self, k: int) -> float:
        model, opt, step, value = self.model, self.opt, self.step, None
        for xb, yb in self.data.batches(k, self.cfg["batch"]):
            value = step(model, opt, xb, yb)
        return value

    def infer(self, x: np.ndarray) -> None:
        torch, model = self.torch, self.model
        model.eval()
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            for i in range(0, len(x), INFER_BATCH):
                model(xt[i : i + INFER_BATCH])
        model.train()


class SklearnSide:
    """MLPClassifier, one epoch per fit (max_iter=1), on the whole set converted beforehand
    with NumPy; no BatchNorm or Dropout there (that row trains the plain MLP)."""

    name = "sklearn"

    def __init__(self, cfg: dict, data):
        import warnings

        import sklearn
        from sklearn.exceptions import ConvergenceWarning

        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        self.cfg, self.data = cfg, data
        self.info = {"sklearn": sklearn.__version__}
        self.clf = None

    def check(self, xb, yb) -> None:
        return None

    def setup(self) -> None:
        self.x = self.data.standardise(self.data.x)  # (N, 3072) float32

    def classifier(self, k: int):
        from sklearn.neural_network import MLPClassifier

        c = self.cfg
        common = {
            "hidden_layer_sizes": tuple(c["sizes"][1:-1]),
            "activation": "relu",
            "batch_size": c["batch"],
            "max_iter": 1,
            "alpha": 0.0,
            "shuffle": True,
            "random_state": k,
            "tol": 0.0,
            "n_iter_no_change": 10**9,
        }
        if c["opt"] == "sgd":
            return MLPClassifier(
                solver="sgd",
                learning_rate="constant",
                learning_rate_init=LR["sgd"],
                momentum=MOMENTUM,
                nesterovs_momentum=False,
                **common,
            )
        return MLPClassifier(solver="adam", learning_rate_init=LR["adam"], **common)

    def epoch(self, k: int) -> float | None:
        if k < 0:  # warm-up: a small fit touches the code paths
            few = 4 * self.cfg["batch"]
            self.classifier(0).fit(self.x[:few], self.data.y[:few])
            return None
        self.clf = self.classifier(k).fit(self.x, self.data.y)
        self.info["coef_dtype"] = str(self.clf.coefs_[0].dtype)
        return float(self.clf.loss_)

    def infer(self, x: np.ndarray) -> None:
        self.clf.predict_proba(x)


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

    def __init__(self, cfg: dict, data):
        import numprop as npp

        blas = compat.blas()
        self.npp, self.gemm, self.cfg, self.data = npp, blas.gemm, cfg, data
        self.info = {"fast_blas": blas.available()}

    def check(self, xb, yb) -> None:
        return None

    def setup(self) -> None:
        npp, sizes, batch = self.npp, self.cfg["sizes"], self.cfg["batch"]
        rng = np.random.default_rng(0)

        def normal(shape, scale):
            return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)

        # Small gradients keep the weights, and so every value, nearly where they
        # start over any number of epochs (values do not change BLAS's speed, but
        # an overflow would make NaNs): forward products overwrite (beta=0, where
        # numprop's Linear adds onto its bias: the same one pass over the output).
        self.acts = [normal((batch, s), 1.0) for s in sizes]  # layer inputs, then logits
        self.grads = [normal((batch, s), 1e-6) for s in sizes]  # d(loss)/d(each of those)
        self.params = [npp.Parameter(normal((a, b), a**-0.5)) for a, b in itertools.pairwise(sizes)]
        self.opt = numprop_optimizer(npp, self.cfg, self.params)

    def epoch(self, k: int) -> float:
        """Returns the seconds spent in the optimizer's steps."""
        gemm, acts, grads, params, opt = self.gemm, self.acts, self.grads, self.params, self.opt
        n, batch, clock = self.data.n, self.cfg["batch"], time.perf_counter
        updating = 0.0
        for lo in range(0, n, batch):
            b = min(batch, n - lo)
            for i, p in enumerate(params):
                gemm(acts[i][:b], p.data, acts[i + 1][:b])  # (b, in) @ (in, out)
            opt.zero_grad()
            with opt.fused_backward():
                for i in range(len(params) - 1, -1, -1):
                    params[i].accumulate_matmul(
                        acts[i][:b].T, grads[i + 1][:b]
                    )  # (in, b) @ (b, out)
                    if i:
                        np.matmul(grads[i + 1][:b], params[i].data.T, out=grads[i][:b])
            t0 = clock()
            opt.step()
            updating += clock() - t0
        return updating

    def infer(self, x: np.ndarray) -> None:
        return None


class NumpropBF16Side(NumpropSide):
    """numprop in mixed precision: the same model and Trainer after
    ``model.set_precision(numprop.nn.precision.BF16())`` (every Linear's products take
    bf16 operands with float32 sums; weights, gradients, optimizer and loss stay float32).
    Inference is the same ``model.predict`` (eval mode), in bf16 too."""

    name = "numprop-bf16"

    def __init__(self, cfg: dict, data):
        super().__init__(cfg, data)
        from numprop.nn.precision import bf16_supported

        ok, why = bf16_supported()
        self.info.update(bf16_supported=ok, bf16_reason=why)
        # As `numprop train` does: the batches are made as bf16, rounded in the pass that
        # gathers and standardises them (where this numprop can).
        bits = numprop_bf16_converter(data.mean, data.inv_std)
        self.info["bf16_batches"] = bits is not None
        if bits is not None:
            data.convert, data.batch_dtype = bits, np.dtype(np.uint16)

    def new_training(self, dropout: float | None = None):
        from numprop.nn.precision import BF16

        model, loss, opt, trainer = super().new_training(dropout)
        model.set_precision(BF16())
        return model, loss, opt, trainer


class TorchBF16Side(TorchSide):
    """PyTorch with ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the forward pass
    and the loss, as its AMP docs recommend; backward and the optimizer step outside it
    (weights, gradients and optimizer state float32). Inference: autocast under
    ``torch.inference_mode``."""

    name = "torch-bf16"

    def __init__(self, cfg: dict, data):
        super().__init__(cfg, data)
        self.info["autocast"] = "cpu, bfloat16"

    def autocast(self):
        return self.torch.autocast("cpu", dtype=self.torch.bfloat16)

    def step(self, model, opt, xb, yb) -> float:
        xt, yt = self.torch.from_numpy(xb), self.torch.from_numpy(yb)
        opt.zero_grad(set_to_none=True)
        with self.autocast():
            value = self.loss(model(xt), yt)
        value.backward()
        opt.step()
        return value.item()

    def check(self, xb, yb) -> list[float]:
        model = self.build(dropout=0.0)
        before = self.step(model, self.optimizer(model), xb, yb)
        with self.torch.no_grad(), self.autocast():
            after = self.loss(model(self.torch.from_numpy(xb)), self.torch.from_numpy(yb))
        return [before, after.item()]

    def infer(self, x: np.ndarray) -> None:
        torch, model = self.torch, self.model
        model.eval()
        with torch.inference_mode(), self.autocast():
            xt = torch.from_numpy(x)
            for i in range(0, len(x), INFER_BATCH):
                model(xt[i : i + INFER_BATCH])
        model.train()


# The sides a worker can run. "old" (numprop from another commit) is the numprop side
# run on that commit's source; "trainer" is an op of the numprop worker, not a side.
SIDES = {
    "numprop": NumpropSide,
    "torch": TorchSide,
    "sklearn": SklearnSide,
    "products": ProductsSide,
    "numprop-bf16": NumpropBF16Side,
    "torch-bf16": TorchBF16Side,
}
