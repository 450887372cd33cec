"""scikit-learn estimators over numprop networks: ``MLPClassifier`` and ``MLPRegressor``.

They take scikit-learn's parameter names and follow its ``MLPClassifier`` /
``MLPRegressor`` where the two overlap (the L2 penalty ``alpha``, the
convergence test with ``tol`` and ``n_iter_no_change``, early stopping, the
fitted attributes ``coefs_``, ``loss_curve_``, ...), and train with numprop's
own layers, losses and optimizers, in float32 by default::

    from numprop.sklearn import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(256,), random_state=0).fit(X, y)
    clf.predict_proba(X_test)

scikit-learn supplies the estimator plumbing only (input validation, label
encoding, ``clone``, scores); it is imported here and nowhere else in numprop,
so ``import numprop`` does not need it (``pip install 'numprop[sklearn]'``).

Differences from scikit-learn's estimators:

* ``solver="lbfgs"`` is not supported (a ValueError at fit); "sgd" and "adam" are.
* Sparse inputs, ``sample_weight``, ``max_fun`` (L-BFGS only) and the regressor's
  ``loss="poisson"`` are not supported.
* ``partial_fit`` takes batches holding any of ``classes_`` also with
  ``warm_start=True`` (scikit-learn then asks for all of them in every batch).
* The network is float32 unless ``dtype="float64"``; predictions have its dtype.
* With a changing learning rate (``invscaling``, ``adaptive``, ``schedule``)
  SGD's velocity holds gradients, not steps (numprop's and PyTorch's
  convention), so a new rate applies to the whole velocity at once.
* Extra parameters: ``dropout``, ``batchnorm``, ``schedule``, ``weight_decay``
  and ``dtype``; ``activation`` also takes numprop's other activation names. With
  ``batchnorm``, a last batch of a single example is left out of its epoch.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from numprop.data.batches import ArrayLoader, stratified_split
from numprop.nn.layers import ACTIVATIONS, BatchNorm1d, Dropout, Linear
from numprop.nn.losses import MeanSquaredError, SigmoidBinaryCrossEntropy, SoftmaxCrossEntropy
from numprop.nn.module import Module, Parameter, Sequential
from numprop.nn.optim import SGD, Adam, Optimizer
from numprop.nn.schedules import SCHEDULES, Schedule
from numprop.training.trainer import Trainer

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names that numprop calls otherwise; "identity" is no layer at all.
_ACTIVATION_ALIASES = {"logistic": "sigmoid", "identity": None}
_LEARNING_RATES = ("constant", "invscaling", "adaptive")


def _check_real(name, value, low, high=math.inf, *, low_open=False, high_open=False):
    """``value`` as a float if it lies in the interval; a ValueError naming ``name`` otherwise."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high
        )
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def _check_int(name, value, low):
    """``value`` as an int if it is an integer >= ``low``; a ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_bool(name, value):
    """``value`` if it is a bool (NumPy's included); a ValueError otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` from ``e = exp(-|z|)``, so nothing overflows; a new array."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1, e) / (1 + e)


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    """``log(sigmoid(z)) = -(max(-z, 0) + log1p(exp(-|z|)))``, finite for finite z."""
    return -(np.maximum(-z, 0) + np.log1p(np.exp(-np.abs(z))))


def _network(sizes, activation, dropout, batchnorm, rng, dtype) -> Sequential:
    """The MLP ``sizes = [D, H1, ..., K]`` with scikit-learn's initial weights.

    Each hidden block is Linear -> [BatchNorm1d] -> activation -> [Dropout], as
    in ``numprop.nn.models.mlp``, which is not used here because it cannot leave
    the activation out ("identity"). Weights and biases are drawn as
    scikit-learn draws them: uniform in +-sqrt(6 / (fan_in + fan_out)), with 2
    instead of 6 for the logistic activation (Glorot and Bengio).
    """
    act = _ACTIVATION_ALIASES.get(activation, activation)
    layers: list[Module] = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(Linear(fan_in, fan_out, rng=rng, dtype=dtype))
        if batchnorm:
            layers.append(BatchNorm1d(fan_out, dtype=dtype))
        if act is not None:
            layers.append(ACTIVATIONS.create(act))
        if dropout:
            layers.append(Dropout(dropout, rng=rng))
    layers.append(Linear(sizes[-2], sizes[-1], rng=rng, dtype=dtype))
    factor = 2.0 if act == "sigmoid" else 6.0
    for layer in layers:
        if isinstance(layer, Linear):
            bound = math.sqrt(factor / (layer.in_features + layer.out_features))
            w, b = layer.weight.data, layer.bias.data
            w[...] = rng.uniform(-bound, bound, w.shape)  # (fan_in, fan_out), as coefs_
            b[...] = rng.uniform(-bound, bound, b.shape)
    return Sequential(*layers)


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: parameters, the training loop, prediction.

    Subclasses say how targets are encoded (``_validate_input``, ``_n_outputs``,
    ``_strata``), which output activation and loss go with them
    (``_out_activation``, ``_make_loss``), and how outputs become predictions
    (``_decode``) and a score (``_score_function``).
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        dropout=0.0,
        batchnorm=False,
        schedule=None,
        weight_decay=0.0,
        dtype="float32",
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.batchnorm = batchnorm
        self.schedule = schedule
        self.weight_decay = weight_decay
        self.dtype = dtype

    # -- parameters -----------------------------------------------------------------------
    def _checked_params(self) -> dict:
        """The parameters, checked and normalised; a ValueError names the first bad one.

        Checked at fit, not in ``__init__``, as scikit-learn requires (``set_params``
        and ``clone`` must never fail).
        """
        p = {}
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        p["hidden"] = [_check_int("hidden_layer_sizes entries", s, 1) for s in sizes]
        if self.activation not in _ACTIVATION_ALIASES and self.activation not in ACTIVATIONS:
            names = ", ".join(["identity", "logistic", *ACTIVATIONS.names()])
            raise ValueError(f"activation must be one of {names}; got {self.activation!r}")
        if self.solver == "lbfgs":
            raise ValueError(
                "solver='lbfgs' is not supported by numprop.sklearn (numprop trains with "
                "mini-batch optimizers); use solver='adam' or solver='sgd'"
            )
        if self.solver not in ("sgd", "adam"):
            raise ValueError(f"solver must be 'adam' or 'sgd', got {self.solver!r}")
        p["alpha"] = _check_real("alpha", self.alpha, 0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _check_int("batch_size", self.batch_size, 1)
        if self.learning_rate not in _LEARNING_RATES:
            raise ValueError(
                f"learning_rate must be one of {', '.join(_LEARNING_RATES)}, got {self.learning_rate!r}"
            )
        p["lr"] = _check_real("learning_rate_init", self.learning_rate_init, 0, low_open=True)
        p["power_t"] = _check_real("power_t", self.power_t, 0)
        p["max_iter"] = _check_int("max_iter", self.max_iter, 1)
        for name in ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping", "batchnorm"):
            _check_bool(name, getattr(self, name))
        p["tol"] = _check_real("tol", self.tol, 0)
        # numprop's SGD needs momentum < 1 (a velocity that never decays diverges anyway).
        p["momentum"] = _check_real("momentum", self.momentum, 0, 1, high_open=True)
        p["validation_fraction"] = _check_real(
            "validation_fraction", self.validation_fraction, 0, 1, high_open=True
        )
        p["beta_1"] = _check_real("beta_1", self.beta_1, 0, 1, high_open=True)
        p["beta_2"] = _check_real("beta_2", self.beta_2, 0, 1, high_open=True)
        p["epsilon"] = _check_real("epsilon", self.epsilon, 0, low_open=True)
        if self.n_iter_no_change != np.inf:
            _check_int("n_iter_no_change", self.n_iter_no_change, 1)
        p["dropout"] = _check_real("dropout", self.dropout, 0, 1, high_open=True)
        p["weight_decay"] = _check_real("weight_decay", self.weight_decay, 0)
        sched = self.schedule
        if not (sched is None or isinstance(sched, Schedule) or sched in SCHEDULES):
            raise ValueError(
                f"schedule must be None, a numprop Schedule or one of "
                f"{', '.join(SCHEDULES.names())}; got {sched!r}"
            )
        if sched is not None and self.learning_rate != "constant":
            raise ValueError(
                "schedule sets the learning rate at every step: leave learning_rate='constant'"
            )
        try:
            p["dtype"] = np.dtype(self.dtype)
        except TypeError:
            p["dtype"] = None
        if p["dtype"] not in (np.float32, np.float64):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        return p

    # -- fitting ----------------------------------------------------------------------------
    def _fit(self, X, y, incremental: bool):
        """Train for up to ``max_iter`` epochs (one for ``partial_fit``); returns self."""
        params = self._checked_params()
        first_pass = not hasattr(self, "_model") or (not self.warm_start and not incremental)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        X, y, target = self._validate_input(X, y, incremental, first_pass, params["dtype"])
        n_outputs = self._n_outputs(target)

        # One integer seed per call from random_state (scikit-learn's semantics: an int
        # gives the same run every time, a RandomState is consumed), then independent
        # NumPy Generators for the initial weights and dropout, and for splits and orders.
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max, size=4)
        init_seq, fit_seq = np.random.SeedSequence(seed.tolist()).spawn(2)
        fit_rng = np.random.default_rng(fit_seq)

        if first_pass:
            self._initialize(X.shape[1], n_outputs, params, np.random.default_rng(init_seq))
        elif n_outputs != self.n_outputs_:
            raise ValueError(
                f"y has {n_outputs} outputs, but the network was fitted with {self.n_outputs_}"
            )
        if not incremental or self._optimizer is None:
            self._optimizer = self._make_optimizer(params)
            sched = self.schedule
            if isinstance(sched, str):
                sched = SCHEDULES.create(sched, params["lr"])
            # A copy: the parameter must stay as the user gave it (ReduceOnPlateau keeps state).
            self._schedule = copy.deepcopy(sched)
            self._epochs_done = 0
        self._train(X, y, target, params, fit_rng, incremental)

        if not all(np.isfinite(w).all() for w in (*self.coefs_, *self.intercepts_)):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain "
                "large values and need to be preprocessed."
            )
        return self

    def _initialize(self, n_features, n_outputs, params, rng):
        """Build the network and reset every fitted attribute (first fit, or no warm start)."""
        hidden = params["hidden"]
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(hidden) + 2
        self._model = _network(
            [n_features, *hidden, n_outputs],
            self.activation,
            params["dropout"],
            bool(self.batchnorm),
            rng,
            params["dtype"],
        )
        linears = [m for m in self._model if isinstance(m, Linear)]
        # The network's own arrays, (n_in, n_out) like scikit-learn's: they follow training.
        self.coefs_ = [m.weight.data for m in linears]
        self.intercepts_ = [m.bias.data for m in linears]
        self.out_activation_ = self._out_activation()
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self._best_state = self._model.state_dict()
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None
        self._optimizer = None

    def _make_optimizer(self, params) -> Optimizer:
        """numprop's SGD or Adam over the network, with scikit-learn's settings."""
        named = self._model.named_parameters()
        if self.solver == "sgd":
            momentum = params["momentum"]
            return SGD(
                named,
                lr=params["lr"],
                momentum=momentum,
                nesterov=bool(self.nesterovs_momentum) and momentum > 0,
            )
        return Adam(
            named,
            lr=params["lr"],
            betas=(params["beta_1"], params["beta_2"]),
            eps=params["epsilon"],
        )

    def _split(self, X, y, target, params, rng):
        """(training indices or None, X_val, y_val) for early stopping; (None, None, None) without.

        The validation set is ``ceil(validation_fraction * n)`` examples, as
        scikit-learn's ``train_test_split`` takes them, stratified by class for
        single-label classification (``_strata``).
        """
        if not self.early_stopping:
            return None, None, None
        n = X.shape[0]
        n_val = math.ceil(params["validation_fraction"] * n)
        if n_val < 2 or n_val >= n:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the "
                "size of your dataset."
            )
        strata = self._strata(target)
        if strata is not None:
            train_idx, val_idx = stratified_split(strata, n_val, rng)
        else:
            order = rng.permutation(n)
            train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])
        return train_idx, X[val_idx], y[val_idx]

    def _train(self, X, y, target, params, rng, incremental):
        """The epochs: numprop's training step per batch, scikit-learn's bookkeeping per epoch."""
        train_idx, X_val, y_val = self._split(X, y, target, params, rng)
        n = X.shape[0] if train_idx is None else train_idx.size
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going "
                    "to be clipped",
                    stacklevel=3,
                )
            batch_size = min(self.batch_size, n)
        # BatchNorm1d needs two examples per batch: a last batch of one is left out of the
        # epoch (a different example each epoch when shuffling).
        if self.batchnorm and batch_size < 2:
            raise ValueError("batchnorm=True needs batches of at least 2 examples")
        drop_last = bool(self.batchnorm) and n % batch_size == 1
        loader = ArrayLoader(
            X,
            target,
            batch_size,
            shuffle=bool(self.shuffle),
            rng=rng,
            drop_last=drop_last,
            indices=train_idx,
            dtype=params["dtype"],
        )
        n_seen = n - 1 if drop_last else n
        model, opt, sched = self._model, self._optimizer, self._schedule
        # Trainer.train_step: the forward, loss, backward and step that numprop's own
        # training runs, with SGD's fused momentum path; the epochs are run here.
        loss = self._make_loss()
        trainer = Trainer(model, loss, opt)
        weights = self.coefs_
        alpha, decay = params["alpha"], params["weight_decay"]
        # scikit-learn's loss_ averages the squared error over outputs too; numprop's sums them.
        loss_scale = 1.0 / self.n_outputs_ if isinstance(loss, MeanSquaredError) else 1.0
        steps = len(loader)
        adam_eps = params["epsilon"] if isinstance(opt, Adam) else None
        beta_2 = params["beta_2"]
        self.n_iter_ = 0
        try:
            for _ in range(params["max_iter"]):
                model.train()
                total = 0.0
                for i, (xb, yb) in enumerate(loader):
                    b = xb.shape[0]
                    if sched is not None:
                        opt.lr = sched.lr(self._epochs_done + i / steps, params["max_iter"])
                    # alpha as scikit-learn applies it: the gradient of
                    # alpha / (2 b) ||W||^2 over the batch, for the weights only (numprop's
                    # optimizers decay parameters with decay=True: Linear weights).
                    opt.weight_decay = alpha / b + decay
                    penalty = 0.0
                    if opt.weight_decay:
                        squares = sum(float(np.dot(w.ravel(), w.ravel())) for w in weights)
                        penalty = 0.5 * opt.weight_decay * squares
                    if adam_eps is not None:
                        # scikit-learn adds epsilon to sqrt(v) before the bias correction,
                        # numprop's Adam after it (times sqrt(1 - beta_2**t)): undo that factor.
                        opt.eps = adam_eps / math.sqrt(1.0 - beta_2 ** (opt.steps + 1))
                    value, _ = trainer.train_step(xb, yb)
                    total += (value * loss_scale + penalty) * b
                self._epochs_done += 1
                self.n_iter_ += 1
                self.loss_ = total / n_seen
                self.t_ += n_seen
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                self._update_no_improvement_count(X_val, y_val)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    opt.lr = params["lr"] / (self.t_ + 1) ** params["power_t"]
                if sched is not None:
                    sched.epoch_end(self.loss_)
                if self._no_improvement_count > self.n_iter_no_change:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    msg = (
                        f"{what} did not improve more than tol={self.tol:f} for "
                        f"{self.n_iter_no_change} consecutive epochs."
                    )
                    adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
                    if adaptive and opt.lr > 1e-6:
                        opt.lr /= 5.0
                        self._no_improvement_count = 0
                        if self.verbose:
                            print(f"{msg} Setting learning rate to {opt.lr:f}")
                    else:
                        if self.verbose:
                            tail = " Learning rate too small." if adaptive else ""
                            print(f"{msg}{tail} Stopping.")
                        break
                if incremental:
                    break
                if self.n_iter_ == params["max_iter"]:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({params['max_iter']}) "
                        "reached and the optimization hasn't converged yet.",
                        ConvergenceWarning,
                        stacklevel=3,
                    )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)
        model.eval()  # predictions, from here on
        if self.early_stopping:  # back to the best weights (the arrays stay coefs_)
            model.load_state_dict(self._best_state)

    def _update_no_improvement_count(self, X_val, y_val):
        """scikit-learn's convergence test after each epoch, on the validation score or the loss."""
        if self.early_stopping:
            score = self._score(X_val, y_val)
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_state = self._model.state_dict()
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    # -- prediction -------------------------------------------------------------------------
    def _outputs(self, X, check_input=True) -> np.ndarray:
        """The network's outputs (N, n_outputs_) before the output activation, in eval mode."""
        check_is_fitted(self)
        if check_input:
            X = validate_data(self, X, reset=False, dtype=self._model.dtype)
        return self._model.predict(X)

    def __getstate__(self):
        """The estimator's state for pickling, without the network's per-batch work arrays.

        The pickled network shares its Parameters with ``coefs_``/``intercepts_``
        and the optimizer (so they are still the same arrays after unpickling, and
        ``partial_fit`` goes on training the network), and leaves out its work
        buffers and the arrays its layers cached for backward: by numprop's rule,
        every array of a module that is not a Parameter or named in ``_buffers``.
        The layers make them again on their next forward; without this they would
        be pickled (as large as a batch), and come back read-only from a
        memory-mapped load, where the next prediction could not write into them.
        """
        state = super().__getstate__()
        model = state.get("_model")
        if model is not None:
            memo: dict[int, object] = {}
            for m in model.modules():
                for name, value in vars(m).items():
                    if isinstance(value, Parameter):
                        memo[id(value)] = value
                    elif name == "_work":
                        memo[id(value)] = {}
                    elif isinstance(value, np.ndarray) and name not in m._buffers:
                        memo[id(value)] = None
            state["_model"] = copy.deepcopy(model, memo)
        return state

    def _score(self, X, y) -> float:
        """The score of predictions for X (already validated) against y; NaN for non-finite outputs."""
        z = self._outputs(X, check_input=False)
        if not np.isfinite(z).all():
            return np.nan
        return float(self._score_function(y, self._decode(z)))


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by numprop, scikit-learn's API.

    Binary problems get one logistic output, multi-label problems (y a 2-D
    indicator matrix) one logistic output per label, both trained with
    ``SigmoidBinaryCrossEntropy``; multiclass problems a softmax output
    trained with ``SoftmaxCrossEntropy``, as scikit-learn's MLPClassifier does.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default (100,)
        Units of each hidden layer; ``()`` for none (a linear model).
    activation : str, default "relu"
        Hidden activation: "identity", "logistic", "tanh", "relu", or any
        numprop activation name ("leaky_relu", "gelu", ...).
    solver : {"adam", "sgd"}, default "adam"
        The optimizer ("lbfgs" is not supported: ValueError at fit).
    alpha : float, default 1e-4
        L2 penalty on the weights (not the biases), as in scikit-learn: each
        batch of b examples adds ``alpha / (2 b) * sum ||W||^2`` to the loss.
    batch_size : int or "auto", default "auto"
        Examples per step; "auto" is ``min(200, n_samples)``.
    learning_rate : {"constant", "invscaling", "adaptive"}, default "constant"
        SGD's rate: constant, ``learning_rate_init / (t_ + 1) ** power_t``
        after each epoch, or divided by 5 when ``n_iter_no_change`` epochs
        did not improve by ``tol``.
    learning_rate_init : float, default 1e-3
    power_t : float, default 0.5
    max_iter : int, default 200
        Epochs (each example is used once per epoch).
    shuffle : bool, default True
        Draw a new order of the examples every epoch.
    random_state : int, RandomState or None
        Seeds everything random: weights, dropout, order, validation split.
        The same int gives the same model.
    tol : float, default 1e-4
        Improvement of the loss (or validation score) that counts.
    verbose : bool, default False
        Print the loss after each epoch.
    warm_start : bool, default False
        ``fit`` goes on from the fitted weights instead of starting again.
    momentum : float, default 0.9
        SGD momentum, in [0, 1).
    nesterovs_momentum : bool, default True
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data (stratified by class),
        stop when its accuracy stops improving, keep the best weights.
    validation_fraction : float, default 0.1
    beta_1, beta_2, epsilon : float, default 0.9, 0.999, 1e-8
        Adam's settings.
    n_iter_no_change : int, default 10
        Epochs without an improvement of ``tol`` before stopping.
    dropout : float, default 0.0
        numprop: dropout probability after each hidden activation.
    batchnorm : bool, default False
        numprop: BatchNorm1d after each hidden Linear.
    schedule : None, str or numprop.nn.schedules.Schedule, default None
        numprop: a learning-rate schedule, set before every step over
        ``max_iter`` epochs. A name ("cosine", "step", ...) makes one with peak
        ``learning_rate_init``; a Schedule object is copied and used as given.
    weight_decay : float, default 0.0
        numprop: L2 coefficient added to each weight's gradient at every step,
        independent of the batch size (with ``alpha``: ``alpha / b + weight_decay``).
    dtype : {"float32", "float64"}, default "float32"
        numprop: the network's dtype; inputs are converted to it.

    Attributes
    ----------
    classes_ : ndarray or list of ndarray
        Class labels.
    loss_ : float
        The last epoch's loss (mean over examples, L2 penalty included).
    loss_curve_ : list of float
        The loss after each epoch, over all fits since the weights were initialised.
    best_loss_ : float or None
        The lowest loss; None with early stopping.
    validation_scores_ : list of float or None
        Validation accuracy after each epoch with early stopping, else None.
    best_validation_score_ : float or None
    t_ : int
        Training examples seen.
    coefs_ : list of ndarray
        Weights of each Linear layer, (n_in, n_out); the network's own arrays
        (BatchNorm parameters, if any, are not among them).
    intercepts_ : list of ndarray
        Biases of each Linear layer, (n_out,).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names.
    n_iter_ : int
        Epochs run by the last call to fit (1 after partial_fit).
    n_layers_ : int
        Layers, input and output included.
    n_outputs_ : int
    out_activation_ : str
        "logistic" or "softmax".
    """

    def _validate_input(self, X, y, incremental, first_pass, dtype):
        """X as an array of ``dtype``, y checked, and the target the loss trains on."""
        X, y = validate_data(self, X, y, multi_output=True, dtype=dtype, reset=first_pass)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # Label handling as scikit-learn's MLPClassifier (LabelBinarizer: binary ->
        # one column, multiclass -> one-hot, multi-label -> as given).
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            # scikit-learn asks for every class in each partial_fit too when warm_start
            # is set; here partial_fit takes any subset of classes_, as it does without.
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {classes}."
                )
        onehot = self._label_binarizer.transform(y)  # (N, K) ints
        if self._label_binarizer.y_type_ == "multiclass":
            target = onehot.argmax(axis=1).astype(np.int64)  # class indices: the fast loss path
        else:
            target = onehot.astype(dtype)  # (N, K) 0/1 for the logistic outputs
        return X, y, target

    def _n_outputs(self, target) -> int:
        return len(self.classes_) if target.ndim == 1 else target.shape[1]

    def _out_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _make_loss(self):
        if self.out_activation_ == "softmax":
            return SoftmaxCrossEntropy()
        return SigmoidBinaryCrossEntropy()

    def _strata(self, target):
        """Class per example for a stratified split, None for multi-label targets."""
        if target.ndim == 1:
            return target
        return target[:, 0].astype(np.int64) if target.shape[1] == 1 else None

    def _proba(self, z: np.ndarray) -> np.ndarray:
        """Probabilities from the outputs: softmax rows, or a logistic per output."""
        if self.out_activation_ == "softmax":
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return _sigmoid(z)

    def _decode(self, z: np.ndarray) -> np.ndarray:
        """Labels from the outputs, as scikit-learn decodes its probabilities."""
        p = self._proba(z)
        if self.out_activation_ == "softmax":
            return self.classes_[p.argmax(axis=1)]
        return self._label_binarizer.inverse_transform(p)  # p > 0.5 per output

    def _score_function(self, y, y_pred):
        return accuracy_score(y, y_pred)

    def fit(self, X, y):
        """Train the network on X and labels y; returns self.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : array-like, shape (n_samples,) or (n_samples, n_labels)
            Class labels of any type, or a 0/1 indicator matrix (multi-label).

        Returns
        -------
        MLPClassifier
            ``self``.
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch over X, y, going on from the current weights; returns self.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : array-like, shape (n_samples,) or (n_samples, n_labels)
        classes : array-like, optional
            Every class of every call; needed on the first call (except for
            multi-label y), where y need not hold them all.

        Returns
        -------
        MLPClassifier
            ``self``.
        """
        first_call = not hasattr(self, "classes_")
        if first_call and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if (
            classes is not None
            and not first_call
            and not np.array_equal(self.classes_, unique_labels(classes))
        ):
            raise ValueError(
                f"`classes={classes!r}` is not the same as on last call to "
                f"partial_fit, was: {self.classes_!r}"
            )
        if first_call:
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            self.classes_ = self._label_binarizer.classes_
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Class labels for X.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples,) or (n_samples, n_labels)
            Labels from ``classes_``; a 0/1 matrix for multi-label problems.
        """
        return self._decode(self._outputs(X))

    def predict_proba(self, X):
        """Probability of each class for X, in the order of ``classes_``.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples, n_classes)
            Rows sum to 1, except for multi-label problems (a probability per
            label); in the network's dtype.
        """
        p = self._proba(self._outputs(X))
        if self.n_outputs_ == 1:  # binary: the logistic output is the second class's
            p = np.hstack([1 - p, p])
        return p

    def predict_log_proba(self, X):
        """Log of ``predict_proba(X)``, computed from the outputs (finite where p underflows).

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples, n_classes)
        """
        z = self._outputs(X)
        if self.out_activation_ == "softmax":
            shifted = z - z.max(axis=1, keepdims=True)
            return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        if self.n_outputs_ == 1:
            return np.hstack([_log_sigmoid(-z), _log_sigmoid(z)])
        return _log_sigmoid(z)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True  # 2-D indicator y: one logistic output per label
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by numprop, scikit-learn's API.

    The output layer is linear, trained with ``MeanSquaredError`` (half the
    squared error), as scikit-learn's MLPRegressor. The parameters and
    attributes are those of ``MLPClassifier`` (without ``classes_``), with
    ``out_activation_ = "identity"``; early stopping monitors R^2 on the
    held-out examples (drawn at random, not stratified).

    Parameters
    ----------
    **params
        Every parameter of ``MLPClassifier``, with the same defaults and meaning
        (``hidden_layer_sizes=(100,)``, ``solver="adam"``, ``alpha=1e-4``, ...,
        ``dtype="float32"``).

    Attributes
    ----------
    loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_, t_, \
coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_
        As for ``MLPClassifier``; the loss is half the mean squared error (averaged
        over the outputs too, as scikit-learn reports it), L2 penalty included.
    out_activation_ : str
        "identity".
    """

    def _validate_input(self, X, y, incremental, first_pass, dtype):
        """X and y as arrays of ``dtype``, and the (N, K) target the loss trains on."""
        X, y = validate_data(
            self, X, y, multi_output=True, y_numeric=True, dtype=dtype, reset=first_pass
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        target = np.asarray(y, dtype=dtype)
        return X, y, target.reshape(len(target), -1)

    def _n_outputs(self, target) -> int:
        return target.shape[1]

    def _out_activation(self) -> str:
        return "identity"

    def _make_loss(self):
        return MeanSquaredError()

    def _strata(self, target):
        return None

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return z[:, 0] if z.shape[1] == 1 else z

    def _score_function(self, y, y_pred):
        return r2_score(y, y_pred)

    def fit(self, X, y):
        """Train the network on X and targets y; returns self.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : array-like, shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        MLPRegressor
            ``self``.
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X, y):
        """One epoch over X, y, going on from the current weights; returns self.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)
        y : array-like, shape (n_samples,) or (n_samples, n_targets)

        Returns
        -------
        MLPRegressor
            ``self``.
        """
        return self._fit(X, y, incremental=True)

    def predict(self, X):
        """Predicted targets for X.

        Parameters
        ----------
        X : array-like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples,) or (n_samples, n_targets)
            1-D when the model was fitted on a 1-D y; in the network's dtype.
        """
        return self._decode(self._outputs(X))
