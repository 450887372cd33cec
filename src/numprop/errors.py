"""Errors that numprop raises on bad input, so callers (and the CLI) can tell them apart."""


class NumpropError(Exception):
    """Base class: a problem with the user's input, data or configuration, not a bug."""


class DataError(NumpropError):
    """A dataset is missing, truncated, corrupt or of the wrong layout."""


class ConfigError(NumpropError):
    """An invalid option, architecture or file format."""


class TrainingError(NumpropError):
    """Training cannot go on (for example the loss became NaN)."""


class WriteError(NumpropError, OSError):
    """A file could not be written (disk full, no permission); the one there is left as it was.

    Also an ``OSError``, so code that caught the operating system's error still does.
    """
