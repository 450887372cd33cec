"""Shared fixtures."""

import os

# scikit-learn runs its array-API estimator check only when SciPy was imported with
# this set (tests/test_sklearn.py); it must be set before anything imports SciPy.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest  # noqa: E402

import numprop as npp  # noqa: E402


@pytest.fixture(autouse=True)
def _settings_restored():
    """A test may change numprop.config; the next one starts from the settings before it."""
    with npp.config.override():
        yield
