"""The doctor: what is wrong with a training run, in plain words, from its diagnostics.

``examine(record)`` turns what ``Diagnostics`` recorded (``diagnostics.json``
in a run folder) into ``Finding``s, most serious first, each with its
evidence and what to do. The rules follow the classic advice on babysitting
a network (cs231n): the first loss should be ln(C); the update/weight ratio
near 1e-3; no dead ReLUs, no saturated tanh/sigmoid units; gradients that
neither vanish nor explode; a loss that falls. Structural mistakes are
named too: a softmax on a hidden layer, Linear layers with no activation
between them.

``sanity(...)`` runs the two checks to make before a long run: the loss at
initialisation, and overfitting a tiny subset.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numprop.errors import ConfigError

SERIOUS, PROBLEM, WARNING = 0, 1, 2
LABELS = {SERIOUS: "serious", PROBLEM: "problem", WARNING: "warning"}

USUAL_RATIO = 1e-3  # the update/weight ratio the advice calls healthy
# Flagged: 100 times above it (a problem from 300 times), or, at its highest over
# the run, 100 times below it. SGD with momentum 0.9 steps ten times its rate and
# the small output layer moves fastest: a healthy run's largest median ratio is a
# few times 1e-2, clear of both.
HIGH_RATIO, LOW_RATIO = 1e-1, 1e-5
DEAD, SATURATED = 0.4, 0.4  # fractions of a layer's units
VANISHING = 1e-3  # gradient RMS at the first Linear / at the last


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a run: how serious, what, the evidence, what to do."""

    severity: int
    what: str
    evidence: str
    advice: str

    def __str__(self) -> str:
        return (
            f"[{LABELS[self.severity]}] {self.what}\n"
            f"    evidence: {self.evidence}\n    what to do: {self.advice}"
        )


def read(run: Path) -> dict:
    """The diagnostics of a run folder (or of a ``diagnostics.json`` path).

    Raises
    ------
    ConfigError
        When there is none, or it is not what ``Diagnostics`` writes.
    """
    path = Path(run)
    if path.is_dir():
        path = path / "diagnostics.json"
    if not path.is_file():
        raise ConfigError(
            f"no diagnostics at {path}: runs of `numprop train` record them unless "
            "--no-diagnostics; for your own loop add numprop.Diagnostics(path=...)"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not readable diagnostics ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != 1 or "epochs" not in record:
        raise ConfigError(f"{path} is not numprop diagnostics (format 1)")
    return record


def _num(value) -> float:
    """A recorded number (NaN and inf were written as strings)."""
    return float(value) if value is not None else math.nan


def _layer_label(record: dict, name: str) -> str:
    for layer in record["layers"]:
        if layer["name"] == name:
            if layer["kind"] == "Linear":
                return f"layer {name} (Linear {layer['in']}→{layer['out']})"
            return f"layer {name} ({layer['kind']})"
    return f"layer {name}"


def examine(record: dict) -> list[Finding]:
    """What is wrong with the run ``record`` (``Diagnostics.to_dict()``), most serious first."""
    found: list[Finding] = []
    rules = (_stopped, _structure, _diverged, _first_loss, _ratios, _gradients, _dead, _saturated)
    for rule in rules:
        found += rule(record)
    if not any(f.severity == SERIOUS for f in found):
        found += _not_learning(record)
    return sorted(found, key=lambda f: f.severity)


def notes(record: dict) -> list[str]:
    """Observations that are not faults: the train/validation gap."""
    history = [h for h in record.get("history", []) if h.get("val_acc") is not None]
    if not history:
        return []
    last = history[-1]
    gap = _num(last["train_acc"]) - _num(last["val_acc"])
    if gap > 0.1:
        best = max(history, key=lambda h: _num(h["val_acc"]))
        return [
            f"training accuracy {100 * _num(last['train_acc']):.1f}% against "
            f"{100 * _num(last['val_acc']):.1f}% on validation at epoch {last['epoch']}: "
            f"the network overfits (validation was best at epoch {best['epoch']}, "
            f"{100 * _num(best['val_acc']):.1f}%); weight decay, dropout, augmentation "
            "or early stopping (--patience) narrow the gap"
        ]
    return []


# -- the rules ------------------------------------------------------------------------------


def _stopped(record):
    if not record.get("stopped"):
        return []
    return [
        Finding(
            SERIOUS,
            f"training was stopped: {record['stopped']}",
            "recorded when the run stopped",
            "lower the learning rate, use He initialisation for ReLU layers, check the biases",
        )
    ]


def _structure(record):
    layers = record["layers"]
    found = []
    linear_at = [i for i, layer in enumerate(layers) if layer["kind"] == "Linear"]
    last_linear = linear_at[-1] if linear_at else -1
    for i, layer in enumerate(layers):
        if layer["kind"] == "Softmax" and i < last_linear:
            found.append(
                Finding(
                    SERIOUS,
                    f"layer {layer['name']} is a softmax on a hidden layer",
                    "its outputs are squeezed to sum to 1 across the units, so the next "
                    "layer sees almost nothing and the gradient through it is tiny",
                    "use ReLU for hidden layers (--activation relu); the softmax belongs "
                    "only at the output, inside the loss (SoftmaxCrossEntropy)",
                )
            )
    for a, b in zip(linear_at, linear_at[1:]):
        between = {layer["kind"] for layer in layers[a + 1 : b]}
        if not between - {"Identity", "Dropout", "BatchNorm1d"}:
            found.append(
                Finding(
                    SERIOUS,
                    f"layers {layers[a]['name']} and {layers[b]['name']} are Linear with no "
                    "activation between them",
                    "two affine maps in a row are one affine map: the network is a linear "
                    "classifier, however many layers it has",
                    "put a nonlinearity between them (--activation relu)",
                )
            )
    return found


def _losses(record):
    """(epoch, loss) of every sampled step, in order."""
    return [(ep["epoch"], _num(v)) for ep in record["epochs"] for v in ep["loss"]]


def _worst_ratio(record):
    """(ratio, layer name, epoch) of the largest median update/weight ratio."""
    best = None
    for ep in record["epochs"]:
        for name, stats in ep["layers"].items():
            r = stats.get("update_ratio")
            if r is not None and math.isfinite(_num(r)) and (best is None or _num(r) > best[0]):
                best = (_num(r), name, ep["epoch"])
    return best


def _diverged(record):
    losses = _losses(record)
    first = _num(record.get("first_loss"))
    bad = [(e, v) for e, v in losses if not math.isfinite(v) or v > 3 * max(first, 1e-3)]
    if not bad:
        return []
    epoch, value = bad[0]
    lr = record["epochs"][-1].get("lr")
    worst = _worst_ratio(record)
    evidence = f"the loss went from {first:.3g} to {value:.3g} in epoch {epoch}"
    if worst is not None:
        evidence += (
            f"; update/weight ratio of {_layer_label(record, worst[1])}: {worst[0]:.1e}, "
            f"about {worst[0] / USUAL_RATIO:.0f} times the usual {USUAL_RATIO:.0e}"
        )
    return [
        Finding(
            SERIOUS,
            "training diverged",
            evidence,
            f"lower the learning rate{f' (now {lr:.3g}), e.g. to {lr / 10:.3g}' if lr else ''}; "
            "a warm-up or BatchNorm also help",
        )
    ]


def _first_loss(record):
    first, classes = _num(record.get("first_loss")), record.get("classes")
    if not classes or classes < 2 or not math.isfinite(first):
        return []
    expected = math.log(classes)
    # Logits of spread s at random give about ln(C) + s**2 / 2: the usual He/Glorot
    # start (s ~ 1.4) lands near ln(C) + 1. Flag what only large weights give.
    if first > max(2 * expected, expected + 2):
        return [
            Finding(
                PROBLEM,
                f"the first loss was {first:.3g}, expected ln({classes}) = {expected:.2f}",
                "at initialisation every class should be about equally likely; a larger "
                "loss means confident, random logits",
                "the output layer's initial weights are too large: start it small "
                "(Glorot, or scaled down), and standardise the inputs",
            )
        ]
    if first < 0.5 * expected:
        return [
            Finding(
                WARNING,
                f"the first loss was {first:.3g}, well below ln({classes}) = {expected:.2f}",
                "an untrained network cannot know the answers",
                "check the labels (one class only? the targets in the inputs?)",
            )
        ]
    return []


def _ratios(record):
    """Update/weight ratios far from 1e-3: the first layer and epoch too high, or all too low."""
    found = []
    ratios = [
        (_num(stats.get("update_ratio")), name, ep)
        for ep in record["epochs"]
        for name, stats in ep["layers"].items()
        if math.isfinite(_num(stats.get("update_ratio")))
    ]
    high = [(r, name, ep) for r, name, ep in ratios if r > HIGH_RATIO]
    if high:
        r, name, ep = high[0]
        lr = ep.get("lr")
        found.append(
            Finding(
                PROBLEM if r > 3 * HIGH_RATIO else WARNING,
                f"the update/weight ratio of {_layer_label(record, name)} is {r:.1e} in epoch "
                f"{ep['epoch']}, about {r / USUAL_RATIO:.0f} times the usual {USUAL_RATIO:.0e}",
                "each step changes those weights by that fraction of their size",
                f"the learning rate is too high{f' (now {lr:.3g})' if lr else ''}: lower it "
                f"about {_power_of_ten(r / USUAL_RATIO / 3)} times",
            )
        )
    if ratios:
        r, name, ep = max(ratios, key=lambda t: t[0])  # the layer and epoch that moved most
        if 0 < r < LOW_RATIO:  # 0: nothing moved at all, which other rules explain
            lr = ep.get("lr")
            found.append(
                Finding(
                    PROBLEM,
                    f"the update/weight ratio is at most {r:.1e} ({_layer_label(record, name)}, "
                    f"epoch {ep['epoch']}), about {USUAL_RATIO / r:.0f} times below the usual "
                    f"{USUAL_RATIO:.0e}",
                    "the weights hardly move",
                    f"the learning rate is too low{f' (now {lr:.3g})' if lr else ''}: raise it "
                    f"about {_power_of_ten(USUAL_RATIO / r / 3)} times",
                )
            )
    return found


def _power_of_ten(factor: float) -> str:
    """A factor rounded to a power of ten (at least 10), as a person would say it: "1,000"."""
    return f"{10 ** max(1, round(math.log10(factor))):,}"


def _first_over(record, key: str, threshold: float, kinds=None):
    """Per layer, the first epoch where ``key`` reaches ``threshold``: [(value, name, epoch)]."""
    hits = []
    for layer in record["layers"]:
        if kinds is not None and layer["kind"] not in kinds:
            continue
        for ep in record["epochs"]:
            value = ep["layers"].get(layer["name"], {}).get(key)
            if value is not None and _num(value) >= threshold:
                hits.append((_num(value), layer["name"], ep))
                break
    return sorted(hits, key=lambda t: -t[0])


def _also(record, hits) -> str:
    """'; also layer 3 (ReLU) 55%, ...' for the layers after the worst one."""
    rest = [f"{_layer_label(record, name)} {100 * v:.0f}%" for v, name, _ in hits]
    return f"; also {', '.join(rest)}" if rest else ""


def _dead(record):
    hits = _first_over(record, "dead", DEAD)
    if not hits:
        return []
    dead, name, ep = hits[0]
    stats, lr = ep["layers"][name], ep.get("lr")
    return [
        Finding(
            SERIOUS if dead >= 0.9 else PROBLEM,
            f"{100 * dead:.0f}% of {_layer_label(record, name)}'s units never fired in epoch "
            f"{ep['epoch']} (dead)",
            f"none of those {round(dead * stats.get('units', 0))} units was above 0 on any of "
            f"the {ep.get('examples', '?')} examples sampled; a dead unit passes no gradient "
            f"and stays dead{_also(record, hits[1:])}",
            f"lower the learning rate{f' (now {lr:.3g})' if lr else ''} or use He "
            "initialisation; a large negative bias does this too",
        )
    ]


def _saturated(record):
    hits = _first_over(record, "saturated", SATURATED, kinds=("Tanh", "Sigmoid"))
    if not hits:
        return []
    sat, name, ep = hits[0]
    kind = next(layer["kind"] for layer in record["layers"] if layer["name"] == name)
    bound = "|y| > 0.99" if kind == "Tanh" else "y < 0.01 or y > 0.99"
    return [
        Finding(
            PROBLEM,
            f"{100 * sat:.0f}% of {_layer_label(record, name)}'s outputs are saturated in "
            f"epoch {ep['epoch']}",
            f"there ({bound}) the gradient is almost zero, so those units barely learn"
            f"{_also(record, hits[1:])}",
            "the weights before it are too large: use Glorot initialisation (the default "
            "for tanh and sigmoid) or smaller weights, or BatchNorm",
        )
    ]


def _gradients(record):
    linears = [layer["name"] for layer in record["layers"] if layer["kind"] == "Linear"]
    if len(linears) < 3 or not record["epochs"]:
        return []
    ep = record["epochs"][0]
    first = _num(ep["layers"].get(linears[0], {}).get("grad_rms"))
    last = _num(ep["layers"].get(linears[-1], {}).get("grad_rms"))
    if not (math.isfinite(first) and math.isfinite(last)) or last == 0:
        return []
    ratio = first / last
    if ratio < VANISHING:
        return [
            Finding(
                PROBLEM,
                f"the gradients vanish: the gradient reaching {_layer_label(record, linears[0])} "
                f"is {ratio:.0e} of that at {_layer_label(record, linears[-1])}",
                f"RMS of dL/dy in epoch {ep['epoch']}: {first:.1e} at the first Linear, "
                f"{last:.1e} at the last, through {len(linears)} Linear layers",
                "the weights are too small for this depth: use He initialisation (ReLU) or "
                "Glorot (tanh), or add BatchNorm",
            )
        ]
    if ratio > 1 / VANISHING:
        return [
            Finding(
                PROBLEM,
                f"the gradients explode: the gradient reaching {_layer_label(record, linears[0])} "
                f"is {ratio:.0e} times that at {_layer_label(record, linears[-1])}",
                f"RMS of dL/dy in epoch {ep['epoch']}: {first:.1e} at the first Linear, "
                f"{last:.1e} at the last",
                "the weights are too large for this depth: use He or Glorot initialisation, "
                "or add BatchNorm",
            )
        ]
    return []


def _not_learning(record):
    history = record.get("history", [])
    if len(history) < 2:
        return []
    first, last = _num(history[0]["train_loss"]), _num(history[-1]["train_loss"])
    found = []
    if math.isfinite(first) and math.isfinite(last) and last > 0.97 * first:
        found.append(
            Finding(
                PROBLEM,
                f"the training loss hardly fell: {first:.4g} in epoch 1, {last:.4g} in "
                f"epoch {history[-1]['epoch']}",
                "a network that learns lowers its training loss steadily",
                "check the learning rate (the update/weight ratio above, if any, says which "
                "way), and run `numprop doctor --sanity` with the same options",
            )
        )
    classes = record.get("classes")
    acc = history[-1].get("train_acc")
    if classes and acc is not None and _num(acc) < 1.5 / classes:
        found.append(
            Finding(
                PROBLEM,
                f"after {history[-1]['epoch']} epochs the training accuracy is "
                f"{100 * _num(acc):.1f}%, about chance ({100 / classes:.1f}%)",
                "the network has learned nothing about its own training data",
                "run `numprop doctor --sanity` with the same options: a network that "
                "cannot fit 20 examples has a bug",
            )
        )
    return found


# -- the figure -----------------------------------------------------------------------------


def plot(record: dict, path: Path) -> Path:
    """Draw the per-layer statistics over the epochs into ``path`` (PNG); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [ep["epoch"] for ep in record["epochs"]]
    panels = [
        ("update_ratio", "update / weight ratio", True, "Linear"),
        ("grad_rms", "RMS of dL/dy at each Linear", True, "Linear"),
        ("std", "spread of the activations", False, None),
        ("dead", "dead (ReLU) or saturated units", False, None),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, title, log, kind) in zip(axes.ravel(), panels):
        for layer in record["layers"]:
            if kind is not None and layer["kind"] != kind:
                continue
            keys = ("dead", "saturated") if key == "dead" else (key,)
            for k in keys:
                ys = [_num(ep["layers"].get(layer["name"], {}).get(k)) for ep in record["epochs"]]
                if all(math.isnan(y) for y in ys):
                    continue
                ax.plot(epochs, ys, marker="o", label=f"{layer['name']} {layer['kind']}")
        if key == "update_ratio":
            ax.axhline(USUAL_RATIO, color="grey", ls="--", lw=1, label="usual 1e-3")
        if log and ax.lines:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# -- the sanity checks -------------------------------------------------------------------------


@dataclass(frozen=True)
class SanityResult:
    """One sanity check: its name, whether it passed, what was seen, what a failure means."""

    name: str
    ok: bool
    detail: str
    meaning: str = ""


def sanity(model, loss, make_optimizer, x: np.ndarray, y: np.ndarray, *, steps: int = 200):
    """The two checks before a long run, on a model and ~20 examples (x (n, D), y (n,)).

    1. The loss at initialisation, against ln(C) for C classes.
    2. Overfitting: full-batch training on the n examples, no regularisation,
       must reach 100% training accuracy within ``steps`` steps.

    ``make_optimizer(model)`` builds the optimizer (the run's, with its rate).
    The model is trained in place (pass a fresh one).
    """
    from numprop.nn.layers import Dropout
    from numprop.training.diagnostics import describe_layers, leaves
    from numprop.training.trainer import Trainer

    classes = model[-1].out_features if hasattr(model[-1], "out_features") else None
    results = []
    wrong = _structure({"layers": describe_layers(leaves(model))})
    results.append(
        SanityResult(
            "layers",
            not wrong,
            "; ".join(f.what for f in wrong)
            if wrong
            else "an activation between Linear layers, no softmax before the output",
            "; ".join(f.advice for f in wrong),
        )
    )
    model.eval()
    initial = float(loss.forward(model.forward(x), y))
    model.train()
    if classes:
        expected = math.log(classes)
        ok = 0.5 * expected <= initial <= 1.5 * expected
        results.append(
            SanityResult(
                "loss at initialisation",
                ok,
                f"{initial:.3f}, expected about ln({classes}) = {expected:.3f}",
                ""
                if ok
                else "the output layer starts too confident (its weights are too large) "
                "or the inputs are not standardised",
            )
        )
    for m in model.modules():  # the check is about fitting, not generalising
        if isinstance(m, Dropout):
            m.p = 0.0
    trainer = Trainer(model, loss, make_optimizer(model))
    best, reached = 0.0, None
    for step in range(1, steps + 1):
        _, correct = trainer.train_step(x, y)
        if correct is None:
            break
        acc = correct / len(y)
        best = max(best, acc)
        if acc == 1.0:
            reached = step
            break
    ok = reached is not None
    results.append(
        SanityResult(
            f"overfit {len(y)} examples",
            ok,
            f"100% training accuracy after {reached} steps"
            if ok
            else f"best training accuracy {100 * best:.0f}% in {steps} full-batch steps",
            ""
            if ok
            else "a network this size should memorise a handful of examples: look for a "
            "softmax on a hidden layer, layers with no activation between them, a learning "
            "rate far too low or too high, or a wrong backward in a custom layer "
            "(`numprop gradcheck`)",
        )
    )
    return results
