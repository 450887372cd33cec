"""Runs every broken network of docs/doctor.md on CIFAR-10 and writes the page with their output.

    python docs/doctor_demo.py          # needs CIFAR-10 where `numprop train` finds it

Each case is a real `numprop train` run on a 5,000-image subset of CIFAR-10,
then `numprop doctor` on its folder; the page shows both commands and what
the doctor printed, verbatim.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numprop as npp
from numprop.cli import main

HERE = Path(__file__).resolve().parent
QUICK = ["--limit", "5000", "--val-size", "1000", "--epochs", "4", "--quiet", "--no-plots"]

INTRO = """# `numprop doctor`: what is wrong with a training run

A network that does not learn rarely says why. The classic advice for
"babysitting the learning process" (cs231n) is a list of things to look at:
the first loss should be ln(C), about 2.30 for ten classes; each update
should change the weights by about 1e-3 of their size; ReLUs should not die
and tanh units should not saturate; gradients should neither vanish nor
explode; a network should be able to memorise a handful of examples.
`numprop train` records all of these while it trains (the `Diagnostics`
callback, about 1% of the epoch time: `benchmarks/DOCTOR.md`), and
`numprop doctor RUN` reads them and says what is wrong, most serious first,
with the evidence and what to do. It exits 1 when it finds something, 0
when it does not, and draws the per-layer statistics over the epochs into
`RUN/doctor.png`.

Every output below is real: `python docs/doctor_demo.py` ran each broken
network on 5,000 CIFAR-10 images for 4 epochs and wrote this page. The
mistakes are those of [the backprop walkthrough](backprop.md), section 4
(softmax on the hidden layer) and section 5 (`randn * 0.01`).

In your own training loop, add the callback and point the doctor at its file:

```python
trainer = npp.Trainer(model, loss, optimizer, callbacks=[npp.Diagnostics(path="run/diagnostics.json")])
```

and `numprop doctor run/`.
"""

CASES = [
    (
        "A healthy run",
        "The default network. No finding; the note on overfitting is an "
        "observation, not a fault (exit code 0).",
        [],
    ),
    (
        "Learning rate far too high",
        "Section 2.3's update with a rate 200 times the default: the loss explodes "
        "within the first epoch and the NaN guard stops the run. The doctor reads what "
        "the diagnostics kept of that epoch.",
        ["--lr", "2"],
    ),
    (
        "Learning rate far too low",
        "The weights hardly move: the update/weight ratio is ~1e-6 instead of ~1e-3, "
        "and the loss stays where it started.",
        ["--lr", "1e-7"],
    ),
    (
        "Softmax on the hidden layer (mistake 4.1)",
        "`A1 = softmax(Z1)` instead of `relu(Z1)`: named from the layers alone, and the "
        "network learns next to nothing.",
        ["--activation", "softmax"],
    ),
    (
        "No activation between the layers",
        "Two Linear layers in a row are one linear map: the network is a linear "
        "classifier however deep it is.",
        ["--activation", "identity"],
    ),
    (
        "`randn * 0.01` in a deep network (section 5)",
        "Fine for two layers, fatal for six: each layer shrinks the signal, and the "
        "gradient that reaches the first layer is tiny.",
        ["--hidden", "500", "500", "500", "500", "500", "--init", "normal"],
    ),
    (
        "Weights too large for tanh",
        "Standard-normal weights on 3,072 standardised inputs: pre-activations of "
        "spread ~55, so tanh sits at ±1 where its gradient vanishes, and the logits "
        "start huge.",
        ["--activation", "tanh", "--init", "normal", "--init-scale", "1"],
    ),
    (
        "Dead ReLUs",
        "A first layer whose biases start at -6 (a buggy initialisation; a learning rate "
        "too high does the same, but here the NaN guard stops such runs first): most "
        "units are below zero for every input, so they pass no gradient and stay there. "
        "Built in Python, with a callback that sets the biases before the first step:\n\n"
        "```python\nclass NegativeBias(npp.Callback):\n"
        "    def on_train_begin(self, trainer):\n"
        "        trainer.model[0].bias.data[:] = -6\n\n"
        "npp.train(npp.TrainConfig(limit=5000, val_size=1000, epochs=4), RUN, "
        "callbacks=[NegativeBias()])\n```",
        None,
    ),
]


class NegativeBias(npp.Callback):
    """Sets the first layer's biases to -6 before the first step (the dead-ReLU case)."""

    def on_train_begin(self, trainer):
        trainer.model[0].bias.data[:] = -6


def run_dead_relus(folder: str) -> tuple[int, str]:
    """The dead-ReLU case through the Python API; (0, its last line) like ``run``."""
    lines = []
    config = npp.TrainConfig(limit=5000, val_size=1000, epochs=4)
    npp.train(config, folder, progress=False, print_fn=lines.append, callbacks=[NegativeBias()])
    return 0, lines[-1]


SANITY = [
    ("The default network", []),
    ("Softmax on the hidden layer", ["--activation", "softmax"]),
]


def run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


def tidy(text: str, folder: str) -> str:
    """Output with the temporary folder shown as RUN."""
    return text.replace(folder, "RUN").strip()


def main_demo() -> None:
    parts = [INTRO]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (title, text, args) in enumerate(CASES):
            folder = f"{tmp}/case{i}"
            if args is None:  # built in Python (the text shows how)
                code, trained = run_dead_relus(folder)
                command = None
            else:
                code, trained = run(["train", *QUICK, *args, "--out", folder])
                command = " ".join(["numprop train", *QUICK[:6], *args])
            last = [line for line in trained.splitlines() if line.strip()][-1:]
            doc_code, said = run(["doctor", folder])
            shown = f"$ {command}\n{tidy(chr(10).join(last), folder)}\n" if command else ""
            parts.append(
                f"## {title}\n\n{text}\n\n```\n{shown}$ numprop doctor RUN     # exit code "
                f"{doc_code}\n{tidy(said, folder)}\n```\n"
            )
            print(f"{title}: train {code}, doctor {doc_code}", file=sys.stderr)
        parts.append(
            "## Before a long run: `numprop doctor --sanity`\n\n"
            "Takes the options of `numprop train` and checks the network on 20 "
            "training examples in seconds: its layers, its loss at initialisation "
            "against ln(C), and whether full-batch training memorises the 20 examples. "
            "A network that cannot has a bug, whatever the learning rate of the long "
            "run would have been.\n"
        )
        for title, args in SANITY:
            code, said = run(["doctor", "--sanity", *args])
            command = " ".join(["numprop doctor --sanity", *args])
            parts.append(
                f"{title}:\n\n```\n$ {command}     # exit code {code}\n{said.strip()}\n```\n"
            )
    (HERE / "doctor.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'doctor.md'}", file=sys.stderr)


if __name__ == "__main__":
    main_demo()
