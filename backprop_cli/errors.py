"""Exceptions the core raises; the CLI maps each to a one-line message and an exit code."""


class BackpropError(Exception):
    """Base of every error meant for the user. `exit_code` follows the CLI convention."""

    exit_code = 1


class ConfigError(BackpropError):
    """The config file (or a command-line override) is invalid: exit 2."""

    exit_code = 2


class DataError(BackpropError):
    """The training data is unusable: exit 2."""

    exit_code = 2


class UsageError(BackpropError):
    """A command-line argument or a typed value is wrong: exit 2."""

    exit_code = 2


class RunError(BackpropError):
    """A run folder is missing, corrupt, or cannot be written: exit 1."""

    exit_code = 1
