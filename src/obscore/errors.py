"""Exceptions and warnings raised by obscore.

Each error also derives from the builtin it stands for, so an existing
``except ValueError`` keeps working.
"""

from __future__ import annotations


class ObscoreError(Exception):
    """Base of every error obscore raises on purpose."""


class InvalidSampleError(ObscoreError, ValueError):
    """A sample (or a row of an input file) cannot be accepted."""


class CardinalityLimitError(ObscoreError, ValueError):
    """A new series would exceed a configured series limit."""


class ConfigError(ObscoreError, ValueError):
    """The configuration is malformed or inconsistent."""


class SchemaError(ObscoreError, TypeError):
    """An Arrow input lacks a column or has a column of the wrong type."""


class UnknownMetricError(ObscoreError, KeyError):
    """A metric name that the configuration does not declare."""

    def __str__(self) -> str:
        # KeyError would quote the message; print it as written.
        return str(self.args[0]) if self.args else ""


class EngineClosedError(ObscoreError, RuntimeError):
    """A write to an engine whose data directory was closed."""


class StoreError(ObscoreError, OSError):
    """A file of a data directory cannot be read; the message names it."""


class UnsupportedQueryError(ObscoreError, ValueError):
    """A query uses a construct obscore does not evaluate; the message names it."""


class ObscoreWarning(UserWarning):
    """Base of every warning obscore emits."""


class DroppedDataWarning(ObscoreWarning):
    """Some rows of an input were dropped; the good rows were kept."""
