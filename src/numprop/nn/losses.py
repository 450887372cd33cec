"""Losses: the ``Loss`` protocol the Trainer trains with, softmax, and the losses themselves.

``SoftmaxCrossEntropy`` (fused with the softmax), ``MeanSquaredError`` and
``SigmoidBinaryCrossEntropy`` (computed from the logits).

Why fused: the gradient of mean cross-entropy through a softmax collapses to
``(softmax(z) - target) / N``. Computing the two separately (``dA2`` then the
softmax Jacobian) is slower and, with extreme logits, loses precision.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from numprop._fast import kernels
from numprop.errors import ConfigError
from numprop.nn.module import work_buffer
from numprop.registry import Registry


@runtime_checkable
class Loss(Protocol):
    """What ``Trainer`` needs of a loss; any class with these methods will do.

    The loss keeps what ``backward`` needs from the last ``forward``, as layers do.
    ``isinstance(obj, Loss)`` checks that the three methods exist.
    """

    def forward(self, outputs: np.ndarray, target: np.ndarray) -> float:
        """The mean loss over the batch: outputs (N, C), target (N,) labels or (N, C).

        Parameters
        ----------
        outputs : ndarray, shape (N, C)
            The model's outputs.
        target : ndarray, shape (N,) or (N, C)
            Integer labels, or one target row per example.

        Returns
        -------
        float
            The loss averaged over the N examples.
        """
        ...

    def backward(self) -> np.ndarray:
        """d loss / d outputs for the last ``forward``, shape (N, C)."""
        ...

    def count_correct(self) -> int | None:
        """How many examples of the last ``forward`` were right, or None.

        None where accuracy does not apply (the Trainer then records no accuracy).
        """
        ...


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``z - logsumexp(z)`` along ``axis`` (per example); finite for any finite z.

    Parameters
    ----------
    z : array_like, shape (N, C)
        Logits (any shape; reduced along ``axis``).
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray, shape of ``z``
        Log-probabilities, a new array.
    """
    z = np.asarray(z)
    shifted = z - z.max(axis=axis, keepdims=True)  # largest entry becomes 0: exp cannot overflow
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Probabilities that sum to 1 along ``axis`` (per example, not over the whole matrix).

    The largest entry is subtracted first, so exp cannot overflow.

    Parameters
    ----------
    z : array_like, shape (N, C)
        Logits (any shape; normalised along ``axis``).
    axis : int, default -1
        The class axis.

    Returns
    -------
    ndarray, shape of ``z``
        A new array.
    """
    z = np.asarray(z)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class SoftmaxCrossEntropy:
    """Mean categorical cross-entropy of softmax(logits) against targets.

    ``forward(logits (N, C), target)`` returns the loss as a float; target is
    integer labels (N,) or probabilities (N, C) (one-hot or soft).
    ``backward()`` returns dL/dlogits = (softmax - target) / N, shape (N, C).
    ``count_correct()`` counts the examples whose largest logit is the right class.
    ``label_smoothing`` mixes the target with the uniform distribution.

    The arrays returned by ``backward()`` (and the ``probs`` attribute, (N, C))
    are buffers reused by the next ``forward``.

    Parameters
    ----------
    label_smoothing : float, default 0.0
        eps in [0, 1): the target becomes ``(1 - eps) * target + eps / C``.

    Raises
    ------
    ConfigError
        If ``label_smoothing`` is outside [0, 1).
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self._work: dict[str, np.ndarray] = {}
        self._grad: np.ndarray | None = None
        self._logits: np.ndarray | None = None
        self._correct: int | None = None

    def forward(self, logits: np.ndarray, target: np.ndarray) -> float:
        """The mean cross-entropy of the batch; keeps what ``backward`` needs.

        Parameters
        ----------
        logits : ndarray, shape (N, C)
            Unnormalised scores, N > 0; float32 or float64 keep their dtype,
            others are computed in float64.
        target : ndarray, shape (N,) or (N, C)
            Integer labels in [0, C), or probability rows (non-negative,
            summing to 1: one-hot or soft).

        Returns
        -------
        float
            The loss averaged over the N examples, in nats.

        Raises
        ------
        ConfigError
            For logits that are not (N, C) with N > 0, labels that are not
            integers of shape (N,) or lie outside [0, C), or target rows of the
            wrong shape or that are not probabilities.
        """
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] == 0:
            raise ConfigError(f"logits must have shape (N, C) with N > 0, got {logits.shape}")
        n, c = logits.shape
        target = np.asarray(target)
        self._grad = None
        self._logits, self._correct = None, None
        dtype = logits.dtype if logits.dtype in (np.float32, np.float64) else np.float64
        if target.ndim == 1:
            if target.shape[0] != n or not np.issubdtype(target.dtype, np.integer):
                raise ConfigError(
                    f"labels must be integers of shape ({n},), got {target.dtype} {target.shape}"
                )
            loss = self._compiled(logits, target)  # checks the labels' range itself
            if loss is not None:
                self.labels, self.target, self._logits = target, None, logits
                return loss
            self._check_range(target, c)
            self.labels, self.target = target, None

        # p first holds the shifted logits z - max (every row's largest entry is 0,
        # so exp cannot overflow); what the loss needs of them is read off before
        # exp turns p into probabilities in place.
        p = work_buffer(self._work, "p", (n, c), dtype)
        np.subtract(logits, logits.max(axis=1, keepdims=True), out=p)  # (N, C)
        eps = self.label_smoothing

        if target.ndim == 1:
            shifted_true = p[np.arange(n), target].astype(np.float64)  # (N,)
            mean_shifted = p.mean(axis=1, dtype=np.float64) if eps else 0.0
        elif target.ndim == 2:
            if target.shape != (n, c):
                raise ConfigError(f"targets must have shape ({n}, {c}), got {target.shape}")
            row_sums = target.sum(axis=1)
            if np.any(target < 0) or not np.allclose(row_sums, 1.0, atol=1e-4):
                raise ConfigError("target rows must be probabilities: non-negative, summing to 1")
            t = target.astype(dtype)
            if eps:
                t = (1 - eps) * t + eps / c
            self.labels, self.target = None, t
            target_dot_shifted = np.einsum("nc,nc->n", t, p, dtype=np.float64)  # (N,)
        else:
            raise ConfigError(
                f"target must be labels (N,) or probabilities (N, C), got shape {target.shape}"
            )

        np.exp(p, out=p)
        sums = p.sum(axis=1, keepdims=True)  # (N, 1), >= 1
        p /= sums
        log_sums = np.log(sums, dtype=np.float64)[:, 0]  # (N,)
        if self.labels is not None:
            nll = log_sums - shifted_true  # (N,)
            if eps:
                nll = (1 - eps) * nll + eps * (log_sums - mean_shifted)
            loss = float(nll.mean())
        else:
            loss = float(np.mean(log_sums - target_dot_shifted))
        self.probs, self._logits = p, logits
        return loss

    @staticmethod
    def _check_range(labels: np.ndarray, c: int) -> None:
        """Raise a ConfigError unless every label is in [0, c)."""
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise ConfigError(
                f"labels must be in [0, {c}), got values from {labels.min()} to {labels.max()}"
            )

    def _compiled(self, logits: np.ndarray, labels: np.ndarray) -> float | None:
        """Forward and backward for integer labels in one compiled pass, or None (no kernel).

        One call instead of a dozen NumPy ones (the label check, the loss's sum and
        the count of right answers included): with 10 classes the loss is tiny work,
        and each distinct NumPy call right after a big matrix product costs tens of
        us, its code and data having left the caches.
        """
        if logits.dtype not in (np.float32, np.float64):
            return None
        n, c = logits.shape
        p = work_buffer(self._work, "p", (n, c), logits.dtype)
        grad = work_buffer(self._work, "grad", (n, c), logits.dtype)
        totals = work_buffer(self._work, "totals", (3,), np.float64)  # nll sum, right, bad labels
        eps = self.label_smoothing
        if not kernels.softmax_xent(logits, labels, eps, probs=p, grad=grad, totals=totals):
            return None
        nll_sum, correct, bad = totals
        if bad:
            self._check_range(labels, c)
        self.probs, self._grad, self._correct = p, grad, int(correct)
        return float(nll_sum) / n

    def count_correct(self) -> int:
        """How many examples of the last forward have their largest logit at the target.

        Ties go to the first largest logit, as with ``np.argmax``; for probability
        targets the target is the most likely class.

        Raises
        ------
        ConfigError
            If ``forward`` was not called yet.
        """
        if self._logits is None:
            raise ConfigError("count_correct() needs a forward() first")
        if self._correct is None:  # the compiled forward counts as it goes
            truth = self.labels if self.labels is not None else self.target.argmax(axis=1)
            self._correct = int(np.count_nonzero(self._logits.argmax(axis=1) == truth))
        return self._correct

    def backward(self) -> np.ndarray:
        """dL/dlogits (N, C) for the last forward call.

        Returns
        -------
        ndarray, shape (N, C)
            ``(softmax(logits) - target) / N`` (the smoothed target where
            ``label_smoothing`` is set), in the logits' dtype; a reused buffer.
        """
        if self._grad is not None:  # the compiled forward made it already
            return self._grad
        p = self.probs
        n, c = p.shape
        grad = work_buffer(self._work, "grad", p.shape, p.dtype)
        eps = self.label_smoothing
        if self.labels is not None:
            np.copyto(grad, p)
            grad[np.arange(n), self.labels] -= 1 - eps
            if eps:
                grad -= eps / c
        else:
            np.subtract(p, self.target, out=grad)
        grad *= 1.0 / n
        return grad

    def __repr__(self) -> str:
        return f"SoftmaxCrossEntropy(label_smoothing={self.label_smoothing})"


def _outputs_and_target(
    outputs: np.ndarray, target: np.ndarray, who: str
) -> tuple[np.ndarray, np.ndarray]:
    """Check a regression-style pair and return (outputs, target) in one float dtype.

    ``outputs`` is (N,) or (N, K) with N > 0; ``target`` has its shape, or is
    (N,) for (N, 1) outputs (then reshaped to (N, 1)). float32 and float64
    outputs keep their dtype, others are computed in float64; the target is
    converted to the outputs' dtype.
    """
    outputs = np.asarray(outputs)
    if outputs.ndim not in (1, 2) or outputs.shape[0] == 0:
        raise ConfigError(
            f"{who} outputs must have shape (N,) or (N, K) with N > 0, got {outputs.shape}"
        )
    if outputs.dtype not in (np.float32, np.float64):
        outputs = outputs.astype(np.float64)
    target = np.asarray(target)
    n = outputs.shape[0]
    if outputs.ndim == 2 and outputs.shape[1] == 1 and target.shape == (n,):
        target = target[:, None]  # (N,) targets for a single output column
    if target.shape != outputs.shape:
        raise ConfigError(
            f"{who} target must have the outputs' shape {outputs.shape}, got {target.shape}"
        )
    if target.dtype.kind not in "biuf":
        raise ConfigError(f"{who} target must be numbers, got dtype {target.dtype}")
    target = target.astype(outputs.dtype, copy=False)
    if not np.all(np.isfinite(target)):
        raise ConfigError(f"{who} target must be finite (no NaN or inf)")
    return outputs, target


class MeanSquaredError:
    """Half the squared error, summed over the outputs, averaged over the examples.

    For outputs :math:`o` and targets :math:`t` of shape (N, K)::

        L = 1/N * sum_n sum_k (o[n, k] - t[n, k])**2 / 2
        dL/do = (o - t) / N

    The factor 1/2 makes the gradient the plain residual. With one output
    (K = 1, or outputs of shape (N,)) this is exactly scikit-learn's
    ``MLPRegressor`` loss, squared error / 2 averaged over the samples, and
    for any K the gradient is the one scikit-learn trains with ((o - t) /
    n_samples); scikit-learn's *reported* ``loss_`` further divides by K
    (it averages over all N * K entries), this one does not.

    ``forward(outputs, target)`` returns the loss as a float; ``backward()``
    returns dL/doutputs in a buffer reused by the next call; ``count_correct()``
    is None (accuracy does not apply to regression, so the Trainer records none).
    float32 and float64 outputs keep their dtype (the loss is summed in float64).
    """

    def __init__(self) -> None:
        self._work: dict[str, np.ndarray] = {}
        self._diff: np.ndarray | None = None
        self._shape: tuple[int, ...] = ()

    def forward(self, outputs: np.ndarray, target: np.ndarray) -> float:
        """The mean over examples of half the summed squared error.

        Parameters
        ----------
        outputs : ndarray, shape (N, K) or (N,)
            Predictions, N > 0.
        target : ndarray, same shape as ``outputs``
            Finite values; (N,) is also accepted for outputs (N, 1).

        Returns
        -------
        float
            ``sum((outputs - target)**2) / (2 N)``.

        Raises
        ------
        ConfigError
            For outputs that are not (N,) or (N, K) with N > 0, a target of
            another shape, or a target with NaN or inf.
        """
        self._diff = None
        o, t = _outputs_and_target(outputs, target, "MeanSquaredError")
        n = o.shape[0]
        diff = work_buffer(self._work, "diff", o.shape, o.dtype)  # o - t, (N, K)
        np.subtract(o, t, out=diff)
        flat = diff.reshape(-1)
        loss = float(np.dot(flat.astype(np.float64, copy=False), flat)) / (2 * n)
        self._diff, self._shape = diff, np.shape(outputs)
        return loss

    def backward(self) -> np.ndarray:
        """dL/doutputs for the last forward: ``(outputs - target) / N``.

        Returns
        -------
        ndarray, shape of the outputs
            In the outputs' dtype; a reused buffer.

        Raises
        ------
        ConfigError
            If ``forward`` was not called yet.
        """
        if self._diff is None:
            raise ConfigError("backward() needs a forward() first")
        diff = self._diff
        grad = work_buffer(self._work, "grad", diff.shape, diff.dtype)  # (N, K)
        np.multiply(diff, 1.0 / diff.shape[0], out=grad)
        return grad.reshape(self._shape)

    def count_correct(self) -> None:
        """None: accuracy does not apply to regression."""
        return None

    def __repr__(self) -> str:
        return "MeanSquaredError()"


class SigmoidBinaryCrossEntropy:
    r"""Binary cross-entropy of sigmoid(logits), summed over the outputs, averaged over examples.

    For logits :math:`z` and targets :math:`t \in [0, 1]` of shape (N, K)
    (K independent yes/no outputs: K = 1 for a binary problem, K labels for a
    multi-label one), with :math:`p = \sigma(z) = 1 / (1 + e^{-z})`::

        L = 1/N * sum_n sum_k -(t log p + (1 - t) log(1 - p))
          = 1/N * sum_n sum_k  max(z, 0) - z t + log(1 + exp(-|z|))
        dL/dz = (sigmoid(z) - t) / N

    The second form is the same number computed from the logits: exp never
    sees a positive argument, so nothing overflows, and the loss stays exact
    where p rounds to 0 or 1 (at z = -1e4 with t = 1 it is 1e4, not inf).

    ``count_correct()`` counts the examples whose every output is right
    (``z > 0`` exactly where ``t >= 0.5``): the exact-match (subset) accuracy
    scikit-learn reports for multi-label problems; for K = 1 the plain accuracy.
    The arrays returned by ``backward()`` are buffers reused by the next call.
    float32 and float64 logits keep their dtype (the loss is summed in float64).
    """

    def __init__(self) -> None:
        self._work: dict[str, np.ndarray] = {}
        self._logits: np.ndarray | None = None
        self._target: np.ndarray | None = None
        self._shape: tuple[int, ...] = ()

    def forward(self, logits: np.ndarray, target: np.ndarray) -> float:
        """The mean over examples of the summed binary cross-entropy, in nats.

        Parameters
        ----------
        logits : ndarray, shape (N, K) or (N,)
            Unnormalised scores, N > 0.
        target : ndarray, same shape as ``logits``
            0/1 labels or probabilities in [0, 1]; (N,) is also accepted for
            logits (N, 1).

        Returns
        -------
        float
            The loss averaged over the N examples.

        Raises
        ------
        ConfigError
            For logits that are not (N,) or (N, K) with N > 0, a target of
            another shape, or target values outside [0, 1] (NaN, inf included).
        """
        self._logits = self._target = None
        z, t = _outputs_and_target(logits, target, "SigmoidBinaryCrossEntropy")
        if np.any(t < 0) or np.any(t > 1):
            raise ConfigError("SigmoidBinaryCrossEntropy targets must be in [0, 1]")
        n = z.shape[0]
        a = work_buffer(self._work, "a", z.shape, z.dtype)  # (N, K)
        np.abs(z, out=a)
        np.negative(a, out=a)
        np.exp(a, out=a)  # exp(-|z|), in (0, 1]: cannot overflow
        np.log1p(a, out=a)  # log(1 + exp(-|z|))
        a += np.maximum(z, 0)
        a -= z * t  # elementwise loss: max(z, 0) - z t + log(1 + exp(-|z|))
        loss = float(a.sum(dtype=np.float64)) / n
        self._logits, self._target, self._shape = z, t, np.shape(logits)
        return loss

    def backward(self) -> np.ndarray:
        """dL/dlogits for the last forward: ``(sigmoid(logits) - target) / N``.

        Returns
        -------
        ndarray, shape of the logits
            In the logits' dtype; a reused buffer.

        Raises
        ------
        ConfigError
            If ``forward`` was not called yet.
        """
        if self._logits is None:
            raise ConfigError("backward() needs a forward() first")
        z, t = self._logits, self._target
        n = z.shape[0]
        grad = work_buffer(self._work, "grad", z.shape, z.dtype)  # (N, K)
        # sigmoid(z) from e = exp(-|z|) <= 1: 1 / (1 + e) for z >= 0, e / (1 + e) below.
        e = np.exp(-np.abs(z))  # (N, K)
        np.divide(np.where(z >= 0, 1, e), 1 + e, out=grad)  # sigmoid(z), (N, K)
        grad -= t
        grad *= 1.0 / n
        return grad.reshape(self._shape)

    def count_correct(self) -> int:
        """How many examples of the last forward have every output on the target's side.

        An output is right when ``logit > 0`` exactly where ``target >= 0.5``;
        an example counts when all its K outputs are right (exact match).

        Raises
        ------
        ConfigError
            If ``forward`` was not called yet.
        """
        if self._logits is None:
            raise ConfigError("count_correct() needs a forward() first")
        right = (self._logits > 0) == (self._target >= 0.5)  # (N, K)
        return int(np.count_nonzero(right.reshape(right.shape[0], -1).all(axis=1)))

    def __repr__(self) -> str:
        return "SigmoidBinaryCrossEntropy()"


# The one table that turns loss names (configs) into classes.
LOSSES = Registry("loss")
LOSSES.add("softmax_cross_entropy", SoftmaxCrossEntropy)
LOSSES.add("mean_squared_error", MeanSquaredError)
LOSSES.add("sigmoid_binary_cross_entropy", SigmoidBinaryCrossEntropy)
