"""Errors optkit raises on purpose. The CLI prints ``OptkitError`` as one paragraph, exit 2."""

from __future__ import annotations


class OptkitError(Exception):
    """Base of every error that is the user's input, not a bug: printed without traceback."""


class ConfigError(OptkitError):
    """A task file, a plugin config or a command-line override is wrong."""


class PluginError(OptkitError):
    """A plugin failed to load, registered a duplicate name, or is unknown."""


class DivergenceError(OptkitError):
    """A loss or gradient became NaN or infinite during a run."""


class ResultsError(OptkitError):
    """A results directory cannot be used (holds another task's results, corrupt rows)."""


class DataError(OptkitError):
    """A data artifact is missing, unreachable or corrupt."""


class EnvironmentProblem(OptkitError):
    """The machine, not the input: an output location that cannot be written (permissions,
    a full disk), a missing optional package. Printed as one paragraph saying what to do."""
