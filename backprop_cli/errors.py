"""Exceptions the core raises. The command line maps each kind to an exit code in one place
(`backprop_cli.cli.app.EXIT_CODES`); the core never decides how a process ends."""


class BackpropError(Exception):
    """Base of every error meant for the user: its message is one line."""


class ConfigError(BackpropError):
    """The config file is invalid."""


class OverrideError(ConfigError):
    """A `--set` item or a keyword override is malformed (not the config file's fault)."""


class DataError(BackpropError):
    """The training or prediction data is unusable."""


class OutputError(BackpropError):
    """A path to write to is not a regular file or a new path, or is one of a run's own files."""


class RunNotFoundError(BackpropError):
    """A run folder was named that does not exist or is not a run folder."""


class RunError(BackpropError):
    """A run folder is corrupt or cannot be written."""


class DivergedError(BackpropError):
    """Training diverged before the step a command needed (gradcheck's second check, explain)."""
