"""Shared fixtures."""

import pytest

import numprop as npp


@pytest.fixture(autouse=True)
def _settings_restored():
    """A test may change numprop.config; the next one starts from the settings before it."""
    with npp.config.override():
        yield
