"""Diagnostics: what the advice on babysitting a network looks at, recorded while it trains.

The ``Diagnostics`` callback samples about ``samples`` training steps per
epoch (and the very first) and records, per layer:

- Linear: the RMS of its weights, the ratio ``|update| / |W|`` of the step
  (weights copied just before it; the usual value is about 1e-3), and the RMS
  of the gradient that reached its output, ``dL/dy`` (vanishing or exploding
  gradients show as a ratio between the first and the last layer);
- ReLU-like activations: mean and spread of the outputs, and which units
  fired (> 0) on any sampled example: a unit that never fires in an epoch is
  dead;
- tanh and sigmoid: mean, spread and the fraction of outputs in saturation
  (|tanh| > 0.99, sigmoid < 0.01 or > 0.99), where the gradient is ~0;
- the logits: their spread and the mean largest softmax probability.

It also keeps the first loss (against ln C for C classes), the sampled batch
losses and the history of the run. ``to_dict()`` is JSON; with ``path`` it
is written there after every epoch, and when training stops early.
``numprop.training.doctor`` reads it and says what is wrong.

Cost: a few passes over the sampled batches' activations, and 4,096 entries
of each weight copied per sampled step (the update/weight ratio is measured
on them); ``benchmarks/doctor.py`` measures it against the 3% of epoch time
it may take.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from numprop.errors import TrainingError
from numprop.nn.layers import GELU, LeakyReLU, Linear, ReLU, Sigmoid, Softmax, Tanh
from numprop.nn.module import Module
from numprop.training.trainer import Callback

FORMAT = 1
RECTIFIERS = (ReLU, LeakyReLU, GELU)
SATURATING = (Tanh, Sigmoid, Softmax)


def leaves(model: Module, prefix: str = "") -> list[tuple[str, Module]]:
    """The modules without children, named by their path (``"0"``, ``"block.1"``)."""
    children = list(model.named_children())
    if not children:
        return [(prefix or type(model).__name__, model)]
    found = []
    for name, child in children:
        found += leaves(child, f"{prefix}.{name}" if prefix else name)
    return found


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.vdot(a, a) / max(a.size, 1)))


def _saturated(layer: Module, y: np.ndarray) -> float:
    """Fraction of outputs where the activation is flat (gradient below ~0.02)."""
    if isinstance(layer, Tanh):
        return float(np.count_nonzero(np.abs(y) > 0.99)) / y.size
    return float(np.count_nonzero((y < 0.01) | (y > 0.99))) / y.size  # sigmoid, softmax


class Diagnostics(Callback):
    """Record per-layer statistics at sampled steps; see the module docstring.

    Parameters
    ----------
    samples : int, default 10
        Sampled steps per epoch (evenly spaced), besides the run's first step.
    path : path-like, optional
        Where to write ``to_dict()`` as JSON, after each epoch and on an early stop.
    stop_when_hopeless : bool, default True
        Stop training with a ``TrainingError`` that says why when it cannot
        recover: every unit of a ReLU layer dead for a whole epoch.

    Attributes
    ----------
    first_loss : float or None
        The loss of the first batch, before any update.
    epochs : list of dict
        Per epoch: ``{"epoch", "steps", "loss", "layers": {name: stats}, "logits": stats}``.
    """

    def __init__(self, samples: int = 10, path=None, stop_when_hopeless: bool = True):
        self.samples = max(1, int(samples))
        self.path = Path(path) if path is not None else None
        self.stop_when_hopeless = stop_when_hopeless
        self.first_loss: float | None = None
        self.epochs: list[dict] = []
        self.stopped = ""
        self._history: list[dict] = []

    def restore(self, record: dict, epochs: int) -> None:
        """Go on from an earlier ``to_dict()`` (a resumed run), keeping its first ``epochs``."""
        self.first_loss = record.get("first_loss")
        self.epochs = [dict(ep) for ep in record.get("epochs", []) if not ep.get("partial")]
        self.epochs = self.epochs[:epochs]
        self._history = [dict(h) for h in record.get("history", [])][:epochs]

    # -- hooks ------------------------------------------------------------------------
    def on_train_begin(self, trainer):
        self.layers = leaves(trainer.model)
        self.linears = [(n, m) for n, m in self.layers if isinstance(m, Linear)]
        self.classes = self.linears[-1][1].out_features if self.linears else None
        self.lr = trainer.optimizer.lr
        # The update/weight ratio is measured on a fixed random sample of each weight's
        # entries: an RMS over 4,096 of them is within a few percent of the whole
        # matrix's, and copying a few thousand numbers costs nothing next to a step.
        sample = np.random.default_rng(0)
        self._entries = {
            n: np.sort(sample.choice(m.weight.data.size, min(m.weight.data.size, 4096), False))
            for n, m in self.linears
        }
        self._before = {
            n: np.empty(len(i), m.weight.data.dtype)
            for (n, m), i in zip(self.linears, self._entries.values())
        }
        self._every = max(1, trainer.steps_per_epoch // self.samples)
        self._epoch = None

    def on_epoch_begin(self, trainer, epoch):
        self._epoch = {"epoch": epoch + 1, "steps": [], "loss": [], "examples": 0, "samples": []}
        self._fired = {}

    def _sampled(self, batch: int) -> bool:
        return batch % self._every == self._every // 2 or (self.first_loss is None and batch == 0)

    def on_batch_begin(self, trainer, batch):
        if self._sampled(batch):
            for name, m in self.linears:
                np.take(m.weight.data.reshape(-1), self._entries[name], out=self._before[name])

    def on_batch_end(self, trainer, batch, loss, size):
        first = self.first_loss is None
        if first:
            self.first_loss = float(loss)
        # What NaNGuard stops on (by default): keep what this epoch saw before it does.
        broken = not math.isfinite(loss) or (not first and loss > 10 * max(self.first_loss, 1e-3))
        if not (first or broken or self._sampled(batch)):
            return
        self.lr = trainer.optimizer.lr
        self._epoch["steps"].append(batch)
        self._epoch["loss"].append(float(loss))
        self._epoch["examples"] += size
        self._epoch["samples"].append(self._measure(trainer))
        if broken:
            self.epochs.append({**self._summarise(), "partial": True})
            self.write()

    def on_epoch_end(self, trainer, record):
        self._history.append(dict(record))
        self.epochs.append(self._summarise())
        self._check_hopeless(trainer)
        self.write()

    def on_train_end(self, trainer):
        self.write()

    # -- measuring --------------------------------------------------------------------
    def _measure(self, trainer) -> dict:
        """Statistics of the step just taken, per layer name."""
        stats = {}
        for name, m in self.layers:
            if isinstance(m, Linear):
                w = m.weight.data.reshape(-1)[self._entries[name]]  # the sampled entries
                w_rms = _rms(w)
                update = _rms(w - self._before[name])
                s = {"weight_rms": w_rms, "update_ratio": update / (w_rms or 1)}
                dout = getattr(m, "dout", None)
                if dout is not None:
                    s["grad_rms"] = _rms(dout)
                stats[name] = s
            elif isinstance(m, RECTIFIERS + SATURATING) and getattr(m, "y", None) is not None:
                y = m.y
                s = {"mean": float(y.mean()), "std": float(y.std())}
                if isinstance(m, RECTIFIERS):
                    fired = (y > 0).any(axis=0)
                    if name in self._fired:
                        self._fired[name] |= fired
                    else:
                        self._fired[name] = fired.copy()
                    s["active"] = float(np.count_nonzero(y > 0)) / y.size
                else:
                    s["saturated"] = _saturated(m, y)
                stats[name] = s
        out = {"layers": stats}
        probs = getattr(trainer.loss, "probs", None)
        if probs is not None:
            out["max_prob"] = float(probs.max(axis=1).mean())
        logits = trainer.outputs
        if logits is not None and logits.ndim == 2:
            out["logit_std"] = float(logits.std(axis=1).mean())  # spread across classes
        return out

    def _summarise(self) -> dict:
        """An epoch's samples reduced to one record: medians, and dead units over the epoch."""
        ep = dict(self._epoch)
        samples = ep.pop("samples")
        layers: dict[str, dict] = {}
        for name, _ in self.layers:
            rows = [s["layers"][name] for s in samples if name in s["layers"]]
            if not rows:
                continue
            layers[name] = {
                key: float(np.median([r[key] for r in rows])) for key in rows[0] if key in rows[-1]
            }
            if key_max := [r["update_ratio"] for r in rows if "update_ratio" in r]:
                layers[name]["update_ratio_max"] = float(max(key_max))
            if name in self._fired:
                fired = self._fired[name]
                layers[name]["dead"] = 1.0 - float(np.count_nonzero(fired)) / fired.size
                layers[name]["units"] = int(fired.size)
        ep["layers"] = layers
        for key in ("max_prob", "logit_std"):
            values = [s[key] for s in samples if key in s]
            if values:
                ep[key] = float(np.median(values))
        ep["lr"] = self.lr
        return ep

    def _check_hopeless(self, trainer) -> None:
        if not self.stop_when_hopeless:
            return
        for name, stats in self.epochs[-1]["layers"].items():
            if stats.get("dead") == 1.0:
                self.stopped = (
                    f"every unit of layer {name} ({stats['units']}) is dead: no ReLU fired "
                    f"in epoch {self.epochs[-1]['epoch']}, so no gradient reaches the layers "
                    f"below and training cannot recover (learning rate {self.lr:.3g})"
                )
                self.write()
                raise TrainingError(
                    f"stopped: {self.stopped}. Lower the learning rate, use He "
                    "initialisation, or check the biases; `numprop doctor RUN` says more."
                )

    # -- output -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything recorded, JSON-able (the format ``numprop doctor`` reads)."""
        return {
            "format": FORMAT,
            "classes": self.classes,
            "first_loss": self.first_loss,
            "layers": describe_layers(self.layers),
            "epochs": self.epochs,
            "history": self._history,
            "stopped": self.stopped,
        }

    def write(self) -> None:
        """Write ``to_dict()`` to ``path`` (atomically), if a path was given."""
        if self.path is None:
            return
        from numprop.training.callbacks import atomic_write_text

        atomic_write_text(self.path, json.dumps(_finite(self.to_dict()), indent=1))


def describe_layers(layers: list[tuple[str, Module]]) -> list[dict]:
    """``leaves(model)`` as JSON: name, kind (class name), and a Linear's sizes."""
    return [{"name": n, "kind": type(m).__name__, **_shape(m)} for n, m in layers]


def _shape(m: Module) -> dict:
    return {"in": m.in_features, "out": m.out_features} if isinstance(m, Linear) else {}


def _finite(value):
    """NaN and inf as strings: JSON has no words for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
