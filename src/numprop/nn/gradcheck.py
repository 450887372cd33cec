"""Finite-difference gradient checking for models, layers and your own functions.

    report = npp.gradcheck(model, x, y, loss=npp.SoftmaxCrossEntropy())  # model + loss
    report = npp.gradcheck(layer, x)                                     # one Module
    report = npp.gradcheck(forward, x, w, b, backward=backward)          # your own code
    print(report)          # a table, and a plain sentence for each wrong gradient
    assert report.ok

Numerical gradients use central differences, (f(x+eps) - f(x-eps)) / 2eps, in
float64 (float32 has too few digits for this). The error of each entry is
|analytic - numeric| / max(|analytic|, |numeric|, floor), where floor is 1% of
the largest gradient entry in the whole check, so entries that are (nearly)
zero are not judged on rounding noise, while any error that matters still
shows. Correct code gives errors around 1e-8 or below; a bug gives errors
near 1.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from numprop.errors import ConfigError
from numprop.nn.layers import Dropout
from numprop.nn.module import Module


@dataclass
class GradResult:
    """The check of one gradient (a parameter, or an input).

    Attributes
    ----------
    name : str
        The parameter's dotted name, "input", or the name given for an input.
    shape : tuple of int
        The gradient's shape.
    max_rel_error : float
        The largest relative error over the checked entries (inf for a wrong shape).
    worst : list of (tuple, float, float)
        Up to five ``(index, analytic, numeric)`` entries, worst first.
    checked : int
        Number of entries compared.
    ok : bool
        ``max_rel_error <= tol``.
    diagnosis : str
        For a wrong gradient, a plain-words guess at the bug; else "".
    """

    name: str
    shape: tuple
    max_rel_error: float
    worst: list[tuple[tuple, float, float]]  # (index, analytic, numeric), worst first
    checked: int
    ok: bool
    diagnosis: str = ""


@dataclass
class GradcheckReport:
    """Per-gradient results; ``ok`` is True when every gradient is within ``tol``.

    ``str(report)`` is a table with one row per gradient, then a sentence for
    each wrong one. ``report["0.weight"]`` is the ``GradResult`` of that name.

    Attributes
    ----------
    results : list of GradResult
        In the order checked: parameters, then the input.
    tol : float
        The largest relative error allowed.
    eps : float
        The finite-difference step.
    notes : list of str
        Remarks on how the check was done (e.g. dropout masks held fixed).
    """

    results: list[GradResult]
    tol: float
    eps: float
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every gradient is within ``tol``."""
        return all(r.ok for r in self.results)

    def __getitem__(self, name: str) -> GradResult:
        """The result named ``name``; KeyError if there is none."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def wrong(self) -> list[str]:
        """Names of the gradients that are not within ``tol``."""
        return [r.name for r in self.results if not r.ok]

    def __str__(self) -> str:
        verdict = "all gradients OK" if self.ok else f"WRONG: {', '.join(self.wrong)}"
        lines = [
            f"gradcheck: {verdict} (max relative error allowed {self.tol:g}; "
            f"central differences, eps {self.eps:g}, float64)",
            f"  {'gradient':<16} {'shape':<14} {'max rel error':>13}  {'worst index':<14} "
            f"{'analytic':>12} {'numeric':>12}",
        ]
        for r in self.results:
            idx, a, n = r.worst[0] if r.worst else ((), 0.0, 0.0)
            flag = "" if r.ok else "  <-- wrong"
            lines.append(
                f"  {r.name:<16} {str(r.shape):<14} {r.max_rel_error:>13.2e}  "
                f"{str(idx):<14} {a:>12.4e} {n:>12.4e}{flag}"
            )
        for r in self.results:
            if not r.ok:
                lines.append(f"- {r.name}: {r.diagnosis}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def gradcheck(
    target,
    *args,
    loss=None,
    backward=None,
    names=None,
    eps: float = 1e-6,
    tol: float = 1e-6,
    max_entries: int | None = None,
    seed: int = 0,
    check_input: bool = True,
) -> GradcheckReport:
    """Compare analytic gradients with central finite differences.

    * ``gradcheck(model, x, y, loss=loss)``: a Module and a loss; checks every
      parameter and the input x (N, D).
    * ``gradcheck(module, x)``: one Module; the scalar checked is
      ``sum(forward(x) * R)`` for a fixed random R, so ``backward(R)`` is tested.
    * ``gradcheck(forward, *inputs, backward=backward, names=[...])``: your own
      functions. ``forward(*inputs)`` returns ``out`` or ``(out, cache)``;
      ``backward(dout, cache)`` (or ``backward(dout)``) returns one gradient per
      input (None for inputs such as labels), a single array for a single
      input, or a dict by name. ``out`` may be a scalar loss.

    ``max_entries`` checks a random sample of that many entries per gradient.
    The model and inputs are copied to float64; yours are left untouched.

    Parameters
    ----------
    target : Module or callable
        The model or layer to check, or your forward function.
    *args : array_like
        For a model with a loss: ``x`` (N, D) and targets ``y`` (N,) or (N, C).
        For a Module alone: ``x``. For functions: the inputs of ``forward``;
        float arrays are checked, others (integer labels) are passed as they are.
    loss : Loss, optional
        With a model: the loss whose mean over the batch is differentiated.
    backward : callable, optional
        Required with a forward function, not allowed with a Module.
    names : list of str, optional
        Names of the function inputs in the report (``"input 0"``, ... by default).
    eps : float, default 1e-6
        Finite-difference step.
    tol : float, default 1e-6
        Largest relative error accepted.
    max_entries : int, optional
        Check only a random sample of this many entries per gradient (all by default).
    seed : int, default 0
        Seed of the random projection R and the sample of entries.
    check_input : bool, default True
        For a Module: also check the gradient with respect to ``x``.

    Returns
    -------
    GradcheckReport

    Raises
    ------
    ConfigError
        For a target that is neither a Module nor callable, the wrong number of
        arguments, a missing (or, for a Module, superfluous) ``backward``, or a
        backward that returns gradients that cannot be matched to the inputs.
    """
    rng = np.random.default_rng((seed, 0x67726164))  # a stream of its own, unlike the user's data
    if isinstance(target, Module):
        if backward is not None:
            raise ConfigError("backward= is for plain functions; a Module has its own")
        return _check_module(target, args, loss, eps, tol, max_entries, rng, check_input)
    if callable(target):
        if backward is None:
            raise ConfigError("gradcheck(forward, *inputs) needs backward=your_backward_function")
        return _check_functions(target, backward, args, names, eps, tol, max_entries, rng)
    raise ConfigError(
        f"gradcheck needs a Module or a forward function, got {type(target).__name__}"
    )


# -- modules ---------------------------------------------------------------------


def _check_module(model, args, loss, eps, tol, max_entries, rng, check_input):
    """``gradcheck`` of a Module, alone or with a loss."""
    if loss is not None and len(args) != 2:
        raise ConfigError("gradcheck(model, x, y, loss=...) needs the inputs x and targets y")
    if loss is None and len(args) != 1:
        raise ConfigError("gradcheck(module, x) takes one input array (or pass loss= and y)")
    model = copy.deepcopy(model).to(np.float64)
    x = np.array(args[0], dtype=np.float64)
    y = args[1] if loss is not None else None
    if y is not None and np.asarray(y).ndim == 2:
        y = np.asarray(y, dtype=np.float64)

    out = model.forward(x)  # samples dropout masks, which we then hold fixed
    notes = []
    for m in model.modules():
        if isinstance(m, Dropout) and m.training and m.p > 0:
            m.fix_mask = True
            notes.append("dropout masks were held fixed")
    R = rng.standard_normal(out.shape) if loss is None else None

    def f() -> float:
        out = model.forward(x)
        return float(loss.forward(out, y)) if loss is not None else float(np.sum(out * R))

    f()
    model.zero_grad()
    dout = loss.backward() if loss is not None else R
    dx = model.backward(dout)
    analytic = {name: p.grad.copy() for name, p in model.named_parameters()}
    arrays = {name: p.data for name, p in model.named_parameters()}
    if check_input:
        if dx is None or dx.shape != x.shape:
            raise ConfigError(
                "the module's backward did not return a gradient shaped like its input"
            )
        analytic["input"], arrays["input"] = dx.copy(), x
    pairs = [
        (name, analytic[name], _numeric(f, arr, eps, max_entries, rng))
        for name, arr in arrays.items()
    ]
    return GradcheckReport(_compare_all(pairs, tol, x.shape), tol, eps, sorted(set(notes)))


# -- plain functions ---------------------------------------------------------------


def _check_functions(forward, backward, inputs, names, eps, tol, max_entries, rng):
    """``gradcheck`` of a user's forward and backward functions."""
    if not inputs:
        raise ConfigError("gradcheck(forward, *inputs, backward=...) needs at least one input")
    names = list(names) if names is not None else [f"input {i}" for i in range(len(inputs))]
    if len(names) != len(inputs):
        raise ConfigError(f"{len(names)} names for {len(inputs)} inputs")
    arrays = [np.array(a, dtype=np.float64) if _is_float(a) else a for a in inputs]
    float_ids = [i for i, a in enumerate(inputs) if _is_float(a)]

    def run():
        result = forward(*arrays)
        if isinstance(result, tuple) and len(result) == 2:
            return result
        return result, None

    out, cache = run()
    scalar = np.ndim(out) == 0
    R = None if scalar else rng.standard_normal(np.shape(out))

    def f() -> float:
        out, _ = run()
        return float(out) if scalar else float(np.sum(np.asarray(out) * R))

    dout = 1.0 if scalar else R
    grads = backward(dout, cache) if cache is not None else backward(dout)
    grads = _match_grads(grads, names, float_ids)
    results, pairs = [], []
    for i in float_ids:
        g = grads.get(i)
        if g is None:
            raise ConfigError(f"backward returned no gradient for '{names[i]}'")
        g = np.asarray(g, dtype=np.float64)
        shape = arrays[i].shape
        if g.shape != shape:
            hint = (
                (
                    " (it is transposed: compute it as the transpose, e.g. X.T @ dZ "
                    "instead of dZ.T @ X)"
                )
                if g.shape == shape[::-1]
                else ""
            )
            results.append(
                GradResult(
                    names[i],
                    shape,
                    float("inf"),
                    [],
                    0,
                    False,
                    f"the gradient has shape {g.shape}, the input has shape {shape}{hint}",
                )
            )
            continue
        pairs.append((names[i], g, _numeric(f, arrays[i], eps, max_entries, rng)))
    results += _compare_all(pairs, tol, np.shape(arrays[0]))
    return GradcheckReport(results, tol, eps)


def _is_float(a) -> bool:
    """Whether ``a`` is a floating-point array (an input whose gradient is checked)."""
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def _match_grads(grads, names, float_ids) -> dict[int, np.ndarray]:
    """What a user's backward returned, as gradients by input position."""
    if isinstance(grads, dict):
        unknown = set(grads) - set(names)
        if unknown:
            raise ConfigError(f"backward returned gradients for unknown names {sorted(unknown)}")
        return {names.index(k): v for k, v in grads.items()}
    if isinstance(grads, np.ndarray):
        grads = (grads,)
    grads = list(grads)
    if len(grads) == len(names):
        return dict(enumerate(grads))
    if len(grads) == len(float_ids):
        return dict(zip(float_ids, grads))
    raise ConfigError(f"backward returned {len(grads)} gradients for {len(names)} inputs")


# -- the comparison -------------------------------------------------------------------


def _numeric(f, arr: np.ndarray, eps: float, max_entries, rng) -> np.ndarray:
    """Central differences of f with respect to arr (perturbed in place, then restored).

    Entries not sampled (when ``max_entries`` is set) are NaN.
    """
    grad = np.full(arr.shape, np.nan)
    flat_ids = np.arange(arr.size)
    if max_entries is not None and arr.size > max_entries:
        flat_ids = np.sort(rng.choice(arr.size, max_entries, replace=False))
    for flat in flat_ids:
        idx = np.unravel_index(flat, arr.shape)
        old = arr[idx]
        arr[idx] = old + eps
        plus = f()
        arr[idx] = old - eps
        minus = f()
        arr[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


def _compare_all(pairs, tol, batch_shape) -> list[GradResult]:
    """Compare (name, analytic, numeric) triples against one common floor."""
    scale = max(
        (max(np.nanmax(np.abs(n), initial=0), np.abs(a).max(initial=0)) for _, a, n in pairs),
        default=0.0,
    )
    floor = 1e-2 * scale + 1e-300
    return [_compare(name, a, n, tol, floor, batch_shape) for name, a, n in pairs]


def _compare(name, analytic, numeric, tol, floor, batch_shape) -> GradResult:
    """Relative errors of one gradient's checked entries, as a GradResult."""
    checked = ~np.isnan(numeric)
    a, n = analytic[checked], numeric[checked]
    err = np.abs(a - n) / np.maximum(np.maximum(np.abs(a), np.abs(n)), floor)
    order = np.argsort(err)[::-1][:5]
    positions = np.argwhere(checked)
    worst = [(tuple(int(i) for i in positions[k]), float(a[k]), float(n[k])) for k in order]
    max_err = float(err.max(initial=0.0))
    ok = max_err <= tol
    diagnosis = "" if ok else _diagnose(analytic, numeric, checked, err, tol, batch_shape)
    return GradResult(name, analytic.shape, max_err, worst, int(checked.sum()), ok, diagnosis)


def _diagnose(analytic, numeric, checked, err, tol, batch_shape) -> str:
    """A plain-words guess at what kind of bug makes these gradients disagree."""
    a, n = analytic[checked], numeric[checked]
    bad = int((err > tol).sum())
    base = f"{bad} of {a.size} entries disagree"
    if not np.any(a) and np.any(n):
        return f"{base}: the analytic gradient is all zeros; is it computed and accumulated?"
    if not np.any(n) and np.any(a):
        return f"{base}: the output does not depend on this, yet the analytic gradient is non-zero"
    if (
        analytic.ndim == 2
        and analytic.shape[0] == analytic.shape[1]
        and checked.all()
        and np.allclose(analytic.T, numeric, rtol=1e-4, atol=1e-10)
    ):
        return f"{base}: the analytic gradient is the transpose of the right one"
    k = float(a @ n / (n @ n))
    if np.allclose(a, k * n, rtol=1e-4, atol=1e-4 * np.abs(a).max()):
        if abs(k + 1) < 1e-3:
            return f"{base}: the sign is flipped (analytic = -numeric)"
        for size in sorted(set(batch_shape)):
            if size > 1 and abs(k - size) < 1e-3 * size:
                return (
                    f"{base}: the analytic gradient is {size} times too large; the batch "
                    f"has {size} examples: a missing 1/N (average over the batch)?"
                )
            if size > 1 and abs(k * size - 1) < 1e-3:
                return (
                    f"{base}: the analytic gradient is {size} times too small; the batch "
                    f"has {size} examples: an extra 1/N?"
                )
        return f"{base}: the analytic gradient is {k:.4g} times the numerical one"
    idx = tuple(int(i) for i in np.argwhere(checked)[int(np.argmax(err))])
    return (
        f"{base}; worst at index {idx}: analytic {analytic[idx]:.6g}, numeric "
        f"{numeric[idx]:.6g}. Check this part of the backward pass against its forward"
    )
