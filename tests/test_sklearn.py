"""numprop.sklearn: scikit-learn's estimator checks, its tools, and the same numbers as its MLP."""

import ast
import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import (
    load_digits,
    make_classification,
    make_multilabel_classification,
    make_regression,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import estimator_checks_generator

import numprop as npp
from numprop.nn.layers import BatchNorm1d, Dropout, Linear
from numprop.sklearn import MLPClassifier, MLPRegressor

SRC = Path(__file__).resolve().parents[1] / "src" / "numprop"


@pytest.fixture(scope="module")
def digits():
    """Digits scaled to [0, 1], split 75/25 stratified: (X_train, X_test, y_train, y_test)."""
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)


def three_classes(n=300, seed=0):
    return make_classification(
        n, 10, n_informative=6, n_classes=3, n_clusters_per_class=1, random_state=seed
    )


# -- scikit-learn's own checks ------------------------------------------------------------


# Every check of scikit-learn's check_estimator that applies, each a test; none is
# skipped or expected to fail by tags (the tags are scikit-learn's MLP's: multi-label
# output for the classifier, nothing else). The one left out tests a decision_function,
# which these estimators, like scikit-learn's own MLPClassifier, do not have. The
# array-API check needs SCIPY_ARRAY_API=1 (tests/conftest.py sets it) and the
# DataFrame checks pandas (in the test extra). max_iter as scikit-learn's test suite
# sets it for its own MLPs; ConvergenceWarnings are expected at that length.
NOT_APPLICABLE = {"check_classifiers_multilabel_output_format_decision_function"}


def applicable_checks():
    for estimator in (MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)):
        for i, (est, check) in enumerate(estimator_checks_generator(estimator, mark=None)):
            name = getattr(check, "func", check).__name__
            if name not in NOT_APPLICABLE:
                yield pytest.param(est, check, id=f"{type(est).__name__}-{i}-{name}")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator, check", list(applicable_checks()))
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_the_estimator_checks_are_all_there():
    # Guard against the list above quietly shrinking (e.g. a renamed generator).
    names = {p.id.split("-", 2)[2] for p in applicable_checks()}
    assert len(names) > 40
    assert {"check_fit2d_1sample", "check_classifier_data_not_an_array"} <= names
    assert "check_array_api_input" in names and not names & NOT_APPLICABLE


# -- the library boundary ---------------------------------------------------------------------


def test_importing_numprop_does_not_import_sklearn():
    script = (
        "import sys, json, numprop, numprop.cli, numprop.training.experiment, numprop.data;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_only_numprop_sklearn_imports_sklearn():
    importers = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(n == "sklearn" or n.startswith("sklearn.") for n in names):
                importers.append(path.relative_to(SRC).as_posix())
    assert sorted(set(importers)) == ["sklearn.py"]


# -- the same numbers as scikit-learn's MLP --------------------------------------------------


def _same_start(ours_cls, sk_cls, X, y, **params):
    """numprop's and scikit-learn's estimators, each one epoch in, with the same weights.

    numprop's (in float64) trains one epoch; scikit-learn's trains one too and
    then takes numprop's weights. Both go on with warm_start and no shuffling:
    from there on they see the same batches from the same weights.
    """
    params = dict(shuffle=False, max_iter=1, warm_start=True, random_state=0, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = ours_cls(dtype="float64", **params).fit(X, y)
        theirs = sk_cls(**params).fit(X, y)
    theirs.coefs_ = [c.copy() for c in ours.coefs_]
    theirs.intercepts_ = [b.copy() for b in ours.intercepts_]
    return ours, theirs


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    "solver,activation,extra",
    [
        ("sgd", "relu", {}),  # Nesterov momentum, scikit-learn's default
        ("sgd", "tanh", {"nesterovs_momentum": False}),  # numprop's fused momentum path
        ("sgd", "logistic", {"momentum": 0.0}),
        ("adam", "relu", {}),
        ("adam", "identity", {"beta_1": 0.8, "epsilon": 1e-4}),
        # A rate that falls after each epoch. (With momentum the two differ once the rate
        # changes: numprop's velocity holds gradients, scikit-learn's holds steps.)
        ("sgd", "relu", {"learning_rate": "invscaling", "power_t": 0.1, "momentum": 0.0}),
    ],
)
def test_training_gives_scikit_learns_weights_and_losses(solver, activation, extra):
    X, y = three_classes()
    lr = 0.05 if solver == "sgd" else 0.01
    params = dict(
        hidden_layer_sizes=(16, 8),
        activation=activation,
        solver=solver,
        alpha=0.01,  # large enough that a wrong penalty shows
        batch_size=64,  # 300 = 4 * 64 + 44: the last batch is smaller
        learning_rate_init=lr,
        **extra,
    )
    ours, theirs = _same_start(MLPClassifier, SkMLPClassifier, X, y, **params)
    for est in (ours, theirs):  # three epochs more, in one fit: rates change between epochs
        est.set_params(max_iter=3).fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # (the first epoch's losses differ: scikit-learn's was from its own weights)
    np.testing.assert_allclose(ours.loss_curve_[1:], theirs.loss_curve_[1:], rtol=1e-10)
    assert ours.t_ == theirs.t_ == 4 * 300


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("problem", ["binary", "multilabel", "regression", "two_targets"])
def test_every_output_and_loss_matches_scikit_learn(problem):
    if problem == "binary":
        X, y = three_classes()
        y = y % 2
    elif problem == "multilabel":
        X, y = make_multilabel_classification(300, 10, n_classes=4, random_state=0)
    else:
        X, y = make_regression(300, 10, n_targets=2, noise=1.0, random_state=0)
        y = y[:, 0] / y[:, 0].std() if problem == "regression" else y / y.std()
    ours_cls, sk_cls = (
        (MLPRegressor, SkMLPRegressor)
        if problem in ("regression", "two_targets")
        else (MLPClassifier, SkMLPClassifier)
    )
    params = dict(hidden_layer_sizes=(12,), solver="sgd", alpha=0.01, batch_size=50)
    ours, theirs = _same_start(ours_cls, sk_cls, X, y, learning_rate_init=0.01, **params)
    for _ in range(2):
        ours.fit(X, y)
        theirs.fit(X, y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-10)
    assert ours.out_activation_ == theirs.out_activation_
    assert ours.n_outputs_ == theirs.n_outputs_
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-10, atol=1e-12)
    if ours_cls is MLPClassifier:
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9)


def test_the_convergence_test_stops_where_scikit_learns_does():
    X, y = three_classes()
    for params in (dict(tol=1e9, n_iter_no_change=3), dict(tol=1e-3, n_iter_no_change=2)):
        ours = MLPClassifier(random_state=0, max_iter=300, **params).fit(X, y)
        theirs = SkMLPClassifier(random_state=0, max_iter=300, **params).fit(X, y)
        assert ours.n_iter_ < 300
        if params["tol"] == 1e9:  # nothing counts as progress: 1 + n_iter_no_change + 1 epochs
            assert ours.n_iter_ == theirs.n_iter_ == 5
        assert ours.best_loss_ == min(ours.loss_curve_)
        assert len(ours.loss_curve_) == ours.n_iter_


def test_adaptive_learning_rate_stops_where_scikit_learns_does():
    X, y = three_classes()
    # Nothing counts as progress: the rate is divided by 5 every 2 epochs until it is
    # at most 1e-6, then training stops.
    params = dict(solver="sgd", learning_rate="adaptive", tol=1e9, n_iter_no_change=1)
    ours = MLPClassifier(random_state=0, **params).fit(X, y)
    theirs = SkMLPClassifier(random_state=0, **params).fit(X, y)
    assert ours.n_iter_ == theirs.n_iter_ == 13  # 3 + 2 * 4 + 2: five cuts, then a stop
    assert ours._optimizer.lr == pytest.approx(1e-3 / 5**5)


def test_verbose_prints_the_loss_of_each_epoch(capsys):
    X, y = three_classes()
    clf = MLPClassifier(max_iter=50, tol=1e9, n_iter_no_change=1, verbose=True, random_state=0)
    clf.fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"Iteration 1, loss = {clf.loss_curve_[0]:.8f}"
    assert len(lines) == 4 and lines[-1].endswith("consecutive epochs. Stopping.")


def test_coefs_are_the_networks_weights_and_the_loss_includes_alpha():
    X, y = three_classes()
    # A learning rate so small that the weights do not move: the first epoch's loss
    # is the loss of the final weights.
    clf = MLPClassifier(
        hidden_layer_sizes=(7,), solver="sgd", momentum=0.0, learning_rate_init=1e-12, alpha=3.0
    )
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(1\\)"):
        clf.set_params(max_iter=1, batch_size=300, dtype="float64").fit(X, y)
    assert [w.shape for w in clf.coefs_] == [(10, 7), (7, 3)]
    assert [b.shape for b in clf.intercepts_] == [(7,), (3,)]
    hidden = np.maximum(X @ clf.coefs_[0] + clf.intercepts_[0], 0)
    z = hidden @ clf.coefs_[1] + clf.intercepts_[1]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X), p, rtol=1e-12)
    log_loss = -np.mean(np.log(p[np.arange(len(y)), y]))
    penalty = 3.0 / (2 * 300) * sum(np.sum(w**2) for w in clf.coefs_)  # alpha/(2n) ||W||^2
    assert clf.loss_ == pytest.approx(log_loss + penalty, rel=1e-9)


# -- scikit-learn's tools -------------------------------------------------------------------


def test_in_a_pipeline_with_a_scaler(digits):
    X_train, X_test, y_train, y_test = digits
    pipe = Pipeline(
        [("scale", StandardScaler()), ("mlp", MLPClassifier(max_iter=60, random_state=0))]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe.fit(X_train * 16, y_train)
    assert pipe.score(X_test * 16, y_test) > 0.95
    assert pipe.named_steps["mlp"].n_features_in_ == 64


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_over_hidden_sizes_and_alpha(digits):
    X_train, _, y_train, _ = digits
    grid = GridSearchCV(
        MLPClassifier(max_iter=50, random_state=0),
        {"hidden_layer_sizes": [(2,), (64,)], "alpha": [1e-4, 1e-2]},
        cv=3,
    )
    grid.fit(X_train[:600], y_train[:600])
    scores = dict(zip(map(str, grid.cv_results_["params"]), grid.cv_results_["mean_test_score"]))
    assert len(scores) == 4
    # Two hidden units cannot tell ten digits apart; 64 can.
    assert grid.best_params_["hidden_layer_sizes"] == (64,)
    assert grid.best_score_ > 0.85
    assert max(v for k, v in scores.items() if "(2,)" in k) < 0.5
    assert grid.best_estimator_.coefs_[0].shape == (64, 64)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_cross_val_score(digits):
    X_train, _, y_train, _ = digits
    scores = cross_val_score(MLPClassifier(max_iter=40, random_state=0), X_train, y_train, cv=4)
    assert scores.shape == (4,)
    assert scores.min() > 0.9


def test_clone_keeps_numprops_parameters():
    est = MLPClassifier(dropout=0.25, batchnorm=True, schedule="cosine", weight_decay=1e-3)
    params = clone(est).get_params()
    assert (params["dropout"], params["batchnorm"], params["schedule"]) == (0.25, True, "cosine")
    assert (params["weight_decay"], params["dtype"]) == (1e-3, "float32")


# -- classification -------------------------------------------------------------------------


def test_digits_accuracy_and_scikit_learns_on_the_same_settings(digits):
    X_train, X_test, y_train, y_test = digits
    settings = dict(hidden_layer_sizes=(100,), max_iter=100, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**settings).fit(X_train, y_train)
        theirs = SkMLPClassifier(**settings).fit(X_train, y_train)
    ours_acc, theirs_acc = ours.score(X_test, y_test), theirs.score(X_test, y_test)
    assert ours_acc > 0.96
    assert abs(ours_acc - theirs_acc) < 0.03
    assert ours.coefs_[0].dtype == np.float32  # float32 by default
    assert ours.predict_proba(X_test).dtype == np.float32


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_multiclass_probabilities_and_predictions():
    X, y = three_classes()
    clf = MLPClassifier(max_iter=50, random_state=0).fit(X, y)
    proba = clf.predict_proba(X)
    assert clf.out_activation_ == "softmax" and clf.n_outputs_ == 3
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_string_labels_give_the_model_of_their_indices():
    X, y = three_classes()
    names = np.array(["cat", "ant", "bee"])  # classes_ sorted: ant, bee, cat
    by_index = MLPClassifier(max_iter=20, random_state=0).fit(X, np.array([2, 0, 1])[y])
    by_name = MLPClassifier(max_iter=20, random_state=0).fit(X, names[y])
    assert list(by_name.classes_) == ["ant", "bee", "cat"]
    np.testing.assert_array_equal(by_name.predict_proba(X), by_index.predict_proba(X))
    np.testing.assert_array_equal(by_name.predict(X), by_name.classes_[by_index.predict(X)])
    assert by_name.score(X, names[y]) > 0.8


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_binary_problems_have_one_logistic_output():
    X, y = three_classes()
    labels = np.where(y == 0, "yes", "no")
    clf = MLPClassifier(max_iter=50, random_state=0).fit(X, labels)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert clf.coefs_[-1].shape == (100, 1)
    proba = clf.predict_proba(X)
    assert proba.shape == (300, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), np.where(proba[:, 1] > 0.5, "yes", "no"))
    assert clf.score(X, labels) > 0.9


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_multilabel_targets():
    X, Y = make_multilabel_classification(400, 10, n_classes=4, random_state=0)
    clf = MLPClassifier(max_iter=200, random_state=0).fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    pred, proba = clf.predict(X), clf.predict_proba(X)
    assert pred.shape == proba.shape == (400, 4)
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(pred.dtype))
    assert not np.allclose(proba.sum(axis=1), 1)  # one probability per label, not per row
    per_label = (pred == Y).mean(axis=0)
    majority = np.maximum(Y.mean(axis=0), 1 - Y.mean(axis=0))
    assert np.all(per_label > majority + 0.05)
    theirs = SkMLPClassifier(max_iter=200, random_state=0).fit(X, Y)
    assert clf.score(X, Y) > theirs.score(X, Y) - 0.05  # exact-match accuracy


# -- fitting in parts ----------------------------------------------------------------------


def test_partial_fit_is_fit_one_epoch_at_a_time():
    X, y = three_classes()
    whole = MLPClassifier(max_iter=5, tol=0.0, n_iter_no_change=100, random_state=0, shuffle=False)
    with pytest.warns(ConvergenceWarning):
        whole.fit(X, y)
    parts = MLPClassifier(random_state=0, shuffle=False)
    for _ in range(5):
        parts.partial_fit(X, y, classes=[0, 1, 2])
    for a, b in zip(whole.coefs_, parts.coefs_):
        np.testing.assert_array_equal(a, b)
    assert parts.loss_curve_ == whole.loss_curve_
    assert (parts.n_iter_, parts.t_) == (1, 5 * 300)


def test_partial_fit_needs_the_classes_first_and_refuses_new_ones():
    X, y = three_classes()
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X, y)
    clf = MLPClassifier(random_state=0)
    clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])  # class 2 comes later
    assert list(clf.classes_) == [0, 1, 2] and clf.n_outputs_ == 3
    clf.partial_fit(X, y)
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X, y + 1)
    with pytest.raises(ValueError, match="does not support early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_goes_on_and_a_cold_fit_starts_again():
    X, y = three_classes()
    warm = MLPClassifier(max_iter=5, warm_start=True, random_state=0).fit(X, y)
    first = list(warm.loss_curve_)
    warm.fit(X, y)
    assert warm.n_iter_ == 5 and len(warm.loss_curve_) == 10
    assert warm.loss_curve_[:5] == first and warm.loss_curve_[5] < first[0]
    with pytest.raises(ValueError, match="warm_start can only be used"):
        warm.fit(X, y % 2)
    cold = MLPClassifier(max_iter=5, random_state=0).fit(X, y)
    cold.fit(X, y)
    assert cold.loss_curve_ == first  # the same seed: the same first fit again


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_early_stopping_records_scores_and_keeps_the_best_weights():
    X, y = three_classes(600)
    params = dict(early_stopping=True, n_iter_no_change=4, tol=0.0, random_state=0)
    clf = MLPClassifier(max_iter=300, learning_rate_init=0.01, **params).fit(X, y)
    scores = clf.validation_scores_
    assert clf.n_iter_ < 300 and len(scores) == len(clf.loss_curve_) == clf.n_iter_
    assert clf.best_validation_score_ == max(scores) and clf.best_loss_ is None
    assert all(s * 60 == round(s * 60) for s in scores)  # accuracy on ceil(0.1 * 600) examples
    # The same run stopped at the best epoch ends with the weights the first one kept.
    best_epoch = int(np.argmax(scores)) + 1
    assert best_epoch < clf.n_iter_
    at_best = MLPClassifier(max_iter=best_epoch, learning_rate_init=0.01, **params).fit(X, y)
    for a, b in zip(clf.coefs_ + clf.intercepts_, at_best.coefs_ + at_best.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_no_early_stopping_fields_without_it():
    X, y = three_classes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(max_iter=3).fit(X, y)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert clf.best_loss_ == min(clf.loss_curve_)


# -- randomness, numprop's own parameters, errors --------------------------------------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_same_random_state_same_model_and_another_differs():
    X, y = three_classes()
    settings = dict(max_iter=5, dropout=0.2, batchnorm=True, early_stopping=True)
    a = MLPClassifier(random_state=7, **settings).fit(X, y)
    b = MLPClassifier(random_state=7, **settings).fit(X, y)
    c = MLPClassifier(random_state=8, **settings).fit(X, y)
    for u, v in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(u, v)
    assert a.loss_curve_ == b.loss_curve_ and a.validation_scores_ == b.validation_scores_
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_dropout_batchnorm_and_identity_build_the_network_they_say(digits):
    X_train, X_test, y_train, y_test = digits
    clf = MLPClassifier(
        hidden_layer_sizes=(64, 32), dropout=0.1, batchnorm=True, max_iter=30, random_state=0
    ).fit(X_train, y_train)
    kinds = [type(m).__name__ for m in clf._model]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert clf.n_layers_ == 4 and len(clf.coefs_) == 3
    assert clf.score(X_test, y_test) > 0.93
    linear = MLPClassifier(hidden_layer_sizes=(16,), activation="identity", max_iter=2)
    linear.fit(X_train, y_train)
    assert [type(m) for m in linear._model] == [Linear, Linear]
    assert not any(isinstance(m, (Dropout, BatchNorm1d)) for m in linear._model)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_schedule_and_weight_decay_change_training_and_the_schedule_is_not_touched():
    X, y = three_classes()
    # Asks for halving the loss every epoch: the rate drops after each one.
    plateau = npp.ReduceOnPlateau(0.001, patience=0, threshold=0.5)
    base = MLPClassifier(max_iter=8, random_state=0).fit(X, y)
    scheduled = MLPClassifier(max_iter=8, random_state=0, schedule=plateau).fit(X, y)
    cosine = MLPClassifier(max_iter=8, random_state=0, schedule="cosine").fit(X, y)
    decayed = MLPClassifier(max_iter=8, random_state=0, weight_decay=0.5).fit(X, y)
    assert plateau._best == np.inf and plateau._scale == 1.0  # a copy was used
    assert cosine._optimizer.lr < 1e-5  # the cosine's end
    for other in (scheduled, cosine, decayed):
        assert other.loss_curve_ != base.loss_curve_
    assert np.sum(decayed.coefs_[0] ** 2) < np.sum(base.coefs_[0] ** 2)
    with pytest.raises(ValueError, match="leave learning_rate='constant'"):
        MLPClassifier(schedule="cosine", learning_rate="adaptive", solver="sgd").fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_float64_on_request():
    X, y = three_classes()
    clf = MLPClassifier(max_iter=2, dtype="float64").fit(X.astype(np.float32), y)
    assert clf.coefs_[0].dtype == np.float64 and clf.predict_proba(X).dtype == np.float64


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pickled_model_predicts_the_same_and_trains_on():
    X, y = three_classes()
    clf = MLPClassifier(max_iter=5, random_state=0).fit(X, y)
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(X), clf.predict_proba(X))
    before = copy.coefs_[0].copy()
    copy.partial_fit(X, y)
    clf.partial_fit(X, y)
    assert not np.array_equal(copy.coefs_[0], before)  # coefs_ are still the network's arrays
    np.testing.assert_array_equal(
        copy.coefs_[0], clf.coefs_[0]
    )  # and the optimizer's state came along


def test_convergence_warning_only_when_max_iter_is_reached():
    X, y = three_classes()
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(3\\) reached"):
        MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = MLPClassifier(max_iter=50, tol=1e9, n_iter_no_change=1, random_state=0).fit(X, y)
    assert clf.n_iter_ == 3


@pytest.mark.parametrize(
    "params,message",
    [
        (dict(solver="lbfgs"), "solver='lbfgs' is not supported"),
        (dict(activation="softplus"), "activation must be one of"),
        (dict(alpha=-1.0), "alpha must be a number"),
        (dict(momentum=1.0), "momentum must be a number in \\[0, 1\\)"),
        (dict(hidden_layer_sizes=(10, 0)), "hidden_layer_sizes entries must be an integer >= 1"),
        (dict(dtype="float16"), "dtype must be 'float32' or 'float64'"),
        (dict(schedule="sometimes"), "schedule must be None"),
        (dict(early_stopping=True, validation_fraction=0.001), "validation set is too small"),
        (dict(batchnorm=True, batch_size=1), "batches of at least 2"),
    ],
)
def test_bad_parameters_are_value_errors_at_fit_not_before(params, message):
    X, y = three_classes(100)
    est = MLPClassifier(**params)  # constructing and set_params never fail
    est.set_params(**params)
    with pytest.raises(ValueError, match=message):
        est.fit(X, y)


# -- regression ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_regressor_fits_a_simple_problem_in_one_and_two_outputs():
    X, y = make_regression(600, 8, n_informative=5, noise=5.0, random_state=0)
    y = y / y.std()
    Y = np.c_[y, -2 * y + X[:, 0]]
    X_train, X_test, Y_train, Y_test = train_test_split(X, Y, random_state=0)
    reg = MLPRegressor(max_iter=300, random_state=0).fit(X_train, Y_train[:, 0])
    assert reg.out_activation_ == "identity" and reg.n_outputs_ == 1
    assert reg.predict(X_test).shape == (150,)
    assert reg.score(X_test, Y_test[:, 0]) > 0.95
    two = MLPRegressor(max_iter=300, random_state=0).fit(X_train, Y_train)
    assert two.predict(X_test).shape == (150, 2) and two.n_outputs_ == 2
    assert two.score(X_test, Y_test) > 0.95


def test_regressor_early_stopping_scores_are_r2():
    X, y = make_regression(400, 5, noise=1.0, random_state=1)
    reg = MLPRegressor(
        early_stopping=True, max_iter=200, learning_rate_init=0.01, random_state=0
    ).fit(X, y / y.std())
    assert reg.best_validation_score_ == max(reg.validation_scores_) > 0.9
    assert reg.n_iter_ < 200
