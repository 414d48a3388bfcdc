"""Errors that mean bad user input: the CLI prints the message and exits 2, no traceback."""


class LabelwiseError(Exception):
    """Bad user input: the CLI prints the message and exits with code 2, without a traceback."""


class ConfigError(LabelwiseError):
    """A config key is unknown, mistyped, out of range, or names a missing file."""


class DataError(LabelwiseError):
    """A data file is missing, unreadable, or holds arrays of the wrong shape or type."""
